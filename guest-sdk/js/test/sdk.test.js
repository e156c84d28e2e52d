// The SDK on Node.js, against the stand-ins of weir/testing: what a handler's own unit tests
// see. Run from the repository's root with
//     node --import ./guest-sdk/js/testing/register.js --test guest-sdk/js/test/

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import * as weir from 'weir';
import { state } from 'weir';
import * as testing from 'weir/testing';

const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);

class Echo {
  /** @param {weir.Config} config */
  constructor(config) {
    if (config.has('refuse')) throw new Error(`refusing: ${config.get('refuse')}`);
    this.prefix = config.get('output_prefix', 'out');
    this.config = [...config];
  }

  /** @param {weir.Message} msg */
  handle(msg) {
    weir.publish(`${this.prefix}.${msg.subject}`, msg.payload, { attempt: String(msg.deliveryAttempt) });
    return weir.ack();
  }
}

beforeEach(() => testing.reset());

describe('Config', () => {
  test('keeps the pairs in the order given and falls back for a key that is not set', () => {
    const config = new weir.Config([['b', '2'], ['a', ''], ['c', 'x=y']]);
    assert.deepEqual([...config], [['b', '2'], ['a', ''], ['c', 'x=y']]);
    assert.equal(config.get('a', 'fallback'), '');
    assert.equal(config.get('missing', 'fallback'), 'fallback');
    assert.equal(config.get('missing'), undefined);
    assert.equal(config.size, 3);
    assert.ok(config instanceof Map);
  });

  test('is made from an object too, and only from strings', () => {
    assert.deepEqual([...new weir.Config({ region: 'eu' })], [['region', 'eu']]);
    assert.deepEqual([...new weir.Config()], []);
    assert.throws(() => new weir.Config([['a', /** @type {any} */ (1)]]), TypeError);
  });
});

describe('Message', () => {
  test('has the fields of the WIT record, with defaults, and finds the first header by name', () => {
    const msg = new weir.Message({ subject: 'in.k.ev', payload: 'hï', headers: [['x', '1'], ['x', '2'], ['X', '3']] });
    assert.deepEqual(msg.payload, new TextEncoder().encode('hï'));
    assert.deepEqual(msg.headers, [{ name: 'x', value: '1' }, { name: 'x', value: '2' }, { name: 'X', value: '3' }]);
    assert.equal(msg.header('x'), '1');
    assert.equal(msg.header('X'), '3');
    assert.equal(msg.header('y'), undefined);
    assert.equal(msg.stream, '');
    assert.equal(msg.streamSeq, 0n);
    assert.equal(msg.partition, 0);
    assert.equal(msg.deliveryAttempt, 1);
    assert.equal(msg.publishedAt, 0n);
    assert.equal(new weir.Message({ subject: 's', streamSeq: 7, publishedAt: 2n ** 64n - 1n }).streamSeq, 7n);
    assert.throws(() => new weir.Message(/** @type {any} */ ({ payload: 'x' })), TypeError);
  });

  test('text() is strict UTF-8 and keeps a byte-order mark', () => {
    assert.equal(new weir.Message({ subject: 's', payload: new Uint8Array([0xef, 0xbb, 0xbf, 0x41]) }).text(), '\ufeffA');
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
      assert.throws(() => new weir.Message({ subject: 's', payload: new Uint8Array(bad) }).text(), TypeError);
    }
  });
});

