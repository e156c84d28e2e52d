/**
 * Order events in and out, read and written as the Rust orders example's serde derive and
 * serde_json read and write them (examples/orders/src/lib.rs): the same payloads are accepted
 * and refused, and an enriched event is the same bytes. JSON.parse would not do: it lets a
 * repeated field win, takes lone surrogates, reads numbers past 2**53 inexactly and knows
 * nothing of serde's array form of a struct.
 *
 * Read from the payload's bytes, as serde_json::from_slice reads them:
 * - a struct is an object with its fields by exact name (unknown ones skipped, a known one given
 *   twice refused, `seq` and `payment` optional, `payment` null as absent) or an array of its
 *   fields in order (the optional ones may be left off the end);
 * - integers are plain decimal (no sign, fraction or exponent, no leading zero) up to the
 *   field's type: 4294967295 for `qty`, 18446744073709551615 for `seq` and `price_cents`
 *   (BigInts: a JS number stops being exact at 2**53);
 * - a string field must be valid UTF-8 with paired surrogate escapes; a skipped value only has
 *   to be JSON (its strings are not checked for UTF-8 or surrogates, as serde_json does not
 *   check them);
 * - only whitespace may follow the value.
 * An error's text reads like serde_json's; what follows "malformed order:" is not promised to
 * be the same.
 */

const U32_MAX = 0xffff_ffffn;
const U64_MAX = (1n << 64n) - 1n;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const ASCII = new TextDecoder();
const LOSSY = new TextDecoder('utf-8', { ignoreBOM: true });
const CONTROL = /[\u0000-\u001f]/;
const ENCODER = new TextEncoder();

// Bytes, by name.
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** The payload is not an order. */
export class Malformed extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'Malformed';
  }
}

/**
 * @typedef {{ sku: string, qty: number, priceCents: bigint }} Item
 * @typedef {{ orderId: string, customer: string, seq: bigint, items: Item[], payment: string | null }} Order
 */

/** @param {number} c */
const isDigit = (c) => c >= ZERO && c <= NINE;

