/**
 * {{name}}: a weir stream handler. weir hands it the messages of each partition of its input
 * stream one at a time, in order; for each it publishes the payload in capitals to
 * `<output_prefix>.<subject>` and acks, or rejects an empty message (it becomes a dead letter).
 *
 * Configuration (`weir deploy --config key=value`): `output_prefix`, by default `out`.
 */

import * as weir from 'weir';

export class Shout {
  /** @param {weir.Config} config */
  constructor(config) {
    this.prefix = config.get('output_prefix', 'out');
    if (this.prefix === '') throw new Error('output_prefix must not be empty');
  }

  /** @param {weir.Message} msg */
  handle(msg) {
    if (msg.payload.length === 0) return weir.reject('empty message');
    // A refused publish throws weir.PublishError, and the call fails whatever it answers.
    weir.publish(`${this.prefix}.${msg.subject}`, shout(msg.payload));
    return weir.ack();
  }
}

/**
 * The payload in capitals (ASCII letters only).
 * @param {Uint8Array} payload
 */
export function shout(payload) {
  return payload.map((byte) => (byte >= 0x61 && byte <= 0x7a ? byte - 0x20 : byte));
}

export const { init, handle } = weir.handler(Shout);
