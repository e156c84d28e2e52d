//! What every page of the console shows: one reader of the control plane, however many pages
//! are open. Every [`SAMPLE_EVERY`] it reads what `weir status` reads, keeps each deployment's
//! throughput and lag over the last [`HISTORY`], and hands pages the result as JSON, already
//! encoded. A read that fails keeps the last good data and says since when it is old: a page
//! never shows as current what it could not read.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ownership::membership::MemberRecord;
use crate::status::{ClusterStatus, DeploymentStatus};

/// How often the control plane is read.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back a deployment's chart goes.
pub(crate) const HISTORY: Duration = Duration::from_secs(10 * 60);
/// The most points of a chart a page is sent: reads are skipped evenly to keep to it, and a
/// rate is then the average between the reads kept.
const MAX_POINTS: usize = 60;

/// What a page is shown, as JSON.
#[derive(Debug, Serialize)]
struct Snapshot<'a> {
    /// When the data was read (RFC 3339); none before the first read.
    read_at: Option<&'a str>,
    /// Why the latest read failed, when it did; the data is then from `read_at`.
    problem: Option<&'a str>,
    /// The one tenant this console shows, if it shows one.
    tenant: Option<&'a str>,
    /// How often the data is read, in seconds.
    every_secs: u64,
    nodes: Vec<NodeView<'a>>,
    deployments: Vec<DeploymentView<'a>>,
}

/// A live node and what it runs.
#[derive(Debug, Serialize)]
struct NodeView<'a> {
    #[serde(flatten)]
    record: &'a MemberRecord,
    /// The partitions it runs, by deployment (`<tenant>.<handler>`).
    runs: BTreeMap<String, Vec<u32>>,
}

/// A deployment, with its recent past.
#[derive(Debug, Serialize)]
struct DeploymentView<'a> {
    #[serde(flatten)]
    status: &'a DeploymentStatus,
    /// Throughput and lag at every read over the last [`HISTORY`], oldest first.
    history: Vec<Point>,
}

/// A deployment at one read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Deliveries settled per second since the read before; none for the first read, or
    /// when a partition's consumer was made anew in between.
    pub(crate) settled_per_sec: Option<f64>,
    /// Messages not yet delivered, over every partition.
    pub(crate) lag: u64,
}

/// One read of a deployment, as the history keeps it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_ms: u64,
    settled: u64,
    lag: u64,
}

/// Every deployment's readings over the last [`HISTORY`].
#[derive(Debug, Default)]
pub(crate) struct History {
    readings: BTreeMap<String, VecDeque<Reading>>,
}

impl History {
    /// Adds the read made at `at_ms`; forgets deployments no longer there.
    pub(crate) fn record(&mut self, at_ms: u64, status: &ClusterStatus) {
        let oldest = at_ms.saturating_sub(HISTORY.as_millis() as u64);
        let mut readings = BTreeMap::new();
        for deployment in &status.deployments {
            let key = key(deployment);
            let mut kept = self.readings.remove(&key).unwrap_or_default();
            while kept.front().is_some_and(|r| r.at_ms < oldest) {
                kept.pop_front();
            }
            kept.push_back(Reading {
                at_ms,
                settled: deployment.partitions.iter().map(|p| p.settled).sum(),
                lag: deployment.partitions.iter().map(|p| p.lag).sum(),
            });
            readings.insert(key, kept);
        }
        self.readings = readings;
    }

    /// The deployment's points, oldest first: at most [`MAX_POINTS`], the latest read always
    /// among them.
    pub(crate) fn points(&self, deployment: &DeploymentStatus) -> Vec<Point> {
        let Some(readings) = self.readings.get(&key(deployment)) else {
            return Vec::new();
        };
        let step = readings.len().div_ceil(MAX_POINTS).max(1);
        let kept: Vec<&Reading> = readings.iter().rev().step_by(step).collect();
        let mut before: Option<&Reading> = None;
        kept.into_iter()
            .rev()
            .map(|reading| {
                let settled_per_sec = before.and_then(|before| {
                    let secs = reading.at_ms.checked_sub(before.at_ms)? as f64 / 1000.0;
                    let settled = reading.settled.checked_sub(before.settled)?;
                    (secs > 0.0).then(|| settled as f64 / secs)
                });
                before = Some(reading);
                Point {
                    at_ms: reading.at_ms,
                    settled_per_sec,
                    lag: reading.lag,
                }
            })
            .collect()
    }
}