/** A cursor over the payload, with serde_json's errors. */
class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.i = 0;
  }

  /** Skips whitespace; the next byte, not taken, or -1 at the end. */
  peek() {
    const b = this.bytes;
    let i = this.i;
    while (i < b.length) {
      const c = b[i];
      if (c !== 0x20 && c !== 0x0a && c !== 0x09 && c !== 0x0d) break;
      i++;
    }
    this.i = i;
    return i < b.length ? b[i] : -1;
  }

  /**
   * An error at byte `at` (default: the next one), with serde_json's line and column.
   * @param {string} what
   * @param {number} [at]
   */
  error(what, at = this.i) {
    const b = this.bytes;
    const end = Math.min(at + 1, b.length);
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < end; i++) {
      if (b[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    return new Malformed(`${what} at line ${line} column ${end - lineStart}`);
  }

  /**
   * The error for a value that is not of the type `expected`, named as serde names it.
   * @param {string} expected
   */
  invalidType(expected) {
    const c = this.peek();
    if (c === -1) return this.error('EOF while parsing a value');
    const b = this.bytes;
    const word = (/** @type {string} */ w) =>
      this.bytes.length >= this.i + w.length &&
      [...w].every((ch, k) => b[this.i + k] === ch.charCodeAt(0));
    let found;
    if (c === QUOTE) found = 'string';
    else if (c === OPEN_BRACKET) found = 'sequence';
    else if (c === OPEN_BRACE) found = 'map';
    else if (c === MINUS || isDigit(c)) found = 'number';
    else if (word('null')) found = 'null';
    else if (word('true')) found = 'boolean `true`';
    else if (word('false')) found = 'boolean `false`';
    else return this.error(c === 0x6e || c === 0x74 || c === 0x66 ? 'expected ident' : 'expected value');
    return this.error(`invalid type: ${found}, expected ${expected}`);
  }

  /**
   * Takes the rest of a literal (`ull` of null, ...).
   * @param {string} rest
   */
  ident(rest) {
    for (let k = 0; k < rest.length; k++) {
      if (this.i >= this.bytes.length) throw this.error('EOF while parsing a value');
      if (this.bytes[this.i++] !== rest.charCodeAt(k)) throw this.error('expected ident', this.i - 1);
    }
  }

  /**
   * Before a sequence's next element: whether there is one (taking the comma before it).
   * @param {boolean} first
   */
  hasNextElement(first) {
    const c = this.peek();
    if (c === -1) throw this.error('EOF while parsing a list');
    if (c === CLOSE_BRACKET) return false;
    if (first) return true;
    if (c !== COMMA) throw this.error('expected `,` or `]`');
    this.i++;
    const next = this.peek();
    if (next === CLOSE_BRACKET) throw this.error('trailing comma');
    if (next === -1) throw this.error('EOF while parsing a value');
    return true;
  }

  /** After a sequence's last element: its closing bracket. */
  endSeq() {
    const c = this.peek();
    if (c === CLOSE_BRACKET) {
      this.i++;
      return;
    }
    if (c === -1) throw this.error('EOF while parsing a list');
    if (c === COMMA) {
      this.i++;
      throw this.error(this.peek() === CLOSE_BRACKET ? 'trailing comma' : 'trailing characters');
    }
    throw this.error('trailing characters');
  }

  /**
   * A string's text, the opening quote taken: checked as serde_json checks a string it keeps
   * (UTF-8, escapes, paired surrogates, no control characters).
   */
  string() {
    return /** @type {string} */ (this.scanString(true));
  }

  /** Skips a string, the opening quote taken, as serde_json skips one it does not keep. */
  skipString() {
    this.scanString(false);
  }

  /**
   * A string, the opening quote taken; its text if `keep`. The runs between escapes are found
   * and checked with native calls (indexOf, TextDecoder, a regular expression): byte by byte,
   * a long string takes an interpreted engine a second a megabyte.
   * @param {boolean} keep
   */
  scanString(keep) {
    const b = this.bytes;
    let i = this.i;
    let text = '';
    let quote = b.indexOf(QUOTE, i);
    let slash = b.indexOf(BACKSLASH, i);
    for (;;) {
      const close = quote < 0 ? b.length : quote;
      const end = slash >= 0 && slash < close ? slash : close;
      const control = this.controlAt(i, end);
      if (control >= 0) throw this.error('control character (\\u0000-\\u001F) found while parsing a string', control);
      if (end === b.length) {
        this.i = end;
        throw this.error('EOF while parsing a string');
      }
      if (keep && end > i) {
        try {
          text += UTF8.decode(b.subarray(i, end));
        } catch {
          throw this.error('invalid unicode code point', end);
        }
      }
      if (end === quote) {
        this.i = quote + 1;
        return keep ? text : undefined;
      }
      i = end + 1;
      if (i >= b.length) throw this.error('EOF while parsing a string', i);
      const e = b[i++];
      switch (e) {
        case QUOTE:
          text += '"';
          break;
        case BACKSLASH:
          text += '\\';
          break;
        case 0x2f:
          text += '/';
          break;
        case 0x62:
          text += '\b';
          break;
        case 0x66:
          text += '\f';
          break;
        case 0x6e:
          text += '\n';
          break;
        case 0x72:
          text += '\r';
          break;
        case 0x74:
          text += '\t';
          break;
        case 0x75: {
          const n = this.hex4(i);
          i += 4;
          if (!keep) break; // a skipped string's escapes need only be well-formed
          if (n >= 0xdc00 && n <= 0xdfff) throw this.error('lone leading surrogate in hex escape', i - 1);
          if (n >= 0xd800 && n <= 0xdbff) {
            if (i >= b.length) throw this.error('EOF while parsing a string', i);
            if (b[i] !== BACKSLASH) throw this.error('unexpected end of hex escape', i);
            i++;
            if (i >= b.length) throw this.error('EOF while parsing a string', i);
            if (b[i] !== 0x75) throw this.error('unexpected end of hex escape', i);
            i++;
            const low = this.hex4(i);
            i += 4;
            if (low < 0xdc00 || low > 0xdfff) throw this.error('lone leading surrogate in hex escape', i - 1);
            text += String.fromCharCode(n, low);
          } else {
            text += String.fromCharCode(n);
          }
          break;
        }
        default:
          throw this.error('invalid escape', i - 1);
      }
      if (quote >= 0 && quote < i) quote = b.indexOf(QUOTE, i);
      if (slash >= 0 && slash < i) slash = b.indexOf(BACKSLASH, i);
    }
  }

  /**
   * The index of the first control character (a byte below 0x20) in `start..end`, or -1.
   * @param {number} start
   * @param {number} end
   */
  controlAt(start, end) {
    const b = this.bytes;
    // A short run is quicker to look at than to decode; a long one is decoded (invalid UTF-8
    // becomes U+FFFD, never a control character) and searched natively.
    if (end - start > 64 && !CONTROL.test(LOSSY.decode(b.subarray(start, end)))) return -1;
    for (let i = start; i < end; i++) if (b[i] < 0x20) return i;
    return -1;
  }

  /**
   * Four hex digits at `i`.
   * @param {number} i
   */
  hex4(i) {
    const b = this.bytes;
    if (i + 4 > b.length) {
      this.i = b.length;
      throw this.error('EOF while parsing a string', b.length);
    }
    let n = 0;
    for (let k = i; k < i + 4; k++) {
      const c = b[k];
      const d =
        c >= ZERO && c <= NINE ? c - ZERO : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (d < 0) throw this.error('invalid escape', i + 3);
      n = n * 16 + d;
    }
    return n;
  }

  /** Skips a number, as serde_json checks one it does not keep (its sign taken). */
  skipNumber() {
    const b = this.bytes;
    let i = this.i;
    const first = i < b.length ? b[i] : 0;
    i++;
    if (first === ZERO) {
      if (isDigit(b[i])) throw this.error('invalid number', i);
    } else if (first > ZERO && first <= NINE) {
      while (isDigit(b[i])) i++;
    } else {
      throw this.error('invalid number', i - 1);
    }
    if (b[i] === DOT) {
      i++;
      if (!isDigit(b[i])) throw this.error('invalid number', i);
      while (isDigit(b[i])) i++;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === PLUS || b[i] === MINUS) i++;
      if (!isDigit(b[i])) throw this.error('invalid number', i);
      while (isDigit(b[i])) i++;
    }
    this.i = i;
  }

  /** Skips one JSON value of any kind, nested ones included, as serde_json's IgnoredAny. */
  skipValue() {
    /** @type {number[]} the open arrays and objects, innermost last */
    const open = [];
    for (;;) {
      let c = this.peek();
      let opened = false;
      switch (c) {
        case -1:
          throw this.error('EOF while parsing a value');
        case 0x6e:
          this.i++;
          this.ident('ull');
          break;
        case 0x74:
          this.i++;
          this.ident('rue');
          break;
        case 0x66:
          this.i++;
          this.ident('alse');
          break;
        case MINUS:
          this.i++;
          this.skipNumber();
          break;
        case QUOTE:
          this.i++;
          this.skipString();
          break;
        case OPEN_BRACKET:
        case OPEN_BRACE:
          this.i++;
          open.push(c);
          opened = true;
          break;
        default:
          if (!isDigit(c)) throw this.error('expected value');
          this.skipNumber();
      }
      if (!opened && open.length === 0) return;
      let afterValue = !opened;
      // Close what ends here; then take the comma before the next element or member.
      for (;;) {
        const inner = open[open.length - 1];
        c = this.peek();
        if (afterValue && c === COMMA) {
          this.i++;
          break;
        }
        if ((c === CLOSE_BRACKET && inner === OPEN_BRACKET) || (c === CLOSE_BRACE && inner === OPEN_BRACE)) {
          this.i++;
          open.pop();
          if (open.length === 0) return;
          afterValue = true;
          continue;
        }
        if (c === -1) throw this.error(inner === OPEN_BRACKET ? 'EOF while parsing a list' : 'EOF while parsing an object');
        if (afterValue) throw this.error(inner === OPEN_BRACKET ? 'expected `,` or `]`' : 'expected `,` or `}`');
        break;
      }
      if (open[open.length - 1] === OPEN_BRACE) {
        c = this.peek();
        if (c !== QUOTE) throw this.error(c === -1 ? 'EOF while parsing an object' : 'key must be a string');
        this.i++;
        this.skipString();
        c = this.peek();
        if (c !== COLON) throw this.error(c === -1 ? 'EOF while parsing an object' : 'expected `:`');
        this.i++;
      }
    }
  }
}

