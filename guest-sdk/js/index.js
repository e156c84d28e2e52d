/**
 * Write weir handlers in JavaScript (or TypeScript).
 *
 * A handler is a class: weir makes one instance of it per partition, with the deployment's
 * configuration, and hands it the partition's messages one at a time, in order. What `handle`
 * returns decides what becomes of the message:
 *
 *     import * as weir from 'weir';
 *
 *     class Echo {
 *       constructor(config) {
 *         this.prefix = config.get('output_prefix', 'out');
 *       }
 *       handle(msg) {
 *         weir.publish(`${this.prefix}.${msg.subject}`, msg.payload);
 *         return weir.ack();
 *       }
 *     }
 *
 *     export const { init, handle } = weir.handler(Echo);
 *
 * Build it into a component with `node guest-sdk/js/build.mjs app.js app.wasm` (componentize-js,
 * after bundling the handler and this package into one module).
 *
 * Throwing in the constructor refuses the configuration, with the error's message (`weir
 * deploy` says why). Throwing in `handle` is a trap: the call's outputs and state changes are
 * dropped, the instance is replaced and the message is retried. Outside a component (a
 * handler's own unit tests, on Node.js 20 or later) the same code runs against the in-memory
 * stand-ins of `weir/testing`: `node --import weir/testing/register --test`.
 *
 * Standard library only; every host call goes through the `weir:handler/*` modules that
 * componentize-js generates from weir's WIT.
 */

import { publish as hostPublish, log as hostLog } from 'weir:handler/host@0.2.0';
import { UTF8, bytesOf, describe, headerList, hostErrorPayload } from './internal.js';

export * as state from './state.js';
export { StateError } from './state.js';

const U64_MAX = (1n << 64n) - 1n;
const NS_PER_MS = 1_000_000n;

/**
 * The deployment's configuration (`weir deploy --config key=value`): a Map of key to value,
 * each key once, in the order weir gives them (sorted by key). `get(key, fallback)` returns
 * `fallback` for a key that is not set.
 */
export class Config extends Map {
  /** @param {Iterable<[string, string]> | Record<string, string>} [pairs] */
  constructor(pairs) {
    super();
    if (pairs == null) return;
    const entries =
      typeof pairs[Symbol.iterator] === 'function' ? pairs : Object.entries(pairs);
    for (const pair of entries) {
      const [key, value] = pair;
      if (typeof key !== 'string' || typeof value !== 'string') {
        throw new TypeError(`a configuration pair is two strings, not ${describe(pair)}`);
      }
      this.set(key, value);
    }
  }

  /**
   * The value of `key`, or `fallback` if it is not set.
   * @param {string} key
   * @param {string} [fallback]
   */
  get(key, fallback) {
    return super.has(key) ? super.get(key) : fallback;
  }
}

/** One delivery of an input message, as stored in the input stream. */
export class Message {
  /**
   * Made by weir for each delivery; in tests, from any of the fields (the rest take their
   * defaults): `new Message({ subject: 'orders.c1.created', payload: '{}' })`. `payload` may be
   * given as text (stored as UTF-8), `headers` as `[name, value]` pairs, the 64-bit numbers as
   * numbers.
   * @param {object} fields
   */
  constructor({
    subject,
    payload = new Uint8Array(0),
    headers = [],
    stream = '',
    streamSeq = 0n,
    partition = 0,
    deliveryAttempt = 1,
    publishedAt = 0n,
  } = /** @type {any} */ ({})) {
    if (typeof subject !== 'string') {
      throw new TypeError(`a message's subject is a string, not ${describe(subject)}`);
    }
    /** The subject it was published on, without weir's partition token. */
    this.subject = subject;
    /** The body, unchanged. */
    this.payload = bytesOf(payload, 'payload');
    /** The headers the publisher set, in the order they arrived; a name may repeat. */
    this.headers = headerList(headers);
    /** The name of the input stream. */
    this.stream = stream;
    /** Its sequence number in the input stream (a BigInt: it may pass 2**53). */
    this.streamSeq = BigInt(streamSeq);
    /** The partition, `0..partitions`. */
    this.partition = partition;
    /** 1 on the first delivery, 2 on the first retry, and so on. */
    this.deliveryAttempt = deliveryAttempt;
    /** When the stream stored it, in nanoseconds since the Unix epoch (a BigInt). */
    this.publishedAt = BigInt(publishedAt);
  }