fn key(deployment: &DeploymentStatus) -> String {
    format!("{}.{}", deployment.tenant, deployment.handler)
}

/// The sampler's state, and the snapshot it last published.
#[derive(Debug)]
pub(crate) struct Sampler {
    tenant: Option<String>,
    history: History,
    last: Option<(String, ClusterStatus)>,
    published: watch::Sender<Bytes>,
}

impl Sampler {
    /// A sampler of `tenant`'s deployments (or everyone's), and where its snapshots are read.
    pub(crate) fn new(tenant: Option<String>) -> (Self, watch::Receiver<Bytes>) {
        let mut sampler = Self {
            tenant,
            history: History::default(),
            last: None,
            published: watch::Sender::new(Bytes::new()),
        };
        sampler.publish(None);
        let snapshots = sampler.published.subscribe();
        (sampler, snapshots)
    }

    /// Reads with `read` every [`SAMPLE_EVERY`] until `stop`.
    pub(crate) async fn run<F, Fut>(mut self, mut read: F, stop: CancellationToken)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<ClusterStatus>>,
    {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            let read = tokio::select! {
                read = read() => read,
                () = stop.cancelled() => return,
            };
            self.take(read);
        }
    }

    /// Takes one read's result.
    fn take(&mut self, read: anyhow::Result<ClusterStatus>) {
        match read {
            Ok(status) => {
                let at_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                self.history.record(at_ms as u64, &status);
                self.last = Some((crate::clock::now_rfc3339(), status));
                self.publish(None);
            }
            Err(error) => self.publish(Some(&format!("{error:#}"))),
        }
    }

    fn publish(&mut self, problem: Option<&str>) {
        let unread = ClusterStatus::default();
        let (read_at, status) = match &self.last {
            Some((at, status)) => (Some(at.as_str()), status),
            None => (None, &unread),
        };
        let nodes = (status.nodes.iter())
            .map(|record| NodeView {
                record,
                runs: runs_of(status, &record.node),
            })
            .collect();
        let deployments = (status.deployments.iter())
            .map(|status| DeploymentView {
                status,
                history: self.history.points(status),
            })
            .collect();
        let snapshot = Snapshot {
            read_at,
            problem,
            tenant: self.tenant.as_deref(),
            every_secs: SAMPLE_EVERY.as_secs(),
            nodes,
            deployments,
        };
        match serde_json::to_vec(&snapshot) {
            Ok(json) => {
                self.published.send_replace(json.into());
            }
            Err(error) => tracing::error!("cannot encode the console's snapshot: {error}"),
        }
    }
}

