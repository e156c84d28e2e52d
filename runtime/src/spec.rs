//! The stored types: what `weir deploy` writes into `weir_deployments` ([`DeploymentSpec`],
//! with its [`LimitsSpec`] and [`RetrySpec`]) and what nodes write into `weir_status`
//! ([`NodeStatus`]), and the one validation of a spec that `weir deploy` and every node apply.
//!
//! A tenant's user may write its own records straight into `weir_deployments`, so a node
//! trusts nothing in a record it has not checked here: a record that fails is refused with the
//! reason, and the version that ran before keeps running.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::builtin::Builtin;
use crate::config::{duration_text, durations_text};
use crate::control::DeploymentId;
use crate::outputs::{self, Reserved};
use crate::partition::MAX_PARTITIONS;

/// Deliveries before the server gives a message up.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// How long the server waits for an answer before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Delays after a retry without a delay, or a failure, by delivery attempt.
pub const DEFAULT_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];
/// Linear memory per instance.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
/// Deadline for one call.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(10);
/// Outputs one call may publish.
pub const DEFAULT_MAX_OUTPUTS_PER_CALL: u32 = 1_000;
/// Output bytes (payload, subject and headers) one call may publish.
pub const DEFAULT_MAX_OUTPUT_BYTES_PER_CALL: u64 = 8 << 20;
/// Messages of one partition a node holds at once: delivered, in the call, or with their
/// outputs being stored (the partition consumer's MaxAckPending).
pub const DEFAULT_WINDOW: u32 = 256;
/// The largest window.
pub const MAX_WINDOW: u32 = 4096;

/// The longest duration a spec may hold: far more than any call, wait or delay needs, and far
/// from the overflow of the server's nanosecond fields.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Memory bounds per instance: one Wasm page, and all a 32-bit memory can address.
pub const MIN_MEMORY_BYTES: u64 = 64 << 10;
/// See [`MIN_MEMORY_BYTES`].
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Steps a backoff may have.
pub const MAX_BACKOFF_STEPS: usize = 32;
/// The longest stream name NATS accepts.
const MAX_STREAM_NAME_BYTES: usize = 255;

/// A handler version as deployed: stored as JSON in `weir_deployments` under
/// `<tenant>.<handler>`. Every node that sees it runs it; a new value replaces the old one at
/// a message boundary on every partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    /// The tenant that owns the handler.
    pub tenant: String,
    /// The handler's name within its tenant.
    pub handler: String,
    /// SHA-256 of the component, in hex.
    pub version: String,
    /// The component's name in its tenant's `weir_artifacts_<tenant>` (older deployments:
    /// `weir_artifacts`).
    pub artifact: String,
    /// The partitioned input stream.
    pub stream: String,
    /// The stream's partition count, read from the stream at deploy time.
    pub partitions: u32,
    /// Messages of a partition in flight at once; see [`DEFAULT_WINDOW`].
    #[serde(default = "default_window")]
    pub window: u32,
    /// What each instance and call may use.
    pub limits: LimitsSpec,
    /// How deliveries are retried and given up.
    pub retry: RetrySpec,
    /// Key/value pairs handed to the handler's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Subject patterns the handler may publish to; empty means it may publish nothing.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// When this version was deployed (or rolled back to), RFC 3339; pausing and resuming
    /// keep it.
    pub deployed_at: String,
    /// Who deployed it: the NATS user `weir deploy` connected as, where it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    /// Where on its stream a partition consumer created for this deployment starts; a
    /// consumer that exists keeps its place.
    #[serde(default, skip_serializing_if = "StartAt::is_all")]
    pub start: StartAt,
    /// Whether the handler is paused (`weir pause`): every partition holds its messages after
    /// the one in hand, and keeps its place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// Where a new deployment starts on its stream (`weir deploy --from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At the first message the stream holds.
    #[default]
    All,
    /// At the first message at or after this stream sequence (`--from new` is the sequence
    /// after the last one stored when the handler was deployed).
    Sequence(u64),
    /// At the first message stored at or after this time.
    #[serde(with = "time::serde::rfc3339")]
    Time(time::OffsetDateTime),
}

