//! A test guest that keeps state (`weir:handler/state`), each message a command. Every reply is
//! published to `<prefix>.<subject>` (configuration `output_prefix`, default `out`) before the
//! call acks.
//!
//! | payload                      | the handler                                               |
//! |------------------------------|-----------------------------------------------------------|
//! | `add KEY N`                  | adds N to the number at KEY and replies `KEY=<total>`; when the configuration sets `threshold` T, replies only when the total crosses a multiple of T |
//! | `add-then-retry KEY N`       | adds N to KEY, then asks for a retry (`add-then-reject`, `add-then-trap`, `add-then-hog` and `add-then-overrun MS` likewise) |
//! | `read KEY`                   | replies the value at KEY, or `none`                       |
//! | `read-own KEY`               | sets KEY to `first`, reads it, sets it to `second`, reads it, replies both reads |
//! | `delete KEY`                 | deletes KEY and replies what reading it then gives        |
//! | `keys PREFIX`                | replies the keys under PREFIX, comma-separated            |
//! | `put-big KEY BYTES`          | sets KEY to BYTES bytes; replies `ok` or the refusal      |
//! | `put-many PREFIX N`          | sets N keys PREFIX0..; replies `ok` or the first refusal  |
//! | anything else                | replies the payload                                       |

use std::time::Duration;

use weir_guest::{Config, Handler, Message, Outcome, state};

struct Stateful {
    prefix: String,
    threshold: Option<u64>,
}

impl Handler for Stateful {
    fn init(config: Config) -> Result<Self, String> {
        let threshold = match config.get("threshold") {
            Some(text) => Some(text.parse().map_err(|_| format!("threshold {text:?} is not a number"))?),
            None => None,
        };
        Ok(Self {
            prefix: config.get_or("output_prefix", "out").to_owned(),
            threshold,
        })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        let text = msg.payload_str().unwrap_or("").to_owned();
        let mut words = text.split_whitespace();
        let command = words.next().unwrap_or("");
        match command {
            "add" | "add-then-retry" | "add-then-reject" | "add-then-trap" | "add-then-hog"
            | "add-then-overrun" => {
                let key = words.next().unwrap_or("total");
                let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                let before = state::get_u64(key).unwrap_or(0);
                let total = before + n;
                if state::set_u64(key, total).is_err() {
                    return Outcome::retry();
                }
                match command {
                    "add-then-retry" => Outcome::retry_after(Duration::from_millis(50)),
                    "add-then-reject" => Outcome::reject("rejected after adding"),
                    "add-then-trap" => panic!("trap after adding"),
                    "add-then-hog" => {
                        let mut hoard: Vec<Vec<u8>> = Vec::new();
                        loop {
                            hoard.push(vec![1; 1 << 20]);
                            std::hint::black_box(&hoard);
                        }
                    }
                    "add-then-overrun" => {
                        let ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(1000);
                        std::thread::sleep(Duration::from_millis(ms));
                        self.reply(&msg, &format!("{key}={total}"))
                    }
                    _ => match self.threshold {
                        Some(t) if t > 0 && before / t == total / t => Outcome::Ack,
                        _ => self.reply(&msg, &format!("{key}={total}")),
                    },
                }
            }
            "read" => {
                let key = words.next().unwrap_or("total");
                let value = state::get_string(key).unwrap_or_else(|| "none".to_owned());
                self.reply(&msg, &value)
            }
            "read-own" => {
                let key = words.next().unwrap_or("own");
                let mut reads = Vec::new();
                for value in ["first", "second"] {
                    if state::set_string(key, value).is_err() {
                        return Outcome::retry();
                    }
                    reads.push(state::get_string(key).unwrap_or_else(|| "none".to_owned()));
                }
                self.reply(&msg, &reads.join(","))
            }
            "delete" => {
                let key = words.next().unwrap_or("total");
                if state::delete(key).is_err() {
                    return Outcome::retry();
                }
                let value = state::get_string(key).unwrap_or_else(|| "none".to_owned());
                self.reply(&msg, &value)
            }
            "keys" => {
                let prefix = words.next().unwrap_or("");
                let keys: Vec<String> = state::keys(prefix).collect();
                self.reply(&msg, &keys.join(","))
            }
            "put-big" => {
                let key = words.next().unwrap_or("big");
                let bytes: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(1 << 20);
                match state::set(key, vec![b'b'; bytes]) {
                    Ok(()) => self.reply(&msg, "ok"),
                    Err(error) => self.reply(&msg, &error.message()),
                }
            }
            "put-many" => {
                let prefix = words.next().unwrap_or("k");
                let n: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(10);
                for i in 0..n {
                    if let Err(error) = state::set(&format!("{prefix}{i}"), "v") {
                        return self.reply(&msg, &error.message());
                    }
                }
                self.reply(&msg, "ok")
            }
            _ => self.reply(&msg, &text),
        }
    }
}

impl Stateful {
    /// Publishes `text` to `<prefix>.<subject>`, then acks.
    fn reply(&self, msg: &Message, text: &str) -> Outcome {
        let subject = format!("{}.{}", self.prefix, msg.subject);
        match weir_guest::publish(&subject, text) {
            Ok(()) => Outcome::Ack,
            Err(_) => Outcome::retry(),
        }
    }
}

weir_guest::export_handler!(Stateful);
