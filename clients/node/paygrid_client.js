'use strict';
// Clients for paygrid's PaymentService, BatchService and EventService, built at run time
// from the project's .proto files (no generated JavaScript to keep in sync).
//
//   const { createClients, unaryCall } = require('./paygrid_client');
//   const clients = createClients({ target: '127.0.0.1:50051' });
//   const { payment } = await unaryCall(clients.payments, 'Pay', request, { deadlineMs: 5000 });

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS_DIR = path.resolve(__dirname, '..', '..', 'protos');
const PROTO_FILES = ['paygrid/v1/payment_service.proto', 'paygrid/v1/batch_service.proto',
  'paygrid/v1/event_service.proto'];

// The key the server accepts while no key is configured (see docs/operations/auth.md).
const DEV_API_KEY = 'paygrid-dev-key';
const API_KEY_ENV = 'PAYGRID_API_KEY';

const LOADER_OPTIONS = {
  includeDirs: [PROTOS_DIR],
  keepCase: true, // field names as in the protos and docs/ (amount_minor, not amountMinor)
  longs: String, // int64/uint64 as decimal strings: money stays exact, never a float
  enums: String, // enum names, readable in JSON output
  defaults: true, // every field present in output, zero values included
  oneofs: true, // adds `kind` naming the member set in a oneof
};

let loaded = null;

/** The paygrid.v1 package (service constructors and message types), loaded once. */
function paygridPackage() {
  if (loaded === null) {
    const definition = protoLoader.loadSync(PROTO_FILES, LOADER_OPTIONS);
    loaded = { definition, v1: grpc.loadPackageDefinition(definition).paygrid.v1 };
  }
  return loaded;
}

/** The API key to send: the explicit one, else $PAYGRID_API_KEY, else the dev key. */
function resolveApiKey(explicitKey, env = process.env) {
  return explicitKey || env[API_KEY_ENV] || DEV_API_KEY;
}

/**
 * Channel credentials: insecure without a CA; TLS with `caPath`; mutual TLS
 * when a client certificate and key are given too (both or neither).
 */
function channelCredentials({ caPath, certPath, keyPath } = {}) {
  if (Boolean(certPath) !== Boolean(keyPath)) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  if (!caPath) {
    if (certPath) throw new UsageError('--tls-cert/--tls-key need --tls-ca');
    return grpc.credentials.createInsecure();
  }
  const read = (file) => fs.readFileSync(file);
  return grpc.credentials.createSsl(
    read(caPath), keyPath ? read(keyPath) : null, certPath ? read(certPath) : null);
}

/**
 * Adds `authorization: Bearer <key>` to every call made through a client,
 * streaming ones included. An interceptor rather than call credentials:
 * grpc-js sends call credentials only over TLS, and local servers are plaintext.
 */
function bearerTokenInterceptor(apiKey) {
  return (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', `Bearer ${apiKey}`);
      next(metadata, listener);
    },
  });
}

/**
 * PaymentService, BatchService and EventService clients for `target` ("host:port").
 * tls: { caPath, certPath, keyPath, serverName } or omitted for plaintext.
 */
function createClients({ target, tls = {}, apiKey }) {
  const { v1 } = paygridPackage();
  const credentials = channelCredentials(tls);
  const options = { interceptors: [bearerTokenInterceptor(resolveApiKey(apiKey))] };
  if (tls.serverName) {
    // For a certificate whose name differs from the target (an IP, a tunnel).
    options['grpc.ssl_target_name_override'] = tls.serverName;
    options['grpc.default_authority'] = tls.serverName;
  }
  const payments = new v1.PaymentService(target, credentials, options);
  const batches = new v1.BatchService(target, credentials, options);
  const events = new v1.EventService(target, credentials, options);
  return {
    payments,
    batches,
    events,
    close() {
      payments.close();
      batches.close();
      events.close();
    },
  };
}

/** Call options with a deadline `deadlineMs` from now. */
function callOptions(deadlineMs) {
  return { deadline: new Date(Date.now() + deadlineMs) };
}

/** A unary call as a promise; rejects with the grpc-js error (code, details, metadata). */
function unaryCall(client, method, request, { deadlineMs }) {
  return new Promise((resolve, reject) => {
    client[method](request, callOptions(deadlineMs), (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/** A mistake in the command line or the input: reported without a gRPC status. */
class UsageError extends Error {}

module.exports = {
  API_KEY_ENV,
  DEV_API_KEY,
  PROTOS_DIR,
  UsageError,
  callOptions,
  createClients,
  grpcStatus: grpc.status,
  paygridPackage,
  resolveApiKey,
  unaryCall,
};
