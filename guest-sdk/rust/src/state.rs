//! The partition's state: keys and values weir keeps for this deployment and partition, that
//! outlive the instance, the node and the version.
//!
//! A call sees its own writes at once. They take effect only if the call returns
//! [`Outcome::Ack`](crate::Outcome::Ack), and then exactly once: weir commits them together with
//! the fact that the message was applied, before it acknowledges the message. A retry, a
//! rejection or a trap drops them.
//!
//! ```ignore
//! let total = weir_guest::state::get_u64("total").unwrap_or(0) + amount;
//! weir_guest::state::set_u64("total", total)?;
//! ```
//!
//! Keys are UTF-8 strings of 1 to 256 bytes. A write over the tenant's quotas (value size, keys
//! or bytes per partition, writes per call) is refused with a [`StateError`] that says which; the
//! call goes on.

use crate::bindings::weir::handler::state as host;

pub use crate::bindings::weir::handler::state::StateError;

impl StateError {
    /// What was refused, in words.
    pub fn message(&self) -> String {
        match self {
            StateError::InvalidKey => "invalid state key: use 1 to 256 bytes".to_owned(),
            StateError::ValueTooLarge(limit) => {
                format!("state value larger than the tenant's limit of {limit} bytes")
            }
            StateError::TooManyKeys(limit) => {
                format!("the partition would hold more than the tenant's {limit} state keys")
            }
            StateError::TooManyBytes(limit) => {
                format!("the partition's state would take more than the tenant's {limit} bytes")
            }
            StateError::TooManyWrites(limit) => {
                format!("this call has already written {limit} state keys, the most one may")
            }
        }
    }
}

/// The value of `key`, or `None` if it has none.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Sets `key` to `value`, if this call acks.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), StateError> {
    host::set(key, value.as_ref())
}

/// Removes `key`, if this call acks.
pub fn delete(key: &str) -> Result<(), StateError> {
    host::delete(key)
}

/// Every key that starts with `prefix`, in byte order (read from weir a page at a time).
pub fn keys(prefix: &str) -> Keys {
    Keys {
        prefix: prefix.to_owned(),
        after: None,
        page: Vec::new().into_iter(),
        done: false,
    }
}

/// The keys under a prefix; see [`keys`].
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    after: Option<String>,
    page: std::vec::IntoIter<String>,
    done: bool,
}

/// Keys asked for at a time.
const PAGE: u32 = 100;

impl Iterator for Keys {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(key) = self.page.next() {
            self.after = Some(key.clone());
            return Some(key);
        }
        if self.done {
            return None;
        }
        let page = host::keys(&self.prefix, self.after.as_deref(), PAGE);
        self.done = page.len() < PAGE as usize;
        self.page = page.into_iter();
        let key = self.page.next()?;
        self.after = Some(key.clone());
        Some(key)
    }
}

/// The value of `key` as UTF-8 text; `None` if it has none or it is not text.
pub fn get_string(key: &str) -> Option<String> {
    String::from_utf8(get(key)?).ok()
}

/// Sets `key` to `value` as UTF-8 text.
pub fn set_string(key: &str, value: &str) -> Result<(), StateError> {
    set(key, value)
}

/// The value of `key` as a number written by [`set_u64`]; `None` if it has none or it is not
/// one.
pub fn get_u64(key: &str) -> Option<u64> {
    get_string(key)?.parse().ok()
}

/// Sets `key` to `value`, written as decimal text (so that `weir state get` shows it).
pub fn set_u64(key: &str, value: u64) -> Result<(), StateError> {
    set(key, value.to_string())
}

/// The value of `key` decoded from JSON; `None` if it has none, an error if it is not `T`.
#[cfg(feature = "serde")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<Result<T, serde_json::Error>> {
    get(key).map(|bytes| serde_json::from_slice(&bytes))
}

/// Sets `key` to `value` encoded as JSON.
#[cfg(feature = "serde")]
pub fn set_json<T: serde::Serialize>(key: &str, value: &T) -> Result<(), JsonStateError> {
    let bytes = serde_json::to_vec(value).map_err(JsonStateError::Encode)?;
    set(key, bytes).map_err(JsonStateError::State)
}

/// Why [`set_json`] failed.
#[cfg(feature = "serde")]
#[derive(Debug)]
pub enum JsonStateError {
    /// The value could not be encoded.
    Encode(serde_json::Error),
    /// The write was refused.
    State(StateError),
}

#[cfg(feature = "serde")]
impl std::fmt::Display for JsonStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encode(error) => write!(f, "cannot encode the value as JSON: {error}"),
            Self::State(error) => f.write_str(&error.message()),
        }
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for JsonStateError {}
