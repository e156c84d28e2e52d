/**
 * Write weir handlers in JavaScript or TypeScript: a class whose constructor takes the
 * deployment's Config and whose `handle(msg)` returns `ack()`, `retry()` or `reject()`.
 *
 * ```ts
 * import * as weir from 'weir';
 *
 * class Echo implements weir.Handler {
 *   prefix: string;
 *   constructor(config: weir.Config) {
 *     this.prefix = config.get('output_prefix', 'out');
 *   }
 *   handle(msg: weir.Message): weir.Outcome {
 *     weir.publish(`${this.prefix}.${msg.subject}`, msg.payload);
 *     return weir.ack();
 *   }
 * }
 *
 * export const { init, handle } = weir.handler(Echo);
 * ```
 */

export * as state from './state.js';
export { StateError } from './state.js';

/**
 * The deployment's configuration (`weir deploy --config key=value`): a Map of key to value,
 * each key once, in the order weir gives them (sorted by key).
 */
export class Config extends Map<string, string> {
  /** From `[key, value]` pairs or an object of key to value (in tests). */
  constructor(pairs?: Iterable<readonly [string, string]> | Record<string, string>);
  /** The value of `key`, or undefined if it is not set. */
  get(key: string): string | undefined;
  /** The value of `key`, or `fallback` if it is not set. */
  get(key: string, fallback: string): string;
  get<T>(key: string, fallback: T): string | T;
}

/** One message header. A name may appear more than once in a list of headers. */
export interface Header {
  name: string;
  value: string;
}

/** Headers to publish: pairs or `{ name, value }` objects (a name may repeat), or a map of them. */
export type HeadersInit =
  | Iterable<readonly [string, string] | Header>
  | ReadonlyMap<string, string>
  | Record<string, string>;

/** Bytes, or text (sent as UTF-8). */
export type Payload = string | Uint8Array | ArrayBuffer | ArrayBufferView;

/** The fields of a Message, for making one in tests: only `subject` is needed. */
export interface MessageInit {
  subject: string;
  /** Bytes, or text stored as UTF-8; default empty. */
  payload?: Payload;
  /** Default none. */
  headers?: Iterable<readonly [string, string] | Header>;
  /** Default `''`. */
  stream?: string;
  /** Default 0. */
  streamSeq?: bigint | number;
  /** Default 0. */
  partition?: number;
  /** Default 1. */
  deliveryAttempt?: number;
  /** Default 0. */
  publishedAt?: bigint | number;
}

/** One delivery of an input message, as stored in the input stream. */
export class Message {
  constructor(fields: MessageInit);
  /** The subject it was published on, without weir's partition token (`orders.c42.created`). */
  subject: string;
  /** The body, unchanged. */
  payload: Uint8Array;
  /** The headers the publisher set, in the order they arrived; a name may repeat. */
  headers: Header[];
  /** The name of the input stream. */
  stream: string;
  /** Its sequence number in the input stream; unique within the stream. */
  streamSeq: bigint;
  /** The partition, `0..partitions`. */
  partition: number;
  /** 1 on the first delivery, 2 on the first retry, and so on. */
  deliveryAttempt: number;
  /** When the stream stored it, in nanoseconds since the Unix epoch (UTC). */
  publishedAt: bigint;
  /** The first value of header `name` (case-sensitive), or undefined. */
  header(name: string): string | undefined;
  /** The payload as UTF-8 text; throws a TypeError if it is not UTF-8. */
  text(): string;
}

/** What a handler made of a message: make one with `ack`, `retry` or `reject`. */
export class Outcome {
  constructor(tag: 'ack' | 'retry' | 'reject', val?: bigint | string);
  /** The WIT variant's case. */
  readonly tag: 'ack' | 'retry' | 'reject';
  /** The retry's delay in nanoseconds (undefined: the deployment's backoff), or the reason. */
  readonly val: bigint | string | undefined;
  /** `ack`, `retry` or `reject`. */
  readonly kind: 'ack' | 'retry' | 'reject';
  /** For a retry, the delay in nanoseconds; undefined for the deployment's backoff. */
  readonly delayNs: bigint | undefined;
  /** For a rejection, why. */
  readonly reason: string | undefined;
  toString(): string;
}

/** Done: the message is acknowledged, after the call's outputs and state changes are stored. */
export function ack(): Outcome;

/**
 * Try again: after `delayMs` milliseconds (a number, fractions down to the nanosecond, or a
 * BigInt), or after the deployment's backoff when none is given. The call's outputs and state
 * changes are dropped, and later messages of the partition wait. Throws a RangeError for a
 * negative, NaN or infinite delay; one past 2**64 - 1 ns is that long.
 */
export function retry(delayMs?: number | bigint): Outcome;

/** Never retry: the message becomes a dead letter, with `reason`. */
export function reject(reason: string): Outcome;

/**
 * weir refused a publish; `message` is weir's text. The call has failed already: it is retried
 * like a trap, whatever it returns.
 */
export class PublishError extends Error {
  constructor(message: string);
  name: 'PublishError';
}

/**
 * Publishes `payload` to `subject`, with `headers`, if this call ends in `ack`; throws a
 * PublishError if weir refuses it (a subject or header the deployment may not use, too many
 * outputs).
 */
export function publish(subject: string, payload?: Payload, headers?: HeadersInit): void;

/** How much a log line matters. */
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** The log levels, least first. */
export const LEVELS: readonly Level[];

/** Writes a line to the node's log (and `weir logs`), tagged with tenant, handler, partition and sequence. */
export function log(level: Level, message: string): void;
export function debug(message: string): void;
export function info(message: string): void;
export function warn(message: string): void;
export function error(message: string): void;

/** What `handle` may return. */
export type OutcomeLike =
  | Outcome
  | { tag: 'ack' }
  | { tag: 'retry'; val?: bigint }
  | { tag: 'reject'; val: string };

/** A handler: made once per instance from the Config, then handed messages one at a time. */
export interface Handler {
  handle(msg: Message): OutcomeLike;
}

/** A handler's class, or a function from Config to handler. */
export type HandlerFactory = (new (config: Config) => Handler) | ((config: Config) => Handler);

/** A WIT message record, as weir hands it to the component. */
export interface MessageRecord {
  subject: string;
  payload: Uint8Array;
  headers: Header[];
  stream: string;
  streamSeq: bigint;
  partition: number;
  deliveryAttempt: number;
  publishedAt: bigint;
}

/** The component's exports. */
export interface Exports {
  /**
   * Makes the handler from the configuration; `{ tag: 'err', val }` when its constructor
   * throws, with the error's message.
   */
  init(config: Iterable<readonly [string, string]>): { tag: 'ok'; val: undefined } | { tag: 'err'; val: string };
  /** The handler's outcome for a message; throws (a trap) when the handler throws. */
  handle(msg: MessageRecord | Message | MessageInit): Outcome;
}

/**
 * The component's exports for `factory`: `export const { init, handle } = weir.handler(MyHandler);`
 */
export function handler(factory: HandlerFactory): Exports;
