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
//! | `trap-until N`               | panics while the delivery attempt is below N, then echoes |
//! | `overrun-until N MS`         | sleeps MS ms (past a short deadline) while the attempt is below N, then echoes |
//! | `spin`                       | loops forever                                             |
//! | `hog`                        | allocates until the memory limit stops it                 |
//! | `grow MIB`                   | touches MIB MiB (the instance's memory keeps that size), then echoes |
//! | `sleep MS`                   | sleeps MS ms (a host call), then echoes                   |
//! | `echo-then-trap`             | publishes, then panics                                    |
//! | `echo-then-retry`            | publishes, then asks for a retry                          |
//! | `forbidden`                  | publishes to `forbidden.subject`                          |
//! | `emit N`                     | publishes N outputs `<prefix>.<subject>.<i>`, then acks   |
//! | `recurse`                    | recurses until the stack overflows                        |
//! | `giant BYTES`                | publishes one output of BYTES bytes, then acks            |
//! | `publish-to SUBJECT`         | publishes the payload to SUBJECT; retries if refused      |
//! | `publish-header SUBJECT NAME VALUE` | publishes the payload to SUBJECT with the header NAME: VALUE (both percent-decoded, `%0A` is a line feed); retries if refused |
//! | `snoop`                      | tries files, environment, arguments and a socket, and publishes what it got to `<prefix>.<subject>` |
//! | `log-flood N`                | logs N lines and prints N lines to stdout, then echoes    |
//! | `config`                     | publishes the configuration `init` got, `key=value` pairs joined by `,` in its order |
//!
//! Every output carries the header `delivery-attempt`, and `tag` when the configuration sets
//! one. Configuration: `output_prefix` (default `out`), `tag`, `fixed`; `refuse` set to anything
//! makes `init` refuse the configuration, and `trap_in_init` makes it panic.

use std::time::Duration;

use weir_guest::{Config, Handler, Message, Outcome};

struct Scripted {
    /// The configuration, as `config` publishes it.
    config: String,
    prefix: String,
    tag: String,
    fixed: bool,
}

impl Handler for Scripted {
    fn init(config: Config) -> Result<Self, String> {
        if let Some(reason) = config.get("refuse") {
            return Err(format!("refusing on purpose: {reason}"));
        }
        if config.get("trap_in_init").is_some() {
            panic!("trap in init requested by the configuration");
        }
        Ok(Self {
            config: (config.iter())
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
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
            "trap-until" => {
                let until: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(2);
                if msg.delivery_attempt < until {
                    panic!("trap requested until attempt {until}");
                }
                self.echo(&msg)
            }
            "overrun-until" => {
                let until: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(2);
                let ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(1000);
                if msg.delivery_attempt < until {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                self.echo(&msg)
            }
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
            "grow" => {
                let mib: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                std::hint::black_box(vec![1u8; mib << 20]);
                self.echo(&msg)
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
            "config" => {
                let subject = format!("{}.{}", self.prefix, msg.subject);
                match weir_guest::publish(&subject, self.config.as_bytes()) {
                    Ok(()) => Outcome::Ack,
                    Err(_) => Outcome::retry(),
                }
            }
            "forbidden" => match weir_guest::publish("forbidden.subject", &msg.payload) {
                Ok(()) => Outcome::Ack,
                Err(_) => Outcome::Ack,
            },
            "recurse" => {
                let depth = recurse(0, 1, 2, 3);
                Outcome::reject(format!("recursed {depth} deep without overflowing"))
            }
            "giant" => {
                let bytes: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(1 << 20);
                let subject = format!("{}.{}", self.prefix, msg.subject);
                match weir_guest::publish(&subject, vec![b'g'; bytes]) {
                    Ok(()) => Outcome::Ack,
                    Err(_) => Outcome::retry(),
                }
            }
            "publish-to" => match weir_guest::publish(words.next().unwrap_or(""), &msg.payload) {
                Ok(()) => Outcome::Ack,
                Err(_) => Outcome::retry(),
            },
            "publish-header" => {
                let subject = words.next().unwrap_or("");
                let name = percent_decoded(words.next().unwrap_or(""));
                let value = percent_decoded(words.next().unwrap_or(""));
                let headers = [(name.as_str(), value.as_str())];
                match weir_guest::publish_with_headers(subject, &msg.payload, &headers) {
                    Ok(()) => Outcome::Ack,
                    Err(_) => Outcome::retry(),
                }
            }
            "snoop" => {
                let subject = format!("{}.{}", self.prefix, msg.subject);
                match weir_guest::publish(&subject, snoop()) {
                    Ok(()) => Outcome::Ack,
                    Err(_) => Outcome::retry(),
                }
            }
            "log-flood" => {
                let n: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1000);
                for i in 0..n {
                    weir_guest::log(weir_guest::Level::Info, format!("flood line {i}"));
                    println!("flood print {i}");
                }
                self.echo(&msg)
            }
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

/// `text` with every `%XX` replaced by the byte it stands for.
fn percent_decoded(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            None => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Calls itself until Wasm's call stack runs out. Its state lives in Wasm locals, not in linear
/// memory, and the result passes through a rotation, so the compiler can turn none of it into a
/// loop.
#[inline(never)]
fn recurse(depth: u64, a: u64, b: u64, c: u64) -> u64 {
    if depth == u64::MAX {
        return a;
    }
    let deeper = recurse(depth + 1, b ^ depth, c.wrapping_add(a), a.rotate_left(7));
    deeper.rotate_left(3) ^ a
}

/// What the sandbox lets a guest see: one line per attempt, `denied` when it got nothing.
fn snoop() -> String {
    let file = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(_) => "denied".to_owned(),
    };
    let listing = match std::fs::read_dir(".") {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(_) => "denied".to_owned(),
    };
    let env = match std::env::vars().count() {
        0 => "denied".to_owned(),
        n => format!("{n} variables"),
    };
    let args = match std::env::args().count() {
        0 => "denied".to_owned(),
        n => format!("{n} arguments"),
    };
    let socket = match std::net::TcpStream::connect("127.0.0.1:4222") {
        Ok(_) => "connected".to_owned(),
        Err(_) => "denied".to_owned(),
    };
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(_) => "listening".to_owned(),
        Err(_) => "denied".to_owned(),
    };
    format!(
        "file: {file}\nlisting: {listing}\nenv: {env}\nargs: {args}\nsocket: {socket}\nlistener: {listener}"
    )
}

weir_guest::export_handler!(Scripted);
