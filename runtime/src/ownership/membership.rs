//! Which nodes are alive, decided by the NATS server alone.
//!
//! Each node keeps a record under its id in the KV bucket `weir_nodes`, written with a per-key
//! TTL (`Nats-TTL`) and renewed well before it runs out. A node that stops renewing — killed,
//! hung, cut off — disappears when the server expires its key, which it announces to every
//! watcher with a delete marker. No node ever compares its clock with another's.
//!
//! Renewals are compare-and-set on the record's revision, so a node whose record expired
//! while it was away notices (the revision moved on) and registers again instead of silently
//! extending a record that everyone else already gave up on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::now_rfc3339;
use crate::control::{NODES_BUCKET, alive_subject};
use crate::observe::health::{Health, Loop};

/// Pause before watching `weir_nodes` again after the watch broke.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// What a node says about itself in `weir_nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The node's id, also the key.
    pub node: String,
    /// Whether the node takes partitions.
    pub state: MemberState,
    /// When the node started (RFC 3339).
    pub started_at: String,
    /// The weir version the node runs.
    pub version: String,
    /// How many partitions of each tenant the node runs at most, which placement respects.
    /// (Missing from the records of nodes older than this field: no bound.)
    #[serde(default)]
    pub max_instances: MaxInstances,
}

/// How many partitions of each tenant a node runs at most: its configuration's
/// `max_instances`, over all of a tenant's deployments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxInstances {
    /// Of a tenant without a section of its own.
    pub default: u32,
    /// Of each tenant with a section of its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, u32>,
}

impl MaxInstances {
    /// No bound at all.
    pub const UNBOUNDED: Self = Self {
        default: u32::MAX,
        tenants: BTreeMap::new(),
    };

    /// `tenant`'s.
    pub fn of(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}

impl Default for MaxInstances {
    fn default() -> Self {
        Self::UNBOUNDED
    }
}

/// A live node's part in placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Takes its share of every deployment's partitions.
    Active,
    /// Shutting down: hands its partitions off and takes no new ones.
    Draining,
}

/// The live nodes, as one node last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberView {
    /// Every live node, active or draining, by id.
    pub live: BTreeMap<String, MemberRecord>,
}

impl MemberView {
    /// The nodes that take partitions, sorted, as placement expects them.
    pub fn active(&self) -> Vec<String> {
        self.live
            .values()
            .filter(|record| record.state == MemberState::Active)
            .map(|record| record.node.clone())
            .collect()
    }

    /// Whether `node` still has a record.
    pub fn is_live(&self, node: &str) -> bool {
        self.live.contains_key(node)
    }
}

/// How a node keeps its membership.
#[derive(Debug, Clone, Copy)]
pub struct MembershipConfig {
    /// How long a record lives without renewal: how soon a dead node is noticed. Whole
    /// seconds, at least one.
    pub ttl: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
        }
    }
}

/// A node's membership: its record in `weir_nodes` and the revision it last wrote.
pub(crate) struct Membership {
    js: jetstream::Context,
    nodes: kv::Store,
    record: MemberRecord,
    ttl: Duration,
    revision: u64,
}

impl Membership {
    /// Registers `node`, which runs at most `max_instances` partitions of each tenant,
    /// refusing an id that a live node already holds.
    pub(crate) async fn join(
        js: jetstream::Context,
        nodes: kv::Store,
        node: &str,
        max_instances: MaxInstances,
        config: MembershipConfig,
    ) -> anyhow::Result<Self> {
        let record = MemberRecord {
            node: node.to_owned(),
            state: MemberState::Active,
            started_at: now_rfc3339(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_instances,
        };
        let ttl = Duration::from_secs(config.ttl.as_secs().max(1));
        let revision = match register(&nodes, &record, ttl).await {
            Ok(revision) => revision,
            Err(Renewal::Lapsed) => anyhow::bail!(
                "node id {node:?} is already registered by a live node; give each node its own \
                 --node-id"
            ),
            Err(Renewal::Failed(error)) => return Err(error),
        };
        Ok(Self {
            js,
            nodes,
            record,
            ttl,
            revision,
        })
    }

    /// Keeps the record alive until `shutdown`, then deletes it. `state` says what the record
    /// announces; a change is written at once. `health` hears of each turn of the loop (at
    /// least every second) and whether the record is the node's own.
    pub(crate) async fn keep(
        mut self,
        mut state: watch::Receiver<MemberState>,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) {
        let mut renewals = tokio::time::interval(self.ttl / 3);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renewals.reset();
        let mut turns = tokio::time::interval(Duration::from_secs(1));
        let mut registered = true;
        loop {
            health.turned(Loop::Membership);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = turns.tick() => continue,
                _ = state.changed() => {}
                _ = renewals.tick() => {}
            }
            self.record.state = *state.borrow_and_update();
            let written = async {
                if registered {
                    renew(&self.js, &self.record, self.revision, self.ttl).await
                } else {
                    register(&self.nodes, &self.record, self.ttl).await
                }
            };
            // A node leaving does not wait for a renewal a server that is gone never answers.
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                result = written => result,
            };
            match result {
                Ok(revision) => {
                    self.revision = revision;
                    registered = true;
                    health.set_registered(true);
                }
                Err(Renewal::Lapsed) => {
                    tracing::warn!(
                        "this node's membership lapsed (it could not renew within {:?}); \
                         registering again",
                        self.ttl
                    );
                    registered = false;
                    health.set_registered(false);
                }
                Err(Renewal::Failed(error)) => {
                    tracing::warn!("failed to renew membership: {error:#}");
                }
            }
        }
        if let Err(error) = self.nodes.delete(&self.record.node).await {
            tracing::warn!("failed to deregister: {error}");
        }
    }
}

