//! The totals example: per-customer running totals kept in weir's state, exactly once.
//!
//! For each order event (the same JSON as the orders example's):
//!
//! - the customer's running total (`total/<customer>`, in cents) grows by the order's total;
//!   each time it passes another multiple of `milestone_cents`, a milestone is published to
//!   `<output_prefix>.<customer>.milestone`;
//! - the customer's orders are counted per one-minute window of the message's publish time
//!   (`window/<customer>`); when an order of a later minute arrives, the finished window is
//!   published to `<output_prefix>.<customer>.window`;
//! - malformed JSON, or an order without items, is rejected: it becomes a dead letter, and
//!   changes nothing.
//!
//! Each message's state changes and outputs take effect once, through retries, crashes,
//! handoffs and redeploys: weir commits them together before it acknowledges the message.
//!
//! Configuration: `output_prefix` (default `totals`), `milestone_cents` (default 100000).

use serde::{Deserialize, Serialize};
use weir_guest::{Config, Handler, Message, Outcome, state};

#[derive(Deserialize)]
struct Order {
    customer: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    qty: u32,
    price_cents: u64,
}

/// A customer's orders in one minute, as kept in state.
#[derive(Serialize, Deserialize)]
struct Window {
    /// Minutes since the Unix epoch.
    minute: u64,
    orders: u64,
}

#[derive(Serialize)]
struct Milestone<'a> {
    customer: &'a str,
    total_cents: u64,
    milestone_cents: u64,
    stream_seq: u64,
}

#[derive(Serialize)]
struct WindowDone<'a> {
    customer: &'a str,
    /// The window's start, in seconds since the Unix epoch.
    start: u64,
    orders: u64,
}

struct Totals {
    output_prefix: String,
    milestone_cents: u64,
}

impl Handler for Totals {
    fn init(config: Config) -> Result<Self, String> {
        let milestone_cents = config
            .get_or("milestone_cents", "100000")
            .parse()
            .map_err(|e| format!("milestone_cents must be a whole number of cents: {e}"))?;
        if milestone_cents == 0 {
            return Err("milestone_cents must be more than 0".to_owned());
        }
        Ok(Self {
            output_prefix: config.get_or("output_prefix", "totals").to_owned(),
            milestone_cents,
        })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        let order: Order = match serde_json::from_slice(&msg.payload) {
            Ok(order) => order,
            Err(e) => return Outcome::reject(format!("malformed order: {e}")),
        };
        if order.items.is_empty() {
            return Outcome::reject("order has no items");
        }
        let customer = order.customer.as_str();
        let amount: u64 = order.items.iter().map(|i| u64::from(i.qty) * i.price_cents).sum();
        match self.count(customer, amount, &msg) {
            Ok(()) => Outcome::Ack,
            // A write over the tenant's state quotas: the message is a dead letter rather than
            // half counted. (A refused publish fails the whole call, which is retried.)
            Err(reason) => Outcome::reject(reason),
        }
    }
}

impl Totals {
    fn count(&self, customer: &str, amount: u64, msg: &Message) -> Result<(), String> {
        let total_key = format!("total/{customer}");
        let before = state::get_u64(&total_key).unwrap_or(0);
        let total = before + amount;
        state::set_u64(&total_key, total).map_err(|e| e.message())?;
        if before / self.milestone_cents != total / self.milestone_cents {
            let milestone = Milestone {
                customer,
                total_cents: total,
                milestone_cents: total / self.milestone_cents * self.milestone_cents,
                stream_seq: msg.stream_seq,
            };
            self.publish(customer, "milestone", &milestone)?;
        }

        let window_key = format!("window/{customer}");
        let minute = msg.published_at / 60_000_000_000;
        let window = match state::get_json::<Window>(&window_key) {
            Some(Ok(window)) if window.minute >= minute => Window {
                orders: window.orders + 1,
                ..window
            },
            Some(Ok(done)) => {
                let done = WindowDone {
                    customer,
                    start: done.minute * 60,
                    orders: done.orders,
                };
                self.publish(customer, "window", &done)?;
                Window { minute, orders: 1 }
            }
            Some(Err(e)) => return Err(format!("unreadable window of {customer}: {e}")),
            None => Window { minute, orders: 1 },
        };
        state::set_json(&window_key, &window).map_err(|e| e.to_string())
    }

    fn publish(&self, customer: &str, what: &str, value: &impl Serialize) -> Result<(), String> {
        let payload = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let subject = format!("{}.{customer}.{what}", self.output_prefix);
        weir_guest::publish(&subject, payload)
    }
}

weir_guest::export_handler!(Totals);
