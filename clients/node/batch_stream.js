'use strict';
// One SubmitBatch call: the header, the transactions in chunks, then the end
// message, written while the server's answers are read, at the pace gRPC flow
// control allows.

const { callOptions } = require('./paygrid_client');

const MAX_TRANSACTIONS_PER_MESSAGE = 1000; // the server's limit (docs/api/limits.md)
const TIMING_TRAILER_PREFIX = 'x-paygrid-';

async function* requestMessages(header, transactions, chunkSize) {
  yield { header };
  let chunk = [];
  for await (const transaction of transactions) {
    chunk.push(transaction);
    if (chunk.length === chunkSize) {
      yield { transactions: { transactions: chunk } };
      chunk = [];
    }
  }
  if (chunk.length > 0) yield { transactions: { transactions: chunk } };
  // Completes the batch at once; a bare half-close ends it ~100 ms later.
  yield { end: {} };
}

/**
 * Writes every message, waiting for 'drain' when grpc-js buffers are full so
 * a large file is never held in memory, then half-closes. Stops early once
 * the call has ended (`ended` resolves), since nothing more can be sent.
 */
async function writeAll(call, messages, ended) {
  let callEnded = false;
  ended.then(() => { callEnded = true; });
  for await (const message of messages) {
    if (callEnded) return;
    if (!call.write(message)) {
      await Promise.race([new Promise((resolve) => call.once('drain', resolve)), ended]);
    }
  }
  if (!callEnded) call.end();
}

/**
 * Submits one batch. `onResponse` gets each SubmitBatchResponse ({kind, group |
 * rejected | already_processed | summary}) as it arrives. Resolves with the
 * x-paygrid-* trailing metadata (APT, throughput, wall time); rejects with the
 * grpc-js error, or with the input's own error (the call is then cancelled).
 */
async function submitBatch(batches, { header, transactions, chunkSize, deadlineMs, onResponse }) {
  if (!(chunkSize >= 1 && chunkSize <= MAX_TRANSACTIONS_PER_MESSAGE)) {
    throw new RangeError(`chunkSize must be 1 to ${MAX_TRANSACTIONS_PER_MESSAGE}`);
  }
  const call = batches.SubmitBatch(callOptions(deadlineMs));
  const ended = new Promise((resolve) => call.on('status', resolve));
  let inputError = null;
  const writing = writeAll(call, requestMessages(header, transactions, chunkSize), ended)
    .catch((error) => {
      inputError = error;
      call.cancel();
    });
  try {
    for await (const response of call) onResponse(response);
  } catch (error) {
    await writing;
    throw inputError ?? error;
  }
  await writing;
  if (inputError) throw inputError;
  const { metadata } = await ended;
  return Object.fromEntries(Object.entries(metadata.getMap())
    .filter(([key]) => key.startsWith(TIMING_TRAILER_PREFIX)));
}

module.exports = { MAX_TRANSACTIONS_PER_MESSAGE, submitBatch };