impl StartAt {
    fn is_all(&self) -> bool {
        *self == Self::All
    }
}

impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => write!(f, "the first message"),
            Self::Sequence(seq) => write!(f, "stream sequence {seq}"),
            Self::Time(time) => {
                let text = time
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                write!(f, "the messages stored since {text}")
            }
        }
    }
}

/// The stored form of [`crate::host::CallLimits`]; see the `DEFAULT_*` constants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsSpec {
    /// Linear memory per instance, summed over its memories.
    pub max_memory_bytes: u64,
    /// Deadline for one `init` or `handle` call.
    #[serde(with = "duration_text")]
    pub handler_timeout: Duration,
    /// Outputs one call may publish.
    pub max_outputs_per_call: u32,
    /// Output bytes one call may publish.
    pub max_output_bytes_per_call: u64,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            max_outputs_per_call: DEFAULT_MAX_OUTPUTS_PER_CALL,
            max_output_bytes_per_call: DEFAULT_MAX_OUTPUT_BYTES_PER_CALL,
        }
    }
}

impl LimitsSpec {
    /// Refuses limits no instance could run under.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&self.max_memory_bytes),
            "--max-memory (limits.max_memory_bytes) must be between 64KiB and 4GiB, not {} bytes",
            self.max_memory_bytes
        );
        check_duration(
            "--handler-timeout (limits.handler_timeout)",
            self.handler_timeout,
            Duration::from_millis(1),
        )
    }
}

/// How deliveries are acknowledged, retried and given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySpec {
    /// Deliveries before a message becomes a dead letter (the consumer's MaxDeliver).
    pub max_deliver: u32,
    /// How long the server waits for an answer before it redelivers (the consumer's AckWait).
    #[serde(with = "duration_text")]
    pub ack_wait: Duration,
    /// Delay before the next delivery after a retry without a delay, or a failure, indexed by
    /// delivery attempt (the last entry repeats).
    #[serde(with = "durations_text")]
    pub backoff: Vec<Duration>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_deliver: DEFAULT_MAX_DELIVER,
            ack_wait: DEFAULT_ACK_WAIT,
            backoff: DEFAULT_BACKOFF.to_vec(),
        }
    }
}

impl RetrySpec {
    /// The delay after delivery `attempt` (1-based) when the handler named none.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) - 1) as usize;
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }

    /// Refuses settings the server would reject or that make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_deliver >= 1,
            "--max-deliver (retry.max_deliver) must be at least 1"
        );
        check_duration(
            "--ack-wait (retry.ack_wait)",
            self.ack_wait,
            Duration::from_secs(1),
        )?;
        anyhow::ensure!(
            (1..=MAX_BACKOFF_STEPS).contains(&self.backoff.len()),
            "--backoff (retry.backoff) must have 1 to {MAX_BACKOFF_STEPS} steps, not {}",
            self.backoff.len()
        );
        for step in &self.backoff {
            check_duration("a --backoff (retry.backoff) step", *step, Duration::ZERO)?;
        }
        Ok(())
    }
}

fn default_window() -> u32 {
    DEFAULT_WINDOW
}

/// Refuses a window outside 1 to [`MAX_WINDOW`].
pub fn validate_window(window: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_WINDOW).contains(&window),
        "--window (window) must be between 1 and {MAX_WINDOW}, not {window}"
    );
    Ok(())
}

fn check_duration(what: &str, duration: Duration, min: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        (min..=MAX_DURATION).contains(&duration),
        "{what} must be between {} and 24h, not {}",
        humantime::format_duration(min),
        humantime::format_duration(duration)
    );
    Ok(())
}