/**
 * A field of a struct: its JSON name, its JS name, how to read its value and, for an optional
 * one, its value when absent.
 * @typedef {{ name: string, key: string, read: (r: Reader) => unknown, absent?: unknown }} Field
 */

/**
 * A `String`.
 * @param {Reader} r
 */
function readString(r) {
  if (r.peek() !== QUOTE) throw r.invalidType('a string');
  r.i++;
  return r.string();
}

/**
 * An `Option<String>`: null, or a string.
 * @param {Reader} r
 */
function readOptionalString(r) {
  if (r.peek() === 0x6e) {
    r.i++;
    r.ident('ull');
    return null;
  }
  return readString(r);
}

/**
 * An unsigned integer up to `max`, as serde_json reads a u32 or u64: plain digits only (a
 * sign, a fraction or an exponent makes it a signed or floating-point number, which the field
 * does not take).
 * @param {Reader} r
 * @param {bigint} max
 * @param {string} type
 */
function readUnsigned(r, max, type) {
  const c = r.peek();
  const b = r.bytes;
  const start = r.i;
  if (c === MINUS) {
    r.i++;
    r.skipNumber();
    throw r.error(`invalid value: integer \`${ASCII.decode(b.subarray(start, r.i))}\`, expected ${type}`);
  }
  if (!isDigit(c)) throw r.invalidType(type);
  let i = start + 1;
  if (c === ZERO) {
    if (isDigit(b[i])) throw r.error('invalid number', i);
  } else {
    while (isDigit(b[i])) i++;
  }
  const digits = ASCII.decode(b.subarray(start, i));
  if (b[i] === DOT || b[i] === 0x65 || b[i] === 0x45) {
    r.skipNumber();
    throw r.error(`invalid type: floating point, expected ${type}`);
  }
  r.i = i;
  // Past 20 digits it is past u64 (and BigInt would take its time over a long run of them).
  const value = digits.length > 20 ? U64_MAX + 1n : BigInt(digits);
  if (value > U64_MAX) throw r.error(`invalid type: floating point \`${digits}\`, expected ${type}`);
  if (value > max) throw r.error(`invalid value: integer \`${digits}\`, expected ${type}`);
  return value;
}

