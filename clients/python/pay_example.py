"""Minimal Python client: one Pay over the generated stubs, with a deadline,
an idempotency key made once per logical payment, and the rich error details.

  .venv/bin/python clients/python/pay_example.py --target 127.0.0.1:50051 \
      --payee merchant_0001 --currency EUR --amount-minor 1250
"""

from __future__ import annotations

import argparse
import sys
import uuid

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from paygrid.type.v1 import money_pb2
from paygrid.v1 import payment_service_pb2 as pb
from paygrid.v1 import payment_service_pb2_grpc as pb_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description="pay one leg through paygrid")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--payer", default="acct_000012345678")
    parser.add_argument("--payee", default="merchant_0001")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--amount-minor", type=int, default=1250)
    parser.add_argument("--idempotency-key", default=f"example-{uuid.uuid4()}")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args()

    request = pb.PayRequest(
        idempotency_key=args.idempotency_key, payer=args.payer,
        legs=[pb.PayLeg(payee=args.payee, amount=money_pb2.Money(
            currency=args.currency, amount_minor=args.amount_minor))])
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.PaymentServiceStub(channel)
        try:
            response = stub.Pay(request, timeout=args.timeout_s)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            status = rpc_status.from_call(error)
            for detail in status.details if status else []:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    for violation in bad.field_violations:
                        print(f"  {violation.field}: {violation.description}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(response.payment))
    return 0 if response.payment.status == pb.PAYMENT_STATUS_SUCCEEDED else 2


if __name__ == "__main__":
    sys.exit(main())