describe('outcomes', () => {
  test('say what they are', () => {
    assert.equal(String(weir.ack()), 'ack');
    assert.equal(weir.retry().delayNs, undefined);
    assert.equal(String(weir.retry()), 'retry');
    assert.equal(weir.retry(250).delayNs, 250_000_000n);
    assert.equal(String(weir.retry(250)), 'retry after 250ms');
    assert.equal(weir.retry(0.25).delayNs, 250_000n);
    assert.equal(weir.retry(1.000001).delayNs, 1_000_001n);
    assert.equal(weir.retry(0).delayNs, 0n);
    assert.equal(weir.retry(86_400_000n).delayNs, 86_400_000_000_000n);
    assert.equal(weir.retry(1e30).delayNs, 2n ** 64n - 1n);
    assert.equal(weir.retry(18_446_744_073_709_551_615n).delayNs, 2n ** 64n - 1n);
    assert.equal(weir.reject('no items').reason, 'no items');
    assert.equal(String(weir.reject('no items')), 'reject: no items');
    assert.deepEqual({ tag: weir.reject('r').tag, val: weir.reject('r').val }, { tag: 'reject', val: 'r' });
  });

  test('refuse a delay that is no duration', () => {
    for (const bad of [-1, -0.5, NaN, Infinity, -1n]) assert.throws(() => weir.retry(bad), RangeError, String(bad));
    assert.throws(() => weir.retry(/** @type {any} */ ('5')), TypeError);
  });
});

describe('handler()', () => {
  test('makes the handler from the configuration, in order, and hands it messages', () => {
    const exports = weir.handler(Echo);
    assert.deepEqual(exports.init([['b', '2'], ['output_prefix', 'o']]), { tag: 'ok', val: undefined });
    const record = {
      subject: 'in.k.ev', payload: new Uint8Array([104, 105]), headers: [{ name: 'x', value: '1' }],
      stream: 'S', streamSeq: 1n, partition: 0, deliveryAttempt: 3, publishedAt: 0n,
    };
    assert.equal(exports.handle(record), weir.ack());
    assert.deepEqual(testing.published(), [{ subject: 'o.in.k.ev', payload: new Uint8Array([104, 105]), headers: [['attempt', '3']] }]);
  });

  test('refuses a configuration the constructor refuses, with its message word for word', () => {
    const exports = weir.handler(Echo);
    assert.deepEqual(exports.init([['refuse', 'zu groß: ≤ 10 ✗']]), { tag: 'err', val: 'refusing: zu groß: ≤ 10 ✗' });
    assert.throws(() => exports.handle({ subject: 's' }), /before a successful init/);
    class Empty {
      constructor() {
        throw new Error('');
      }
      handle() {
        return weir.ack();
      }
    }
    assert.deepEqual(weir.handler(Empty).init([]), { tag: 'err', val: '' });
    const thrower = () => {
      throw 'a string';
    };
    assert.deepEqual(weir.handler(thrower).init([]), { tag: 'err', val: 'a string' });
  });

  test('takes a function or an arrow function as well as a class', () => {
    /** @param {weir.Config} config */
    function make(config) {
      return { handle: () => weir.reject(config.get('why', '')) };
    }
    const exports = weir.handler(make);
    exports.init([['why', 'because']]);
    assert.equal(exports.handle({ subject: 's' }).reason, 'because');
    const arrow = weir.handler(() => ({ handle: () => weir.retry(5) }));
    arrow.init([]);
    assert.equal(arrow.handle({ subject: 's' }).delayNs, 5_000_000n);
    assert.match(/** @type {any} */ (weir.handler(() => /** @type {any} */ ({})).init([])).val, /no handle\(msg\) method/);
    assert.throws(() => weir.handler(/** @type {any} */ ({})), TypeError);
  });

  test('fails the call (a trap) when handle throws or returns no outcome', () => {
    /** @param {unknown} outcome */
    const returning = (outcome) => {
      const exports = weir.handler(() => ({ handle: () => /** @type {any} */ (outcome) }));
      exports.init([]);
      return () => exports.handle({ subject: 's' });
    };
    assert.throws(returning(undefined), TypeError);
    assert.throws(returning('ack'), TypeError);
    assert.throws(returning({ tag: 'retry', val: -1n }), TypeError);
    assert.throws(returning({ tag: 'retry', val: 5 }), TypeError);
    assert.throws(returning({ tag: 'reject' }), TypeError);
    assert.throws(returning(Promise.resolve(weir.ack())), /not a Promise/);
    assert.equal(returning({ tag: 'ack' })(), weir.ack());
    assert.equal(returning({ tag: 'retry', val: 7n })().delayNs, 7n);
    const throwing = weir.handler(() => ({
      handle() {
        throw new Error('boom');
      },
    }));
    throwing.init([]);
    assert.throws(() => throwing.handle({ subject: 's' }), /boom/);
  });
});

