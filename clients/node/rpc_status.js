'use strict';
// Reads the google.rpc.Status that paygrid attaches to every error
// (trailer `grpc-status-details-bin`) and turns its details into plain JSON.

const protobuf = require('protobufjs');

// Only the google.rpc messages paygrid sends, with their googleapis field
// numbers; fields not listed are skipped when decoding, so newer servers are fine.
const ANY_PROTO = `
syntax = "proto3";
package google.protobuf;
message Any { string type_url = 1; bytes value = 2; }
message Duration { int64 seconds = 1; int32 nanos = 2; }
`;
const RPC_PROTO = `
syntax = "proto3";
package google.rpc;
message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message RetryInfo { google.protobuf.Duration retry_delay = 1; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; string reason = 3; }
  repeated FieldViolation field_violations = 1;
}
message PreconditionFailure {
  message Violation { string type = 1; string subject = 2; string description = 3; }
  repeated Violation violations = 1;
}
message ResourceInfo {
  string resource_type = 1; string resource_name = 2; string owner = 3; string description = 4;
}
`;
const DETAILS_TRAILER = 'grpc-status-details-bin';

const root = new protobuf.Root();
protobuf.parse(ANY_PROTO, root, { keepCase: true });
protobuf.parse(RPC_PROTO, root, { keepCase: true });
const Status = root.lookupType('google.rpc.Status');
const TO_OBJECT = { longs: String, defaults: true, arrays: true, objects: true };

function durationMs({ seconds, nanos }) {
  return Number(seconds) * 1000 + nanos / 1e6;
}

/** One detail as {"type": "google.rpc.BadRequest", ...its fields}; other types by name only. */
function decodeDetail({ type_url, value }) {
  const typeName = type_url.slice(type_url.lastIndexOf('/') + 1);
  const type = root.lookup(typeName);
  if (!(type instanceof protobuf.Type) || !typeName.startsWith('google.rpc.')) {
    return { type: typeName };
  }
  const fields = type.toObject(type.decode(value), TO_OBJECT);
  if (typeName === 'google.rpc.RetryInfo') {
    const delay = fields.retry_delay ?? { seconds: 0, nanos: 0 };
    return { type: typeName, retry_delay_ms: durationMs(delay) };
  }
  return { type: typeName, ...fields };
}

/** The error's google.rpc details as JSON objects; [] when there are none or they do not decode. */
function errorDetails(error) {
  const encoded = error.metadata?.get(DETAILS_TRAILER)?.[0];
  if (!encoded) return [];
  try {
    return Status.decode(encoded).details.map(decodeDetail);
  } catch {
    return []; // the status code and message still say what went wrong
  }
}

/** The delay the server asks for in a RetryInfo, or null. */
function retryDelayMs(error) {
  const info = errorDetails(error).find((detail) => detail.type === 'google.rpc.RetryInfo');
  return info ? info.retry_delay_ms : null;
}

module.exports = { errorDetails, retryDelayMs };
