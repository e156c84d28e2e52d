// The conformance vectors on Node.js, through the SDK's stand-ins (weir/testing): a check of
// the guest's own logic before the authoritative run through the real host
// (runtime/tests/integration/conformance.rs). From the repository's root:
//     node --import ./guest-sdk/js/testing/register.js --test tests/guests/js-conformance/
//
// On Node.js:
// - the stand-ins record what is published but refuse a publish only when told to, so the
//   "output refused" vectors (the host refuses the publish and fails the call, whatever the
//   guest answers) are skipped, and the guest's answer to a refusal is tested on its own;
// - a trap is an exception the test catches; the instance simply goes on.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import * as weir from 'weir';
import * as testing from 'weir/testing';

import { handle, init } from './app.js';

// The 64-bit numbers as text: JSON.parse would round those past 2**53.
const VECTORS = JSON.parse(
  readFileSync(new URL('../../conformance/vectors.json', import.meta.url), 'utf8').replace(
    /"(stream_seq|published_at)":\s*([0-9]+)/g,
    '"$1": "$2"',
  ),
);

/** A vector's payload: `payload` as UTF-8, or `payload_hex`, or none. */
function payloadOf(/** @type {any} */ fields) {
  if ('payload' in fields) return new TextEncoder().encode(fields.payload);
  return new Uint8Array(Buffer.from(fields.payload_hex ?? '', 'hex'));
}

/** The WIT record weir hands the guest for a vector's message, with the README's defaults. */
function record(/** @type {any} */ m) {
  return {
    subject: m.subject,
    payload: payloadOf(m),
    headers: (m.headers ?? []).map((/** @type {[string, string]} */ [name, value]) => ({ name, value })),
    stream: m.stream ?? 'IN',
    streamSeq: BigInt(m.stream_seq),
    partition: m.partition ?? 0,
    deliveryAttempt: m.delivery_attempt ?? 1,
    publishedAt: BigInt(m.published_at ?? '1700000000000000000'),
  };
}

/** An outcome as the vectors write it. */
function outcomeText(/** @type {weir.Outcome} */ outcome) {
  if (outcome.kind === 'retry') {
    const ns = outcome.delayNs;
    if (ns === undefined) return 'retry';
    return ns % 1_000_000n === 0n ? `retry ${ns / 1_000_000n}ms` : `retry ${ns}ns`;
  }
  if (outcome.kind === 'reject') return `reject ${outcome.reason}`;
  return outcome.kind;
}

test('init vectors', () => {
  for (const vector of VECTORS.init) {
    testing.reset();
    // Through the SDK's exports, which turn the constructor's exception into the refusal.
    const result = init(vector.config);
    assert.deepEqual(result, vector.expect.refused === undefined ? { tag: 'ok', val: undefined } : { tag: 'err', val: vector.expect.refused }, vector.name);
    assert.deepEqual(testing.logged(), vector.expect.logs ?? [], vector.name);
  }
});

test('an empty refusal is refused word for word', () => {
  assert.deepEqual(init([['refuse', '']]), { tag: 'err', val: '' });
});

test('handle vectors', (t) => {
  const table = VECTORS.handle;
  testing.reset();
  assert.deepEqual(init(table.config), { tag: 'ok', val: undefined });
  for (const vector of table.vectors) {
    const expect = vector.expect;
    if (expect.outcome === 'output refused') {
      t.diagnostic(`skipped (only the real host refuses a publish): ${vector.name}`);
      continue;
    }
    testing.reset();
    let outcome;
    try {
      outcome = outcomeText(handle(record(vector.message)));
    } catch {
      outcome = 'trap';
    }
    assert.equal(outcome, expect.outcome, vector.name);
    if (outcome === 'trap') continue; // a trap's outputs and log lines are the host's to discard
    assert.deepEqual(
      testing.published().map((p) => [p.subject, Buffer.from(p.payload).toString('hex'), p.headers]),
      (expect.outputs ?? []).map((/** @type {any} */ o) => [o.subject, Buffer.from(payloadOf(o)).toString('hex'), o.headers ?? []]),
      vector.name,
    );
    assert.deepEqual(testing.logged(), expect.logs ?? [], vector.name);
  }
});

test("a refused publish is rejected with the SDK's text, word for word", () => {
  testing.reset();
  init([]);
  for (const text of ['subject elsewhere.x is not an allowed output', '']) {
    for (const action of ['publish-to', 'echo.x', 'many', 'describe']) {
      testing.reset();
      testing.refusePublish(text);
      const outcome = handle(record({ subject: `conformance.${action}`, payload: '1', stream_seq: '1' }));
      assert.deepEqual(outcome, weir.reject(`refused: ${text}`), `${action} ${text}`);
    }
  }
});

test('what the README leaves open is done as the Rust guest does it', () => {
  init([]);
  /** @param {string} subject @param {string | number[]} payload */
  const answer = (subject, payload) => {
    testing.reset();
    return outcomeText(handle(record({ subject, stream_seq: '1', ...(typeof payload === 'string' ? { payload } : { payload_hex: Buffer.from(payload).toString('hex') }) })));
  };
  assert.equal(answer('conformance.retry-after', '+5'), 'retry 5ms');
  assert.equal(answer('conformance.retry-after', ' 5'), 'reject not a number of milliseconds:  5');
  assert.equal(answer('conformance.retry-after', '18446744073709551615'), 'retry 18446744073709551615ns');
  assert.equal(answer('conformance.retry-after', '18446744073709551616'), 'reject not a number of milliseconds: 18446744073709551616');
  assert.equal(answer('conformance.retry-after', [0xff, 0x31]), 'reject not a number of milliseconds: \ufffd1');
  assert.equal(answer('conformance.many', '4294967296'), 'reject not a count: 4294967296');
  assert.equal(answer('conformance.reject', [0xff, 0x41]), 'reject \ufffdA');
  assert.equal(answer('conformance.ack.x.y', ''), 'ack');
  assert.equal(answer('conformance.', ''), 'reject unknown action ');
});
