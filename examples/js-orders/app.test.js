// The orders handler's own tests, on Node.js through the SDK's stand-ins (weir/testing). From the
// repository's root:
//     node --import ./guest-sdk/js/testing/register.js --test examples/js-orders/
//
// The table is runtime/tests/integration/go_guests.rs's VECTORS, with what the Rust orders
// example answers to each; the integration tests hold the built component to the Rust one
// through the real host.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import * as weir from 'weir';
import * as testing from 'weir/testing';

import { Orders } from './app.js';
import { parseMillis, parseOrder } from './order.js';

const ENCODER = new TextEncoder();
const CONFIG = new weir.Config([['pending_delay', '750'], ['region', 'ap-south']]);

/**
 * A delivery as the integration tests make one.
 * @param {string | Uint8Array} payload
 * @param {number} [deliveryAttempt]
 */
function message(payload, deliveryAttempt = 1) {
  return new weir.Message({
    subject: 'orders.c42.created',
    payload,
    stream: 'ORDERS',
    streamSeq: 17n,
    partition: 3,
    deliveryAttempt,
    publishedAt: 1_700_000_000_000_000_000n,
  });
}

/**
 * An outcome and its outputs as the integration tests compare them: a reason that starts with
 * "malformed order:" only that far.
 * @param {weir.Outcome} outcome
 */
function comparable(outcome) {
  let o = String(outcome.kind);
  if (outcome.kind === 'retry' && outcome.delayNs !== undefined) o = `retry ${outcome.delayNs}ns`;
  if (outcome.kind === 'reject') {
    o = outcome.reason?.startsWith('malformed order:') ? 'reject malformed order:' : `reject ${outcome.reason}`;
  }
  const outputs = testing.published().map((p) => `${p.subject} ${new TextDecoder().decode(p.payload)}`);
  return [o, ...outputs];
}

/** @param {string} fields */
const enriched = (fields) =>
  `{${fields},"region":"ap-south","partition":3,"stream_seq":17,"delivery_attempt":`;

/** go_guests.rs's VECTORS: payload, delivery attempt, and what the Rust example answers. */
const VECTORS = [
  [
    '{"order_id":"o-1","customer":"c42","seq":7,"items":[{"sku":"A","qty":2,"price_cents":1500},{"sku":"B","qty":1,"price_cents":999}]}',
    1,
    ['ack', `enriched.c42 ${enriched('"order_id":"o-1","customer":"c42","seq":7,"total_cents":3999,"item_count":3,"skus":["A","B"],"tier":"standard"')}1}`],
  ],
  [
    '{"order_id":"o-2","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":10000}],"payment":"paid","extra":[1,{"x":null}]}',
    1,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-2","customer":"c1","seq":0,"total_cents":10000,"item_count":1,"skus":["A"],"tier":"silver"')}1}`],
  ],
  [
    '{"order_id":"o-3","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":99999}]}',
    1,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-3","customer":"c1","seq":0,"total_cents":99999,"item_count":1,"skus":["A"],"tier":"silver"')}1}`],
  ],
  [
    '{"order_id":"o-4","customer":"c1","items":[{"sku":"A","qty":4,"price_cents":25000}]}',
    2,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-4","customer":"c1","seq":0,"total_cents":100000,"item_count":4,"skus":["A"],"tier":"gold"')}2}`],
  ],
  [
    // Escapes in, serde_json's escaping out: only quote, backslash and control characters, the
    // named ones by name, the rest as lower-case \u00xx; U+2028 and DEL as they are.
    '{"order_id":"q\\"b\\\\s\\u0001\\u001f\u2028é<>&\\b\\f\\n\\r\\t\u007f","customer":"kundé-ü","items":[{"sku":"€","qty":1,"price_cents":1}]}',
    1,
    ['ack', `enriched.kundé-ü ${enriched('"order_id":"q\\"b\\\\s\\u0001\\u001f\u2028é<>&\\b\\f\\n\\r\\t\u007f","customer":"kundé-ü","seq":0,"total_cents":1,"item_count":1,"skus":["€"],"tier":"standard"')}1}`],
  ],
  ['{"order_id":"o-5","customer":"c1","items":[]}', 1, ['reject order o-5 has no items']],
  ['{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}', 1, ['retry 750000000ns']],
  ['{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}', 2, ['retry 750000000ns']],
  [
    '{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}',
    3,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-6","customer":"c1","seq":0,"total_cents":1,"item_count":1,"skus":["A"],"tier":"standard"')}3}`],
  ],
  [
    '{"order_id":"o-7","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":null}',
    1,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-7","customer":"c1","seq":0,"total_cents":1,"item_count":1,"skus":["A"],"tier":"standard"')}1}`],
  ],
  [
    // u32 and u64 at their largest; the sums wrap.
    '{"order_id":"o-8","customer":"c1","items":[{"sku":"A","qty":4294967295,"price_cents":18446744073709551615},{"sku":"B","qty":2,"price_cents":1}]}',
    1,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-8","customer":"c1","seq":0,"total_cents":18446744069414584323,"item_count":1,"skus":["A","B"],"tier":"gold"')}1}`],
  ],
  ['not json', 1, ['reject malformed order:']],
  ['{"order_id":null,"customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}', 1, ['reject malformed order:']],
  ['{"ORDER_ID":"o-9","order_id":"o-9","Customer":"x","items":[{"sku":"A","qty":1,"price_cents":1}]}', 1, ['reject malformed order:']],
  ['{"order_id":"o-11","customer":"c1","items":[{"sku":"A","qty":-1,"price_cents":1}]}', 1, ['reject malformed order:']],
  ['{"order_id":"o-13","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]} x', 1, ['reject malformed order:']],
  [
    '["o-16","c1",1,[["A",1,2]],null]',
    1,
    ['ack', `enriched.c1 ${enriched('"order_id":"o-16","customer":"c1","seq":1,"total_cents":2,"item_count":1,"skus":["A"],"tier":"standard"')}1}`],
  ],
  ['{"order_id":"o-17","order_id":"o-17b","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}', 1, ['reject malformed order:']],
];

