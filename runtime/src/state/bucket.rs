//! The state bucket of a tenant in NATS: its stream, reading a key (from the stream's leader,
//! never a replica that may lag behind the last commit) with the last commit's writes applied,
//! listing a partition's keys, committing changes in a partition's marker (or in one atomic
//! batch with it) and copying them to their keys, and repairs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;

use super::key;
use super::marker::{Marker, Write};
use crate::control::{self, DeploymentId, MADE_BY_OPERATORS};

/// The KV bucket of `tenant`'s state: `weir_state_<tenant>`.
pub fn state_bucket(tenant: &str) -> String {
    format!("weir_state_{tenant}")
}

/// How long the server may take to answer a commit before it is tried again.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A tenant's state bucket, opened with the connection its reads and commits go through.
#[derive(Clone)]
pub struct StateBucket {
    js: jetstream::Context,
    stream: stream::Stream<()>,
    /// `$KV.weir_state_<tenant>.`
    prefix: String,
}

impl std::fmt::Debug for StateBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBucket")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One key of a partition's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The handler's key.
    pub key: String,
    /// The partition it belongs to.
    pub partition: u32,
    /// The size of its value, in bytes.
    pub size: u64,
    /// Its revision: the stream sequence of the commit that wrote it.
    pub revision: u64,
}

/// Why a commit did not take effect.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Someone else committed to the partition since this worker read its marker: another
    /// node that took it over, or a repair. Nothing of this commit was stored.
    #[error(
        "the partition's state was changed by someone else (its marker is at revision {0}, \
         not the one this worker last wrote)"
    )]
    Conflict(u64),
    /// The server did not take it now (a restart, a leader election, too many batches in
    /// flight); it may be tried again.
    #[error(transparent)]
    ForNow(anyhow::Error),
}

/// How a handler's state is laid out over partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateLayout {
    /// Its keys, over every partition.
    pub keys: usize,
    /// The partition counts its markers were written under.
    pub partitions: std::collections::BTreeSet<u32>,
    /// The highest partition that holds a key.
    pub highest: Option<u32>,
}

impl StateLayout {
    /// Whether a key's state would no longer be in its messages' partition on a stream of
    /// `partitions` partitions.
    pub fn moves_under(&self, partitions: u32) -> bool {
        self.keys > 0
            && (self.partitions.iter().any(|&p| p != partitions)
                || self.highest.is_some_and(|p| p >= partitions))
    }
}

