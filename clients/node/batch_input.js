'use strict';
// Batch transactions from a CSV or JSON Lines file, read lazily (files of
// any size), or generated. Columns / keys: reference, payee, currency,
// amount_minor, optional channel and requested_at (ISO 8601).

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { UsageError } = require('./paygrid_client');

const DIGITS = /^[0-9]+$/;

/**
 * amount_minor as the decimal string the int64 field takes. A value that is
 * not a whole number of minor units (12.50, "abc", a JSON number past 2^53
 * that JSON.parse already rounded) becomes "0": the server then rejects that
 * item, with its reference, and the rest of the batch goes on. Never rounded.
 */
function amountMinor(value) {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? String(value) : '0';
  const text = String(value ?? '').trim();
  return DIGITS.test(text) ? text : '0';
}

/** ISO 8601 text as a google.protobuf.Timestamp, or undefined when absent. */
function timestamp(text, where) {
  if (!text) return undefined;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) {
    throw new UsageError(`${where}: requested_at is not an ISO 8601 time: ${text}`);
  }
  const msInSecond = ((ms % 1000) + 1000) % 1000;
  return { seconds: String((ms - msInSecond) / 1000), nanos: msInSecond * 1e6 };
}

/** A BatchTransaction (proto-loader object) from one row; field checks are the server's. */
function transaction(row, where) {
  return {
    reference: String(row.reference ?? ''),
    payee: String(row.payee ?? ''),
    amount: { currency: String(row.currency ?? ''), amount_minor: amountMinor(row.amount_minor) },
    channel: String(row.channel ?? ''),
    requested_at: timestamp(row.requested_at, where),
  };
}

/**
 * Fields of one CSV line (RFC 4180 quoting: "a,b" and "" for a quote).
 * A quoted field may not span lines.
 */
function csvFields(line, where) {
  const fields = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const char = line[i];
    if (quoted) {
      if (char === '"' && line[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (char === '"') {
        quoted = false;
      } else {
        field += char;
      }
    } else if (char === '"') {
      quoted = true;
    } else if (char === ',') {
      fields.push(field);
      field = '';
    } else {
      field += char;
    }
  }
  if (quoted) throw new UsageError(`${where}: unterminated quoted field`);
  fields.push(field);
  return fields;
}

async function* lines(file) {
  const input = readline.createInterface({
    input: fs.createReadStream(file), crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of input) {
    lineNo += 1;
    if (line.trim()) yield { line, where: `${file}:${lineNo}` };
  }
}

async function* csvRows(file) {
  let columns = null;
  for await (const { line, where } of lines(file)) {
    const fields = csvFields(line, where);
    if (columns === null) {
      columns = fields.map((name) => name.trim());
      continue;
    }
    yield { row: Object.fromEntries(columns.map((name, i) => [name, fields[i]])), where };
  }
}

async function* jsonLinesRows(file) {
  for await (const { line, where } of lines(file)) {
    let row;
    try {
      row = JSON.parse(line);
    } catch (error) {
      throw new UsageError(`${where}: not JSON: ${error.message}`);
    }
    if (row === null || typeof row !== 'object' || Array.isArray(row)) {
      throw new UsageError(`${where}: expected a JSON object`);
    }
    yield { row, where };
  }
}

/** Transactions of a .csv or .jsonl/.ndjson file, in file order. */
async function* fileTransactions(file) {
  const extension = path.extname(file).toLowerCase();
  let rows;
  if (extension === '.csv') rows = csvRows(file);
  else if (extension === '.jsonl' || extension === '.ndjson') rows = jsonLinesRows(file);
  else throw new UsageError(`${file}: expected a .csv, .jsonl or .ndjson file`);
  for await (const { row, where } of rows) yield transaction(row, where);
}

/** `count` distinct transactions (item-000001 to payee_000001, ...), for trials and load. */
function* generatedTransactions(count, { currency, amountMinor: amount, channel = '' }) {
  const width = Math.max(6, String(count).length);
  for (let i = 1; i <= count; i += 1) {
    const n = String(i).padStart(width, '0');
    yield {
      reference: `item-${n}`,
      payee: `payee_${n}`,
      amount: { currency, amount_minor: amountMinor(amount) },
      channel,
    };
  }
}

module.exports = { amountMinor, csvFields, fileTransactions, generatedTransactions };