describe('publish', () => {
  test('sends text as UTF-8 and takes headers in every form, in order', () => {
    weir.publish('out.a', 'ünï', [['x', '1'], ['x', '2']]);
    weir.publish('out.b', new Uint8Array([0, 255]), [{ name: 'k', value: 'v' }]);
    weir.publish('out.c', new Uint8Array([1, 2, 3]).subarray(1), new Map([['m', 'n']]));
    weir.publish('out.d', new ArrayBuffer(2), { a: '1', b: '2' });
    weir.publish('out.e');
    const out = testing.published();
    assert.deepEqual(out.map((p) => [p.subject, [...p.payload], p.headers]), [
      ['out.a', [...new TextEncoder().encode('ünï')], [['x', '1'], ['x', '2']]],
      ['out.b', [0, 255], [['k', 'v']]],
      ['out.c', [2, 3], [['m', 'n']]],
      ['out.d', [0, 0], [['a', '1'], ['b', '2']]],
      ['out.e', [], []],
    ]);
  });

  test('refuses what is no subject, payload or header', () => {
    assert.throws(() => weir.publish(/** @type {any} */ (1), 'x'), TypeError);
    assert.throws(() => weir.publish('s', /** @type {any} */ (5)), TypeError);
    assert.throws(() => weir.publish('s', 'x', /** @type {any} */ ([['a', 1]])), TypeError);
    assert.throws(() => weir.publish('s', 'x', /** @type {any} */ (['ab'])), TypeError);
    assert.deepEqual(testing.published(), []);
  });

  test("throws weir's refusal as a PublishError with weir's text", () => {
    testing.refusePublish('subject elsewhere.x is not an allowed output');
    assert.throws(
      () => weir.publish('elsewhere.x', ''),
      (e) => e instanceof weir.PublishError && e.message === 'subject elsewhere.x is not an allowed output' && e.name === 'PublishError',
    );
    testing.refusePublish('');
    assert.throws(() => weir.publish('x', ''), (e) => e instanceof weir.PublishError && e.message === '');
    testing.refusePublish(undefined);
    weir.publish('x', '');
    assert.equal(testing.published().length, 1);
  });
});

describe('log', () => {
  test('writes lines at every level, in order', () => {
    weir.log('trace', 't');
    weir.debug('d');
    weir.info('i — ünïcode');
    weir.warn('w');
    weir.error('e');
    weir.log('info', /** @type {any} */ (42));
    assert.deepEqual(testing.logged(), [['trace', 't'], ['debug', 'd'], ['info', 'i — ünïcode'], ['warn', 'w'], ['error', 'e'], ['info', '42']]);
    assert.throws(() => weir.log(/** @type {any} */ ('loud'), 'x'), TypeError);
    assert.deepEqual(weir.LEVELS, ['trace', 'debug', 'info', 'warn', 'error']);
  });
});

