//! A test guest whose every message is a command, so that one component can play each part the
//! integration tests need. The payload's first word picks the behaviour:
//!
//! | payload                      | the handler                                               |
//! |------------------------------|-----------------------------------------------------------|
//! | `echo ...` (or anything else)| publishes the payload to `<prefix>.<subject>`, then acks  |
//! | `noop`                       | acks, publishes nothing                                   |
//! | `retry-until N MS`           | retries after MS ms while the delivery attempt is below N, then echoes |
//! | `retry`                      | asks for a retry with the deployment's backoff, always    |
//! | `reject REASON...`           | rejects with REASON                                       |
//! | `reject-unless-fixed`        | rejects unless the configuration sets `fixed`, else echoes|
//! | `trap`                       | panics                                                    |
//! | `spin`                       | loops forever                                             |
//! | `hog`                        | allocates until the memory limit stops it                 |
//! | `sleep MS`                   | sleeps MS ms (a host call), then echoes                   |
//! | `echo-then-trap`             | publishes, then panics                                    |
//! | `echo-then-retry`            | publishes, then asks for a retry                          |
//! | `forbidden`                  | publishes to `forbidden.subject`                          |
//! | `emit N`                     | publishes N outputs `<prefix>.<subject>.<i>`, then acks   |
//!
//! Every output carries the header `delivery-attempt`, and `tag` when the configuration sets
//! one. Configuration: `output_prefix` (default `out`), `tag`, `fixed`; `refuse` set to anything
//! makes `init` refuse the configuration.

use std::time::Duration;

use weir_guest::{Config, Handler, Message, Outcome};

struct Scripted {
    prefix: String,
    tag: String,
    fixed: bool,
}

impl Handler for Scripted {
    fn init(config: Config) -> Result<Self, String> {
        if let Some(reason) = config.get("refuse") {
            return Err(format!("refusing on purpose: {reason}"));
        }
        Ok(Self {
            prefix: config.get_or("output_prefix", "out").to_owned(),
            tag: config.get_or("tag", "").to_owned(),
            fixed: config.get("fixed").is_some(),
        })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        let text = msg.payload_str().unwrap_or("").to_owned();
        let mut words = text.split_whitespace();
        match words.next().unwrap_or("") {
            "noop" => Outcome::Ack,
            "retry-until" => {
                let until: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(2);
                let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(100);
                if msg.delivery_attempt < until {
                    Outcome::retry_after(Duration::from_millis(ms))
                } else {
                    self.echo(&msg)
                }
            }
            "retry" => Outcome::retry(),
            "reject" => Outcome::reject(words.collect::<Vec<_>>().join(" ")),
            "reject-unless-fixed" if !self.fixed => Outcome::reject("not fixed yet"),
            "trap" => panic!("trap requested by the message"),
            "spin" => loop {
                std::hint::black_box(0);
            },
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                let ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(100);
                std::thread::sleep(Duration::from_millis(ms));
                self.echo(&msg)
            }
            "echo-then-trap" => {
                let _ = self.echo(&msg);
                panic!("trap after publishing");
            }
            "echo-then-retry" => {
                let _ = self.echo(&msg);
                Outcome::retry_after(Duration::from_millis(50))
            }
            "emit" => {
                let n: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                for i in 0..n {
                    let subject = format!("{}.{}.{i}", self.prefix, msg.subject);
                    if weir_guest::publish(&subject, &msg.payload).is_err() {
                        return Outcome::retry();
                    }
                }
                Outcome::Ack
            }
            "forbidden" => match weir_guest::publish("forbidden.subject", &msg.payload) {
                Ok(()) => Outcome::Ack,
                Err(_) => Outcome::Ack,
            },
            _ => self.echo(&msg),
        }
    }
}

impl Scripted {
    fn echo(&self, msg: &Message) -> Outcome {
        let attempt = msg.delivery_attempt.to_string();
        let subject = format!("{}.{}", self.prefix, msg.subject);
        let mut headers = vec![("delivery-attempt", attempt.as_str())];
        if !self.tag.is_empty() {
            headers.push(("tag", self.tag.as_str()));
        }
        match weir_guest::publish_with_headers(&subject, &msg.payload, &headers) {
            Ok(()) => Outcome::Ack,
            Err(_) => Outcome::retry(),
        }
    }
}

weir_guest::export_handler!(Scripted);
