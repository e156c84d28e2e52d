/**
 * The partition's state: keys and values weir keeps for this deployment and partition, that
 * outlive the instance, the node and the version.
 *
 * A call sees its own writes at once. They take effect only if the call returns `ack()`, and
 * then exactly once: weir commits them with the fact that the message was applied, before it
 * acknowledges the message. A retry, a rejection or an exception drops them:
 *
 *     const total = weir.state.getInt('total', 0) + amount;
 *     weir.state.setInt('total', total);
 *
 * Keys are text of 1 to 256 UTF-8 bytes. A write over the tenant's quotas is refused with a
 * StateError that says which; the call goes on.
 *
 * A handler that never uses this module gets a component that does not import weir's state
 * (build.mjs leaves it out), so weir does not look up a state bucket for it.
 */

import {
  get as hostGet,
  set as hostSet,
  delete as hostDelete,
  keys as hostKeys,
} from 'weir:handler/state@0.2.0';
import { ENCODER, UTF8, bytesOf, describe, hostErrorPayload } from './internal.js';

/** Keys asked for at a time: the most weir gives. */
const PAGE = 1000;

/** @type {Record<string, (limit: bigint | number | undefined) => string>} */
const MESSAGES = {
  invalid_key: () => 'invalid state key: use 1 to 256 bytes',
  value_too_large: (n) => `state value larger than the tenant's limit of ${n} bytes`,
  too_many_keys: (n) => `the partition would hold more than the tenant's ${n} state keys`,
  too_many_bytes: (n) => `the partition's state would take more than the tenant's ${n} bytes`,
  too_many_writes: (n) => `this call has already written ${n} state keys, the most one may`,
};

/**
 * A write weir refused. `kind` is one of `invalid_key`, `value_too_large`, `too_many_keys`,
 * `too_many_bytes` and `too_many_writes`; `limit` is the quota it hit (undefined for
 * `invalid_key`).
 */
export class StateError extends Error {
  /**
   * @param {string} kind
   * @param {bigint | number} [limit]
   */
  constructor(kind, limit) {
    const message = MESSAGES[kind];
    if (message === undefined) throw new TypeError(`not a kind of state refusal: ${describe(kind)}`);
    super(message(limit));
    this.name = 'StateError';
    /** Which rule refused the write. */
    this.kind = kind;
    /** The quota it hit, as a number (exact in the message). */
    this.limit = limit === undefined ? undefined : Number(limit);
  }
}

/**
 * The StateError for what a host write threw, or what it threw if it was no refusal.
 * @param {unknown} thrown
 */
function refused(thrown) {
  const error = hostErrorPayload(thrown);
  if (error !== null && typeof error === 'object' && typeof error.tag === 'string') {
    const kind = error.tag.replaceAll('-', '_');
    if (kind in MESSAGES) return new StateError(kind, error.val);
  }
  return thrown;
}

/**
 * The value of `key`, or undefined if it has none.
 * @param {string} key
 * @returns {Uint8Array | undefined}
 */
export function get(key) {
  return hostGet(keyOf(key));
}

/**
 * Sets `key` to `value` (bytes, or text stored as UTF-8) if this call acks; throws a
 * StateError if weir refuses.
 * @param {string} key
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView | string} value
 */
export function set(key, value) {
  const k = keyOf(key);
  const bytes = bytesOf(value, 'state value');
  try {
    hostSet(k, bytes);
  } catch (thrown) {
    throw refused(thrown);
  }
}

/**
 * Removes `key` if this call acks; throws a StateError if weir refuses.
 * @param {string} key
 */
function remove(key) {
  const k = keyOf(key);
  try {
    hostDelete(k);
  } catch (thrown) {
    throw refused(thrown);
  }
}
export { remove as delete };

/**
 * Every key that starts with `prefix`, in byte order, read from weir a page at a time.
 * @param {string} [prefix]
 * @returns {Generator<string, void, undefined>}
 */
export function* keys(prefix = '') {
  if (typeof prefix !== 'string') throw new TypeError(`a key prefix is a string, not ${describe(prefix)}`);
  /** @type {string | undefined} */
  let after;
  for (;;) {
    const page = hostKeys(prefix, after, PAGE);
    yield* page;
    if (page.length < PAGE) return;
    after = page[page.length - 1];
  }
}

/**
 * The value of `key` as UTF-8 text, or `fallback`; throws a TypeError if it is not UTF-8.
 * @param {string} key
 * @param {string} [fallback]
 */
export function getText(key, fallback) {
  const value = get(key);
  return value === undefined ? fallback : UTF8.decode(value);
}

/**
 * Sets `key` to `value` as UTF-8 text.
 * @param {string} key
 * @param {string} value
 */
export function setText(key, value) {
  if (typeof value !== 'string') throw new TypeError(`setText takes a string, not ${describe(value)}`);
  set(key, ENCODER.encode(value));
}

const INTEGER = /^[+-]?[0-9]+$/;

/**
 * The decimal text of `key` (as `setInt` and the other SDKs' `set_u64`/`set_int` store it),
 * or undefined.
 * @param {string} key
 */
function integerText(key) {
  const text = getText(key);
  if (text === undefined) return undefined;
  if (!INTEGER.test(text)) {
    throw new TypeError(`state key ${JSON.stringify(key)} does not hold a whole number: ${JSON.stringify(text)}`);
  }
  return text;
}

/**
 * The value of `key` as a whole number stored as decimal text (as `setInt` and the other SDKs'
 * `set_u64` store it, so `weir state get` shows it), or `fallback`. Throws a RangeError for a
 * number past Number.MAX_SAFE_INTEGER: read those with `getBigInt`.
 * @param {string} key
 * @param {number} [fallback]
 */
export function getInt(key, fallback) {
  const text = integerText(key);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`state key ${JSON.stringify(key)} holds ${text}, too large for a number: use getBigInt`);
  }
  return value;
}

/**
 * The value of `key` as a BigInt stored as decimal text, or `fallback`.
 * @param {string} key
 * @param {bigint} [fallback]
 */
export function getBigInt(key, fallback) {
  const text = integerText(key);
  return text === undefined ? fallback : BigInt(text);
}

/**
 * Sets `key` to a whole number (a number or a BigInt), written as decimal text.
 * @param {string} key
 * @param {number | bigint} value
 */
export function setInt(key, value) {
  if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) {
    setText(key, BigInt(value).toString());
    return;
  }
  throw new TypeError(`setInt takes a whole number or a BigInt, not ${describe(value)}`);
}

/**
 * The value of `key` decoded from JSON, or `fallback`.
 * @param {string} key
 * @param {unknown} [fallback]
 */
export function getJson(key, fallback) {
  const text = getText(key);
  return text === undefined ? fallback : JSON.parse(text);
}

/**
 * Sets `key` to `value` encoded as compact JSON.
 * @param {string} key
 * @param {unknown} value
 */
export function setJson(key, value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${describe(value)} has no JSON form`);
  setText(key, text);
}

/** @param {unknown} key */
function keyOf(key) {
  if (typeof key !== 'string') throw new TypeError(`a state key is a string, not ${describe(key)}`);
  return key;
}