enum Renewal {
    /// The record is gone or was replaced: the rest of the cluster saw this node leave.
    Lapsed,
    Failed(anyhow::Error),
}

/// Creates the record; `Lapsed` here means a live record already holds the id.
async fn register(nodes: &kv::Store, record: &MemberRecord, ttl: Duration) -> Result<u64, Renewal> {
    use async_nats::jetstream::kv::CreateErrorKind;
    let value = serde_json::to_vec(record).map_err(|e| Renewal::Failed(e.into()))?;
    match nodes.create_with_ttl(&record.node, value.into(), ttl).await {
        Ok(revision) => Ok(revision),
        Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Err(Renewal::Lapsed),
        Err(error) => Err(Renewal::Failed(anyhow::Error::from(error).context(
            format!("failed to register node {} in {NODES_BUCKET}", record.node),
        ))),
    }
}

/// Writes the record again with a fresh TTL, only if it is still the revision this node wrote.
/// (KV `update` cannot carry a TTL, so this publishes to the bucket's subject itself.)
async fn renew(
    js: &jetstream::Context,
    record: &MemberRecord,
    revision: u64,
    ttl: Duration,
) -> Result<u64, Renewal> {
    let value = serde_json::to_vec(record).map_err(|e| Renewal::Failed(e.into()))?;
    let publish = PublishMessage::build()
        .payload(value.into())
        .expected_last_subject_sequence(revision)
        .ttl(ttl);
    let subject = format!("$KV.{NODES_BUCKET}.{}", record.node);
    let ack = js
        .send_publish(subject, publish)
        .await
        .map_err(|e| Renewal::Failed(e.into()))?
        .await;
    match ack {
        Ok(ack) => Ok(ack.sequence),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Err(Renewal::Lapsed),
        Err(error) => Err(Renewal::Failed(error.into())),
    }
}

/// Follows `weir_nodes` and publishes the live membership each time it changes, from the
/// moment the watch has caught up with the bucket.
pub(crate) async fn watch_members(
    nodes: kv::Store,
    view: watch::Sender<Option<MemberView>>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match nodes.watch_with_history(">").await {
            Ok(mut entries) => {
                let mut live = BTreeMap::new();
                let mut caught_up = false;
                loop {
                    let entry = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        entry = entries.next() => entry,
                    };
                    let entry = match entry {
                        Some(Ok(entry)) => entry,
                        Some(Err(error)) => {
                            tracing::warn!("membership watch: {error}");
                            continue;
                        }
                        None => {
                            tracing::warn!("the watch on {NODES_BUCKET} ended; watching again");
                            break;
                        }
                    };
                    match entry.operation {
                        Operation::Put => {
                            match serde_json::from_slice::<MemberRecord>(&entry.value) {
                                Ok(record) => {
                                    live.insert(entry.key, record);
                                }
                                Err(error) => {
                                    tracing::warn!("ignoring member record {}: {error}", entry.key);
                                }
                            }
                        }
                        Operation::Delete | Operation::Purge => {
                            live.remove(&entry.key);
                        }
                    }
                    caught_up |= entry.delta == 0;
                    if caught_up {
                        let next = MemberView { live: live.clone() };
                        view.send_if_modified(|current| {
                            let changed = current.as_ref() != Some(&next);
                            *current = Some(next);
                            changed
                        });
                    }
                }
            }
            Err(error) => tracing::error!("failed to watch {NODES_BUCKET}: {error}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REWATCH_DELAY) => {}
        }
    }
}

/// Answers every request on this node's [`alive_subject`] until `shutdown`. The answer matters
/// less than the subscription: while this node's connection is up, the server has somebody to
/// send the request to.
pub(crate) async fn answer_alive(
    client: async_nats::Client,
    node: String,
    shutdown: CancellationToken,
) {
    let mut requests = match client.subscribe(alive_subject(&node)).await {
        Ok(requests) => requests,
        Err(error) => {
            tracing::warn!("failed to answer liveness requests: {error}");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.next() => request,
        };
        let Some(request) = request else {
            return;
        };
        if let Some(reply) = request.reply {
            let _ = client.publish(reply, bytes::Bytes::new()).await;
        }
    }
}

/// Whether `node`'s connection to the server is gone: the server has nobody to hand a request
/// on its [`alive_subject`] to, which it knows as soon as a crashed process's connection
/// closes. A node that is only busy, or whose connection the server has not yet found dead, is
/// not gone (its request goes unanswered, or answered, within `patience`).
pub(crate) async fn connection_gone(
    client: &async_nats::Client,
    node: &str,
    patience: Duration,
) -> bool {
    use async_nats::RequestErrorKind;
    let asked = tokio::time::timeout(
        patience,
        client.request(alive_subject(node), bytes::Bytes::new()),
    );
    matches!(asked.await, Ok(Err(error)) if error.kind() == RequestErrorKind::NoResponders)
}

/// The live nodes right now, read once (for `weir status`).
pub async fn live_nodes(nodes: &kv::Store) -> anyhow::Result<Vec<MemberRecord>> {
    let mut records = Vec::new();
    for key in crate::control::keys(nodes, None).await? {
        if let Some(value) = nodes.get(&key).await.context("failed to read weir_nodes")? {
            match serde_json::from_slice::<MemberRecord>(&value) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!("ignoring member record {key}: {error}"),
            }
        }
    }
    records.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(records)
}
