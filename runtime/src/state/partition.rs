//! One partition's state as its worker holds it: the marker and every key's size and revision
//! as loaded from the bucket, the last commit's writes until they are copied to their keys, a
//! bounded cache of committed values, and the changes of messages whose calls acked but which
//! are not committed yet, in stream order. The worker and the calls it
//! makes share it; they never run at the same time for the same partition, so the lock is
//! never contended.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use lru::LruCache;

use super::bucket::{CommitError, StateBucket};
use super::marker::{Marker, Write};
use super::{StateQuotas, key};
use crate::control::DeploymentId;

/// Bytes of committed values a partition keeps in memory to read again.
const CACHE_BYTES: u64 = 8 << 20;
/// Bytes of changes not yet committed past which the worker waits for its commits before it
/// calls the handler again.
pub(crate) const PENDING_BYTES: u64 = 64 << 20;

/// How many keys, and how many bytes of keys and values, the writes of commits not yet
/// copied to their keys may come to before they are copied rather than carried into the next
/// marker: a key written by many messages in a row is copied once, and a marker stays small
/// (it is stored again at every commit).
const CARRY_KEYS: usize = 128;
const CARRY_BYTES: usize = 4 << 10;

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

    /// What refused them, as `weir status` and the metrics name it: an invalid key (empty or
    /// too long), then the tenant's `max_state_value_bytes`, `max_state_keys`,
    /// `max_state_bytes` and `max_state_writes_per_call`.
    pub const QUOTAS: [&'static str; 5] = [
        "invalid_key",
        "value_bytes",
        "keys",
        "bytes",
        "writes_per_call",
    ];

    /// Whether no write was refused.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&count| count == 0)
    }

    /// How many writes each of [`Refusals::QUOTAS`] refused, where it refused any.
    pub fn by_quota(&self) -> impl Iterator<Item = (&'static str, u32)> {
        Self::QUOTAS
            .into_iter()
            .zip(self.0)
            .filter(|&(_, count)| count > 0)
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
    /// The marker as last read or written (without its writes: see `uncopied`).
    marker: Marker,
    /// Every key with the size of its value.
    sizes: BTreeMap<String, u64>,
    /// The keys' and values' bytes together.
    bytes: u64,
    /// The stream sequence of every key's subject that has one, deletions too: what the next
    /// write of each key expects. A key missing here is taken as never written; where that is
    /// wrong, the server refuses the write, and the key is read again.
    revisions: HashMap<String, u64>,
    /// The writes of the commit at `marker`, in key order, that are not copied to their keys
    /// yet: newer than what the keys' subjects hold.
    uncopied: Vec<Write>,
}

/// A marker to write, and what it commits.
struct NextMarker {
    marker: Marker,
    /// The revision of the marker it follows.
    expected: u64,
    /// How many of the pending changes it takes.
    taken: usize,
}

