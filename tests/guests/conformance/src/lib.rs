//! The Rust conformance guest: does what `tests/conformance/README.md` says, through
//! `guest-sdk/rust`, so that `tests/conformance/vectors.json` holds every SDK to one behaviour.

use std::fmt::Write as _;
use std::time::Duration;

use weir_guest::{Config, Handler, Level, Message, Outcome};

struct Conformance {
    config: Config,
}

impl Handler for Conformance {
    fn init(config: Config) -> Result<Self, String> {
        if let Some(reason) = config.get("refuse") {
            return Err(reason.to_owned());
        }
        let mut line = String::from("config");
        for (key, value) in config.iter() {
            let _ = write!(line, " {key}={value}");
        }
        weir_guest::info!("{line}");
        Ok(Self { config })
    }

    fn handle(&mut self, msg: Message) -> Outcome {
        let mut tokens = msg.subject.splitn(3, '.');
        let _conformance = tokens.next();
        let action = tokens.next().unwrap_or("");
        let rest = tokens.next().unwrap_or("");
        let text = || String::from_utf8_lossy(&msg.payload).into_owned();
        match action {
            "ack" => Outcome::Ack,
            "retry" => Outcome::retry(),
            "retry-after" => match text().parse() {
                Ok(ms) => Outcome::retry_after(Duration::from_millis(ms)),
                Err(_) => Outcome::reject(format!("not a number of milliseconds: {}", text())),
            },
            "reject" => Outcome::reject(text()),
            "echo" => {
                let headers: Vec<(&str, &str)> = (msg.headers.iter())
                    .map(|h| (h.name.as_str(), h.value.as_str()))
                    .collect();
                published(weir_guest::publish_with_headers(
                    &format!("out.{rest}"),
                    &msg.payload,
                    &headers,
                ))
            }
            "describe" => published(weir_guest::publish("out.describe", self.describe(&msg))),
            "log" => {
                for header in &msg.headers {
                    let Some(level) = level(&header.name) else {
                        return Outcome::reject(format!("unknown level {}", header.name));
                    };
                    weir_guest::log(level, &header.value);
                }
                Outcome::Ack
            }
            "publish-to" => published(weir_guest::publish(&text(), b"")),
            "many" => {
                let Ok(count) = text().parse::<u32>() else {
                    return Outcome::reject(format!("not a count: {}", text()));
                };
                for i in 0..count {
                    if let Err(error) = weir_guest::publish(&format!("out.many.{i}"), i.to_string())
                    {
                        return Outcome::reject(format!("refused: {error}"));
                    }
                }
                Outcome::Ack
            }
            "trap" => panic!("trap requested: {}", text()),
            other => Outcome::reject(format!("unknown action {other}")),
        }
    }
}

impl Conformance {
    fn describe(&self, msg: &Message) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!("subject {}", msg.subject));
        line(format!("stream {}", msg.stream));
        line(format!("seq {}", msg.stream_seq));
        line(format!("partition {}", msg.partition));
        line(format!("attempt {}", msg.delivery_attempt));
        line(format!("published-at {}", msg.published_at));
        line(format!("payload {}", msg.payload.len()));
        line(match msg.payload_str() {
            Some(text) => format!("text {text}"),
            None => "text (not UTF-8)".to_owned(),
        });
        for header in &msg.headers {
            line(format!("header {}: {}", header.name, header.value));
        }
        if let Some(name) = msg.header("first") {
            line(format!("first {name}: {}", msg.header(name).unwrap_or("(none)")));
        }
        for (key, value) in self.config.iter() {
            line(format!("config {key}={value}"));
        }
        out
    }
}

/// Ack if the publish was taken, else reject with why.
fn published(result: Result<(), String>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ack,
        Err(error) => Outcome::reject(format!("refused: {error}")),
    }
}

fn level(name: &str) -> Option<Level> {
    Some(match name {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => return None,
    })
}

weir_guest::export_handler!(Conformance);
