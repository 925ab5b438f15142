'use strict';
// watchEvents: EventService.WatchEvents as an async iterator that survives
// dropped streams. Each frame's cursor is remembered; after UNAVAILABLE (a
// restart, a lost connection) the watch is opened again after that cursor,
// so no event is delivered twice or skipped.
//
//   const { createClients } = require('./paygrid_client');
//   const { watchEvents } = require('./event_watch');
//   const { events } = createClients({ target: '127.0.0.1:50051' });
//   for await (const frame of watchEvents(events, { consumer: 'erp' })) {
//     handle(frame.event);  // keep-alive frames are skipped unless { keepalives: true }
//     await ack(frame.cursor);
//   }

const { grpcStatus } = require('./paygrid_client');

// Reopened after these; any other status ends the iteration with the error.
const RESUMABLE = new Set([grpcStatus.UNAVAILABLE, grpcStatus.RESOURCE_EXHAUSTED]);
const RETRY_BASE_DELAY_MS = 200;
const RETRY_MAX_DELAY_MS = 5_000;
const DEFAULT_MAX_ATTEMPTS = 10; // failures in a row, without a frame between them

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * request: { after_cursor, start ('START_POSITION_EARLIEST'|'START_POSITION_LATEST'),
 *   consumer, type_prefix, subject } (all optional).
 * options: { keepalives: false, maxAttempts: 10, onRetry(error, delayMs) }.
 * Breaking out of the loop cancels the call.
 */
async function* watchEvents(eventsClient, request = {}, options = {}) {
  const { keepalives = false, maxAttempts = DEFAULT_MAX_ATTEMPTS, onRetry } = options;
  let current = { ...request };
  let failures = 0;
  for (;;) {
    const call = eventsClient.WatchEvents(current);
    // The CANCELLED our own cancel() causes after the loop has stopped
    // reading must not be an unhandled 'error' event.
    call.on('error', () => {});
    try {
      for await (const frame of call) {
        failures = 0;
        // Resume after this frame: the same filters, its cursor, no other start.
        current = { after_cursor: frame.cursor, type_prefix: request.type_prefix,
                    subject: request.subject };
        if (keepalives || frame.event) yield frame;
      }
      return; // the server ended the stream
    } catch (error) {
      failures += 1;
      if (!RESUMABLE.has(error.code) || failures >= maxAttempts) throw error;
      const delayMs = Math.min(RETRY_MAX_DELAY_MS, RETRY_BASE_DELAY_MS * 2 ** (failures - 1));
      if (onRetry) onRetry(error, delayMs);
      await sleep(delayMs);
    } finally {
      call.cancel();
    }
  }
}

module.exports = { watchEvents };
