//! {{name}}: a weir stream handler. weir hands it the messages of each partition of its input
//! stream one at a time, in order; for each it publishes the payload in capitals to
//! `<output_prefix>.<subject>` and acks, or rejects an empty message (it becomes a dead letter).
//!
//! Configuration (`weir deploy --config key=value`): `output_prefix`, by default `out`.

use weir_guest::{Config, Handler, Message, Outcome};

struct Shout {
    prefix: String,
}

impl Handler for Shout {
    fn init(config: Config) -> Result<Self, String> {
        let prefix = config.get_or("output_prefix", "out");
        if prefix.is_empty() {
            return Err("output_prefix must not be empty".into());
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        match shout(&msg.payload) {
            Ok(loud) => match weir_guest::publish(&format!("{}.{}", self.prefix, msg.subject), loud) {
                Ok(()) => Outcome::Ack,
                // A refused publish fails the call whatever it answers; say why in the log.
                Err(refused) => Outcome::reject(refused),
            },
            Err(reason) => Outcome::reject(reason),
        }
    }
}

/// The payload in capitals (ASCII letters only), or why there is nothing to shout.
pub fn shout(payload: &[u8]) -> Result<Vec<u8>, String> {
    if payload.is_empty() {
        return Err("empty message".into());
    }
    Ok(payload.to_ascii_uppercase())
}

weir_guest::export_handler!(Shout);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_shouted() {
        assert_eq!(shout(b"hello, weir").unwrap(), b"HELLO, WEIR");
    }

    #[test]
    fn an_empty_message_is_refused() {
        assert_eq!(shout(b"").unwrap_err(), "empty message");
    }
}