  /**
   * The first value of header `name` (case-sensitive), or undefined.
   * @param {string} name
   */
  header(name) {
    for (const header of this.headers) {
      if (header.name === name) return header.value;
    }
    return undefined;
  }

  /** The payload as UTF-8 text; throws a TypeError if it is not UTF-8. */
  text() {
    return UTF8.decode(this.payload);
  }
}

/** What a handler made of a message: make one with `ack`, `retry` or `reject`. */
export class Outcome {
  /**
   * @param {'ack' | 'retry' | 'reject'} tag
   * @param {bigint | string | undefined} [val] the retry delay in nanoseconds, or the reason
   */
  constructor(tag, val) {
    /** The WIT variant's case, as the component's bindings read it. */
    this.tag = tag;
    /** Its payload: the retry's delay in nanoseconds (or undefined), or the reason. */
    this.val = val;
    Object.freeze(this);
  }

  /** `ack`, `retry` or `reject`. */
  get kind() {
    return this.tag;
  }

  /** For a retry, the delay in nanoseconds; undefined for the deployment's backoff. */
  get delayNs() {
    return this.tag === 'retry' ? /** @type {bigint | undefined} */ (this.val) : undefined;
  }

  /** For a rejection, why. */
  get reason() {
    return this.tag === 'reject' ? /** @type {string} */ (this.val) : undefined;
  }

  toString() {
    if (this.tag === 'retry') {
      if (this.val === undefined) return 'retry';
      const ns = /** @type {bigint} */ (this.val);
      return ns % NS_PER_MS === 0n ? `retry after ${ns / NS_PER_MS}ms` : `retry after ${ns}ns`;
    }
    if (this.tag === 'reject') return `reject: ${this.val}`;
    return 'ack';
  }
}

const ACK = new Outcome('ack');
const RETRY = new Outcome('retry');

/**
 * Done: the message is acknowledged, after the call's outputs and state changes are stored.
 */
export function ack() {
  return ACK;
}

/**
 * Try again: after `delayMs` milliseconds (a number, fractions down to the nanosecond, or a
 * BigInt), or after the deployment's backoff for this delivery attempt when none is given. The
 * call's outputs and state changes are dropped, and later messages of the partition wait. A
 * delay past 2**64 - 1 ns (584 years) is that long.
 * @param {number | bigint} [delayMs]
 */
export function retry(delayMs) {
  if (delayMs == null) return RETRY;
  let ns;
  if (typeof delayMs === 'bigint') {
    if (delayMs < 0n) throw new RangeError(`a retry delay cannot be negative: ${delayMs}ms`);
    ns = delayMs * NS_PER_MS;
  } else if (typeof delayMs === 'number') {
    if (!(delayMs >= 0) || delayMs === Infinity) {
      throw new RangeError(
        `a retry delay is a number of milliseconds, finite and not negative, not ${delayMs}`,
      );
    }
    const whole = Math.trunc(delayMs);
    ns = BigInt(whole) * NS_PER_MS + BigInt(Math.round((delayMs - whole) * 1e6));
  } else {
    throw new TypeError(`a retry delay is a number of milliseconds, not ${describe(delayMs)}`);
  }
  return new Outcome('retry', ns > U64_MAX ? U64_MAX : ns);
}

/**
 * Never retry: the message becomes a dead letter, with `reason`.
 * @param {string} reason
 */
export function reject(reason) {
  return new Outcome('reject', String(reason));
}

/**
 * weir refused a publish (a subject or header the deployment may not use, or too many
 * outputs); `message` is weir's text. The call has failed already: it is retried like a trap,
 * whatever it returns.
 */
export class PublishError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'PublishError';
  }
}

/**
 * Publishes `payload` (text is sent as UTF-8) to `subject`, with `headers`, if this call ends
 * in `ack`; throws a PublishError if weir refuses it. `headers` is a list of `[name, value]`
 * pairs or `{ name, value }` objects (a name may repeat), or a Map or object of name to value.
 * @param {string} subject
 * @param {string | Uint8Array | ArrayBuffer | ArrayBufferView} [payload]
 * @param {Iterable<[string, string] | { name: string, value: string }> | Record<string, string>} [headers]
 */
export function publish(subject, payload, headers) {
  if (typeof subject !== 'string') {
    throw new TypeError(`a subject is a string, not ${describe(subject)}`);
  }
  const bytes = payload == null ? new Uint8Array(0) : bytesOf(payload, 'payload');
  const list = headerList(headers);
  try {
    hostPublish(subject, bytes, list);
  } catch (refused) {
    const text = hostErrorPayload(refused);
    if (typeof text === 'string') throw new PublishError(text);
    throw refused;
  }
}

