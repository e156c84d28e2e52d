/**
 * The orders example in JavaScript: one JSON order event in, one enriched event out, output for
 * output the same as the Rust `orders` example (examples/orders).
 *
 * - a well-formed order is enriched (total, item count, tier, region) and published to
 *   `<output_prefix>.<customer>`, then acked;
 * - malformed JSON, or an order without items, is rejected: it becomes a dead letter;
 * - an order whose payment is still "pending" asks to be retried after `pending_delay` (the
 *   payment clears by the third delivery), holding back later orders of its partition.
 *
 * Configuration: `output_prefix` (default `enriched`), `region` (default `eu-west`),
 * `pending_delay` in milliseconds (default 200).
 *
 * Build (from the repository's root): node guest-sdk/js/build.mjs examples/js-orders/app.js
 * target/guests/js/js-orders.wasm. Test: node --import ./guest-sdk/js/testing/register.js
 * --test examples/js-orders/
 */

import * as weir from 'weir';

import { Malformed, enrichedJson, parseMillis, parseOrder } from './order.js';

export class Orders {
  /** @param {weir.Config} config */
  constructor(config) {
    let millis;
    try {
      millis = parseMillis(config.get('pending_delay', '200'));
    } catch (e) {
      throw new Error(`pending_delay must be a number of milliseconds: ${/** @type {Error} */ (e).message}`);
    }
    /** In milliseconds, a BigInt: any u64 is a delay, as in the Rust example. */
    this.pendingDelay = millis;
    this.outputPrefix = config.get('output_prefix', 'enriched');
    this.region = config.get('region', 'eu-west');
  }

  /** @param {weir.Message} msg */
  handle(msg) {
    let order;
    try {
      order = parseOrder(msg.payload);
    } catch (e) {
      if (e instanceof Malformed) return weir.reject(`malformed order: ${e.message}`);
      throw e;
    }
    if (order.items.length === 0) return weir.reject(`order ${order.orderId} has no items`);
    if (order.payment === 'pending' && msg.deliveryAttempt < 3) {
      weir.info(`order ${order.orderId}: payment pending, retrying`);
      return weir.retry(this.pendingDelay);
    }

    // Sums wrap on overflow, as the Rust example's do in its release build.
    let totalCents = 0n;
    let itemCount = 0;
    for (const item of order.items) {
      totalCents = BigInt.asUintN(64, totalCents + BigInt(item.qty) * item.priceCents);
      itemCount = (itemCount + item.qty) >>> 0;
    }
    const payload = enrichedJson({
      orderId: order.orderId,
      customer: order.customer,
      seq: order.seq,
      totalCents,
      itemCount,
      skus: order.items.map((item) => item.sku),
      tier: totalCents < 10_000n ? 'standard' : totalCents < 100_000n ? 'silver' : 'gold',
      region: this.region,
      partition: msg.partition,
      streamSeq: msg.streamSeq,
      deliveryAttempt: msg.deliveryAttempt,
    });
    try {
      weir.publish(`${this.outputPrefix}.${order.customer}`, payload);
    } catch (e) {
      // The call has already failed and will be retried; the outcome does not matter.
      if (e instanceof weir.PublishError) return weir.retry();
      throw e;
    }
    return weir.ack();
  }
}

export const { init, handle } = weir.handler(Orders);
