#!/usr/bin/env node
'use strict';
// paygrid command line: pay, submit-batch, get-payment, get-batch.
// Output is JSON on stdout; errors are one JSON line on stderr.

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const {
  UsageError, createClients, grpcStatus, unaryCall,
} = require('./paygrid_client');
const { errorDetails, retryDelayMs } = require('./rpc_status');
const { fileTransactions, generatedTransactions } = require('./batch_input');
const { MAX_TRANSACTIONS_PER_MESSAGE, submitBatch } = require('./batch_stream');

const EXIT_OK = 0;
const EXIT_RPC_ERROR = 1; // the server (or the connection) answered with a gRPC error
const EXIT_USAGE = 2; // bad command line or input file
const EXIT_NOT_SUCCEEDED = 3; // answered, but the payment failed / the batch is not complete
const EXIT_CLIENT_BUG = 4; // anything else: a stack trace on stderr

const DEFAULT_TARGET = '127.0.0.1:50051';
const DEFAULT_PAY_DEADLINE_MS = 5_000;
const DEFAULT_BATCH_DEADLINE_MS = 600_000;
const DEFAULT_PAY_MAX_ATTEMPTS = 3;
const RETRY_BASE_DELAY_MS = 200;
const RETRY_MAX_DELAY_MS = 2_000;
const DEFAULT_CHUNK_SIZE = 500;

const USAGE = `usage: paygrid.js <command> [options]

commands:
  pay --payer ID [--idempotency-key K] [--mode all-or-nothing|independent]
      [--metadata k=v ...] [--max-attempts N] LEG [LEG ...]
        LEG is payee:CURRENCY:amount_minor[:channel], e.g. hotel_4711:EUR:45000
        (amount in minor units: 45000 is EUR 450.00). Retries UNAVAILABLE and
        ABORTED with the same idempotency key (one UUID per run unless given).
  submit-batch --batch-id ID --payer ID (--file F.csv|F.jsonl | --generate N
      [--currency EUR] [--amount-minor 100] [--channel C])
      [--chunk-size 500] [--group-size N] [--parallelism N]
      [--grouping channel-and-currency|channel|channel-currency-and-payee]
        Prints one JSON line per server message, then {"trailers": {...}}.
  get-payment PAYMENT_ID
  get-batch BATCH_ID

connection (every command):
  --target HOST:PORT     default $PAYGRID_TARGET or ${DEFAULT_TARGET}
  --api-key KEY          default $PAYGRID_API_KEY or the dev key paygrid-dev-key
  --tls-ca PEM           use TLS, trusting this CA (plaintext without it)
  --tls-cert PEM --tls-key PEM   client certificate for mutual TLS
  --tls-server-name NAME name expected in the server certificate
  --deadline-ms MS       per call (per attempt for pay); default ${DEFAULT_PAY_DEADLINE_MS},
                         submit-batch ${DEFAULT_BATCH_DEADLINE_MS}

exit status: 0 ok, 1 gRPC error, 2 usage or input error,
  3 payment not SUCCEEDED / batch not COMPLETED, 4 client bug`;

const CONNECTION_OPTIONS = {
  target: { type: 'string' },
  'api-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-server-name': { type: 'string' },
  'deadline-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const COMMANDS = {
  pay: {
    run: pay,
    options: {
      payer: { type: 'string' },
      'idempotency-key': { type: 'string' },
      mode: { type: 'string' },
      metadata: { type: 'string', multiple: true },
      'max-attempts': { type: 'string' },
    },
  },
  'submit-batch': {
    run: submitBatchCommand,
    options: {
      'batch-id': { type: 'string' },
      payer: { type: 'string' },
      file: { type: 'string' },
      generate: { type: 'string' },
      currency: { type: 'string' },
      'amount-minor': { type: 'string' },
      channel: { type: 'string' },
      'chunk-size': { type: 'string' },
      'group-size': { type: 'string' },
      parallelism: { type: 'string' },
      grouping: { type: 'string' },
    },
  },
  'get-payment': { run: getPayment, options: {} },
  'get-batch': { run: getBatch, options: {} },
};

const PAYMENT_MODES = {
  'all-or-nothing': 'PAYMENT_MODE_ALL_OR_NOTHING',
  independent: 'PAYMENT_MODE_INDEPENDENT',
};
const GROUPING_POLICIES = {
  'channel-and-currency': 'GROUPING_POLICY_CHANNEL_AND_CURRENCY',
  channel: 'GROUPING_POLICY_CHANNEL',
  'channel-currency-and-payee': 'GROUPING_POLICY_CHANNEL_CURRENCY_AND_PAYEE',
};
const RETRYABLE_PAY_CODES = new Set([
  grpcStatus.UNAVAILABLE, // the server or the network is down: the same key makes a retry safe
  grpcStatus.ABORTED, // the same key is still executing: a retry gets its stored answer
]);
const STATUS_NAMES = Object.fromEntries(
  Object.entries(grpcStatus).map(([name, code]) => [code, name]));
