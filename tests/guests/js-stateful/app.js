/**
 * The stateful test guest (tests/guests/stateful) in JavaScript, through guest-sdk/js's
 * `weir.state`: each message a command, every reply published to `<output_prefix>.<subject>`
 * before the call acks, and every reply the Rust guest's, word for word, so that the state
 * tests run it unchanged. The commands the tests use: `add KEY N` (and `add-then-retry`,
 * `add-then-reject`, `add-then-trap`, `add-then-hog`, `add-then-overrun MS`), `read KEY`,
 * `read-own KEY`, `delete KEY`, `keys PREFIX`, `put-big KEY BYTES`, `put-many PREFIX N`.
 */

import * as weir from 'weir';

const { state } = weir;
const ADDS = ['add', 'add-then-retry', 'add-then-reject', 'add-then-trap', 'add-then-hog', 'add-then-overrun'];

/** The decimal number at `words[at]`, or `fallback`. */
function number(words, at, fallback) {
  return /^[0-9]+$/.test(words[at] ?? '') ? Number(words[at]) : fallback;
}

class Stateful {
  /** @param {weir.Config} config */
  constructor(config) {
    this.prefix = config.get('output_prefix', 'out');
  }

  /** @param {weir.Message} msg */
  handle(msg) {
    let text;
    try {
      text = msg.text();
    } catch {
      text = '';
    }
    const words = text.split(/\s+/).filter((w) => w !== '');
    const command = words[0] ?? '';
    if (ADDS.includes(command)) {
      const key = words[1] ?? 'total';
      const total = state.getBigInt(key, 0n) + BigInt(number(words, 2, 1));
      try {
        state.setInt(key, total);
      } catch (error) {
        if (error instanceof weir.StateError) return weir.retry();
        throw error;
      }
      if (command === 'add-then-retry') return weir.retry(50);
      if (command === 'add-then-reject') return weir.reject('rejected after adding');
      if (command === 'add-then-trap') throw new Error('trap after adding');
      if (command === 'add-then-hog') {
        const hoard = [];
        for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
      }
      if (command === 'add-then-overrun') {
        const until = Date.now() + number(words, 3, 1000);
        while (Date.now() < until);
      }
      return this.reply(msg, `${key}=${total}`);
    }
    switch (command) {
      case 'read':
        return this.reply(msg, state.getText(words[1] ?? 'total', 'none'));
      case 'read-own': {
        const key = words[1] ?? 'own';
        const reads = [];
        for (const value of ['first', 'second']) {
          state.setText(key, value);
          reads.push(state.getText(key, 'none'));
        }
        return this.reply(msg, reads.join(','));
      }
      case 'delete': {
        const key = words[1] ?? 'total';
        state.delete(key);
        return this.reply(msg, state.getText(key, 'none'));
      }
      case 'keys':
        return this.reply(msg, [...state.keys(words[1] ?? '')].join(','));
      case 'put-big':
        return this.refusedOr(msg, () => state.set(words[1] ?? 'big', new Uint8Array(number(words, 2, 1 << 20)).fill(0x62)));
      case 'put-many': {
        const prefix = words[1] ?? 'k';
        return this.refusedOr(msg, () => {
          for (let i = 0; i < number(words, 2, 10); i++) state.set(`${prefix}${i}`, 'v');
        });
      }
      default:
        return this.reply(msg, text);
    }
  }

  /** Replies `ok` if `write` was taken, else the refusal's words. */
  refusedOr(msg, write) {
    try {
      write();
    } catch (error) {
      if (error instanceof weir.StateError) return this.reply(msg, error.message);
      throw error;
    }
    return this.reply(msg, 'ok');
  }

  /** Publishes `text` to `<prefix>.<subject>`, then acks. */
  reply(msg, text) {
    try {
      weir.publish(`${this.prefix}.${msg.subject}`, text);
    } catch (error) {
      if (error instanceof weir.PublishError) return weir.retry();
      throw error;
    }
    return weir.ack();
  }
}

export const { init, handle } = weir.handler(Stateful);