impl DeploymentSpec {
    /// The deployment's identity, validated.
    pub fn id(&self) -> anyhow::Result<DeploymentId> {
        DeploymentId::new(&self.tenant, &self.handler)
    }

    /// Whether the two specs run the handler the same way: the same in everything but being
    /// paused, so that a pause or a resume keeps the partitions' instances.
    pub fn runs_like(&self, other: &Self) -> bool {
        Self {
            paused: other.paused,
            ..self.clone()
        } == *other
    }

    /// The first 12 hex digits of the version, for people.
    pub fn short_version(&self) -> &str {
        self.version.get(..12).unwrap_or(&self.version)
    }

    /// Checks everything about the spec that needs no server, as strictly on a node as at
    /// deploy time: the names, that the version and artifact are the tenant's own, the stream's
    /// name and partition count, the limits, the retry policy, the configuration and the output
    /// patterns (none of them wholly `reserved`). Whether the stream has that many partitions
    /// is [`DeploymentSpec::check_partitions`].
    pub fn validate(&self, reserved: &Reserved) -> anyhow::Result<DeploymentId> {
        let id = self.id()?;
        self.check_artifact(&id)?;
        validate_stream_name(&self.stream)?;
        anyhow::ensure!(
            (1..=MAX_PARTITIONS).contains(&self.partitions),
            "the partition count must be between 1 and {MAX_PARTITIONS}, not {}",
            self.partitions
        );
        validate_window(self.window)?;
        self.limits.validate()?;
        self.retry.validate()?;
        validate_config(&self.config)?;
        validate_outputs(reserved, &self.outputs)?;
        // The server refuses a consumer that starts at sequence 0: every partition would stall.
        anyhow::ensure!(
            self.start != StartAt::Sequence(0),
            "--from (start) must be a stream sequence of at least 1"
        );
        Ok(id)
    }

    /// Refuses a spec whose stream does not have the partitions it says: too few would leave
    /// partitions no worker reads, too many would run workers for partitions that never fill.
    pub fn check_partitions(&self, stream_partitions: u32) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.partitions == stream_partitions,
            "the deployment says stream {} has {} partitions, but it has {stream_partitions} \
             (deploy again to run on the stream as it is)",
            self.stream,
            self.partitions
        );
        Ok(())
    }

    /// A component's version is its SHA-256, stored under the tenant's own name for it; a
    /// built-in handler's version is its artifact name.
    fn check_artifact(&self, id: &DeploymentId) -> anyhow::Result<()> {
        if Builtin::from_artifact(&self.artifact).is_some() {
            anyhow::ensure!(
                self.version == self.artifact,
                "the version of built-in handler {} must be {0:?}, not {:?}",
                self.artifact,
                self.version
            );
            return Ok(());
        }
        let digest = self.version.len() == 64
            && self
                .version
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        anyhow::ensure!(
            digest,
            "version {:?} is not a SHA-256 digest (64 lowercase hex digits)",
            self.version
        );
        let own = id.artifact_name(&self.version);
        anyhow::ensure!(
            self.artifact == own,
            "artifact {:?} is not {id}'s component of version {}: it must be {own:?}",
            self.artifact,
            self.short_version()
        );
        Ok(())
    }
}

/// Refuses a name NATS would not take for a stream.
pub fn validate_stream_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME_BYTES
        && !name.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        });
    anyhow::ensure!(
        valid,
        "invalid stream name {name:?}: use 1 to 255 characters without whitespace, '.', '*', \
         '>', '/' or '\\'"
    );
    Ok(())
}

/// Refuses configuration a handler could not be given: an empty key.
pub fn validate_config(config: &BTreeMap<String, String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.contains_key(""),
        "a --config (config) key cannot be empty"
    );
    Ok(())
}

