# A paygrid client in Ruby, from stubs generated out of protos/ alone
# (grpc_tools_ruby_protoc): what a Ruby user builds. Run by
# tests/test_ruby_client.py with the generated tree on -I.
#
# PAYGRID_API_KEY in the environment.
#   ruby ruby_client.rb TARGET pay KEY       -> the payment, as JSON
#   ruby ruby_client.rb TARGET bad-pay KEY   -> the call error and its BadRequest
#   ruby ruby_client.rb TARGET batch BATCH_ID N -> the batch summary and trailers
require 'json'
require 'grpc'
require 'google/rpc/error_details_pb'
require 'google/rpc/status_pb'
require 'paygrid/v1/payment_service_services_pb'
require 'paygrid/v1/batch_service_services_pb'

target, command, *args = ARGV
V1 = Paygrid::V1
AUTH = { 'authorization' => "Bearer #{ENV.fetch('PAYGRID_API_KEY')}" }.freeze

def money(currency, amount_minor)
  Paygrid::Type::V1::Money.new(currency: currency, amount_minor: amount_minor)
end

def pay_request(key, currency)
  V1::PayRequest.new(idempotency_key: key, payer: 'acct_000012345678',
                     legs: [V1::PayLeg.new(payee: 'merchant_0001', amount: money(currency, 1250))])
end

case command
when 'pay'
  stub = V1::PaymentService::Stub.new(target, :this_channel_is_insecure)
  payment = stub.pay(pay_request(args[0], 'EUR'), deadline: Time.now + 10, metadata: AUTH).payment
  puts JSON.generate(payment_id: payment.payment_id, status: payment.status.to_s,
                     channels: payment.legs.map(&:channel))
when 'bad-pay'
  stub = V1::PaymentService::Stub.new(target, :this_channel_is_insecure)
  begin
    stub.pay(pay_request(args[0], 'EURO'), deadline: Time.now + 10, metadata: AUTH)
    abort 'a bad currency was accepted'
  rescue GRPC::BadStatus => e
    status = Google::Rpc::Status.decode(e.metadata['grpc-status-details-bin'])
    bad = status.details.find { |d| d.type_url.end_with?('/google.rpc.BadRequest') }
    fields = Google::Rpc::BadRequest.decode(bad.value).field_violations.map(&:field)
    puts JSON.generate(code: e.code, fields: fields)
  end
when 'batch'
  stub = V1::BatchService::Stub.new(target, :this_channel_is_insecure)
  batch_id, count = args[0], Integer(args[1])
  transactions = (1..count).map do |i|
    V1::BatchTransaction.new(reference: "ruby-#{i}", payee: "payee_#{i}",
                             amount: money('EUR', 100 * i))
  end
  requests = [
    V1::SubmitBatchRequest.new(header: V1::BatchHeader.new(batch_id: batch_id,
                                                           payer: 'acct_payroll_0001')),
    V1::SubmitBatchRequest.new(transactions: V1::BatchTransactions.new(transactions: transactions)),
    V1::SubmitBatchRequest.new(end: V1::BatchEnd.new(control_item_count: count)),
  ]
  call = stub.submit_batch(requests.each, deadline: Time.now + 30, metadata: AUTH,
                                            return_op: true)
  summary = nil
  call.execute.each { |response| summary = response.summary if response.kind == :summary }
  puts JSON.generate(status: summary.status.to_s, succeeded: summary.counts.succeeded,
                     groups: summary.timing.groups,
                     model_throughput: summary.timing.model_throughput_items_per_second,
                     trailers: call.trailing_metadata.select { |k, _| k.start_with?('x-paygrid-') })
else
  abort "unknown command #{command.inspect}"
end
