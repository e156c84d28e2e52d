//! One partition's state as its worker holds it: the marker and every key's size as loaded
//! from the bucket, a bounded cache of committed values, and the changes of messages whose
//! calls acked but which are not committed yet, in stream order. The worker and the calls it
//! makes share it; they never run at the same time for the same partition, so the lock is
//! never contended.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use lru::LruCache;

use super::bucket::{CommitError, Marker, StateBucket};
use super::{StateQuotas, key};
use crate::control::DeploymentId;

/// Bytes of committed values a partition keeps in memory to read again.
const CACHE_BYTES: u64 = 8 << 20;
/// Bytes of changes not yet committed past which the worker waits for its commits before it
/// calls the handler again.
pub(crate) const PENDING_BYTES: u64 = 64 << 20;

/// What one call set (`Some`) or deleted (`None`), by key, in key order.
pub(crate) type Writes = BTreeMap<String, Option<Bytes>>;

/// The changes of one message whose call acked.
#[derive(Debug)]
pub(crate) struct Changes {
    pub(crate) stream_seq: u64,
    pub(crate) writes: Writes,
}

/// Why a write was refused; the guest is told which (`state-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    InvalidKey,
    ValueTooLarge(u64),
    TooManyKeys(u64),
    TooManyBytes(u64),
    TooManyWrites(u32),
}

impl Refused {
    fn index(self) -> usize {
        match self {
            Self::InvalidKey => 0,
            Self::ValueTooLarge(_) => 1,
            Self::TooManyKeys(_) => 2,
            Self::TooManyBytes(_) => 3,
            Self::TooManyWrites(_) => 4,
        }
    }
}

/// The writes a call had refused, by what refused them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals([u32; 5]);

impl Refusals {
    pub(crate) fn count(&mut self, refused: Refused) {
        let slot = &mut self.0[refused.index()];
        *slot = slot.saturating_add(1);
    }

    /// How many writes were refused for each reason: an invalid key, then the tenant's
    /// `max_state_value_bytes`, `max_state_keys`, `max_state_bytes` and
    /// `max_state_writes_per_call`.
    pub fn counts(&self) -> [u32; 5] {
        self.0
    }
}

