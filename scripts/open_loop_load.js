// A unary load generator in Node.js (@grpc/grpc-js, from clients/node), for
// the overload run: it costs the shared 2 cores far less per call than the
// Python one, so what saturates is the server, not the load generator.
// Bodies are prepared by the caller (one per call, each with its own
// idempotency key) as a file of 4-byte big-endian lengths and bytes; this
// sends them raw, closed loop (`concurrency` in flight for `seconds`) or open
// loop (each phase's `rate` per second for its `seconds`, whatever the
// latency), and writes one line per call: started_ms,status_code,latency_ms.
// Usage: node scripts/open_loop_load.js <run.json>   (see reliability_overload.py)
"use strict";

const fs = require("fs");
const path = require("path");

const grpc = require(path.join(__dirname, "..", "clients", "node", "node_modules",
                               "@grpc", "grpc-js"));

const run = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const bodies = readBodies(run.bodies);
// `connections` clients, each with a connection of its own (grpc-js shares
// one between clients otherwise), taken in turn: with `serve --workers N` the
// kernel spreads connections, not calls, over the workers.
const clients = Array.from({length: run.connections || 1}, () => new grpc.Client(
  run.target, grpc.credentials.createInsecure(), {"grpc.use_local_subchannel_pool": 1}));
const metadata = new grpc.Metadata();
for (const [key, value] of run.metadata) metadata.set(key, value);
const raw = (buffer) => buffer;
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
    found.push(data.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return found;
}

function call(done) {
  if (next >= bodies.length) throw new Error(`only ${bodies.length} bodies were prepared`);
  const body = bodies[next++];
  const callStarted = performance.now();
  inFlight++;
  const client = clients[next % clients.length];
  client.makeUnaryRequest(run.method, raw, raw, body, metadata,
                          {deadline: Date.now() + run.timeout_ms}, (error) => {
    inFlight--;
    const now = performance.now();
    lines.push(`${(callStarted - started).toFixed(3)},${error ? error.code : 0},` +
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
  let due = performance.now();
  let phase = 0;
  let phaseEnd = due + phases[0].seconds * 1000;
  const tick = () => {
    const now = performance.now();
    while (due <= now) {
      if (due >= phaseEnd) {
        if (++phase === phases.length) return finished();
        phaseEnd += phases[phase].seconds * 1000;
        continue;
      }
      // Past this many in flight the server is queueing, not shedding:
      // counted, not sent (so the client does not melt down instead).
      if (inFlight >= run.max_in_flight) notSent++;
      else call(null);
      due += 1000 / phases[phase].rate;
    }
    setTimeout(tick, Math.max(0, due - performance.now()));
  };
  tick();
}

function finish() {
  const waitForCalls = () => {
    if (inFlight > 0) return setTimeout(waitForCalls, 5);
    fs.writeFileSync(run.output, lines.join("\n") + "\n");
    process.stdout.write(JSON.stringify({calls: lines.length, not_sent: notSent}) + "\n");
    for (const client of clients) client.close();
  };
  waitForCalls();
}

if (run.closed_loop) closedLoop(run.closed_loop.concurrency, run.closed_loop.seconds, finish);
else openLoop(run.phases, finish);