/// Refuses output patterns that are invalid or wholly reserved (see [`crate::outputs`]).
pub fn validate_outputs(reserved: &Reserved, patterns: &[String]) -> anyhow::Result<()> {
    for pattern in patterns {
        outputs::check_pattern(reserved, &format!("--output {pattern:?}"), pattern)?;
    }
    Ok(())
}

/// Reads a `weir_deployments` record stored under `key` and checks it
/// ([`DeploymentSpec::validate`]); the error says what is wrong with it.
pub fn read_record(
    key: &str,
    value: &[u8],
    reserved: &Reserved,
) -> anyhow::Result<(DeploymentId, DeploymentSpec)> {
    let id = DeploymentId::from_key(key)?;
    let spec: DeploymentSpec =
        serde_json::from_slice(value).context("unreadable deployment record")?;
    let named = spec.id()?;
    anyhow::ensure!(
        named == id,
        "the record stored under {} is for {named}",
        id.key()
    );
    spec.validate(reserved)?;
    Ok((id, spec))
}

impl NodeStatus {
    /// Whether the node runs no version of the deployment at all; for a node older than
    /// [`NodeStatus::refused`], whether it said why it cannot and runs no partition.
    pub fn refuses(&self) -> bool {
        self.refused
            .unwrap_or(self.error.is_some() && self.partitions.is_empty())
    }
}

/// The partition count a `weir_deployments` record states, if it states one within bounds,
/// however it fares otherwise: what placement counts the record for on every node, since
/// whether a node accepts the record depends on that node's configuration.
pub fn partitions_of_record(value: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Partitions {
        partitions: u32,
    }
    let Partitions { partitions } = serde_json::from_slice(value).ok()?;
    (1..=MAX_PARTITIONS)
        .contains(&partitions)
        .then_some(partitions)
}

/// What one node made of one deployment, stored in `weir_status` under
/// `<tenant>.<handler>.<node-id>`: the partitions it runs, or why it could not load it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The reporting node's id.
    pub node: String,
    /// The revision of the `weir_deployments` entry this node runs (or failed to load).
    pub revision: u64,
    /// The component version of that revision.
    pub version: String,
    /// The partitions this node runs.
    pub partitions: Vec<u32>,
    /// Those of them that wait for capacity (an instance or memory of the tenant's quota, or
    /// an instance that cannot start), and why. Their messages are kept, not dead-lettered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<u32, String>,
    /// Those of them that hold their messages because the deployment is paused, once their
    /// worker has finished the message in hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<u32>,
    /// The consumer pin the worker of each of them holds, where it holds one: `weir status`
    /// compares it with the consumer's, to tell the partition's holder from a worker on standby.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<u32, String>,
    /// Those of them whose worker failed and is being started again, and why; a partition is
    /// listed until its restarted worker has run for a while.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failing: BTreeMap<u32, String>,
    /// How many writes to the handler's state the tenant's quotas refused on this node since
    /// it began running the deployment, by quota (`keys`, `bytes`, `value_bytes`,
    /// `writes_per_call`, or `invalid_key`); the handler was told which.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state_refusals: BTreeMap<String, u64>,
    /// Why this node cannot run the revision, if it cannot.
    pub error: Option<String>,
    /// Whether this node runs no version of the deployment at all, for `error`: every node then
    /// leaves it out of the deployment's placement. (A node that runs an earlier version, the
    /// later one having failed to load, has an `error` and is not refused.)
    /// (`None` from nodes older than this field: see [`NodeStatus::refuses`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<bool>,
    /// When the node wrote this, RFC 3339.
    pub updated_at: String,
}

#[cfg(test)]
#[allow(clippy::expect_used)] // A failed expectation is a failed test here.
mod tests {
    use super::*;

