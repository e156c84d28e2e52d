//! The counter example: counts each subject's messages in weir's state, with one `get` and one
//! `set` per message, and acks. `weir bench` measures state with it; with the configuration
//! `state=off` it does the same work without touching state, for the comparison.

use weir_guest::{Config, Handler, Message, Outcome, state};

struct Counter {
    keeps_state: bool,
}

impl Handler for Counter {
    fn init(config: Config) -> Result<Self, String> {
        match config.get_or("state", "on") {
            "on" => Ok(Self { keeps_state: true }),
            "off" => Ok(Self { keeps_state: false }),
            other => Err(format!("state must be on or off, not {other:?}")),
        }
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        if !self.keeps_state {
            return Outcome::Ack;
        }
        let count = state::get_u64(&msg.subject).unwrap_or(0) + 1;
        match state::set_u64(&msg.subject, count) {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::reject(error.message()),
        }
    }
}

weir_guest::export_handler!(Counter);