impl Loaded {
    /// Whether the last commit's writes not copied yet are too many to carry into the next
    /// marker: they are copied to their keys first.
    fn carries_too_much(&self) -> bool {
        self.uncopied.len() > CARRY_KEYS
            || self
                .uncopied
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
                > CARRY_BYTES
    }

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
        let (marker, stored) = tokio::try_join!(
            self.bucket.marker(&self.id, self.partition),
            self.bucket.stored_keys(&self.id, Some(self.partition))
        )?;
        let mut loaded = Loaded {
            marker: Marker {
                writes: Vec::new(),
                ..marker.clone()
            },
            sizes: BTreeMap::new(),
            bytes: 0,
            revisions: HashMap::with_capacity(stored.len()),
            uncopied: Vec::new(),
        };
        let mut commits = HashMap::with_capacity(stored.len());
        for key in stored {
            loaded.apply(&key.key, key.size);
            loaded.revisions.insert(key.key.clone(), key.revision);
            commits.insert(key.key, key.commit);
        }
        // The last commit, where its keys do not hold it yet (its writer stopped before it
        // copied them): it is the state, and it is copied before the next commit.
        for (key, value) in marker.writes {
            if commits
                .get(&key)
                .is_some_and(|&commit| commit >= marker.revision)
            {
                continue;
            }
            loaded.apply(&key, value.as_ref().map(|v| v.len() as u64));
            loaded.uncopied.push((key, value));
        }
        tracing::debug!(
            applied = marker.applied,
            keys = loaded.sizes.len(),
            bytes = loaded.bytes,
            uncopied = loaded.uncopied.len(),
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
            if let Some(loaded) = &inner.loaded
                && let Ok(i) = loaded
                    .uncopied
                    .binary_search_by(|(k, _)| k.as_str().cmp(key))
            {
                return Ok(loaded.uncopied[i].1.clone());
            }
            if let Some(value) = inner.cache.get(key) {
                return Ok(Some(value.clone()));
            }
            let known = inner.loaded.as_ref().map(|l| l.sizes.contains_key(key));
            if known == Some(false) {
                return Ok(None);
            }
        }
        let value = self
            .bucket
            .stored_value(&self.id, self.partition, key)
            .await?;
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
    /// them the first not yet settled), as many of them, from the first, as one commit holds:
    /// their writes merged into the next marker with the last commit's writes not copied yet
    /// (unless those are too many to carry, and are copied first), stored only if no one else
    /// has committed to the partition since (see [`crate::state`]). Returns how many messages
    /// are settled (all of them when none has changes).
    pub(crate) async fn commit_through(&self, group: &[u64]) -> Result<usize, CommitError> {
        if group.is_empty() {
            return Ok(0);
        }
        if self
            .inner()
            .loaded
            .as_ref()
            .is_some_and(Loaded::carries_too_much)
        {
            self.copy_last_commit().await?;
        }
        let Some(mut next) = self.next_marker(group) else {
            // Nothing of theirs to commit.
            return Ok(group.len());
        };
        if next.marker.payload_bound() > self.bucket.max_marker_bytes()
            && self
                .inner()
                .loaded
                .as_ref()
                .is_some_and(|l| !l.uncopied.is_empty())
        {
            // Too large to carry the last commit's writes too: they are copied first.
            self.copy_last_commit().await?;
            match self.next_marker(group) {
                Some(uncarried) => next = uncarried,
                None => return Ok(group.len()),
            }
        }
        let NextMarker {
            marker,
            expected,
            taken,
        } = next;
        let through = marker.applied;
        let in_one_message = marker.payload_bound() <= self.bucket.max_marker_bytes();
        let revision = if in_one_message {
            self.bucket
                .write_marker(&self.id, self.partition, &marker, expected)
                .await?
        } else {
            self.bucket
                .commit(&self.id, self.partition, &marker.writes, &marker, expected)
                .await?
        };
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
            let Marker {
                applied,
                partitions,
                writes,
                ..
            } = marker;
            if let Some(loaded) = inner.loaded.as_mut() {
                loaded.marker = Marker {
                    applied,
                    revision,
                    partitions,
                    writes: Vec::new(),
                };
                if in_one_message {
                    loaded.uncopied = writes;
                } else {
                    // Stored in the batch, at revisions its answer does not give: the next
                    // write of each is refused once, and reads the revision.
                    for (key, _) in &writes {
                        loaded.revisions.remove(key);
                    }
                }
            }
        }
        if !in_one_message {
            for changes in committed {
                for (key, value) in changes.writes {
                    self.cached(key, value);
                }
            }
        }
        Ok(group.iter().take_while(|&&seq| seq <= through).count())
    }

    /// The marker that commits the changes of `group` (as many of them as one commit holds),
    /// carrying the last commit's writes not copied yet; `None` if they have none.
    fn next_marker(&self, group: &[u64]) -> Option<NextMarker> {
        let &last = group.last()?;
        let inner = self.inner();
        let loaded = inner.loaded.as_ref()?;
        let mut merged: Writes = loaded.uncopied.iter().cloned().collect();
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
        (taken > 0).then(|| NextMarker {
            marker: Marker {
                applied: through,
                revision: 0,
                partitions: Some(self.partitions),
                writes: merged.into_iter().collect(),
            },
            expected: loaded.marker.revision,
            taken,
        })
    }

    /// Copies the last commit's writes to their keys, unless they are there already.
    async fn copy_last_commit(&self) -> Result<(), CommitError> {
        let (revision, copies) = {
            let inner = self.inner();
            let Some(loaded) = inner.loaded.as_ref().filter(|l| !l.uncopied.is_empty()) else {
                return Ok(());
            };
            let copies: Vec<(Write, u64)> = loaded
                .uncopied
                .iter()
                .map(|(key, value)| {
                    let expected = loaded.revisions.get(key).copied().unwrap_or(0);
                    ((key.clone(), value.clone()), expected)
                })
                .collect();
            (loaded.marker.revision, copies)
        };
        let revisions = self
            .bucket
            .copy(&self.id, self.partition, revision, copies)
            .await?;
        let uncopied = {
            let mut inner = self.inner();
            match inner.loaded.as_mut() {
                Some(loaded) if loaded.marker.revision == revision => {
                    loaded.revisions.extend(revisions);
                    std::mem::take(&mut loaded.uncopied)
                }
                // Read again meanwhile.
                _ => return Ok(()),
            }
        };
        for (key, value) in uncopied {
            self.cached(key, value);
        }
        Ok(())
    }

    /// Keeps a committed value in the cache (or forgets a deleted key's).
    fn cached(&self, key: String, value: Option<Bytes>) {
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

/// Commits as two owners of one partition would make them, against a real nats-server: the
/// worker's side of [`crate::state`]'s promises, one step at a time.
#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // A failed expectation is a failed test here.
mod tests {
    use super::*;
    use crate::embedded::{NatsServer, ServerOptions};

    struct Bucket {
        _server: NatsServer,
        bucket: StateBucket,
        id: DeploymentId,
    }

    async fn bucket() -> Bucket {
        let server = NatsServer::start(ServerOptions::default()).expect("a nats-server");
        let client = async_nats::connect(server.url())
            .await
            .expect("a connection");
        let js = async_nats::jetstream::new(client);
        StateBucket::ensure(&js, "t", 1).await.expect("a bucket");
        Bucket {
            bucket: StateBucket::open(&js, "t").await.expect("the bucket"),
            id: DeploymentId::new("t", "h").expect("an id"),
            _server: server,
        }
    }

    impl Bucket {
        /// A worker's state of partition 0 of 1, loaded.
        async fn owner(&self) -> PartitionState {
            let state = PartitionState::new(
                self.bucket.clone(),
                self.id.clone(),
                (0, 1),
                StateQuotas::default(),
            );
            state.load().await.expect("the state loaded");
            state
        }

        async fn get(&self, key: &str) -> Option<Bytes> {
            self.bucket.get(&self.id, 0, key).await.expect("a read")
        }

        /// What `key`'s own subject holds, without the last commit's write of it.
        async fn stored(&self, key: &str) -> Option<Bytes> {
            self.bucket
                .stored_value(&self.id, 0, key)
                .await
                .expect("a read")
        }

        async fn sizes(&self) -> Vec<(String, u64)> {
            let entries = self
                .bucket
                .entries(&self.id, None)
                .await
                .expect("a listing");
            entries.into_iter().map(|e| (e.key, e.size)).collect()
        }
    }

    /// The message at `stream_seq` acked with `writes`, and committed.
    async fn commit(
        state: &PartitionState,
        stream_seq: u64,
        writes: &[(&str, Option<&str>)],
    ) -> Result<usize, CommitError> {
        let writes = writes
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.map(|v| Bytes::from(v.to_owned()))))
            .collect();
        state.add(Changes { stream_seq, writes });
        state.commit_through(&[stream_seq]).await
    }

    fn bytes(value: &str) -> Option<Bytes> {
        Some(Bytes::from(value.to_owned()))
    }

    /// A value that makes the writes it is among too many to carry into another marker.
    fn too_much_to_carry() -> String {
        "x".repeat(CARRY_BYTES + 1)
    }

    #[tokio::test]
    async fn a_commit_is_the_state_before_it_is_copied_to_its_keys() {
        let b = bucket().await;
        let first = b.owner().await;
        commit(&first, 1, &[("total", Some("1")), ("gone", Some("x"))])
            .await
            .expect("committed");
        commit(&first, 2, &[("total", Some("2")), ("gone", None)])
            .await
            .expect("committed");
        // A few small writes are carried from marker to marker, not copied to their keys.
        assert_eq!(b.stored("total").await, None);
        assert_eq!(b.get("total").await, bytes("2"));
        assert_eq!(b.get("gone").await, None);
        assert_eq!(b.sizes().await, [("total".to_owned(), 1)]);

        // The owner stops; the next one reads the state from the last marker.
        let second = b.owner().await;
        assert_eq!(second.applied(), Some(2));
        assert_eq!(second.read("total").await.expect("a read"), bytes("2"));
        assert_eq!(second.read("gone").await.expect("a read"), None);
        let large = too_much_to_carry();
        commit(&second, 3, &[("large", Some(&large))])
            .await
            .expect("committed");
        assert_eq!(b.stored("total").await, None);
        // Too much to carry again: copied to the keys before the next marker.
        commit(&second, 4, &[("other", Some("4"))])
            .await
            .expect("committed");
        assert_eq!(b.stored("total").await, bytes("2"));
        assert_eq!(b.stored("gone").await, None);
        assert_eq!(b.stored("large").await.map(|v| v.len()), Some(large.len()));
        assert_eq!(b.stored("other").await, None);
        assert_eq!(
            b.sizes().await,
            [
                ("large".to_owned(), large.len() as u64),
                ("other".to_owned(), 1),
                ("total".to_owned(), 1)
            ]
        );
        assert_eq!(second.read("other").await.expect("a read"), bytes("4"));
    }

    #[tokio::test]
    async fn an_owner_that_lost_its_partition_neither_commits_nor_copies_over_newer_state() {
        let b = bucket().await;
        let large = too_much_to_carry();
        let zombie = b.owner().await;
        commit(&zombie, 1, &[("total", Some("1")), ("large", Some(&large))])
            .await
            .expect("committed");
        // Another node takes the partition over and commits, its commits copied to the keys;
        // the first owner does not know, and still holds its commit to copy.
        let owner = b.owner().await;
        commit(&owner, 2, &[("total", Some("2"))])
            .await
            .expect("committed");
        commit(&owner, 3, &[("total", Some("3")), ("large", Some(&large))])
            .await
            .expect("committed");
        commit(&owner, 4, &[("other", Some("4"))])
            .await
            .expect("committed");
        assert_eq!(b.stored("total").await, bytes("3"));

        let refused = commit(&zombie, 2, &[("total", Some("zombie"))]).await;
        assert!(
            matches!(refused, Err(CommitError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(b.stored("total").await, bytes("3"));
        assert_eq!(b.get("total").await, bytes("3"));
        assert_eq!(b.get("other").await, bytes("4"));
    }

    #[tokio::test]
    async fn a_copy_that_finds_its_key_copied_by_another_owner_leaves_it() {
        let b = bucket().await;
        let first = b.owner().await;
        commit(&first, 1, &[("total", Some("1"))])
            .await
            .expect("committed");
        // A second owner copies the same commit, then the first one does: both find the
        // key as the commit left it, and the first one's next commit is its own.
        let second = b.owner().await;
        second.copy_last_commit().await.expect("copied");
        first.copy_last_commit().await.expect("copied");
        assert_eq!(b.stored("total").await, bytes("1"));
        commit(&first, 2, &[("total", Some("2"))])
            .await
            .expect("committed");
        assert_eq!(b.get("total").await, bytes("2"));
    }

    #[tokio::test]
    async fn a_commit_too_large_for_one_marker_is_one_atomic_batch() {
        let b = bucket().await;
        let owner = b.owner().await;
        let large = "x".repeat(300 << 10);
        let writes: Vec<(String, Option<&str>)> = (0..4)
            .map(|n| (format!("large-{n}"), Some(large.as_str())))
            .collect();
        let writes: Vec<(&str, Option<&str>)> =
            writes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        commit(&owner, 1, &writes).await.expect("committed");
        assert_eq!(b.stored("large-3").await.map(|v| v.len()), Some(300 << 10));
        let marker = b.bucket.marker(&b.id, 0).await.expect("the marker");
        assert_eq!((marker.applied, marker.writes.len()), (1, 0));
        // Its keys' revisions were not in its answer: the next copy of them finds them.
        let too_much = too_much_to_carry();
        commit(
            &owner,
            2,
            &[("large-0", Some("small")), ("pad", Some(&too_much))],
        )
        .await
        .expect("committed");
        commit(&owner, 3, &[("other", Some("1"))])
            .await
            .expect("committed");
        assert_eq!(b.stored("large-0").await, bytes("small"));
    }
}
