//! The orders example: one JSON order event in, one enriched event out.
//!
//! - a well-formed order is enriched (total, item count, tier, region) and published to
//!   `<output_prefix>.<customer>`, then acked;
//! - malformed JSON, or an order without items, is rejected: it becomes a dead letter;
//! - an order whose payment is still `"pending"` asks to be retried after `pending_delay`
//!   (the payment clears by the third delivery), holding back later orders of its partition.
//!
//! Configuration: `output_prefix` (default `enriched`), `region` (default `eu-west`),
//! `pending_delay` in milliseconds (default 200).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_guest::{Config, Handler, Message, Outcome};

#[derive(Deserialize)]
struct Order {
    order_id: String,
    customer: String,
    /// The publisher's per-customer counter, carried through so order can be checked.
    #[serde(default)]
    seq: u64,
    items: Vec<Item>,
    #[serde(default)]
    payment: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: u64,
}

#[derive(Serialize)]
struct Enriched<'a> {
    order_id: &'a str,
    customer: &'a str,
    seq: u64,
    total_cents: u64,
    item_count: u32,
    skus: Vec<&'a str>,
    tier: &'static str,
    region: &'a str,
    partition: u32,
    stream_seq: u64,
    delivery_attempt: u32,
}

struct Orders {
    output_prefix: String,
    region: String,
    pending_delay: Duration,
}

impl Handler for Orders {
    fn init(config: Config) -> Result<Self, String> {
        let pending_delay = config
            .get_or("pending_delay", "200")
            .parse()
            .map_err(|e| format!("pending_delay must be a number of milliseconds: {e}"))?;
        Ok(Self {
            output_prefix: config.get_or("output_prefix", "enriched").to_owned(),
            region: config.get_or("region", "eu-west").to_owned(),
            pending_delay: Duration::from_millis(pending_delay),
        })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        let order: Order = match serde_json::from_slice(&msg.payload) {
            Ok(order) => order,
            Err(e) => return Outcome::reject(format!("malformed order: {e}")),
        };
        if order.items.is_empty() {
            return Outcome::reject(format!("order {} has no items", order.order_id));
        }
        if order.payment.as_deref() == Some("pending") && msg.delivery_attempt < 3 {
            weir_guest::info!("order {}: payment pending, retrying", order.order_id);
            return Outcome::retry_after(self.pending_delay);
        }

        let total_cents = order.items.iter().map(|i| u64::from(i.qty) * i.price_cents).sum();
        let enriched = Enriched {
            order_id: &order.order_id,
            customer: &order.customer,
            seq: order.seq,
            total_cents,
            item_count: order.items.iter().map(|i| i.qty).sum(),
            skus: order.items.iter().map(|i| i.sku.as_str()).collect(),
            tier: match total_cents {
                0..10_000 => "standard",
                10_000..100_000 => "silver",
                _ => "gold",
            },
            region: &self.region,
            partition: msg.partition,
            stream_seq: msg.stream_seq,
            delivery_attempt: msg.delivery_attempt,
        };
        let payload = match serde_json::to_vec(&enriched) {
            Ok(payload) => payload,
            Err(e) => return Outcome::reject(format!("cannot encode order {}: {e}", order.order_id)),
        };
        let subject = format!("{}.{}", self.output_prefix, order.customer);
        match weir_guest::publish(&subject, payload) {
            Ok(()) => Outcome::Ack,
            // The call has already failed and will be retried; the outcome does not matter.
            Err(_) => Outcome::retry(),
        }
    }
}

weir_guest::export_handler!(Orders);
