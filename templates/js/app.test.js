// {{name}}'s own tests, on Node.js against weir/testing's stand-ins for the host: `npm test`.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import * as weir from 'weir';
import * as testing from 'weir/testing';

import { Shout } from './app.js';

const handler = new Shout(new weir.Config([['output_prefix', 'loud']]));
const message = (payload) => new weir.Message({ subject: 'greetings.en', payload });

beforeEach(() => testing.reset());

test('a message is shouted', () => {
  assert.deepEqual(handler.handle(message('hello, weir')), weir.ack());
  const [output] = testing.published();
  assert.equal(output.subject, 'loud.greetings.en');
  assert.equal(new TextDecoder().decode(output.payload), 'HELLO, WEIR');
});

test('an empty message is rejected', () => {
  assert.deepEqual(handler.handle(message('')), weir.reject('empty message'));
  assert.deepEqual(testing.published(), []);
});

test('an empty prefix is refused', () => {
  assert.throws(() => new Shout(new weir.Config([['output_prefix', '']])), /output_prefix must not be empty/);
});