/// See the module.
pub(crate) struct PartitionState {
    bucket: StateBucket,
    id: DeploymentId,
    partition: u32,
    /// How many partitions the input stream has.
    partitions: u32,
    quotas: StateQuotas,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionState")
            .field("id", &self.id)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

struct Inner {
    loaded: Option<Loaded>,
    cache: LruCache<String, Bytes>,
    cache_bytes: u64,
    pending: VecDeque<Changes>,
    pending_bytes: u64,
}

/// What was read from the bucket, with the pending changes applied.
struct Loaded {
    marker: Marker,
    /// Every key with the size of its value.
    sizes: BTreeMap<String, u64>,
    /// The keys' and values' bytes together.
    bytes: u64,
}

impl Loaded {
    fn apply(&mut self, key: &str, value: Option<u64>) {
        if let Some(size) = self.sizes.remove(key) {
            self.bytes -= key.len() as u64 + size;
        }
        if let Some(size) = value {
            self.bytes += key.len() as u64 + size;
            self.sizes.insert(key.to_owned(), size);
        }
    }
}

impl PartitionState {
    pub(crate) fn new(
        bucket: StateBucket,
        id: DeploymentId,
        (partition, partitions): (u32, u32),
        quotas: StateQuotas,
    ) -> Self {
        Self {
            bucket,
            id,
            partition,
            partitions,
            quotas,
            inner: Mutex::new(Inner {
                loaded: None,
                cache: LruCache::unbounded(),
                cache_bytes: 0,
                pending: VecDeque::new(),
                pending_bytes: 0,
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the marker and the partition's keys from the bucket, unless they are in memory.
    pub(crate) async fn load(&self) -> anyhow::Result<()> {
        if self.inner().loaded.is_some() {
            return Ok(());
        }
        let marker = self.bucket.marker(&self.id, self.partition).await?;
        let entries = self.bucket.entries(&self.id, Some(self.partition)).await?;
        let mut loaded = Loaded {
            marker,
            sizes: BTreeMap::new(),
            bytes: 0,
        };
        for entry in entries {
            loaded.apply(&entry.key, Some(entry.size));
        }
        tracing::debug!(
            applied = marker.applied,
            keys = loaded.sizes.len(),
            bytes = loaded.bytes,
            "state loaded"
        );
        let mut inner = self.inner();
        inner.cache.clear();
        inner.cache_bytes = 0;
        inner.pending.clear();
        inner.pending_bytes = 0;
        inner.loaded = Some(loaded);
        Ok(())
    }

    /// Forgets everything in memory, pending changes too: the next call reads the bucket
    /// again. For when the partition may have been written by someone else, or when changes
    /// computed here will be computed again.
    pub(crate) fn unload(&self) {
        let mut inner = self.inner();
        inner.loaded = None;
        inner.cache.clear();
        inner.cache_bytes = 0;
        inner.pending.clear();
        inner.pending_bytes = 0;
    }

    /// The last message whose changes are committed, once loaded.
    pub(crate) fn applied(&self) -> Option<u64> {
        self.inner().loaded.as_ref().map(|l| l.marker.applied)
    }

    /// The marker's revision, once loaded: which commit the state in the bucket is at, and
    /// which the next commit expects.
    pub(crate) fn revision(&self) -> Option<u64> {
        self.inner().loaded.as_ref().map(|l| l.marker.revision)
    }

    /// The bytes of the changes waiting to be committed.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.inner().pending_bytes
    }

    /// `key`'s value as the next call sees it: its pending change, else its committed value.
    pub(crate) async fn read(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        {
            let mut inner = self.inner();
            if let Some(value) = inner
                .pending
                .iter()
                .rev()
                .find_map(|changes| changes.writes.get(key))
            {
                return Ok(value.clone());
            }
            if let Some(value) = inner.cache.get(key) {
                return Ok(Some(value.clone()));
            }
            let known = inner.loaded.as_ref().map(|l| l.sizes.contains_key(key));
            if known == Some(false) {
                return Ok(None);
            }
        }
        let value = self.bucket.get(&self.id, self.partition, key).await?;
        if let Some(value) = &value {
            self.remember(key, value.clone());
        }
        Ok(value)
    }

    fn remember(&self, key: &str, value: Bytes) {
        let size = key.len() as u64 + value.len() as u64;
        if size > CACHE_BYTES / 4 {
            return;
        }
        let mut inner = self.inner();
        if let Some(old) = inner.cache.put(key.to_owned(), value) {
            inner.cache_bytes -= key.len() as u64 + old.len() as u64;
        }
        inner.cache_bytes += size;
        while inner.cache_bytes > CACHE_BYTES {
            let Some((key, value)) = inner.cache.pop_lru() else {
                break;
            };
            inner.cache_bytes -= key.len() as u64 + value.len() as u64;
        }
    }

    /// Whether a call that has written `writes` so far may also set `key` to a value of
    /// `size` bytes (`None`: delete it), within the tenant's quotas.
    pub(crate) fn check(
        &self,
        writes: &Writes,
        key: &str,
        size: Option<u64>,
    ) -> Result<(), Refused> {
        let quotas = &self.quotas;
        if key::encode(key).is_none() {
            return Err(Refused::InvalidKey);
        }
        if let Some(size) = size
            && size > quotas.max_value_bytes
        {
            return Err(Refused::ValueTooLarge(quotas.max_value_bytes));
        }
        if !writes.contains_key(key) && writes.len() >= quotas.max_writes_per_call as usize {
            return Err(Refused::TooManyWrites(quotas.max_writes_per_call));
        }
        let inner = self.inner();
        let Some(loaded) = &inner.loaded else {
            // Not loaded: the call cannot have been started (see `worker::call`).
            return Ok(());
        };
        // The partition as it would be with the call's writes and this one.
        let (mut keys, mut bytes) = (loaded.sizes.len() as u64, loaded.bytes);
        let mut account = |key: &str, size: Option<u64>, sign: i64| {
            if let Some(size) = size {
                keys = keys.saturating_add_signed(sign);
                bytes = bytes.saturating_add_signed(sign * (key.len() as u64 + size) as i64);
            }
        };
        let written = writes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref().map(|v| v.len() as u64)))
            .filter(|(k, _)| *k != key)
            .chain([(key, size)]);
        for (key, size) in written {
            account(key, loaded.sizes.get(key).copied(), -1);
            account(key, size, 1);
        }
        if size.is_some() && keys > quotas.max_keys {
            return Err(Refused::TooManyKeys(quotas.max_keys));
        }
        if size.is_some() && bytes > quotas.max_bytes {
            return Err(Refused::TooManyBytes(quotas.max_bytes));
        }
        Ok(())
    }

    /// Up to `limit` keys starting with `prefix`, after `after`, as a call that has written
    /// `writes` sees them.
    pub(crate) fn keys(
        &self,
        writes: &Writes,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let inner = self.inner();
        let Some(loaded) = &inner.loaded else {
            return Vec::new();
        };
        let matches =
            |key: &&String| key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a);
        let start = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let stored = loaded
            .sizes
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .map(|(key, _)| key)
            .skip_while(|key| after == Some(key.as_str()))
            .take_while(|key| key.starts_with(prefix))
            .filter(|key| !matches!(writes.get(*key), Some(None)))
            .take(limit);
        let mut keys: Vec<String> = stored
            .chain(
                writes
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k)
                    .filter(matches),
            )
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        keys
    }