/**
 * A struct of `fields`, from an object or an array.
 * @param {Reader} r
 * @param {string} what
 * @param {Field[]} fields
 * @returns {Record<string, any>}
 */
function readStruct(r, what, fields) {
  const c = r.peek();
  /** @type {Map<string, unknown>} */
  const values = new Map();
  if (c === OPEN_BRACE) {
    r.i++;
    for (let first = true; ; first = false) {
      let k = r.peek();
      if (k === CLOSE_BRACE) break;
      if (k === -1) throw r.error('EOF while parsing an object');
      if (!first) {
        if (k !== COMMA) throw r.error('expected `,` or `}`');
        r.i++;
        k = r.peek();
        if (k === CLOSE_BRACE) throw r.error('trailing comma');
        if (k === -1) throw r.error('EOF while parsing a value');
      }
      if (k !== QUOTE) throw r.error('key must be a string');
      r.i++;
      const name = r.string();
      const colon = r.peek();
      if (colon !== COLON) throw r.error(colon === -1 ? 'EOF while parsing an object' : 'expected `:`');
      r.i++;
      const field = fields.find((f) => f.name === name);
      if (field === undefined) {
        r.skipValue();
        continue;
      }
      if (values.has(name)) throw r.error(`duplicate field \`${name}\``);
      values.set(name, field.read(r));
    }
    const result = present(r, fields, values, (f) => r.error(`missing field \`${f.name}\``));
    r.i++; // the closing brace
    return result;
  }
  if (c === OPEN_BRACKET) {
    r.i++;
    let more = true;
    for (const [index, field] of fields.entries()) {
      more = more && r.hasNextElement(index === 0);
      if (more) values.set(field.name, field.read(r));
      else if (!('absent' in field)) {
        throw r.error(`invalid length ${index}, expected ${what} with ${fields.length} elements`);
      }
    }
    const result = present(r, fields, values, () => r.error('unreachable'));
    r.endSeq();
    return result;
  }
  throw r.invalidType(what);
}

/**
 * The struct's values by JS name, the absent optional ones at their default.
 * @param {Reader} r
 * @param {Field[]} fields
 * @param {Map<string, unknown>} values
 * @param {(f: Field) => Error} missing
 */
function present(r, fields, values, missing) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const field of fields) {
    if (values.has(field.name)) out[field.key] = values.get(field.name);
    else if ('absent' in field) out[field.key] = field.absent;
    else throw missing(field);
  }
  return out;
}