const MINOR_UNITS = /^[0-9]+$/;

function required(values, name) {
  if (!values[name]) throw new UsageError(`--${name} is required`);
  return values[name];
}

function integerOption(values, name, { min, max, fallback }) {
  const text = values[name];
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || value < min || value > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function choiceOption(values, name, choices) {
  const text = values[name];
  if (text === undefined) return undefined;
  if (!(text in choices)) {
    throw new UsageError(`--${name} must be one of: ${Object.keys(choices).join(', ')}`);
  }
  return choices[text];
}

function minorUnits(text, what) {
  if (!MINOR_UNITS.test(text)) {
    throw new UsageError(
      `${what} must be a whole number of minor units (45000, not 450.00): ${text}`);
  }
  return text; // a decimal string: the int64 field takes it exactly
}

/** "payee:CURRENCY:amount_minor[:channel]" as a PayLeg. Payee ids cannot contain ':' here. */
function parseLeg(text) {
  const parts = text.split(':');
  if (parts.length !== 3 && parts.length !== 4) {
    throw new UsageError(`leg must be payee:CURRENCY:amount_minor[:channel]: ${text}`);
  }
  const [payee, currency, amount, channel = ''] = parts;
  return { payee, amount: { currency, amount_minor: minorUnits(amount, 'leg amount') }, channel };
}

function parseMetadata(entries = []) {
  return Object.fromEntries(entries.map((entry) => {
    const at = entry.indexOf('=');
    if (at < 1) throw new UsageError(`--metadata must be key=value: ${entry}`);
    return [entry.slice(0, at), entry.slice(at + 1)];
  }));
}

function printJsonLine(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function pay(clients, values, positionals, deadlineMs) {
  if (positionals.length === 0) throw new UsageError('pay needs at least one leg');
  const request = {
    // Made once per run, so every retry below is the same logical payment.
    idempotency_key: values['idempotency-key'] ?? crypto.randomUUID(),
    payer: required(values, 'payer'),
    legs: positionals.map(parseLeg),
    mode: choiceOption(values, 'mode', PAYMENT_MODES) ?? 'PAYMENT_MODE_UNSPECIFIED',
    metadata: parseMetadata(values.metadata),
  };
  const maxAttempts = integerOption(values, 'max-attempts',
    { min: 1, max: 20, fallback: DEFAULT_PAY_MAX_ATTEMPTS });
  for (let attempt = 1; ; attempt += 1) {
    try {
      const { payment } = await unaryCall(clients.payments, 'Pay', request, { deadlineMs });
      process.stdout.write(`${JSON.stringify(payment, null, 2)}\n`);
      return payment.status === 'PAYMENT_STATUS_SUCCEEDED' ? EXIT_OK : EXIT_NOT_SUCCEEDED;
    } catch (error) {
      if (!RETRYABLE_PAY_CODES.has(error.code) || attempt >= maxAttempts) throw error;
      const backoffMs = Math.min(RETRY_BASE_DELAY_MS * 2 ** (attempt - 1), RETRY_MAX_DELAY_MS);
      const delayMs = retryDelayMs(error) ?? backoffMs;
      process.stderr.write(`${JSON.stringify({
        retry: { attempt, code: STATUS_NAMES[error.code], delay_ms: delayMs,
          idempotency_key: request.idempotency_key },
      })}\n`);
      await sleep(delayMs);
    }
  }
}

/**
 * Reads the whole file once before anything is sent, so a file that breaks
 * at line 900,000 pays nothing rather than the lines before it.
 */
async function checkFile(file) {
  let count = 0;
  for await (const _ of fileTransactions(file)) count += 1;
  if (count === 0) throw new UsageError(`${file}: no transactions`);
}

async function batchTransactions(values) {
  if (Boolean(values.file) === Boolean(values.generate)) {
    throw new UsageError('give exactly one of --file and --generate');
  }
  if (values.file) {
    await checkFile(values.file);
    return fileTransactions(values.file);
  }
  const count = integerOption(values, 'generate', { min: 1, max: 5_000_000, fallback: 0 });
  return generatedTransactions(count, {
    currency: values.currency ?? 'EUR',
    amountMinor: minorUnits(values['amount-minor'] ?? '100', '--amount-minor'),
    channel: values.channel ?? '',
  });
}

async function submitBatchCommand(clients, values, positionals, deadlineMs) {
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const header = {
    batch_id: required(values, 'batch-id'),
    payer: required(values, 'payer'),
    grouping: choiceOption(values, 'grouping', GROUPING_POLICIES) ?? 'GROUPING_POLICY_UNSPECIFIED',
    max_group_size: integerOption(values, 'group-size', { min: 0, max: 1000, fallback: 0 }),
    parallelism: integerOption(values, 'parallelism', { min: 0, max: 16, fallback: 0 }),
  };
  const chunkSize = integerOption(values, 'chunk-size',
    { min: 1, max: MAX_TRANSACTIONS_PER_MESSAGE, fallback: DEFAULT_CHUNK_SIZE });
  let summary = null;
  const trailers = await submitBatch(clients.batches, {
    header,
    transactions: await batchTransactions(values),
    chunkSize,
    deadlineMs,
    onResponse(response) {
      if (response.kind === 'summary') summary = response.summary;
      printJsonLine({ [response.kind]: response[response.kind] });
    },
  });
  printJsonLine({ trailers });
  return summary?.status === 'BATCH_STATUS_COMPLETED' ? EXIT_OK : EXIT_NOT_SUCCEEDED;
}

function singleId(positionals, what) {
  if (positionals.length !== 1) throw new UsageError(`give one ${what}`);
  return positionals[0];
}

async function getPayment(clients, values, positionals, deadlineMs) {
  const request = { payment_id: singleId(positionals, 'payment id') };
  const { payment } = await unaryCall(clients.payments, 'GetPayment', request, { deadlineMs });
  process.stdout.write(`${JSON.stringify(payment, null, 2)}\n`);
  return EXIT_OK;
}

async function getBatch(clients, values, positionals, deadlineMs) {
  const request = { batch_id: singleId(positionals, 'batch id') };
  const { batch } = await unaryCall(clients.batches, 'GetBatch', request, { deadlineMs });
  process.stdout.write(`${JSON.stringify(batch, null, 2)}\n`);
  return EXIT_OK;
}

function reportRpcError(error) {
  process.stderr.write(`${JSON.stringify({
    error: {
      code: STATUS_NAMES[error.code] ?? String(error.code),
      code_number: error.code,
      message: error.details,
      details: errorDetails(error),
    },
  })}\n`);
}

const ALL_OPTIONS = Object.assign({}, CONNECTION_OPTIONS,
  ...Object.values(COMMANDS).map((command) => command.options));

async function main(argv) {
  // Options may come before or after the command: parse everything, then
  // check that each option given belongs to that command.
  const { values, positionals: [name, ...positionals] } = parseArgs({
    args: argv, options: ALL_OPTIONS, allowPositionals: true, strict: true });
  if (name === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? EXIT_OK : EXIT_USAGE;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command: ${name}`);
  const misplaced = Object.keys(values)
    .filter((option) => !(option in CONNECTION_OPTIONS || option in command.options));
  if (misplaced.length > 0) throw new UsageError(`${name} does not take --${misplaced[0]}`);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_OK;
  }
  const deadlineMs = integerOption(values, 'deadline-ms', {
    min: 1,
    max: 24 * 3600 * 1000,
    fallback: name === 'submit-batch' ? DEFAULT_BATCH_DEADLINE_MS : DEFAULT_PAY_DEADLINE_MS,
  });
  const clients = createClients({
    target: values.target ?? process.env.PAYGRID_TARGET ?? DEFAULT_TARGET,
    apiKey: values['api-key'],
    tls: {
      caPath: values['tls-ca'],
      certPath: values['tls-cert'],
      keyPath: values['tls-key'],
      serverName: values['tls-server-name'],
    },
  });
  try {
    return await command.run(clients, values, positionals, deadlineMs);
  } finally {
    clients.close();
  }
}

main(process.argv.slice(2)).then(
  (exitCode) => { process.exitCode = exitCode; },
  (error) => {
    if (typeof error.code === 'number' && 'details' in error) {
      reportRpcError(error);
      process.exitCode = EXIT_RPC_ERROR;
    } else if (error instanceof UsageError || error.code?.startsWith?.('ERR_PARSE_ARGS')
               || error.code === 'ENOENT' || error.code === 'EACCES') {
      process.stderr.write(`${JSON.stringify({ usage_error: error.message })}\n`);
      process.exitCode = EXIT_USAGE;
    } else {
      process.stderr.write(`${error.stack ?? error}\n`);
      process.exitCode = EXIT_CLIENT_BUG;
    }
  },
);
