/**
 * The stand-in for `weir:handler/host@0.2.0` on Node.js: publish records, log records.
 * Loaded in its place by testing/register.js; read through `weir/testing`.
 */

import { hostError, store } from './store.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/**
 * @param {string} subject
 * @param {Uint8Array} payload
 * @param {{ name: string, value: string }[]} headers
 */
export function publish(subject, payload, headers) {
  if (typeof subject !== 'string') throw new TypeError(`expected a string, received [${typeof subject}]`);
  if (!(payload instanceof Uint8Array)) throw new TypeError('expected a Uint8Array payload');
  const pairs = headers.map(({ name, value }) => {
    if (typeof name !== 'string' || typeof value !== 'string') throw new TypeError('expected string header names and values');
    return /** @type {[string, string]} */ ([name, value]);
  });
  if (store.publishRefusal !== undefined) throw hostError(store.publishRefusal);
  store.published.push({ subject, payload: new Uint8Array(payload), headers: pairs });
}

/**
 * @param {string} level
 * @param {string} message
 */
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`"${level}" is not one of the cases of level`);
  if (typeof message !== 'string') throw new TypeError(`expected a string, received [${typeof message}]`);
  store.logged.push([level, message]);
}