    fn spec() -> DeploymentSpec {
        let version = "ab".repeat(32);
        DeploymentSpec {
            tenant: "acme".into(),
            handler: "orders".into(),
            artifact: format!("acme/orders/{version}"),
            version,
            stream: "ORDERS".into(),
            partitions: 8,
            window: DEFAULT_WINDOW,
            limits: LimitsSpec::default(),
            retry: RetrySpec::default(),
            config: BTreeMap::from([("region".into(), "eu".into())]),
            outputs: vec!["enriched.>".into()],
            deployed_at: "2026-11-22T12:00:00Z".into(),
            deployed_by: None,
            start: StartAt::All,
            paused: false,
        }
    }

    #[test]
    fn placement_counts_the_partitions_a_record_states_whatever_else_it_holds() {
        let record = serde_json::to_vec(&spec()).expect("serialises");
        assert_eq!(partitions_of_record(&record), Some(8));
        // Invalid here, and maybe elsewhere too: counted all the same.
        let odd = br#"{"partitions": 3, "outputs": ["$JS.>"]}"#;
        assert_eq!(partitions_of_record(odd), Some(3));
        for bad in [
            &br#"{"partitions": 0}"#[..],
            br#"{"partitions": 1025}"#,
            br#"{"partitions": -1}"#,
            br#"{"handler": "h"}"#,
            b"not json",
        ] {
            assert_eq!(
                partitions_of_record(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn backoff_is_indexed_by_attempt_and_the_last_step_repeats() {
        let retry = RetrySpec::default();
        assert_eq!(retry.backoff_for(1), Duration::from_secs(1));
        assert_eq!(retry.backoff_for(2), Duration::from_secs(5));
        assert_eq!(retry.backoff_for(3), Duration::from_secs(30));
        assert_eq!(retry.backoff_for(9), Duration::from_secs(30));
    }

    #[test]
    fn specs_round_trip_through_json_with_readable_durations() -> anyhow::Result<()> {
        let spec = spec();
        let json = serde_json::to_value(&spec)?;
        assert_eq!(json["retry"]["ack_wait"], "30s");
        assert_eq!(json["retry"]["backoff"][2], "30s");
        assert_eq!(
            serde_json::from_value::<DeploymentSpec>(json.clone())?,
            spec
        );
        let mut older = json;
        older.as_object_mut().map(|o| o.remove("window"));
        assert_eq!(
            serde_json::from_value::<DeploymentSpec>(older)?.window,
            DEFAULT_WINDOW,
            "a record written before windows reads as the default window"
        );
        Ok(())
    }

    #[test]
    fn a_spec_as_weir_deploy_writes_it_is_valid() -> anyhow::Result<()> {
        let id = spec().validate(&Reserved::default())?;
        assert_eq!(id, DeploymentId::new("acme", "orders")?);
        let builtin = DeploymentSpec {
            version: "builtin:noop".into(),
            artifact: "builtin:noop".into(),
            ..spec()
        };
        builtin.validate(&Reserved::default())?;
        Ok(())
    }

    /// Each way a hand-written record can be wrong, and what the refusal says.
    #[test]
    fn every_invalid_field_is_refused_with_its_name() {
        type Change = fn(&mut DeploymentSpec);
        let cases: &[(Change, &str)] = &[
            (|s| s.tenant = "Acme".into(), "invalid tenant name"),
            (|s| s.version = "ab".into(), "is not a SHA-256 digest"),
            (|s| s.version = "é".repeat(32), "is not a SHA-256 digest"),
            (
                |s| s.artifact = format!("globex/payments/{}", s.version),
                "is not acme/orders's component",
            ),
            (
                |s| s.artifact = "builtin:noop".into(),
                "version of built-in",
            ),
            (|s| s.stream = "a.b".into(), "invalid stream name"),
            (|s| s.stream = String::new(), "invalid stream name"),
            (
                |s| s.partitions = 0,
                "partition count must be between 1 and 1024",
            ),
            (|s| s.partitions = u32::MAX, "partition count"),
            (
                |s| s.window = 0,
                "--window (window) must be between 1 and 4096, not 0",
            ),
            (|s| s.window = MAX_WINDOW + 1, "--window"),
            (|s| s.limits.max_memory_bytes = 0, "--max-memory"),
            (|s| s.limits.max_memory_bytes = u64::MAX, "--max-memory"),
            (
                |s| s.limits.handler_timeout = Duration::ZERO,
                "--handler-timeout",
            ),
            (|s| s.retry.max_deliver = 0, "--max-deliver"),
            (
                |s| s.retry.ack_wait = Duration::ZERO,
                "--ack-wait (retry.ack_wait) must be between 1s and 24h, not 0s",
            ),
            (|s| s.retry.ack_wait = Duration::MAX, "--ack-wait"),
            (
                |s| s.retry.backoff = vec![],
                "--backoff (retry.backoff) must have 1 to 32",
            ),
            (
                |s| s.retry.backoff = vec![Duration::from_secs(1 << 40)],
                "a --backoff (retry.backoff) step",
            ),
            (
                |s| s.retry.backoff = vec![Duration::ZERO; 33],
                "1 to 32 steps",
            ),
            (
                |s| {
                    s.config.insert(String::new(), "x".into());
                },
                "key cannot be empty",
            ),
            (|s| s.outputs = vec!["a.>.b".into()], "invalid --output"),
            (
                |s| s.outputs = vec!["$KV.weir_deployments.>".into()],
                "is refused: subjects starting with `$`",
            ),
            (|s| s.outputs = vec!["weir.dlq.>".into()], "is refused"),
            (
                |s| s.start = StartAt::Sequence(0),
                "--from (start) must be a stream sequence of at least 1",
            ),
        ];
        for (change, expected) in cases {
            let mut spec = spec();
            change(&mut spec);
            let error = format!(
                "{:#}",
                spec.validate(&Reserved::default()).expect_err(expected)
            );
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn a_record_must_be_readable_and_stored_under_its_own_key() -> anyhow::Result<()> {
        let json = serde_json::to_vec(&spec())?;
        let reserved = Reserved::default();
        assert!(read_record("acme.orders", &json, &reserved).is_ok());
        let error = read_record("acme.other", &json, &reserved).expect_err("another key");
        assert_eq!(
            error.to_string(),
            "the record stored under acme.other is for acme/orders"
        );
        let error = read_record("acme.orders", b"{\"tenant\":", &reserved).expect_err("garbage");
        assert!(format!("{error:#}").starts_with("unreadable deployment record"));
        assert!(read_record("acme.x.y", &json, &reserved).is_err());
        Ok(())
    }

    #[test]
    fn a_pause_runs_like_the_spec_it_pauses_and_nothing_else_does() {
        let paused = DeploymentSpec {
            paused: true,
            ..spec()
        };
        assert!(spec().runs_like(&paused) && paused.runs_like(&spec()));
        let other = DeploymentSpec {
            window: 8,
            ..paused.clone()
        };
        assert!(!spec().runs_like(&other));
        let json = serde_json::to_value(spec()).expect("JSON");
        assert!(
            json.get("paused").is_none() && json.get("start").is_none(),
            "a running spec from the start reads as it did before: {json}"
        );
        let started = DeploymentSpec {
            start: StartAt::Sequence(42),
            ..paused
        };
        let json = serde_json::to_value(&started).expect("JSON");
        assert_eq!(json["start"], serde_json::json!({ "sequence": 42 }));
        assert_eq!(
            serde_json::from_value::<DeploymentSpec>(json).ok(),
            Some(started)
        );
    }

    #[test]
    fn a_spec_must_match_its_streams_partition_count() {
        assert!(spec().check_partitions(8).is_ok());
        let error = spec().check_partitions(4).expect_err("mismatch");
        assert!(
            error
                .to_string()
                .starts_with("the deployment says stream ORDERS has 8 partitions, but it has 4"),
            "{error}"
        );
    }
}