impl StateBucket {
    /// Creates `tenant`'s bucket if it does not exist yet, replicated `replicas` times. Only
    /// an operator may (a node does for each tenant in its configuration, and for any tenant
    /// whose handler keeps state); a tenant's user may only use it.
    pub async fn ensure(
        js: &jetstream::Context,
        tenant: &str,
        replicas: usize,
    ) -> anyhow::Result<()> {
        let bucket = state_bucket(tenant);
        let name = format!("KV_{bucket}");
        if control::existing_stream(js, &name).await?.is_some() {
            return Ok(());
        }
        let created = js
            .create_stream(stream::Config {
                name: name.clone(),
                description: Some(format!("weir: tenant {tenant}'s handler state")),
                subjects: vec![format!("$KV.{bucket}.>")],
                // A KV bucket with one value per key, whose reads go to the stream's leader,
                // and which takes a commit too large for one marker, or a repair, in one
                // atomic batch.
                max_messages_per_subject: 1,
                allow_rollup: true,
                deny_delete: true,
                discard: stream::DiscardPolicy::New,
                allow_direct: false,
                allow_atomic_publish: true,
                num_replicas: replicas,
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another node or command may have made it first.
            Err(_) if control::existing_stream(js, &name).await?.is_some() => Ok(()),
            Err(error) => Err(error)
                .with_context(|| format!("failed to create KV bucket {bucket}{MADE_BY_OPERATORS}")),
        }
    }

    /// Opens `tenant`'s bucket through `js` (the tenant's own connection, where it has one),
    /// after checking that it exists.
    pub async fn open(js: &jetstream::Context, tenant: &str) -> anyhow::Result<Self> {
        let bucket = state_bucket(tenant);
        if control::existing_stream(js, &format!("KV_{bucket}"))
            .await?
            .is_none()
        {
            anyhow::bail!(
                "tenant {tenant} has no state bucket {bucket} yet: a node creates it when it \
                 runs a handler of the tenant's that keeps state"
            );
        }
        Self::at(js, tenant).await
    }

    /// `tenant`'s bucket through `js`, without asking the server whether it exists.
    pub async fn at(js: &jetstream::Context, tenant: &str) -> anyhow::Result<Self> {
        let bucket = state_bucket(tenant);
        let stream = js
            .get_stream_no_info(format!("KV_{bucket}"))
            .await
            .with_context(|| format!("invalid state bucket name {bucket}"))?;
        Ok(Self {
            stream,
            js: js.clone(),
            prefix: format!("$KV.{bucket}."),
        })
    }

    fn marker_subject(&self, id: &DeploymentId, partition: u32) -> String {
        format!("{}{}.p{partition:03}", self.prefix, id.handler)
    }

    /// The subject of `key` in `partition`, or `None` if it cannot be a key.
    pub(crate) fn key_subject(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
    ) -> Option<String> {
        let token = key::encode(key)?;
        Some(format!(
            "{}{}.p{partition:03}.{token}",
            self.prefix, id.handler
        ))
    }

    /// The value of `key` in `partition` as committed, read from the stream's leader; `None`
    /// if it has none.
    pub async fn get(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
    ) -> anyhow::Result<Option<Bytes>> {
        let Some(subject) = self.key_subject(id, partition, key) else {
            return Ok(None);
        };
        let (stored, marker) = tokio::try_join!(self.stored(&subject), self.marker(id, partition))?;
        if let Some(value) = marker.write(key)
            && stored.as_ref().is_none_or(|s| s.commit < marker.revision)
        {
            return Ok(value.clone());
        }
        Ok(stored.and_then(|stored| stored.value))
    }

    /// The value of `key` in `partition` as its own subject holds it: without the last
    /// commit's write of it, if that is not copied to it yet.
    pub(crate) async fn stored_value(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
    ) -> anyhow::Result<Option<Bytes>> {
        let Some(subject) = self.key_subject(id, partition, key) else {
            return Ok(None);
        };
        Ok(self.stored(&subject).await?.and_then(|stored| stored.value))
    }

    /// The last message on `subject`, read from the stream's leader; `None` if there is none.
    async fn stored(&self, subject: &str) -> anyhow::Result<Option<Stored>> {
        use jetstream::stream::LastRawMessageErrorKind;
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(Stored {
                commit: commit_of(Some(&message.headers)),
                value: (!deleted(Some(&message.headers))).then_some(message.payload),
                revision: message.sequence,
            })),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("failed to read {subject}")),
        }
    }

    /// The marker of `partition`: which message was applied last, and the writes of the commit
    /// that applied it.
    pub(crate) async fn marker(&self, id: &DeploymentId, partition: u32) -> anyhow::Result<Marker> {
        let subject = self.marker_subject(id, partition);
        let Some(stored) = self.stored(&subject).await? else {
            return Ok(Marker::default());
        };
        let Some(payload) = stored.value else {
            // Deleted (not by weir): the next commit starts it again.
            return Ok(Marker {
                revision: stored.revision,
                ..Marker::default()
            });
        };
        Marker::parse(&payload, stored.revision)
            .with_context(|| format!("the marker {subject} does not read as one"))
    }

    /// The markers of `id`'s partitions, by partition; those that do not read as markers are
    /// left out.
    async fn markers(&self, id: &DeploymentId) -> anyhow::Result<BTreeMap<u32, Marker>> {
        let filter = format!("{}{}.*", self.prefix, id.handler);
        let partition_of = |subject: &str| {
            subject
                .strip_prefix(&filter[..filter.len() - 1])?
                .strip_prefix('p')?
                .parse()
                .ok()
        };
        let mut markers = BTreeMap::new();
        let mut last_per_subject = self.last_per_subject(&filter, false).await?;
        while let Some(message) = last_per_subject.next().await {
            let message = message?;
            if let (Some(partition), false) = (
                partition_of(&message.subject),
                deleted(message.headers.as_ref()),
            ) && let Some(marker) = Marker::parse(&message.payload, message.revision)
            {
                markers.insert(partition, marker);
            }
        }
        Ok(markers)
    }

    /// The last message of each subject matching `filter` (only their headers if
    /// `headers_only`), until there are no more.
    async fn last_per_subject(
        &self,
        filter: &str,
        headers_only: bool,
    ) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<Last>>> {
        let failed = {
            let filter = filter.to_owned();
            move || format!("failed to read {filter}")
        };
        let consumer = control::reading_consumer_of(
            &self.js,
            &self.stream,
            jetstream::consumer::push::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                headers_only,
                ..Default::default()
            },
        )
        .await
        .with_context(failed.clone())?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let messages = consumer.messages().await.with_context(failed.clone())?;
        let read = futures::stream::unfold(Some(messages), move |messages| {
            let failed = failed.clone();
            async move {
                let mut messages = messages?;
                let message = match messages.next().await? {
                    Ok(message) => message,
                    Err(error) => {
                        return Some((Err(anyhow::Error::from(error).context(failed())), None));
                    }
                };
                let info = match message.info() {
                    Ok(info) => (info.stream_sequence, info.pending),
                    Err(error) => {
                        return Some((Err(anyhow::anyhow!("{error}").context(failed())), None));
                    }
                };
                let (revision, pending) = info;
                let last = Last {
                    subject: message.subject.to_string(),
                    headers: message.headers.clone(),
                    payload: message.payload.clone(),
                    revision,
                };
                Some((Ok(last), (pending > 0).then_some(messages)))
            }
        });
        Ok(read.boxed())
    }

    /// How `id`'s state is laid out: its keys, and the partition counts it was written under.
    pub async fn layout(&self, id: &DeploymentId) -> anyhow::Result<StateLayout> {
        let entries = self.entries(id, None).await?;
        let markers = self.markers(id).await?;
        Ok(StateLayout {
            keys: entries.len(),
            highest: entries.iter().map(|e| e.partition).max(),
            partitions: markers.values().filter_map(|m| m.partitions).collect(),
        })
    }

    /// Every key of one partition's state (or of all), deletions too, as their own subjects
    /// hold them: without the last commit's writes not copied to them yet.
    pub(crate) async fn stored_keys(
        &self,
        id: &DeploymentId,
        partition: Option<u32>,
    ) -> anyhow::Result<Vec<StoredKey>> {
        let filter = match partition {
            Some(partition) => format!("{}{}.p{partition:03}.>", self.prefix, id.handler),
            None => format!("{}{}.*.>", self.prefix, id.handler),
        };
        let handler_prefix = format!("{}{}.", self.prefix, id.handler);
        let mut keys = Vec::new();
        let mut last_per_subject = self.last_per_subject(&filter, true).await?;
        while let Some(message) = last_per_subject.next().await {
            let message = message?;
            let headers = message.headers.as_ref();
            let key = message
                .subject
                .strip_prefix(&handler_prefix)
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(partition, token)| {
                    let partition = partition.strip_prefix('p')?.parse().ok()?;
                    Some((partition, key::decode(token)?))
                });
            if let Some((partition, key)) = key {
                keys.push(StoredKey {
                    key,
                    partition,
                    size: (!deleted(headers)).then(|| {
                        headers
                            .and_then(|h| h.get("Nats-Msg-Size"))
                            .and_then(|size| size.as_str().parse().ok())
                            .unwrap_or(0)
                    }),
                    revision: message.revision,
                    commit: commit_of(headers),
                });
            }
        }
        Ok(keys)
    }

    /// Every key of `id`'s state (of one partition, or of all) as committed, sorted by
    /// partition and key.
    pub async fn entries(
        &self,
        id: &DeploymentId,
        partition: Option<u32>,
    ) -> anyhow::Result<Vec<StateEntry>> {
        let (stored, markers) = match partition {
            Some(partition) => {
                let (stored, marker) = tokio::try_join!(
                    self.stored_keys(id, Some(partition)),
                    self.marker(id, partition)
                )?;
                (stored, BTreeMap::from([(partition, marker)]))
            }
            None => tokio::try_join!(self.stored_keys(id, None), self.markers(id))?,
        };
        let mut keys: BTreeMap<(u32, String), StoredKey> = stored
            .into_iter()
            .map(|stored| ((stored.partition, stored.key.clone()), stored))
            .collect();
        for (&partition, marker) in &markers {
            for (key, value) in &marker.writes {
                let at = (partition, key.clone());
                if keys.get(&at).is_some_and(|k| k.commit >= marker.revision) {
                    continue;
                }
                keys.insert(
                    at,
                    StoredKey {
                        key: key.clone(),
                        partition,
                        size: value.as_ref().map(|v| v.len() as u64),
                        revision: marker.revision,
                        commit: marker.revision,
                    },
                );
            }
        }
        Ok(keys
            .into_values()
            .filter_map(|stored| {
                Some(StateEntry {
                    size: stored.size?,
                    key: stored.key,
                    partition: stored.partition,
                    revision: stored.revision,
                })
            })
            .collect())
    }

    /// Removes every key and marker of `id`'s state; returns how many keys there were.
    pub async fn purge(&self, id: &DeploymentId) -> anyhow::Result<usize> {
        let keys = self.entries(id, None).await?.len();
        let filter = format!("{}{}.>", self.prefix, id.handler);
        self.stream
            .purge()
            .filter(filter.clone())
            .await
            .with_context(|| format!("failed to remove the state {filter}"))?;
        Ok(keys)
    }

    /// Writes `value` to `key` of `partition`, or deletes it (`None`), as a repair: the last
    /// commit copied to its keys first, then the key and the marker, rewritten without writes,
    /// in one atomic batch, so that the partition's owner finds its next commit refused and
    /// reads the state again.
    pub async fn repair(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
        value: Option<Bytes>,
    ) -> anyhow::Result<()> {
        if key::encode(key).is_none() {
            anyhow::bail!("invalid key {key:?}: use 1 to {} bytes", key::MAX_KEY_BYTES);
        }
        for _ in 0..5 {
            let marker = self.marker(id, partition).await?;
            let revision = marker.revision;
            let copies = marker.writes.iter().map(|(key, value)| async move {
                let subject = self.key_subject(id, partition, key);
                let stored = match &subject {
                    Some(subject) => self.stored(subject).await?,
                    None => None,
                };
                anyhow::Ok(match stored {
                    Some(stored) if stored.commit >= revision => None,
                    stored => Some((
                        (key.clone(), value.clone()),
                        stored.map_or(0, |s| s.revision),
                    )),
                })
            });
            let copies = futures::future::try_join_all(copies).await?;
            let copied = self
                .copy(
                    id,
                    partition,
                    marker.revision,
                    copies.into_iter().flatten().collect(),
                )
                .await;
            let cleared = Marker {
                writes: Vec::new(),
                ..marker.clone()
            };
            let committed = match copied {
                Ok(_) => {
                    let writes = [(key.to_owned(), value.clone())];
                    self.commit(id, partition, &writes, &cleared, marker.revision)
                        .await
                }
                Err(error) => Err(error),
            };
            match committed {
                Ok(_) => return Ok(()),
                // The owner committed meanwhile: read the marker again.
                Err(CommitError::Conflict(_)) => continue,
                Err(CommitError::ForNow(error)) => return Err(error),
            }
        }
        anyhow::bail!(
            "the partition's state kept changing; try again, or pause the deployment first"
        )
    }

    /// The most bytes a marker may hold: the server's largest message, less room for headers.
    pub(crate) fn max_marker_bytes(&self) -> usize {
        self.js
            .client()
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
    }

    /// Stores `marker` as `partition`'s, if the marker's last revision is `expected`: the
    /// commit of its writes, which are copied to their keys after it ([`StateBucket::copy`]).
    /// Returns its revision.
    pub(crate) async fn write_marker(
        &self,
        id: &DeploymentId,
        partition: u32,
        marker: &Marker,
        expected: u64,
    ) -> Result<u64, CommitError> {
        self.store_marker(id, partition, HeaderMap::new(), marker, expected)
            .await
    }

    /// Stores `marker` with `headers`, expecting the marker's last revision to be `expected`.
    /// A refusal is a conflict, unless the marker found is this very one, stored once already
    /// and its answer lost.
    async fn store_marker(
        &self,
        id: &DeploymentId,
        partition: u32,
        mut headers: HeaderMap,
        marker: &Marker,
        expected: u64,
    ) -> Result<u64, CommitError> {
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let stored = self
            .store(
                self.marker_subject(id, partition),
                headers,
                marker.payload(),
            )
            .await;
        match stored {
            Ok(revision) => Ok(revision),
            Err(NotTaken::WrongLast) => match self.marker(id, partition).await {
                Ok(stored)
                    if marker.applied > 0
                        && stored
                            == Marker {
                                revision: stored.revision,
                                ..marker.clone()
                            } =>
                {
                    Ok(stored.revision)
                }
                Ok(stored) => Err(CommitError::Conflict(stored.revision)),
                Err(error) => Err(self.failed(id, partition, error)),
            },
            Err(NotTaken::Failed(error)) => Err(self.failed(id, partition, error)),
        }
    }

    /// Copies the writes of the commit whose marker is at `revision` to their keys, each key
    /// write expecting the revision the key was last known at (0: never written); returns
    /// each key's new revision. A key found written after that commit already (by another
    /// node copying the same commit, or by a repair) is left as it is: a copy never stores an
    /// older value over a newer one.
    pub(crate) async fn copy(
        &self,
        id: &DeploymentId,
        partition: u32,
        revision: u64,
        writes: Vec<(Write, u64)>,
    ) -> Result<Vec<(String, u64)>, CommitError> {
        let copies = writes.into_iter().map(|((key, value), expected)| {
            self.copy_key(id, partition, revision, key, value, expected)
        });
        futures::future::try_join_all(copies).await
    }

    async fn copy_key(
        &self,
        id: &DeploymentId,
        partition: u32,
        revision: u64,
        key: String,
        value: Option<Bytes>,
        mut expected: u64,
    ) -> Result<(String, u64), CommitError> {
        let Some(subject) = self.key_subject(id, partition, &key) else {
            // Markers hold only valid keys; nothing to copy to.
            return Ok((key, expected));
        };
        for _ in 0..COPY_ATTEMPTS {
            let mut headers = HeaderMap::new();
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            headers.insert(COMMIT_HEADER, revision.to_string().as_str());
            if value.is_none() {
                headers.insert("KV-Operation", "DEL");
            }
            let payload = value.clone().unwrap_or_default();
            match self.store(subject.clone(), headers, payload).await {
                Ok(stored) => return Ok((key, stored)),
                Err(NotTaken::WrongLast) => {
                    let stored = self
                        .stored(&subject)
                        .await
                        .map_err(|error| self.failed(id, partition, error))?;
                    match stored {
                        Some(stored) if stored.commit >= revision => {
                            return Ok((key, stored.revision));
                        }
                        stored => expected = stored.map_or(0, |s| s.revision),
                    }
                }
                Err(NotTaken::Failed(error)) => return Err(self.failed(id, partition, error)),
            }
        }
        Err(self.failed(
            id,
            partition,
            anyhow::anyhow!("{subject} kept changing while the commit was copied to it"),
        ))
    }

    /// Commits `writes` and the marker of `partition` (`marker`, whose writes are not stored)
    /// in one atomic batch that the server takes only if the marker's last revision is
    /// `expected`: for a commit too large for one marker, and for repairs. Returns the
    /// marker's new revision.
    pub(crate) async fn commit(
        &self,
        id: &DeploymentId,
        partition: u32,
        writes: &[Write],
        marker: &Marker,
        expected: u64,
    ) -> Result<u64, CommitError> {
        let client = self.js.client();
        let inbox = client.new_inbox();
        // Unique among the batches in flight: the inbox's own unique part.
        let batch = inbox.rsplit('.').next().unwrap_or_default().to_owned();
        // Written after every commit up to `expected`, and before the next marker's.
        let commit = (expected + 1).to_string();
        let subjects: Vec<(String, &Option<Bytes>)> = writes
            .iter()
            .filter_map(|(key, value)| Some((self.key_subject(id, partition, key)?, value)))
            .collect();
        let count = subjects.len();
        for (n, (subject, value)) in subjects.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch.as_str());
            headers.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            headers.insert(COMMIT_HEADER, commit.as_str());
            if value.is_none() {
                headers.insert("KV-Operation", "DEL");
            }
            client
                .publish_with_headers(subject, headers, value.clone().unwrap_or_default())
                .await
                .map_err(|e| self.failed(id, partition, e.into()))?;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", (count + 1).to_string().as_str());
        headers.insert("Nats-Batch-Commit", "1");
        let marker = Marker {
            writes: Vec::new(),
            ..marker.clone()
        };
        self.store_marker(id, partition, headers, &marker, expected)
            .await
    }

    /// Stores one message, and returns its stream sequence.
    async fn store(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, NotTaken> {
        let client = self.js.client();
        let request = client.request_with_headers(subject, headers, payload);
        let reply = tokio::time::timeout(COMMIT_TIMEOUT, request)
            .await
            .map_err(|_| NotTaken::Failed(anyhow::anyhow!("no answer within {COMMIT_TIMEOUT:?}")))?
            .map_err(|e| NotTaken::Failed(e.into()))?;
        let reply: StoreReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| NotTaken::Failed(anyhow::Error::new(e).context("unreadable answer")))?;
        match (reply.error, reply.seq) {
            (None, Some(revision)) => Ok(revision),
            (Some(error), _) if WRONG_LAST_SEQUENCE.contains(&error.err_code) => {
                Err(NotTaken::WrongLast)
            }
            (Some(error), _) => Err(NotTaken::Failed(anyhow::anyhow!(
                "{} (error {})",
                error.description,
                error.err_code
            ))),
            (None, None) => Err(NotTaken::Failed(anyhow::anyhow!(
                "the answer carries no sequence"
            ))),
        }
    }

    fn failed(&self, id: &DeploymentId, partition: u32, error: anyhow::Error) -> CommitError {
        CommitError::ForNow(error.context(format!(
            "failed to commit the state of {id} partition {partition}"
        )))
    }
}

