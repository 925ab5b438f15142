// A unary load generator in Node.js, for the benches and the overload run:
// it costs the shared 2 cores far less per call than the Python one, so what
// saturates is the server, not the load generator.
// Bodies are prepared by the caller (one per call, each with its own
// idempotency key) as a file of 4-byte big-endian lengths and bytes; this
// sends them raw, closed loop (`concurrency` in flight for `seconds`) or open
// loop (each phase's `rate` per second for its `seconds`, whatever the
// latency), and writes one line per call: started_ms,status_code,latency_ms.
// Usage: node scripts/open_loop_load.js <run.json>   (see reliability_overload.py)
//
// `transport`: "grpc-js" (the library's client) or "http2" (gRPC's wire
// format written on Node's own http2 module, nghttp2 in C++: a call is one
// stream, its headers, the 5-byte message prefix and body, read back to its
// grpc-status trailer). http2 costs the generator about 60-70% of grpc-js's
// CPU per call (docs/performance.md, session 12). grpc-js comes from
// clients/node (`npm ci` there) and is loaded either way.
"use strict";

const fs = require("fs");
const http2 = require("http2");
const path = require("path");

const grpc = require(path.join(__dirname, "..", "clients", "node", "node_modules",
                               "@grpc", "grpc-js"));

const run = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const bodies = readBodies(run.bodies);
// `connections` clients, each with a connection of its own (grpc-js shares
// one between clients otherwise), taken in turn: with `serve --workers N` the
// kernel spreads connections, not calls, over the workers.
const clients = Array.from({length: run.connections || 1}, () =>
  run.transport === "http2" ? http2Client(run.target) : grpcJsClient(run.target));
const lines = [];
let next = 0;
let inFlight = 0;
let notSent = 0;
const started = performance.now();

function readBodies(file) {
  const data = fs.readFileSync(file);
  const found = [];
  for (let at = 0; at < data.length;) {
    const length = data.readUInt32BE(at);
    // Each message after the 5-byte prefix it has on the wire (not
    // compressed, its length): http2 sends `framed` as it is.
    const framed = Buffer.alloc(5 + length);
    framed.writeUInt32BE(length, 1);
    data.copy(framed, 5, at + 4, at + 4 + length);
    const body = framed.subarray(5);
    body.framed = framed;
    found.push(body);
    at += 4 + length;
  }
  return found;
}

// Each client: unary(body, answered(code)), close().
function grpcJsClient(target) {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(),
                                 {"grpc.use_local_subchannel_pool": 1});
  const metadata = new grpc.Metadata();
  for (const [key, value] of run.metadata) metadata.set(key, value);
  const raw = (buffer) => buffer;
  return {
    unary: (body, answered) => client.makeUnaryRequest(
      run.method, raw, raw, body, metadata, {deadline: Date.now() + run.timeout_ms},
      (error) => answered(error ? error.code : 0)),
    close: () => client.close(),
  };
}

const UNKNOWN = 2;
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

function http2Client(target) {
  // A new connection once the server (or a proxy: nginx after its
  // keepalive_requests, 1000 by default) sends GOAWAY or closes, as a gRPC
  // client does; the calls in flight finish on the old one.
  let session = null;
  const live = () => {
    if (session === null || session.closed || session.destroyed) {
      const opened = http2.connect(`http://${target}`);
      opened.on("error", () => {});  // each stream reports its own failure
      opened.on("goaway", () => { if (session === opened) session = null; });
      session = opened;
    }
    return session;
  };
  const headers = {
    ":method": "POST", ":path": run.method, "content-type": "application/grpc",
    "te": "trailers", "grpc-timeout": `${Math.ceil(run.timeout_ms)}m`,
    ...Object.fromEntries(run.metadata),
  };
  return {
    unary: (body, answered) => {
      let code = null;
      const settle = (found) => { if (code === null) answered(code = found); };
      const send = (refusalsLeft) => {
        let stream;
        try {
          stream = live().request(headers, {endStream: false});
        } catch (error) {
          return settle(UNAVAILABLE);
        }
        let responded = false;
        // A trailers-only answer (an error) carries grpc-status in its headers.
        stream.on("response", (h) => {
          responded = true;
          if ("grpc-status" in h) settle(Number(h["grpc-status"]));
        });
        stream.on("trailers", (t) => settle(Number(t["grpc-status"] ?? UNKNOWN)));
        stream.on("data", () => {});
        stream.on("close", () => {
          // Refused unread (sent past a GOAWAY's last stream): a gRPC client
          // sends it again, on a new connection.
          if (!responded && code === null && refusalsLeft > 0 &&
              stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
            return send(refusalsLeft - 1);
          }
          settle(stream.rstCode === http2.constants.NGHTTP2_CANCEL ? DEADLINE_EXCEEDED
                                                                  : UNAVAILABLE);
        });
        stream.on("error", () => {});
        stream.setTimeout(run.timeout_ms, () => stream.close(http2.constants.NGHTTP2_CANCEL));
        stream.end(body.framed);
      };
      send(3);
    },
    close: () => { if (session !== null) session.close(); },
  };
}

function call(done) {
  if (next >= bodies.length) throw new Error(`only ${bodies.length} bodies were prepared`);
  const body = bodies[next++];
  const callStarted = performance.now();
  inFlight++;
  const client = clients[next % clients.length];
  client.unary(body, (code) => {
    inFlight--;
    const now = performance.now();
    lines.push(`${(callStarted - started).toFixed(3)},${code},` +
               `${(now - callStarted).toFixed(3)}`);
    if (done) done();
  });
}

function closedLoop(concurrency, seconds, finished) {
  const end = started + seconds * 1000;
  let workers = concurrency;
  const again = () => {
    if (performance.now() < end) call(again);
    else if (--workers === 0) finished();
  };
  for (let n = 0; n < concurrency; n++) call(again);
}

function openLoop(phases, finished) {
  // The n-th call of a phase is due n / rate after the phase's start
  // (counted, not summed, so that rounding never adds or drops a call).
  let phase = 0;
  let phaseStart = performance.now();
  let phaseEnd = phaseStart + phases[0].seconds * 1000;
  let dueInPhase = 0;
  const tick = () => {
    const now = performance.now();
    for (;;) {
      const due = phaseStart + dueInPhase * 1000 / phases[phase].rate;
      if (due >= phaseEnd) {
        if (++phase === phases.length) return finished();
        phaseStart = phaseEnd;
        phaseEnd += phases[phase].seconds * 1000;
        dueInPhase = 0;
        continue;
      }
      if (due > now) return setTimeout(tick, due - now);
      // Past this many in flight the server is queueing, not shedding:
      // counted, not sent (so the client does not melt down instead).
      if (inFlight >= run.max_in_flight) notSent++;
      else call(null);
      dueInPhase++;
    }
  };
  tick();
}

function finish() {
  const waitForCalls = () => {
    if (inFlight > 0) return setTimeout(waitForCalls, 5);
    fs.writeFileSync(run.output, lines.join("\n") + "\n");
    const cpu = process.cpuUsage();
    process.stdout.write(JSON.stringify({calls: lines.length, not_sent: notSent,
                                         cpu_s: (cpu.user + cpu.system) / 1e6}) + "\n");
    for (const client of clients) client.close();
  };
  waitForCalls();
}

if (run.closed_loop) closedLoop(run.closed_loop.concurrency, run.closed_loop.seconds, finish);
else openLoop(run.phases, finish);
