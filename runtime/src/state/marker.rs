//! A partition's marker: the last message whose changes are applied, and the writes of the
//! commit that applied it. The marker is the commit: it is stored first, as one message, and
//! its writes are copied to their keys after it (see [`crate::state`]).
//!
//! ```text
//! <applied> <partitions>\n                      the first line (older markers are that line alone,
//!                                               or `<applied>` alone)
//! +<key bytes> <value bytes>\n<key><value>      then each write: a key set
//! -<key bytes>\n<key>                           or a key deleted
//! ```
//!
//! The bucket is the tenant's to write, so a marker that does not read this way is refused,
//! never trusted in part.

use bytes::{BufMut as _, Bytes, BytesMut};

/// A write of a commit: a key, and its new value (`None`: deleted).
pub(crate) type Write = (String, Option<Bytes>);

/// The marker of a partition as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Marker {
    /// The stream sequence of the last message whose changes are applied; 0 for none.
    pub(crate) applied: u64,
    /// The stream sequence of the marker's last write in the bucket; 0 for none.
    pub(crate) revision: u64,
    /// How many partitions the input stream had when it was written (`None` before it was
    /// known): a key's state is where its messages are only while that holds.
    pub(crate) partitions: Option<u32>,
    /// The commit's writes, in key order; empty for a marker written with its keys in one
    /// atomic batch.
    pub(crate) writes: Vec<Write>,
}

impl Marker {
    /// The marker's payload.
    pub(crate) fn payload(&self) -> Bytes {
        let first = match self.partitions {
            Some(partitions) => format!("{} {partitions}", self.applied),
            None => self.applied.to_string(),
        };
        if self.writes.is_empty() {
            return first.into();
        }
        let mut payload = BytesMut::with_capacity(self.payload_bound());
        payload.put_slice(first.as_bytes());
        payload.put_u8(b'\n');
        for (key, value) in &self.writes {
            match value {
                Some(value) => {
                    payload.put_slice(format!("+{} {}\n", key.len(), value.len()).as_bytes());
                    payload.put_slice(key.as_bytes());
                    payload.put_slice(value);
                }
                None => {
                    payload.put_slice(format!("-{}\n", key.len()).as_bytes());
                    payload.put_slice(key.as_bytes());
                }
            }
        }
        payload.freeze()
    }

    /// At least the size of the marker's payload.
    pub(crate) fn payload_bound(&self) -> usize {
        // Two numbers of at most 20 digits, with their separators.
        let line = 44;
        line + self
            .writes
            .iter()
            .map(|(key, value)| line + key.len() + value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
    }

    /// The marker stored as `payload` at `revision`; `None` if it does not read as one.
    pub(crate) fn parse(payload: &Bytes, revision: u64) -> Option<Self> {
        let (first, mut rest) = match payload.iter().position(|&b| b == b'\n') {
            Some(end) => (&payload[..end], payload.slice(end + 1..)),
            None => (&payload[..], Bytes::new()),
        };
        let mut words = std::str::from_utf8(first).ok()?.split_whitespace();
        let applied = words.next()?.parse().ok()?;
        let partitions = match words.next() {
            Some(word) => Some(word.parse().ok()?),
            None => None,
        };
        if words.next().is_some() {
            return None;
        }
        let mut writes = Vec::new();
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = std::str::from_utf8(&rest[..end]).ok()?;
            let (set, sizes) = match line.split_at_checked(1)? {
                ("+", sizes) => (true, sizes),
                ("-", sizes) => (false, sizes),
                _ => return None,
            };
            let (key_len, value_len) = match (set, sizes.split_once(' ')) {
                (true, Some((key, value))) => (key.parse().ok()?, Some(value.parse().ok()?)),
                (false, None) => (sizes.parse().ok()?, None),
                _ => return None,
            };
            let body = rest.slice(end + 1..);
            let key_end: usize = key_len;
            let value_end = key_end.checked_add(value_len.unwrap_or(0))?;
            if value_end > body.len() {
                return None;
            }
            let key = std::str::from_utf8(&body[..key_end]).ok()?.to_owned();
            super::key::encode(&key)?;
            let value = value_len.map(|_| body.slice(key_end..value_end));
            if writes.last().is_some_and(|(last, _): &Write| *last >= key) {
                // Written in key order, each key once.
                return None;
            }
            writes.push((key, value));
            rest = body.slice(value_end..);
        }
        Some(Self {
            applied,
            revision,
            partitions,
            writes,
        })
    }

    /// The write of `key` in this commit, if it has one: `Some(None)` for a deletion.
    pub(crate) fn write(&self, key: &str) -> Option<&Option<Bytes>> {
        self.writes
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.writes[i].1)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // A failed expectation is a failed test here.
mod tests {
    use super::*;

    fn marker(writes: Vec<Write>) -> Marker {
        Marker {
            applied: 42,
            revision: 7,
            partitions: Some(16),
            writes,
        }
    }

    #[test]
    fn a_marker_reads_back_as_written() {
        let written = marker(vec![
            ("a\nb".into(), Some(Bytes::from_static(b"+1 2\nxy"))),
            ("deleted".into(), None),
            ("empty".into(), Some(Bytes::new())),
        ]);
        assert_eq!(Marker::parse(&written.payload(), 7), Some(written.clone()));
        assert!(written.payload().len() <= written.payload_bound());
        let plain = marker(vec![]);
        assert_eq!(&plain.payload()[..], b"42 16");
        assert_eq!(Marker::parse(&plain.payload(), 7), Some(plain));
        assert_eq!(written.write("deleted"), Some(&None));
        assert_eq!(written.write("empty"), Some(&Some(Bytes::new())));
        assert_eq!(written.write("other"), None);
    }

    #[test]
    fn older_markers_still_read() {
        let old = Marker::parse(&Bytes::from_static(b"42"), 3).expect("a marker");
        assert_eq!(
            (old.applied, old.partitions, old.writes.len()),
            (42, None, 0)
        );
        let old = Marker::parse(&Bytes::from_static(b"42 4"), 3).expect("a marker");
        assert_eq!(old.partitions, Some(4));
    }

    #[test]
    fn a_marker_that_does_not_read_whole_is_refused() {
        for payload in [
            &b""[..],
            b"x",
            b"42 16 9",
            b"42 16\n+3 1\nab",
            b"42 16\n+1\na",
            b"42 16\n-1 1\na",
            b"42 16\n*1\na",
            b"42 16\n+99999999999999999999 1\na",
            b"42 16\n+1 18446744073709551615\na",
            b"42 16\n-1\nb-1\na",
            b"42 16\n-1\na-1\na",
            b"42 16\n+1 0\n\xff",
            b"42 16\n+0 1\na",
        ] {
            assert_eq!(
                Marker::parse(&Bytes::from_static(payload), 1),
                None,
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