/** The log levels, as weir's WIT names them. */
export const LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error']);

/**
 * Writes a line to the node's log (and `weir logs`), tagged with tenant, handler, partition
 * and stream sequence. `level` is one of `trace`, `debug`, `info`, `warn` and `error`.
 * @param {'trace' | 'debug' | 'info' | 'warn' | 'error'} level
 * @param {string} message
 */
export function log(level, message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`a log level is one of ${LEVELS.join(', ')}, not ${describe(level)}`);
  }
  hostLog(level, String(message));
}

/** @param {string} message */
export function debug(message) {
  log('debug', message);
}

/** @param {string} message */
export function info(message) {
  log('info', message);
}

/** @param {string} message */
export function warn(message) {
  log('warn', message);
}

/** @param {string} message */
export function error(message) {
  log('error', message);
}

/**
 * The component's exports for the handler `factory`: a class whose constructor takes the
 * Config (or a function that takes it and returns the handler), with `handle(msg)` returning
 * `ack()`, `retry()` or `reject()`. Export both from the component's main module:
 *
 *     export const { init, handle } = weir.handler(MyHandler);
 *
 * `init` returns the WIT's `result` (`{ tag: 'err', val: why }` when the factory throws);
 * `handle` returns the outcome and throws (a trap) when the handler does.
 * @param {Function} factory
 */
export function handler(factory) {
  if (typeof factory !== 'function') {
    throw new TypeError(
      `weir.handler takes the handler's class (or a function from Config to handler), not ${describe(factory)}`,
    );
  }
  /** @type {{ handle(msg: Message): unknown } | undefined} */
  let instance;
  return {
    /** @param {Iterable<[string, string]>} config */
    init(config) {
      instance = undefined;
      let made;
      try {
        const cfg = new Config(config);
        // A class (or a plain function) is called with `new`, an arrow function without.
        made = factory.prototype === undefined ? factory(cfg) : new /** @type {any} */ (factory)(cfg);
      } catch (refused) {
        // weir refuses the configuration with the error's message, word for word.
        return { tag: 'err', val: messageOf(refused) };
      }
      if (made === null || typeof made !== 'object' || typeof made.handle !== 'function') {
        return {
          tag: 'err',
          val: `${factory.name || 'the handler factory'} made ${describe(made)}, which has no handle(msg) method`,
        };
      }
      instance = made;
      return { tag: 'ok', val: undefined };
    },

    /** @param {Message | ConstructorParameters<typeof Message>[0]} msg */
    handle(msg) {
      if (instance === undefined) {
        throw new Error('weir: handle called before a successful init');
      }
      const outcome = instance.handle(msg instanceof Message ? msg : new Message(msg));
      return checkedOutcome(outcome);
    },
  };
}

/**
 * `outcome` if it is one the WIT can carry (an Outcome, or an object of the same shape),
 * else a TypeError: the handler returned something else, a bug that traps.
 * @param {unknown} outcome
 * @returns {Outcome}
 */
function checkedOutcome(outcome) {
  const o = /** @type {any} */ (outcome);
  if (o !== null && typeof o === 'object') {
    if (o.tag === 'ack') return ACK;
    if (o.tag === 'reject' && typeof o.val === 'string') {
      return o instanceof Outcome ? o : new Outcome('reject', o.val);
    }
    if (o.tag === 'retry') {
      if (o.val === undefined) return RETRY;
      if (typeof o.val === 'bigint' && o.val >= 0n && o.val <= U64_MAX) {
        return o instanceof Outcome ? o : new Outcome('retry', o.val);
      }
    }
  }
  if (o !== null && typeof o === 'object' && typeof o.then === 'function') {
    throw new TypeError('handle must return an outcome, not a Promise: handlers are synchronous');
  }
  throw new TypeError(
    `handle must return weir.ack(), weir.retry() or weir.reject(), not ${describe(outcome)}`,
  );
}

/**
 * The text weir gets when an init refuses: an Error's message, a thrown string as it is.
 * @param {unknown} thrown
 */
function messageOf(thrown) {
  if (thrown instanceof Error) return String(thrown.message);
  if (typeof thrown === 'string') return thrown;
  const message = /** @type {any} */ (thrown)?.message;
  return typeof message === 'string' ? message : String(thrown);
}

