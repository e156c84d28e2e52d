/**
 * What the SDK's modules share; not part of its API.
 */

// Strict UTF-8 that keeps a leading byte-order mark, as Rust's `str::from_utf8` does (a
// TextDecoder drops it unless told not to).
export const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
export const ENCODER = new TextEncoder();

/**
 * The err payload of a host call that failed: the component's bindings throw an Error whose
 * own `payload` property holds it.
 * @param {unknown} thrown
 */
export function hostErrorPayload(thrown) {
  return thrown !== null && typeof thrown === 'object' && Object.hasOwn(thrown, 'payload')
    ? /** @type {any} */ (thrown).payload
    : undefined;
}

/**
 * @param {unknown} value
 * @param {string} what
 * @returns {Uint8Array}
 */
export function bytesOf(value, what) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return ENCODER.encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError(`a ${what} is text or bytes (a Uint8Array), not ${describe(value)}`);
}

/**
 * Headers as the WIT's `list<header>`.
 * @param {unknown} headers
 * @returns {{ name: string, value: string }[]}
 */
export function headerList(headers) {
  if (headers == null) return [];
  const h = /** @type {any} */ (headers);
  const entries = typeof h[Symbol.iterator] === 'function' ? h : Object.entries(h);
  const list = [];
  for (const entry of entries) {
    const [name, value] = Array.isArray(entry) ? entry : [entry?.name, entry?.value];
    if (typeof name !== 'string' || typeof value !== 'string') {
      throw new TypeError(
        `a header is a [name, value] pair or a { name, value } of strings, not ${describe(entry)}`,
      );
    }
    list.push({ name, value });
  }
  return list;
}

/** @param {unknown} value */
export function describe(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return 'an array';
  const name = value.constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}
