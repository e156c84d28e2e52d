/**
 * The stand-in for `weir:handler/state@0.2.0` on Node.js: state in a Map, keys checked as
 * weir checks them (1 to 256 UTF-8 bytes), quotas only when a test asks for a refusal
 * (`refuseWrites`). Loaded in its place by testing/register.js; read through `weir/testing`.
 */

import { hostError, store } from './store.js';

const ENCODER = new TextEncoder();

/** @param {string} key */
function validKey(key) {
  const length = ENCODER.encode(key).length;
  return length >= 1 && length <= 256;
}

/** @param {string} key */
function write(key) {
  if (!validKey(key)) throw hostError({ tag: 'invalid-key' });
  if (store.writeRefusal !== undefined) throw hostError(store.writeRefusal);
}

/** @param {string} key */
export function get(key) {
  const value = validKey(key) ? store.kept.get(key) : undefined;
  return value === undefined ? undefined : new Uint8Array(value);
}

/**
 * @param {string} key
 * @param {Uint8Array} value
 */
export function set(key, value) {
  write(key);
  store.kept.set(key, new Uint8Array(value));
}

/** @param {string} key */
function remove(key) {
  write(key);
  store.kept.delete(key);
}
export { remove as delete };

/**
 * Byte order of UTF-8 strings, as weir lists keys.
 * @param {string} a
 * @param {string} b
 */
export function compareBytes(a, b) {
  const x = ENCODER.encode(a);
  const y = ENCODER.encode(b);
  for (let i = 0; i < x.length && i < y.length; i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/**
 * @param {string} prefix
 * @param {string | undefined} after
 * @param {number} limit
 */
export function keys(prefix, after, limit) {
  return [...store.kept.keys()]
    .filter((k) => k.startsWith(prefix) && (after === undefined || compareBytes(k, after) > 0))
    .sort(compareBytes)
    .slice(0, Math.min(limit, 1000));
}
