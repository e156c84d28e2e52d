// A TypeScript handler against the SDK's declarations: compiled, never run
// (`tsc -p guest-sdk/js/tsconfig.json`). Each @ts-expect-error is a misuse the types catch.

import * as weir from 'weir';
import { state, StateError } from 'weir';
import * as stateModule from 'weir/state';
import * as testing from 'weir/testing';

class Totals implements weir.Handler {
  readonly prefix: string;
  readonly limit: number;

  constructor(config: weir.Config) {
    this.prefix = config.get('output_prefix', 'totals');
    const limit: string | undefined = config.get('limit');
    this.limit = Number(limit ?? '10');
    for (const [key, value] of config) weir.debug(`${key}=${value}`);
  }

  handle(msg: weir.Message): weir.Outcome {
    const seq: bigint = msg.streamSeq;
    const at: bigint = msg.publishedAt;
    const partition: number = msg.partition;
    const kind: string | undefined = msg.header('kind');
    const name: string = msg.headers[0]?.name ?? '';
    if (msg.deliveryAttempt > 3) return weir.reject(`gave up on ${seq} (${at}, ${partition}, ${kind}, ${name})`);
    let total: number;
    try {
      total = state.getInt('total', 0) + msg.payload.length;
      state.setInt('total', total);
      state.setInt('big', 2n ** 64n - 1n);
      state.setJson('last', { seq: String(seq) });
      state.delete('old');
      stateModule.setText('name', msg.text());
      const last = state.getJson<{ seq: string }>('last');
      weir.info(`last ${last?.seq} of ${[...state.keys('t/')].length}`);
    } catch (e) {
      if (e instanceof StateError) {
        const why: 'invalid_key' | 'value_too_large' | 'too_many_keys' | 'too_many_bytes' | 'too_many_writes' = e.kind;
        const limit: number | undefined = e.limit;
        weir.warn(`${why} ${limit}`);
        return weir.retry(1_000);
      }
      throw e;
    }
    try {
      weir.publish(`${this.prefix}.${msg.subject}`, String(total), [['n', '1'], { name: 'm', value: '2' }]);
      weir.publish('x', new Uint8Array(0), { a: 'b' });
      weir.publish('x');
    } catch (e) {
      if (e instanceof weir.PublishError) return weir.retry();
      throw e;
    }
    weir.log('trace', 'done');
    const outcome = weir.retry(1500n);
    const delay: bigint | undefined = outcome.delayNs;
    return delay === 0n ? weir.ack() : weir.ack();
  }
}

export const { init, handle } = weir.handler(Totals);
const arrow = weir.handler((config) => ({ handle: () => weir.reject(config.get('why', 'no')) }));
const refused: { tag: 'ok'; val: undefined } | { tag: 'err'; val: string } = arrow.init([['why', 'x']]);
const answer: weir.Outcome = handle(new weir.Message({ subject: 's', payload: 'text', headers: [['a', 'b']], streamSeq: 1 }));
testing.reset();
testing.refusePublish('no');
testing.refuseWrites('too_many_keys', 10);
const published: testing.Published[] = testing.published();
const logged: [string, string][] = testing.logged();
const kept: Map<string, Uint8Array> = testing.kept();
void [refused, answer, published, logged, kept];

// @ts-expect-error: a level is one of five names
weir.log('loud', 'x');
// @ts-expect-error: a delay is a number of milliseconds
weir.retry('5');
// @ts-expect-error: a subject is a string
weir.publish(5, 'x');
// @ts-expect-error: headers are pairs of strings
weir.publish('s', 'x', [['a', 1]]);
// @ts-expect-error: a message needs a subject
new weir.Message({ payload: 'x' });
// @ts-expect-error: a handler returns an outcome
weir.handler(class { constructor(_: weir.Config) {} handle() { return 'ack'; } });
// @ts-expect-error: state values are bytes or text
state.set('k', 5);
// @ts-expect-error: not a kind of refusal
testing.refuseWrites('too_many_cats');
