/**
 * The partition's state: keys and values weir keeps for this deployment and partition, that
 * outlive the instance. A call sees its own writes at once; they take effect only if it acks,
 * and then exactly once. Keys are text of 1 to 256 UTF-8 bytes. A refused write throws a
 * StateError and the call goes on.
 *
 * A handler that never imports this module (nor `weir.state`) gets a component without weir's
 * state import.
 */

/** Which rule refused a write. */
export type StateErrorKind =
  | 'invalid_key'
  | 'value_too_large'
  | 'too_many_keys'
  | 'too_many_bytes'
  | 'too_many_writes';

/** A write weir refused: `kind` says which rule, `limit` the quota it hit. */
export class StateError extends Error {
  constructor(kind: StateErrorKind, limit?: bigint | number);
  name: 'StateError';
  readonly kind: StateErrorKind;
  /** The quota (bytes, keys or writes); undefined for `invalid_key`. Exact in the message. */
  readonly limit: number | undefined;
}

/** The value of `key`, or undefined if it has none. */
export function get(key: string): Uint8Array | undefined;

/** Sets `key` to `value` (bytes, or text stored as UTF-8) if this call acks. */
export function set(key: string, value: Uint8Array | ArrayBuffer | ArrayBufferView | string): void;

/** Removes `key` if this call acks. */
declare function remove(key: string): void;
export { remove as delete };

/** Every key that starts with `prefix`, in byte order, read from weir a page at a time. */
export function keys(prefix?: string): Generator<string, void, undefined>;

/** The value of `key` as UTF-8 text, or `fallback`; throws a TypeError if it is not UTF-8. */
export function getText(key: string): string | undefined;
export function getText<T>(key: string, fallback: T): string | T;

/** Sets `key` to `value` as UTF-8 text. */
export function setText(key: string, value: string): void;

/**
 * The value of `key` as a whole number stored as decimal text (as `setInt` and the other SDKs
 * store numbers), or `fallback`. Throws a RangeError past Number.MAX_SAFE_INTEGER (use
 * `getBigInt`), a TypeError if the value is not decimal text.
 */
export function getInt(key: string): number | undefined;
export function getInt<T>(key: string, fallback: T): number | T;

/** The value of `key` as a BigInt stored as decimal text, or `fallback`. */
export function getBigInt(key: string): bigint | undefined;
export function getBigInt<T>(key: string, fallback: T): bigint | T;

/** Sets `key` to a whole number (a number or a BigInt), written as decimal text. */
export function setInt(key: string, value: number | bigint): void;

/** The value of `key` decoded from JSON, or `fallback`. */
export function getJson<T = unknown>(key: string): T | undefined;
export function getJson<T = unknown, F = T>(key: string, fallback: F): T | F;

/** Sets `key` to `value` encoded as compact JSON. */
export function setJson(key: string, value: unknown): void;