/// The partitions `node` runs, by deployment, as its reports say.
fn runs_of(status: &ClusterStatus, node: &str) -> BTreeMap<String, Vec<u32>> {
    let mut runs = BTreeMap::new();
    for deployment in &status.deployments {
        let partitions: Vec<u32> = deployment
            .partitions
            .iter()
            .filter(|p| p.owners.iter().any(|owner| owner == node))
            .map(|p| p.partition)
            .collect();
        if !partitions.is_empty() {
            runs.insert(key(deployment), partitions);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PartitionState, PartitionStatus};

    fn deployment(handler: &str, partitions: &[(u64, u64)]) -> DeploymentStatus {
        DeploymentStatus {
            tenant: "acme".into(),
            handler: handler.into(),
            version: "v".into(),
            stream: "IN".into(),
            outputs: vec![],
            state: "running".into(),
            paused: false,
            problem: None,
            errors: BTreeMap::new(),
            dead_letters: 0,
            kept_state: None,
            state_refusals: BTreeMap::new(),
            partitions: partitions
                .iter()
                .enumerate()
                .map(|(n, &(settled, lag))| PartitionStatus {
                    partition: n as u32,
                    owners: vec!["n1".into()],
                    pending: 0,
                    redelivered: 0,
                    lag,
                    settled,
                    waiting: None,
                    failing: None,
                    holder: None,
                    state: PartitionState::Running,
                })
                .collect(),
        }
    }

    fn cluster(deployments: Vec<DeploymentStatus>) -> ClusterStatus {
        ClusterStatus {
            nodes: vec![],
            deployments,
        }
    }

    #[test]
    fn throughput_is_the_settled_deliveries_of_every_partition_per_second_between_reads() {
        let mut history = History::default();
        history.record(
            10_000,
            &cluster(vec![deployment("a", &[(100, 5), (50, 0)])]),
        );
        history.record(
            12_000,
            &cluster(vec![deployment("a", &[(300, 1), (250, 0)])]),
        );
        let points = history.points(&deployment("a", &[]));
        assert_eq!(
            points,
            [
                Point {
                    at_ms: 10_000,
                    settled_per_sec: None,
                    lag: 5
                },
                Point {
                    at_ms: 12_000,
                    settled_per_sec: Some(200.0),
                    lag: 1
                },
            ]
        );
    }

    #[test]
    fn a_consumer_made_anew_shows_no_rate_rather_than_a_negative_one() {
        let mut history = History::default();
        history.record(0, &cluster(vec![deployment("a", &[(500, 0)])]));
        history.record(2_000, &cluster(vec![deployment("a", &[(3, 0)])]));
        history.record(4_000, &cluster(vec![deployment("a", &[(7, 0)])]));
        let rates: Vec<_> = history
            .points(&deployment("a", &[]))
            .iter()
            .map(|p| p.settled_per_sec)
            .collect();
        assert_eq!(rates, [None, None, Some(2.0)]);
    }

    #[test]
    fn history_keeps_ten_minutes_and_forgets_removed_deployments() {
        let mut history = History::default();
        let minute = 60_000;
        for n in 0..=15 {
            history.record(
                n * minute,
                &cluster(vec![deployment("a", &[(n, 0)]), deployment("b", &[(0, 0)])]),
            );
        }
        let points = history.points(&deployment("a", &[]));
        assert_eq!(points.first().map(|p| p.at_ms), Some(5 * minute));
        assert_eq!(points.len(), 11);
        history.record(16 * minute, &cluster(vec![deployment("a", &[(16, 0)])]));
        assert!(history.points(&deployment("b", &[])).is_empty());
    }

    #[test]
    fn a_long_history_is_thinned_to_a_chart_ending_at_the_latest_read() {
        let mut history = History::default();
        // Five minutes of reads every two seconds, settling 10 a second.
        for n in 0..150 {
            history.record(n * 2_000, &cluster(vec![deployment("a", &[(n * 20, 0)])]));
        }
        let points = history.points(&deployment("a", &[]));
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        assert_eq!(points.last().map(|p| p.at_ms), Some(149 * 2_000));
        assert!(points[1..].iter().all(|p| p.settled_per_sec == Some(10.0)));
    }

    #[test]
    fn a_failed_read_keeps_the_last_data_and_says_why() -> anyhow::Result<()> {
        let (mut sampler, snapshots) = Sampler::new(Some("acme".into()));
        let first: serde_json::Value = serde_json::from_slice(&snapshots.borrow())?;
        assert_eq!(first["read_at"], serde_json::Value::Null);
        assert_eq!(first["tenant"], "acme");

        sampler.take(Ok(cluster(vec![deployment("a", &[(1, 2)])])));
        sampler.take(Err(anyhow::anyhow!("no responders")));
        let snapshot: serde_json::Value = serde_json::from_slice(&snapshots.borrow())?;
        assert_eq!(snapshot["problem"], "no responders");
        assert!(snapshot["read_at"].is_string());
        assert_eq!(snapshot["deployments"][0]["handler"], "a");
        assert_eq!(snapshot["deployments"][0]["partitions"][0]["lag"], 2);
        Ok(())
    }

    #[test]
    fn a_node_runs_the_partitions_it_owns() {
        let mut status = cluster(vec![deployment("a", &[(0, 0), (0, 0)])]);
        status.deployments[0].partitions[1].owners = vec!["n2".into()];
        assert_eq!(
            runs_of(&status, "n1"),
            BTreeMap::from([("acme.a".into(), vec![0])])
        );
        assert_eq!(runs_of(&status, "n3"), BTreeMap::new());
    }
}
