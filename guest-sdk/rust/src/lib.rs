//! Write a weir stream handler in Rust.
//!
//! Implement [`Handler`] for a type and name it in [`export_handler!`]; build with
//! `cargo build --release --target wasm32-wasip2` and deploy the `.wasm` with `weir deploy`.
//!
//! ```ignore
//! use weir_guest::{Config, Handler, Message, Outcome};
//!
//! struct Orders { prefix: String }
//!
//! impl Handler for Orders {
//!     fn init(config: Config) -> Result<Self, String> {
//!         Ok(Self { prefix: config.get_or("output_prefix", "enriched").to_owned() })
//!     }
//!
//!     fn handle(&mut self, msg: Message) -> Outcome {
//!         match weir_guest::publish(&format!("{}.{}", self.prefix, msg.subject), &msg.payload) {
//!             Ok(()) => Outcome::Ack,
//!             Err(e) => Outcome::reject(e),
//!         }
//!     }
//! }
//!
//! weir_guest::export_handler!(Orders);
//! ```
//!
//! One instance of the handler serves one partition: `handle` sees that partition's messages
//! one at a time, in stream order, so `&mut self` state is per partition and never shared. It
//! lasts as long as the instance; what must outlive it (running totals, windows, what was
//! seen) belongs in [`state`], which weir keeps per partition and changes exactly once per
//! acknowledged message.

use std::time::Duration;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "weir_guest::bindings",
    });
}

pub use bindings::weir::handler::types::{Header, Level, Message, Outcome};

pub mod state;

/// A stream handler. weir creates one value per partition with [`Handler::init`] and hands it
/// that partition's messages in order.
pub trait Handler: Sized + 'static {
    /// Builds the handler from the deployment's configuration (`weir deploy --config k=v`).
    /// An error refuses the configuration: `weir deploy` fails with this message.
    fn init(config: Config) -> Result<Self, String>;

    /// Decides what becomes of one delivery of a message. Messages published with [`publish`]
    /// during this call are sent only if it returns [`Outcome::Ack`].
    fn handle(&mut self, message: Message) -> Outcome;
}

/// The deployment's configuration (`weir deploy --config key=value`): key/value pairs, each key
/// once, sorted by key (the deployment record keeps a map).
#[derive(Debug, Clone, Default)]
pub struct Config(Vec<(String, String)>);

impl Config {
    /// The value of `key`, if it was set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` if it was not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Message {
    /// The first value of header `name` (case-sensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

impl Outcome {
    /// Retry after the deployment's backoff for this delivery attempt.
    pub fn retry() -> Self {
        Outcome::Retry(None)
    }

    /// Retry after `delay`.
    pub fn retry_after(delay: Duration) -> Self {
        Outcome::Retry(Some(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// Never retry: terminate the message with `reason`; it becomes a dead letter.
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject(reason.into())
    }
}

/// Buffers a message to `subject`, sent only if this call ends in [`Outcome::Ack`]. Fails when
/// the subject is not among the deployment's allowed outputs or is reserved (`$…`, `_INBOX…`,
/// `weir.…`), a header is weir's (`Nats-*`, `KV-Operation`) or invalid, or a per-call limit is
/// reached; the whole call then fails and is retried.
pub fn publish(subject: &str, payload: impl AsRef<[u8]>) -> Result<(), String> {
    publish_with_headers(subject, payload, &[])
}

/// Like [`publish`], with headers.
pub fn publish_with_headers(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    let headers: Vec<Header> = headers
        .iter()
        .map(|(name, value)| Header {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    bindings::weir::handler::host::publish(subject, payload.as_ref(), &headers)
}

/// Writes a line to the node's log, tagged with tenant, handler, partition and stream sequence.
pub fn log(level: Level, message: impl AsRef<str>) {
    bindings::weir::handler::host::log(level, message.as_ref());
}

/// `log(Level::Info, format!(...))`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, format!($($arg)*)) };
}

/// `log(Level::Warn, format!(...))`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, format!($($arg)*)) };
}

/// `log(Level::Error, format!(...))`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, format!($($arg)*)) };
}

/// Exports `$handler` (a type implementing [`Handler`]) as the component's handler.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            struct WeirExport;

            impl $crate::bindings::Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$handler>(config)
                }

                fn handle(message: $crate::Message) -> $crate::Outcome {
                    $crate::__private::handle::<$handler>(message)
                }
            }

    $crate::bindings::__export_handler_world!(WeirExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    use super::{Config, Handler, Message, Outcome};

    thread_local! {
        // The instance's one handler value. A component instance is single-threaded and weir
        // never calls it re-entrantly, so the RefCell is never contended.
        static HANDLER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<H: Handler>(config: Vec<(String, String)>) -> Result<(), String> {
        let handler = H::init(Config(config))?;
        HANDLER.with(|slot| *slot.borrow_mut() = Some(Box::new(handler)));
        Ok(())
    }

    pub fn handle<H: Handler>(message: Message) -> Outcome {
        HANDLER.with(|slot| {
            let mut slot = slot.borrow_mut();
            let Some(handler) = slot.as_mut().and_then(|h| h.downcast_mut::<H>()) else {
                panic!("weir called handle before init succeeded");
            };
            handler.handle(message)
        })
    }
}
