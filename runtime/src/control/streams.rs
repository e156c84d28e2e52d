//! The streams and the failures bucket weir keeps beside the control-plane buckets: how long
//! each keeps what it holds, and how each is made. The modules that use them ([`crate::dlq`],
//! [`crate::failures`], [`crate::logs`]) take their names and configs from here.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};

use super::{ADVISORIES_STREAM, DLQ_STREAM, FAILURES_BUCKET, LOGS_STREAM};

/// How long a captured advisory waits for a mover before [`ADVISORIES_STREAM`] drops it.
pub const ADVISORY_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The subjects of the advisories the dead-letter mover acts on.
pub const ADVISORY_SUBJECTS: [&str; 2] = [
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>",
];
/// How long a failure record is kept: a day longer than an advisory waits for a mover, since a
/// record is written before its advisory exists and the mover must find it while it waits.
pub const FAILURE_RECORD_AGE: Duration = Duration::from_secs(8 * 24 * 3600);
const _: () = assert!(FAILURE_RECORD_AGE.as_secs() > ADVISORY_AGE.as_secs());
/// How long [`LOGS_STREAM`] keeps a line.
pub const LOGS_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The most [`LOGS_STREAM`] holds; the oldest lines go first.
pub const LOGS_MAX_BYTES: i64 = 256 << 20;

/// The config of [`FAILURES_BUCKET`].
pub(super) fn failures_bucket(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: FAILURES_BUCKET.to_owned(),
        description: "weir: the last failure of each message that did not succeed".to_owned(),
        history: 1,
        max_age: FAILURE_RECORD_AGE,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the advisory capture stream, the dead-letter stream and the log stream unless they
/// exist.
pub(super) async fn ensure_all(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    let advisories = stream::Config {
        name: ADVISORIES_STREAM.to_owned(),
        description: Some(
            "weir: dead-letter advisories waiting for the mover (a work queue)".to_owned(),
        ),
        subjects: ADVISORY_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        retention: stream::RetentionPolicy::WorkQueue,
        // Bounded, so advisories nobody moves (no node running for a week) cannot pile up.
        max_age: ADVISORY_AGE,
        num_replicas: replicas,
        ..Default::default()
    };
    let dead_letters = stream::Config {
        name: DLQ_STREAM.to_owned(),
        description: Some("weir: dead letters, one subject each".to_owned()),
        subjects: vec!["weir.dlq.>".to_owned()],
        retention: stream::RetentionPolicy::Limits,
        num_replicas: replicas,
        ..Default::default()
    };
    let logs = stream::Config {
        name: LOGS_STREAM.to_owned(),
        description: Some("weir: recent handler log lines, for `weir logs`".to_owned()),
        subjects: vec!["weir.logs.>".to_owned()],
        retention: stream::RetentionPolicy::Limits,
        max_age: LOGS_MAX_AGE,
        max_bytes: LOGS_MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    };
    for config in [advisories, dead_letters, logs] {
        ensure(js, config).await?;
    }
    Ok(())
}

/// Creates the stream `config` describes unless it exists.
async fn ensure(js: &jetstream::Context, config: stream::Config) -> anyhow::Result<()> {
    if js.get_stream(&config.name).await.is_ok() {
        return Ok(());
    }
    let name = config.name.clone();
    let subjects = config.subjects.clone();
    let error = match js.create_stream(config).await {
        Ok(_) => return Ok(()),
        // Another node or command made it first.
        Err(_) if js.get_stream(&name).await.is_ok() => return Ok(()),
        Err(error) => error,
    };
    for subject in &subjects {
        if let Ok(other) = js.stream_by_subject(subject.as_str()).await {
            anyhow::bail!(
                "cannot create stream {name}: stream {other} already stores subjects that \
                 overlap {subject}, and weir needs to capture them itself (remove stream \
                 {other}, or change its subjects)"
            );
        }
    }
    Err(error)
        .with_context(|| format!("failed to create stream {name} for {}", subjects.join(", ")))
}