beforeEach(() => testing.reset());

test("every vector of the integration tests gives the Rust example's outcome and output", () => {
  const orders = new Orders(CONFIG);
  for (const [payload, attempt, expected] of VECTORS) {
    testing.reset();
    const outcome = orders.handle(message(/** @type {string} */ (payload), /** @type {number} */ (attempt)));
    assert.deepEqual(comparable(outcome), expected, `payload ${payload} attempt ${attempt}`);
  }
});

test('a pending order logs why it waits', () => {
  const orders = new Orders(CONFIG);
  orders.handle(message(/** @type {string} */ (VECTORS[6][0]), 1));
  assert.deepEqual(testing.logged(), [['info', 'order o-6: payment pending, retrying']]);
});

test('an output weir refuses fails the call: the handler asks for a retry', () => {
  // The last vector: customer "a b" makes a subject weir refuses (the stand-ins are told to).
  testing.refusePublish('invalid subject enriched.a b');
  const outcome = new Orders(CONFIG).handle(
    message('{"order_id":"o-18","customer":"a b","items":[{"sku":"A","qty":1,"price_cents":1}]}'),
  );
  assert.equal(outcome, weir.retry());
});

/** @param {string | Uint8Array} payload */
function accepted(payload) {
  try {
    parseOrder(typeof payload === 'string' ? ENCODER.encode(payload) : payload);
    return true;
  } catch {
    return false;
  }
}

const ITEM = '"items":[{"sku":"A","qty":2,"price_cents":1500}]';
/** @param {string} rest */
const order = (rest) => `{"order_id":"o","customer":"c",${rest}}`;

test('payloads are taken and refused exactly as serde takes and refuses them', () => {
  // Each of these was checked against the Rust example.
  const cases = /** @type {[string, boolean][]} */ ([
    // Whitespace is JSON's four characters, before and after.
    [` \t\r\n${order(ITEM)} \t\r\n`, true],
    [`\u000b${order(ITEM)}`, false],
    [`\ufeff${order(ITEM)}`, false],
    [`${order(ITEM)}\u0000`, false],
    [`${order(ITEM)}${order(ITEM)}`, false],
    // A known field twice is refused, an unknown one is skipped however often it comes.
    [order(`${ITEM},"seq":1,"seq":1`), false],
    [order(`${ITEM},"payment":null,"payment":null`), false],
    [order(`${ITEM},"x":1,"x":{"y":[1,2,{"z":null}]}`), true],
    [order('"items":[{"sku":"A","qty":1,"price_cents":1,"qty":2}]'), false],
    [order('"items":[{"sku":"A","qty":1,"price_cents":1,"n":1,"n":2}]'), true],
    // Names are exact, escapes and all.
    [`{"order\\u005fid":"o","customer":"c",${ITEM}}`, true],
    [order(`${ITEM},"Seq":"x"`), true],
    // The array form of a struct, the optional fields off the end.
    ['["o","c",1,[["A",1,2]]]', true],
    ['["o","c",1,[["A",1,2]],"paid"]', true],
    ['["o","c"]', false],
    ['["o","c",1,[["A",1,2]],null,1]', false],
    ['["o","c",1,[["A",1,2,3]]]', false],
    ['["o","c",1,[["A",1]]]', false],
    [order('"items":[["A",1,2],{"sku":"B","qty":1,"price_cents":1}]'), true],
    // Integers: plain digits up to the type's largest.
    [order('"seq":18446744073709551615,' + ITEM), true],
    [order('"seq":18446744073709551616,' + ITEM), false],
    [order('"items":[{"sku":"A","qty":4294967295,"price_cents":1}]'), true],
    [order('"items":[{"sku":"A","qty":4294967296,"price_cents":1}]'), false],
    ...['-0', '-1', '1.0', '1e2', '01', '+1', '"1"', 'null', 'NaN', 'Infinity', '0x1'].map(
      (n) => /** @type {[string, boolean]} */ ([order(`"seq":${n},${ITEM}`), false]),
    ),
    [order('"seq":0,' + ITEM), true],
    // A skipped value only has to be JSON.
    [order(`${ITEM},"x":1e400`), true],
    [order(`${ITEM},"x":-0.5E-7`), true],
    [order(`${ITEM},"x":NaN`), false],
    [order(`${ITEM},"x":01`), false],
    [order(`${ITEM},"x":[1,]`), false],
    [order(`${ITEM},"x":{"a":1,}`), false],
    [order(`${ITEM},"deep":${'['.repeat(300)}${']'.repeat(300)}`), true],
    [`{"order_id":"o","customer":"c",${ITEM},}`, false],
    [`{"order_id":"o","customer":"c",,${ITEM}}`, false],
    // Strings kept are checked for paired surrogates; skipped ones are not.
    [`{"order_id":"\\ud83d\\ude00","customer":"c",${ITEM}}`, true],
    [`{"order_id":"\\ud83d","customer":"c",${ITEM}}`, false],
    [`{"order_id":"\\ude00","customer":"c",${ITEM}}`, false],
    [`{"order_id":"\\ud83d\\u0041","customer":"c",${ITEM}}`, false],
    [order(`${ITEM},"x":"\\ud83d"`), true],
    [order(`${ITEM},"\\ud83d":1`), false],
    [order(`${ITEM},"x":{"\\ud83d":1}`), true],
    [`{"order_id":"a\u0001b","customer":"c",${ITEM}}`, false],
    [order(`${ITEM},"x":"a\u0001b"`), false],
    [order(`${ITEM},"x":"\\x"`), false],
  ]);
  for (const [payload, ok] of cases) assert.equal(accepted(payload), ok, payload);
});

