//! The state bucket of a tenant in NATS: its stream, reading a key (from the stream's leader,
//! never a replica that may lag behind the last commit), listing a partition's keys, and the
//! atomic commit of a message's changes with the partition's marker.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;

use super::key;
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

/// The marker of a partition as stored: the last message applied, and its revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Marker {
    /// The stream sequence of the last message whose changes are applied; 0 for none.
    pub(crate) applied: u64,
    /// The stream sequence of the marker's last write in the bucket; 0 for none.
    pub(crate) revision: u64,
    /// How many partitions the input stream had when it was written (`None` before it was
    /// known): a key's state is where its messages are only while that holds.
    pub(crate) partitions: Option<u32>,
}

impl Marker {
    /// The marker's payload: `<applied> <partitions>`.
    fn payload(applied: u64, partitions: Option<u32>) -> Bytes {
        match partitions {
            Some(partitions) => format!("{applied} {partitions}").into(),
            None => applied.to_string().into(),
        }
    }

    fn parse(payload: &[u8], revision: u64) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.split_whitespace();
        let applied = words.next()?.parse().ok()?;
        let partitions = match words.next() {
            Some(word) => Some(word.parse().ok()?),
            None => None,
        };
        Some(Self {
            applied,
            revision,
            partitions,
        })
    }
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
                // and which takes a message's changes and its marker in one atomic batch.
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

    /// The value of `key` in `partition`, read from the stream's leader; `None` if it has none.
    pub async fn get(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
    ) -> anyhow::Result<Option<Bytes>> {
        let Some(subject) = self.key_subject(id, partition, key) else {
            return Ok(None);
        };
        Ok(self.last(&subject).await?.map(|(value, _)| value))
    }

    /// The last message on `subject`, unless there is none or it is a deletion: its payload
    /// and stream sequence.
    async fn last(&self, subject: &str) -> anyhow::Result<Option<(Bytes, u64)>> {
        use jetstream::stream::LastRawMessageErrorKind;
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => {
                let deleted = message
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() != "PUT");
                Ok((!deleted).then_some((message.payload, message.sequence)))
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("failed to read {subject}")),
        }
    }

    /// The marker of `partition`: which message was applied last.
    pub(crate) async fn marker(&self, id: &DeploymentId, partition: u32) -> anyhow::Result<Marker> {
        let subject = self.marker_subject(id, partition);
        let Some((payload, revision)) = self.last(&subject).await? else {
            return Ok(Marker::default());
        };
        Marker::parse(&payload, revision)
            .with_context(|| format!("the marker {subject} does not hold a stream sequence"))
    }

    /// How `id`'s state is laid out: its keys, and the partition counts it was written under.
    pub async fn layout(&self, id: &DeploymentId) -> anyhow::Result<StateLayout> {
        let entries = self.entries(id, None).await?;
        let filter = format!("{}{}.*", self.prefix, id.handler);
        let mut layout = StateLayout {
            keys: entries.len(),
            highest: entries.iter().map(|e| e.partition).max(),
            ..StateLayout::default()
        };
        let consumer = control::reading_consumer_of(
            &self.js,
            &self.stream,
            jetstream::consumer::push::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("failed to read the markers {filter}"))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(layout);
        }
        let mut messages = consumer
            .messages()
            .await
            .with_context(|| format!("failed to read the markers {filter}"))?;
        while let Some(message) = messages.next().await {
            let message =
                message.with_context(|| format!("failed to read the markers {filter}"))?;
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("failed to read the markers {filter}"))?;
            let pending = info.pending;
            if let Some(partitions) =
                Marker::parse(&message.payload, 0).and_then(|marker| marker.partitions)
            {
                layout.partitions.insert(partitions);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(layout)
    }

    /// Every key of `id`'s state (of one partition, or of all), sorted by partition and key.
    pub async fn entries(
        &self,
        id: &DeploymentId,
        partition: Option<u32>,
    ) -> anyhow::Result<Vec<StateEntry>> {
        let filter = match partition {
            Some(partition) => format!("{}{}.p{partition:03}.>", self.prefix, id.handler),
            None => format!("{}{}.*.>", self.prefix, id.handler),
        };
        let handler_prefix = format!("{}{}.", self.prefix, id.handler);
        let consumer = control::reading_consumer_of(
            &self.js,
            &self.stream,
            jetstream::consumer::push::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                headers_only: true,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("failed to read the keys {filter}"))?;
        let mut entries = Vec::new();
        if consumer.cached_info().num_pending > 0 {
            let mut messages = consumer
                .messages()
                .await
                .with_context(|| format!("failed to read the keys {filter}"))?;
            while let Some(message) = messages.next().await {
                let message =
                    message.with_context(|| format!("failed to read the keys {filter}"))?;
                let info = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("failed to read the keys {filter}"))?;
                let (revision, pending) = (info.stream_sequence, info.pending);
                let headers = message.headers.as_ref();
                let deleted = headers
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() != "PUT");
                let size = headers
                    .and_then(|h| h.get("Nats-Msg-Size"))
                    .and_then(|size| size.as_str().parse().ok())
                    .unwrap_or(0);
                let entry = message
                    .subject
                    .strip_prefix(&handler_prefix)
                    .and_then(|rest| rest.split_once('.'))
                    .and_then(|(partition, token)| {
                        let partition = partition.strip_prefix('p')?.parse().ok()?;
                        Some((partition, key::decode(token)?))
                    });
                if let (false, Some((partition, key))) = (deleted, entry) {
                    entries.push(StateEntry {
                        key,
                        partition,
                        size,
                        revision,
                    });
                }
                if pending == 0 {
                    break;
                }
            }
        }
        entries.sort_by(|a, b| (a.partition, &a.key).cmp(&(b.partition, &b.key)));
        Ok(entries)
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

    /// Writes `value` to `key` of `partition`, or deletes it (`None`), as a repair: with the
    /// marker rewritten, unchanged, in the same atomic batch, so that the partition's owner
    /// finds its next commit refused and reads the state again.
    pub async fn repair(
        &self,
        id: &DeploymentId,
        partition: u32,
        key: &str,
        value: Option<Bytes>,
    ) -> anyhow::Result<()> {
        let subject = self.key_subject(id, partition, key).with_context(|| {
            format!("invalid key {key:?}: use 1 to {} bytes", key::MAX_KEY_BYTES)
        })?;
        for _ in 0..5 {
            let marker = self.marker(id, partition).await?;
            let writes = [(subject.clone(), value.clone())];
            let committed = self
                .commit(
                    id,
                    partition,
                    &writes,
                    marker.applied,
                    marker.partitions,
                    marker.revision,
                )
                .await;
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

    /// Commits `writes` (subject and value, `None` for a deletion) and the marker of
    /// `partition`, at `applied` of a stream of `partitions`, in one atomic batch that the
    /// server takes only if the marker's last revision is `expected`. Returns the marker's new
    /// revision.
    pub(crate) async fn commit(
        &self,
        id: &DeploymentId,
        partition: u32,
        writes: &[(String, Option<Bytes>)],
        applied: u64,
        partitions: Option<u32>,
        expected: u64,
    ) -> Result<u64, CommitError> {
        let client = self.js.client();
        let inbox = client.new_inbox();
        // Unique among the batches in flight: the inbox's own unique part.
        let batch = inbox.rsplit('.').next().unwrap_or_default().to_owned();
        let failed = |error: anyhow::Error| {
            CommitError::ForNow(error.context(format!(
                "failed to commit the state of {id} partition {partition}"
            )))
        };
        for (n, (subject, value)) in writes.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch.as_str());
            headers.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            if value.is_none() {
                headers.insert("KV-Operation", "DEL");
            }
            client
                .publish_with_headers(subject.clone(), headers, value.clone().unwrap_or_default())
                .await
                .map_err(|e| failed(e.into()))?;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert(
            "Nats-Batch-Sequence",
            (writes.len() + 1).to_string().as_str(),
        );
        headers.insert("Nats-Batch-Commit", "1");
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        let request = client.request_with_headers(
            self.marker_subject(id, partition),
            headers,
            Marker::payload(applied, partitions),
        );
        let reply = tokio::time::timeout(COMMIT_TIMEOUT, request)
            .await
            .map_err(|_| failed(anyhow::anyhow!("no answer within {COMMIT_TIMEOUT:?}")))?
            .map_err(|e| failed(e.into()))?;
        let reply: CommitReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| failed(anyhow::Error::new(e).context("unreadable answer")))?;
        match (reply.error, reply.seq) {
            (None, Some(revision)) => Ok(revision),
            (Some(error), _) if WRONG_LAST_SEQUENCE.contains(&error.err_code) => {
                // Perhaps this very commit, stored once already, whose answer was lost.
                match self.marker(id, partition).await {
                    Ok(marker) if marker.applied == applied && applied > 0 => Ok(marker.revision),
                    Ok(marker) => Err(CommitError::Conflict(marker.revision)),
                    Err(error) => Err(failed(error)),
                }
            }
            (Some(error), _) => Err(failed(anyhow::anyhow!(
                "{} (error {})",
                error.description,
                error.err_code
            ))),
            (None, None) => Err(failed(anyhow::anyhow!("the answer carries no sequence"))),
        }
    }
}

/// JetStream's "wrong last sequence" errors: the expected revision was not the last.
const WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];

#[derive(Deserialize)]
struct CommitReply {
    error: Option<ApiError>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct ApiError {
    err_code: u64,
    #[serde(default)]
    description: String,
}
