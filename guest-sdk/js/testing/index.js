/**
 * For a handler's unit tests on Node.js: what it published, logged and keeps in state, held
 * in memory in place of weir's host. Run the tests with the stand-ins registered:
 *
 *     node --import weir/testing/register --test
 *
 * (or `--import ./path/to/guest-sdk/js/testing/register.js`). Inside a component none of
 * this is used: the stand-ins are what `weir:handler/*` resolve to only under Node.js.
 */

import { store } from './store.js';

const KINDS = {
  invalid_key: 'invalid-key',
  value_too_large: 'value-too-large',
  too_many_keys: 'too-many-keys',
  too_many_bytes: 'too-many-bytes',
  too_many_writes: 'too-many-writes',
};

/**
 * Everything published since the last `reset`, in order, as `{ subject, payload, headers }`
 * with headers as `[name, value]` pairs.
 */
export function published() {
  return store.published.map(({ subject, payload, headers }) => ({
    subject,
    payload: new Uint8Array(payload),
    headers: headers.map(([name, value]) => /** @type {[string, string]} */ ([name, value])),
  }));
}

/** Every line logged since the last `reset`, in order, as `[level, text]`. */
export function logged() {
  return store.logged.map(([level, text]) => /** @type {[string, string]} */ ([level, text]));
}

/**
 * The state, as a Map of key to bytes in key order. Unlike weir, a call that does not ack keeps
 * its writes here: tests check what a handler writes, not weir's commit.
 */
export function kept() {
  const keys = [...store.kept.keys()].sort((a, b) => compareBytes(a, b));
  return new Map(keys.map((k) => [k, new Uint8Array(/** @type {Uint8Array} */ (store.kept.get(k)))]));
}

/**
 * From now until `reset`, weir refuses every publish with `reason` (as it refuses a subject
 * the deployment may not publish to); `undefined` takes them again.
 * @param {string | undefined} reason
 */
export function refusePublish(reason) {
  store.publishRefusal = reason === undefined ? undefined : String(reason);
}

/**
 * From now until `reset`, weir refuses every state write (set and delete) with a StateError of
 * `kind` and `limit`; `undefined` takes them again.
 * @param {keyof typeof KINDS | undefined} kind
 * @param {number | bigint} [limit]
 */
export function refuseWrites(kind, limit) {
  if (kind === undefined) {
    store.writeRefusal = undefined;
    return;
  }
  const tag = KINDS[kind];
  if (tag === undefined) throw new TypeError(`not a kind of state refusal: ${kind}`);
  if (tag === 'invalid-key') {
    store.writeRefusal = { tag };
  } else {
    const val = tag === 'too-many-writes' ? Number(limit ?? 0) : BigInt(limit ?? 0);
    store.writeRefusal = { tag, val };
  }
}

/** Forgets what was published and logged, empties the state and takes every write again. */
export function reset() {
  store.published.length = 0;
  store.logged.length = 0;
  store.kept.clear();
  store.publishRefusal = undefined;
  store.writeRefusal = undefined;
}

const ENCODER = new TextEncoder();

/**
 * @param {string} a
 * @param {string} b
 */
function compareBytes(a, b) {
  const x = ENCODER.encode(a);
  const y = ENCODER.encode(b);
  for (let i = 0; i < x.length && i < y.length; i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}