/** @type {Field[]} */
const ITEM = [
  { name: 'sku', key: 'sku', read: readString },
  { name: 'qty', key: 'qty', read: (r) => Number(readUnsigned(r, U32_MAX, 'u32')) },
  { name: 'price_cents', key: 'priceCents', read: (r) => readUnsigned(r, U64_MAX, 'u64') },
];

/**
 * A `Vec<Item>`.
 * @param {Reader} r
 */
function readItems(r) {
  if (r.peek() !== OPEN_BRACKET) throw r.invalidType('a sequence');
  r.i++;
  const items = [];
  for (let first = true; r.hasNextElement(first); first = false) {
    items.push(readStruct(r, 'struct Item', ITEM));
  }
  r.endSeq();
  return items;
}

/** @type {Field[]} */
const ORDER = [
  { name: 'order_id', key: 'orderId', read: readString },
  { name: 'customer', key: 'customer', read: readString },
  { name: 'seq', key: 'seq', read: (r) => readUnsigned(r, U64_MAX, 'u64'), absent: 0n },
  { name: 'items', key: 'items', read: readItems },
  { name: 'payment', key: 'payment', read: readOptionalString, absent: null },
];

/**
 * The order in `payload`; throws Malformed if it is none.
 * @param {Uint8Array} payload
 * @returns {Order}
 */
export function parseOrder(payload) {
  const r = new Reader(payload);
  const order = readStruct(r, 'struct Order', ORDER);
  if (r.peek() !== -1) throw r.error('trailing characters');
  return /** @type {Order} */ (order);
}

/**
 * `text` as a JSON string, as serde_json writes one: only the quote, the backslash and control
 * characters are escaped (\b \t \n \f \r by name, the rest as \u00xx in lower-case hex);
 * everything else, U+2028, U+2029 and DEL included, is written as it is.
 * @param {string} text
 */
export function jsonString(text) {
  let out = '"';
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x20 && c !== QUOTE && c !== BACKSLASH) continue;
    out += text.slice(start, i);
    start = i + 1;
    switch (c) {
      case QUOTE:
        out += '\\"';
        break;
      case BACKSLASH:
        out += '\\\\';
        break;
      case 0x08:
        out += '\\b';
        break;
      case 0x09:
        out += '\\t';
        break;
      case 0x0a:
        out += '\\n';
        break;
      case 0x0c:
        out += '\\f';
        break;
      case 0x0d:
        out += '\\r';
        break;
      default:
        out += `\\u00${c.toString(16).padStart(2, '0')}`;
    }
  }
  return `${out}${text.slice(start)}"`;
}

/**
 * The enriched event, as serde_json::to_vec writes the Rust example's `Enriched`: compact,
 * fields in this order.
 * @param {{ orderId: string, customer: string, seq: bigint, totalCents: bigint, itemCount: number,
 *   skus: string[], tier: string, region: string, partition: number, streamSeq: bigint,
 *   deliveryAttempt: number }} e
 */
export function enrichedJson(e) {
  const json =
    `{"order_id":${jsonString(e.orderId)},"customer":${jsonString(e.customer)},` +
    `"seq":${e.seq},"total_cents":${e.totalCents},"item_count":${e.itemCount},` +
    `"skus":[${e.skus.map(jsonString).join(',')}],"tier":${jsonString(e.tier)},` +
    `"region":${jsonString(e.region)},"partition":${e.partition},"stream_seq":${e.streamSeq},` +
    `"delivery_attempt":${e.deliveryAttempt}}`;
  return ENCODER.encode(json);
}

/**
 * A number of milliseconds read as Rust's `u64::from_str` reads it, with the same error texts,
 * so that a refused configuration reads the same in every example: an optional leading '+',
 * then ASCII digits only, checked left to right.
 * @param {string} text
 */
export function parseMillis(text) {
  if (text === '') throw new Error('cannot parse integer from empty string');
  const digits = text[0] === '+' && text.length > 1 ? text.slice(1) : text;
  let value = 0n;
  for (let i = 0; i < digits.length; i++) {
    const c = digits.charCodeAt(i);
    if (c < ZERO || c > NINE) throw new Error('invalid digit found in string');
    value = value * 10n + BigInt(c - ZERO);
    if (value > U64_MAX) throw new Error('number too large to fit in target type');
  }
  return value;
}
