//! The smallest handler: every message is acknowledged, nothing is published. `weir bench`
//! uses it to measure what weir itself costs per message.

use weir_guest::{Config, Handler, Message, Outcome};

struct Noop;

impl Handler for Noop {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn handle(&mut self, _message: Message) -> Outcome {
        Outcome::Ack
    }
}

weir_guest::export_handler!(Noop);