/// The header of a key's write that says which commits it holds: every commit up to the
/// marker revision it gives (the commit it was copied from, or the one an atomic batch
/// followed). A marker's write of the key is newer than the key's subject while the key's
/// value is older than the marker.
const COMMIT_HEADER: &str = "Weir-Commit";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Room left in a message for its headers when a marker's size is bounded.
const HEADER_ROOM: usize = 4 << 10;
/// How many times a key's copy is tried when the key changes underneath it.
const COPY_ATTEMPTS: usize = 5;

/// The last message of a key's subject, or of a marker's.
#[derive(Debug)]
struct Stored {
    /// Its value; `None` for a deletion.
    value: Option<Bytes>,
    /// Its stream sequence: what the next write of the subject expects.
    revision: u64,
    /// The commits it holds (see [`COMMIT_HEADER`]).
    commit: u64,
}

/// A key of a partition's state as its own subject holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredKey {
    pub(crate) key: String,
    pub(crate) partition: u32,
    /// The size of its value; `None` for a deletion.
    pub(crate) size: Option<u64>,
    /// Its stream sequence: what the next write of the key expects.
    pub(crate) revision: u64,
    /// The commits it holds (see [`COMMIT_HEADER`]).
    pub(crate) commit: u64,
}

/// The last message of a subject, as a listing reads it.
struct Last {
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
    revision: u64,
}

fn deleted(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| op.as_str() != "PUT")
}

fn commit_of(headers: Option<&HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(COMMIT_HEADER))
        .and_then(|commit| commit.as_str().parse().ok())
        .unwrap_or(0)
}

/// Why the server did not store a message.
enum NotTaken {
    /// The subject's last revision was not the one expected.
    WrongLast,
    Failed(anyhow::Error),
}

/// JetStream's "wrong last sequence" errors: the expected revision was not the last (or, on a
/// cluster, another write of the subject is in flight).
const WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];

#[derive(Deserialize)]
struct StoreReply {
    error: Option<ApiError>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct ApiError {
    err_code: u64,
    #[serde(default)]
    description: String,
}
