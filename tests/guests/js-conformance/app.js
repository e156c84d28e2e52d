/**
 * The JavaScript conformance guest: does what tests/conformance/README.md says, through
 * guest-sdk/js, so that tests/conformance/vectors.json holds the JavaScript SDK to the behaviour
 * of every other SDK. Where the README leaves a detail open (a payload that is not UTF-8 where
 * text is wanted, a number that does not fit) it does what the Rust guest does
 * (tests/guests/conformance).
 *
 * Build (from the repository's root):
 *
 *     node guest-sdk/js/build.mjs tests/guests/js-conformance/app.js \
 *         target/guests/js/js-conformance.wasm
 */

import * as weir from 'weir';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

// The payload as text, invalid UTF-8 replaced by U+FFFD (as Rust's from_utf8_lossy does).
const LOSSY = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * `text` as an unsigned integer of at most `max`, read as Rust's `str::parse` reads one (an
 * optional '+', then ASCII digits), or undefined.
 * @param {string} text
 * @param {bigint} max
 */
function parseUnsigned(text, max) {
  const digits = text.startsWith('+') ? text.slice(1) : text;
  if (!/^[0-9]+$/.test(digits)) return undefined;
  const value = BigInt(digits);
  return value <= max ? value : undefined;
}

/**
 * `subject` split as Rust's `splitn(3, '.')` splits it: the first token, the second, and the
 * rest after the second dot.
 * @param {string} subject
 */
function tokens(subject) {
  const first = subject.indexOf('.');
  if (first < 0) return ['', ''];
  const second = subject.indexOf('.', first + 1);
  if (second < 0) return [subject.slice(first + 1), ''];
  return [subject.slice(first + 1, second), subject.slice(second + 1)];
}

class Conformance {
  /** @param {weir.Config} config */
  constructor(config) {
    if (config.has('refuse')) {
      // weir refuses the configuration with the error's message, word for word.
      throw new Error(config.get('refuse'));
    }
    weir.info(['config', ...[...config].map(([key, value]) => `${key}=${value}`)].join(' '));
    this.config = config;
  }

  /** @param {weir.Message} msg */
  handle(msg) {
    const [action, rest] = tokens(msg.subject);
    try {
      return this.act(action, rest, msg);
    } catch (e) {
      // The host fails a call whose publish it refused, whatever the handler answers.
      if (e instanceof weir.PublishError) return weir.reject(`refused: ${e.message}`);
      throw e;
    }
  }

  /**
   * @param {string} action
   * @param {string} rest
   * @param {weir.Message} msg
   */
  act(action, rest, msg) {
    const text = () => LOSSY.decode(msg.payload);
    switch (action) {
      case 'ack':
        return weir.ack();
      case 'retry':
        return weir.retry();
      case 'retry-after': {
        const ms = parseUnsigned(text(), (1n << 64n) - 1n);
        if (ms === undefined) return weir.reject(`not a number of milliseconds: ${text()}`);
        return weir.retry(ms);
      }
      case 'reject':
        return weir.reject(text());
      case 'echo':
        weir.publish(`out.${rest}`, msg.payload, msg.headers);
        return weir.ack();
      case 'describe':
        weir.publish('out.describe', this.describe(msg));
        return weir.ack();
      case 'log':
        for (const { name, value } of msg.headers) {
          if (!LEVELS.includes(name)) return weir.reject(`unknown level ${name}`);
          weir.log(/** @type {'info'} */ (name), value);
        }
        return weir.ack();
      case 'publish-to':
        weir.publish(text(), '');
        return weir.ack();
      case 'many': {
        const count = parseUnsigned(text(), 0xffff_ffffn);
        if (count === undefined) return weir.reject(`not a count: ${text()}`);
        for (let i = 0; i < count; i++) weir.publish(`out.many.${i}`, String(i));
        return weir.ack();
      }
      case 'trap':
        throw new Error(`trap requested: ${text()}`);
      default:
        return weir.reject(`unknown action ${action}`);
    }
  }

  /**
   * Every field of `msg` and the configuration, one line each.
   * @param {weir.Message} msg
   */
  describe(msg) {
    const lines = [
      `subject ${msg.subject}`,
      `stream ${msg.stream}`,
      `seq ${msg.streamSeq}`,
      `partition ${msg.partition}`,
      `attempt ${msg.deliveryAttempt}`,
      `published-at ${msg.publishedAt}`,
      `payload ${msg.payload.length}`,
    ];
    try {
      lines.push(`text ${msg.text()}`);
    } catch {
      lines.push('text (not UTF-8)');
    }
    for (const { name, value } of msg.headers) lines.push(`header ${name}: ${value}`);
    const first = msg.header('first');
    if (first !== undefined) lines.push(`first ${first}: ${msg.header(first) ?? '(none)'}`);
    for (const [key, value] of this.config) lines.push(`config ${key}=${value}`);
    return lines.map((line) => `${line}\n`).join('');
  }
}

export const { init, handle } = weir.handler(Conformance);