describe('state', () => {
  test('keeps typed values as the other SDKs keep them', () => {
    state.setInt('total', 42);
    state.setInt('big', 2n ** 64n - 1n);
    state.setText('name', 'ünï');
    state.setJson('doc', { a: [1, 2], s: 'é' });
    state.set('raw', new Uint8Array([0, 255]));
    const kept = testing.kept();
    assert.deepEqual([...kept.keys()], ['big', 'doc', 'name', 'raw', 'total']);
    assert.equal(text(/** @type {Uint8Array} */ (kept.get('total'))), '42');
    assert.equal(text(/** @type {Uint8Array} */ (kept.get('big'))), '18446744073709551615');
    assert.equal(text(/** @type {Uint8Array} */ (kept.get('doc'))), '{"a":[1,2],"s":"é"}');
    assert.equal(state.getInt('total'), 42);
    assert.equal(state.getInt('missing', 0), 0);
    assert.equal(state.getInt('missing'), undefined);
    assert.equal(state.getBigInt('big'), 2n ** 64n - 1n);
    assert.equal(state.getBigInt('missing', 0n), 0n);
    assert.throws(() => state.getInt('big'), RangeError);
    assert.throws(() => state.getInt('name'), TypeError);
    assert.equal(state.getText('name'), 'ünï');
    assert.equal(state.getText('missing', 'd'), 'd');
    assert.deepEqual(state.getJson('doc'), { a: [1, 2], s: 'é' });
    assert.deepEqual(state.get('raw'), new Uint8Array([0, 255]));
    assert.equal(state.get('missing'), undefined);
    assert.throws(() => state.getText('raw'), TypeError);
    assert.throws(() => state.setInt('x', 1.5), TypeError);
    assert.throws(() => state.setJson('x', undefined), TypeError);
    state.setInt('neg', -7);
    assert.equal(state.getInt('neg'), -7);
  });

  test('lists keys by prefix, in byte order, a page at a time, and deletes them', () => {
    for (const key of ['b/2', 'a/1', 'b/1', 'c', 'b/\u{1f600}', 'b/\uffff']) state.set(key, new Uint8Array(0));
    // Byte order: U+FFFF (ef bf bf) before U+1F600 (f0 9f 98 80), unlike UTF-16 order.
    assert.deepEqual([...state.keys('b/')], ['b/1', 'b/2', 'b/\uffff', 'b/\u{1f600}']);
    state.delete('b/1');
    assert.deepEqual([...state.keys()], ['a/1', 'b/2', 'b/\uffff', 'b/\u{1f600}', 'c']);
    testing.reset();
    for (let i = 0; i < 2500; i++) state.setInt(`k/${String(i).padStart(4, '0')}`, i);
    const all = [...state.keys('k/')];
    assert.equal(all.length, 2500);
    assert.equal(all[1000], 'k/1000');
    assert.equal(all[2499], 'k/2499');
  });

  test('a refused write throws a StateError that says which quota, and the call goes on', () => {
    assert.throws(
      () => state.set('', new Uint8Array(1)),
      (e) => e instanceof weir.StateError && e.kind === 'invalid_key' && e.limit === undefined && e.message === 'invalid state key: use 1 to 256 bytes',
    );
    assert.throws(() => state.delete('x'.repeat(257)), (e) => e instanceof state.StateError && e.kind === 'invalid_key');
    state.set('x'.repeat(256), new Uint8Array(0));
    const cases = [
      ['value_too_large', 1024n, "state value larger than the tenant's limit of 1024 bytes"],
      ['too_many_keys', 10, "the partition would hold more than the tenant's 10 state keys"],
      ['too_many_bytes', 18446744073709551615n, "the partition's state would take more than the tenant's 18446744073709551615 bytes"],
      ['too_many_writes', 100, 'this call has already written 100 state keys, the most one may'],
    ];
    for (const [kind, limit, message] of cases) {
      testing.refuseWrites(/** @type {any} */ (kind), /** @type {any} */ (limit));
      assert.throws(
        () => state.setText('k', 'v'),
        (e) => e instanceof weir.StateError && e.kind === kind && e.limit === Number(limit) && e.message === message,
      );
      assert.throws(() => state.delete('k'), (e) => e instanceof weir.StateError && e.kind === kind);
    }
    testing.refuseWrites(undefined);
    state.setText('k', 'v');
    assert.equal(state.getText('k'), 'v');
  });

  test('refuses what is no key or value', () => {
    assert.throws(() => state.get(/** @type {any} */ (1)), TypeError);
    assert.throws(() => state.set('k', /** @type {any} */ (1)), TypeError);
    assert.throws(() => state.setText('k', /** @type {any} */ (1)), TypeError);
  });
});