    /// Takes in the changes of a message whose call acked: the next calls see them, and they
    /// wait to be committed, in order.
    pub(crate) fn add(&self, changes: Changes) {
        let mut inner = self.inner();
        let Inner {
            loaded,
            pending,
            pending_bytes,
            ..
        } = &mut *inner;
        let Some(loaded) = loaded.as_mut() else {
            return;
        };
        let mut bytes = 0;
        for (key, value) in &changes.writes {
            loaded.apply(key, value.as_ref().map(|v| v.len() as u64));
            bytes += key.len() as u64 + value.as_ref().map_or(0, |v| v.len() as u64);
        }
        pending.push_back(changes);
        *pending_bytes += bytes;
    }

    /// Commits the changes of the messages of `group` (acked, in stream order, the first of
    /// them the first not yet settled) with the marker, in one atomic batch that is refused if
    /// anyone else has committed to the partition since: as many of them, from the first, as
    /// one batch holds. Returns how many messages are settled (all of them when none has
    /// changes).
    pub(crate) async fn commit_through(&self, group: &[u64]) -> Result<usize, CommitError> {
        let Some(&last) = group.last() else {
            return Ok(0);
        };
        let (writes, expected, through, taken) = {
            let inner = self.inner();
            let Some(loaded) = &inner.loaded else {
                return Ok(group.len());
            };
            let mut merged = Writes::new();
            let (mut through, mut taken) = (last, 0);
            for changes in inner.pending.iter().take_while(|c| c.stream_seq <= last) {
                let added = changes
                    .writes
                    .keys()
                    .filter(|k| !merged.contains_key(*k))
                    .count();
                if taken > 0 && merged.len() + added > super::MAX_WRITES_PER_CALL as usize {
                    // The rest in the next commit: this one ends before these changes.
                    through = group
                        .iter()
                        .copied()
                        .take_while(|&seq| seq < changes.stream_seq)
                        .last()
                        .unwrap_or(last);
                    break;
                }
                for (key, value) in &changes.writes {
                    merged.insert(key.clone(), value.clone());
                }
                taken += 1;
            }
            if taken == 0 {
                // Nothing of theirs to commit.
                return Ok(group.len());
            }
            let writes: Vec<(String, Option<Bytes>)> = merged
                .into_iter()
                .filter_map(|(key, value)| {
                    let subject = self.bucket.key_subject(&self.id, self.partition, &key)?;
                    Some((subject, value))
                })
                .collect();
            (writes, loaded.marker.revision, through, taken)
        };
        let partitions = Some(self.partitions);
        let revision = self
            .bucket
            .commit(
                &self.id,
                self.partition,
                &writes,
                through,
                partitions,
                expected,
            )
            .await?;
        let mut committed = Vec::with_capacity(taken);
        {
            let mut inner = self.inner();
            for _ in 0..taken {
                if let Some(changes) = inner.pending.pop_front() {
                    let bytes: u64 = changes
                        .writes
                        .iter()
                        .map(|(k, v)| k.len() as u64 + v.as_ref().map_or(0, |v| v.len() as u64))
                        .sum();
                    inner.pending_bytes -= bytes;
                    committed.push(changes);
                }
            }
            if let Some(loaded) = inner.loaded.as_mut() {
                loaded.marker = Marker {
                    applied: through,
                    revision,
                    partitions,
                };
            }
        }
        for changes in committed {
            for (key, value) in changes.writes {
                match value {
                    Some(value) => self.remember(&key, value),
                    None => {
                        let mut inner = self.inner();
                        if let Some(old) = inner.cache.pop(&key) {
                            inner.cache_bytes -= key.len() as u64 + old.len() as u64;
                        }
                    }
                }
            }
        }
        Ok(group.iter().take_while(|&&seq| seq <= through).count())
    }
}