test('strings kept must be UTF-8; strings skipped need not be', () => {
  /**
   * @param {string} before
   * @param {number[]} raw
   * @param {string} after
   */
  const bytes = (before, raw, after) => new Uint8Array([...ENCODER.encode(before), ...raw, ...ENCODER.encode(after)]);
  for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80]]) {
    assert.equal(accepted(bytes('{"order_id":"o', bad, `","customer":"c",${ITEM}}`)), false);
    assert.equal(accepted(bytes(`{"order_id":"o","customer":"c",${ITEM},"`, bad, '":1}')), false);
    assert.equal(accepted(bytes(`{"order_id":"o","customer":"c",${ITEM},"x":"`, bad, '"}')), true);
    assert.equal(accepted(bytes(`{"order_id":"o","customer":"c",${ITEM},"x":{"`, bad, '":1}}')), true);
  }
  assert.equal(accepted(bytes('{"order_id":"o', [0xf0, 0x9f, 0x98, 0x80], `","customer":"c",${ITEM}}`)), true);
});

test('a long skipped string or number is no trouble', () => {
  const note = 'x'.repeat(1 << 20);
  assert.equal(accepted(order(`${ITEM},"note":"${note}"`)), true);
  assert.equal(accepted(order(`${ITEM},"n":${'9'.repeat(100_000)}`)), true);
  assert.equal(accepted(order(`"seq":${'9'.repeat(100_000)},${ITEM}`)), false);
});

test('the configuration is read as the Rust example reads it, and refused in its words', () => {
  const orders = new Orders(new weir.Config());
  assert.equal(orders.outputPrefix, 'enriched');
  assert.equal(orders.region, 'eu-west');
  assert.equal(orders.pendingDelay, 200n);
  const refusals = [
    ['soon', 'invalid digit found in string'],
    ['', 'cannot parse integer from empty string'],
    ['+', 'invalid digit found in string'],
    ['-5', 'invalid digit found in string'],
    [' 5', 'invalid digit found in string'],
    ['18446744073709551616', 'number too large to fit in target type'],
    // Rust reads left to right: too large comes before the bad digit.
    ['99999999999999999999x', 'number too large to fit in target type'],
  ];
  for (const [value, why] of refusals) {
    const exports = weir.handler(Orders);
    assert.deepEqual(exports.init([['pending_delay', value]]), {
      tag: 'err',
      val: `pending_delay must be a number of milliseconds: ${why}`,
    });
  }
  assert.equal(parseMillis('+5'), 5n);
  // Any u64 of milliseconds is a delay; past 2**64 - 1 ns it is that long.
  const long = new Orders(new weir.Config([['pending_delay', '18446744073709551615']]));
  const pending = '{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}';
  assert.equal(long.handle(message(pending)).delayNs, 2n ** 64n - 1n);
  const exact = new Orders(new weir.Config([['pending_delay', '18446744073709']]));
  assert.equal(exact.handle(message(pending)).delayNs, 18_446_744_073_709_000_000n);
});
