//! What a node serves on `/metrics`, in the Prometheus text format.
//!
//! Every family is named `weir_…`, with its unit in the name and `_total` on counters. The
//! labels are bounded: `tenant` and `handler` are names of at most 32 characters that only
//! deployments the node runs bring; `partition` is below the deployment's partition count
//! (at most 1024); `outcome`, `kind`, `state`, `reason` and `quota` take the few values their
//! enums list. A deployment's partition series go when the node stops running it; a partition
//! that moved to another node keeps its counters here, and its gauges read 0.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::control::DeploymentId;
use crate::dlq::Reason;
use crate::host::{CpuUsage, HandlerFailure};
use crate::metrics::SharedCounters;

/// One partition of one deployment.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The deployment's tenant.
    pub tenant: String,
    /// The deployment's handler.
    pub handler: String,
    /// The partition.
    pub partition: u32,
}

/// How one call of the handler ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// The handler answered `ack` (counted as the call ends; its outputs are stored, and the
    /// message acked, after).
    ack,
    /// The handler asked for a retry.
    retry,
    /// The handler rejected the message.
    reject,
    /// The call failed (see `weir_handler_failures_total` for how).
    failure,
}

impl Outcome {
    const ALL: [Self; 4] = [Self::ack, Self::retry, Self::reject, Self::failure];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: String,
    handler: String,
    partition: u32,
    outcome: Outcome,
}

/// How a call failed, or an instance could not start, or an attempt to store a call's outputs
/// failed: so these need not add up to the calls that ended in [`Outcome::failure`].
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FailureKind {
    /// The guest trapped.
    trap,
    /// The call ran past its deadline.
    deadline,
    /// The call used more CPU time than its tenant's quota per message.
    cpu_time,
    /// The guest asked for more memory than its limit.
    memory,
    /// `init` refused the configuration (no call was made: the message waits).
    init,
    /// A publish was refused.
    output_refused,
    /// The call's outputs could not be stored.
    outputs_not_stored,
    /// The partition's state could not be read, or a message's changes committed.
    state,
}

impl FailureKind {
    const ALL: [Self; 8] = [
        Self::trap,
        Self::deadline,
        Self::cpu_time,
        Self::memory,
        Self::init,
        Self::output_refused,
        Self::outputs_not_stored,
        Self::state,
    ];

    /// The kind of a call's failure; `None` for the tenant's memory quota, which is a wait
    /// for capacity ([`QuotaLabels`]), not a failure.
    pub fn of(failure: &HandlerFailure) -> Option<Self> {
        Some(match failure {
            HandlerFailure::Trap(_) => Self::trap,
            HandlerFailure::Deadline { .. } => Self::deadline,
            HandlerFailure::CpuTime(_) => Self::cpu_time,
            HandlerFailure::MemoryLimit { .. } => Self::memory,
            HandlerFailure::InitRefused(_) => Self::init,
            HandlerFailure::OutputRefused(_) => Self::output_refused,
            HandlerFailure::StateUnavailable(_) => Self::state,
            HandlerFailure::TenantMemoryQuota { .. } => return None,
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    tenant: String,
    handler: String,
    partition: u32,
    kind: FailureKind,
}

/// What a partition is doing, as the node reports it in `weir_status`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PartitionState {
    /// Taking messages, or ready to.
    running,
    /// Waiting for capacity (the tenant's instances or memory) or for its consumer.
    waiting,
    /// Holding its messages for a pause.
    paused,
    /// Its worker failed and is being started again.
    failing,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    tenant: String,
    handler: String,
    state: PartitionState,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    tenant: String,
    handler: String,
    reason: DeadLetterReason,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum DeadLetterReason {
    terminated,
    max_deliveries,
    deleted_before_processing,
}

/// Which of a tenant's quotas made a message wait.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Quota {
    /// `max_instances`: a partition waited for one of the tenant's instances on the node.
    instances,
    /// `max_memory_total`: a call was refused memory the tenant's other instances held.
    memory,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    tenant: String,
    quota: Quota,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateQuotaLabels {
    tenant: String,
    handler: String,
    /// One of [`crate::state::Refusals::QUOTAS`].
    quota: &'static str,
}

type HistogramFamily = Family<PartitionLabels, Histogram, fn() -> Histogram>;

/// A node's metric families. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    messages: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    call_duration: HistogramFamily,
    publish_to_ack: HistogramFamily,
    outputs: Family<PartitionLabels, Counter>,
    fenced: Family<PartitionLabels, Counter>,
    window: Family<PartitionLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    partitions: Family<StateLabels, Gauge>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    quota_waits: Family<QuotaLabels, Counter>,
    state_refusals: Family<StateQuotaLabels, Counter>,
    tenant_memory: Family<TenantLabels, Gauge>,
    tenant_partitions: Family<TenantLabels, Gauge>,
    tenant_cpu: Family<TenantLabels, Counter<f64, AtomicU64>>,
    tenant_cpu_wait: Family<TenantLabels, Counter<f64, AtomicU64>>,
    tenant_cpu_preempted: Family<TenantLabels, Counter<f64, AtomicU64>>,
    member_active: Gauge,
    nats_connected: Gauge,
    nats_connects: Counter,
    /// The node's totals, for `weir demo` and `weir bench`.
    totals: SharedCounters,
    /// Held while readings are brought in, so that two scrapes at once add them once.
    reading: Arc<Mutex<()>>,
    /// The last generation given out, and the generation of each partition's current worker.
    holders: Arc<Mutex<(u64, HashMap<PartitionLabels, u64>)>>,
}

/// Call durations: 100 µs to about 7 minutes.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 3.0, 17))
}

/// Publish-to-ack latencies: 1 ms to about 18 hours.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 3.0, 18))
}

/// A new metric of its kind, registered as `name`.
fn add<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    add_as(registry, name, help, unit, M::default())
}

/// `metric`, registered as `name`.
fn add_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

impl Metrics {
    /// Registers every family; `totals` are kept beside them.
    pub fn new(totals: SharedCounters) -> Self {
        let mut registry = Registry::with_prefix("weir");
        let r = &mut registry;
        let messages = Unit::Other("messages".into());
        Self {
            messages: add(
                r,
                "messages",
                "Calls of the handler by how they ended",
                None,
            ),
            failures: add(
                r,
                "handler_failures",
                "Failed calls, instances that could not start and outputs not stored, by kind",
                None,
            ),
            call_duration: add_as(
                r,
                "handler_call_duration",
                "Wall-clock time of each handler call, waits for a guest thread included",
                Some(Unit::Seconds),
                Family::new_with_constructor(call_buckets),
            ),
            publish_to_ack: add_as(
                r,
                "publish_to_ack",
                "Time from a message's storing in its stream to its ack",
                Some(Unit::Seconds),
                Family::new_with_constructor(latency_buckets),
            ),
            outputs: add(
                r,
                "outputs_stored",
                "Output messages stored for acked messages",
                None,
            ),
            fenced: add(
                r,
                "partition_fenced",
                "Times the partition's worker dropped the messages it held, no longer sure \
                 after a pause or a cut that the partition was still its own",
                None,
            ),
            window: add(
                r,
                "window",
                "Messages delivered to the partition's worker and not yet settled",
                Some(messages.clone()),
            ),
            lag: add(
                r,
                "consumer_lag",
                "Messages of the partition not yet delivered, as of its last delivery",
                Some(messages),
            ),
            partitions: add(
                r,
                "partitions",
                "Partitions of each deployment this node runs, by state",
                None,
            ),
            dead_letters: add(
                r,
                "dead_letters_moved",
                "Dead letters this node's mover stored, by reason",
                None,
            ),
            quota_waits: add(
                r,
                "tenant_quota_waits",
                "Times a tenant's partition or call had to wait for one of its quotas",
                None,
            ),
            state_refusals: add(
                r,
                "state_writes_refused",
                "Writes to handler state refused by the tenant's quotas (the handler was told which)",
                None,
            ),
            tenant_memory: add(
                r,
                "tenant_memory",
                "Linear memory the tenant's instances on this node hold",
                Some(Unit::Bytes),
            ),
            tenant_partitions: add(
                r,
                "tenant_partitions",
                "Partitions of the tenant this node runs, counted against its max_instances",
                None,
            ),
            tenant_cpu: add(
                r,
                "tenant_cpu",
                "CPU time the tenant's calls (instantiation, init, handle) spent on this node",
                Some(Unit::Seconds),
            ),
            tenant_cpu_wait: add(
                r,
                "tenant_cpu_wait",
                "Time the tenant's calls waited for a guest thread on this node, summed over calls",
                Some(Unit::Seconds),
            ),
            tenant_cpu_preempted: add(
                r,
                "tenant_cpu_preempted",
                "Time the tenant's guests held a guest thread's turn while the OS ran other work \
                 on their core",
                Some(Unit::Seconds),
            ),
            member_active: add(
                r,
                "member_active",
                "1 while this node takes partitions, 0 while it drains",
                None,
            ),
            nats_connected: add(
                r,
                "nats_connected",
                "1 while the node's NATS connection is up",
                None,
            ),
            nats_connects: add(
                r,
                "nats_connects",
                "Connections the node made to NATS, the first one included",
                None,
            ),
            totals,
            reading: Arc::default(),
            holders: Arc::default(),
            registry: Arc::new(registry),
        }
    }

    /// The text of every family, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The handles of one partition's series, for its worker.
    pub(crate) fn partition(&self, id: &DeploymentId, partition: u32) -> PartitionMetrics {
        let labels = PartitionLabels {
            tenant: id.tenant.clone(),
            handler: id.handler.clone(),
            partition,
        };
        let outcome = |outcome| {
            self.messages.get_or_create_owned(&OutcomeLabels {
                tenant: id.tenant.clone(),
                handler: id.handler.clone(),
                partition,
                outcome,
            })
        };
        let generation = {
            let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            holders.0 += 1;
            let generation = holders.0;
            holders.1.insert(labels.clone(), generation);
            generation
        };
        PartitionMetrics {
            generation,
            failures: std::array::from_fn(|_| OnceLock::new()),
            outcomes: Outcome::ALL.map(outcome),
            call_duration: self.call_duration.get_or_create_owned(&labels),
            publish_to_ack: self.publish_to_ack.get_or_create_owned(&labels),
            outputs: self.outputs.get_or_create_owned(&labels),
            window: self.window.get_or_create_owned(&labels),
            lag: self.lag.get_or_create_owned(&labels),
            instance_waits: self.quota_waits.get_or_create_owned(&QuotaLabels {
                tenant: id.tenant.clone(),
                quota: Quota::instances,
            }),
            memory_waits: self.quota_waits.get_or_create_owned(&QuotaLabels {
                tenant: id.tenant.clone(),
                quota: Quota::memory,
            }),
            labels,
            families: self.clone(),
        }
    }

    /// Sets how many partitions of `id` this node runs in each state; `None` once it runs
    /// none, which removes the deployment's series.
    pub(crate) fn set_partitions(
        &self,
        id: &DeploymentId,
        counts: Option<[(PartitionState, usize); 4]>,
    ) {
        for state in [
            PartitionState::running,
            PartitionState::waiting,
            PartitionState::paused,
            PartitionState::failing,
        ] {
            let labels = StateLabels {
                tenant: id.tenant.clone(),
                handler: id.handler.clone(),
                state,
            };
            match counts.and_then(|counts| counts.into_iter().find(|(s, _)| *s == state)) {
                Some((_, count)) => {
                    let count = i64::try_from(count).unwrap_or(i64::MAX);
                    self.partitions.get_or_create(&labels).set(count);
                }
                None => {
                    self.partitions.remove(&labels);
                }
            }
        }
    }

    /// Removes the series of `id`'s partitions below `partitions`, once the node runs none
    /// of them.
    pub(crate) fn forget(&self, id: &DeploymentId, partitions: u32) {
        self.set_partitions(id, None);
        for quota in crate::state::Refusals::QUOTAS {
            self.state_refusals.remove(&StateQuotaLabels {
                tenant: id.tenant.clone(),
                handler: id.handler.clone(),
                quota,
            });
        }
        for partition in 0..partitions {
            let labels = PartitionLabels {
                tenant: id.tenant.clone(),
                handler: id.handler.clone(),
                partition,
            };
            self.call_duration.remove(&labels);
            self.publish_to_ack.remove(&labels);
            self.outputs.remove(&labels);
            self.fenced.remove(&labels);
            self.window.remove(&labels);
            self.lag.remove(&labels);
            for outcome in Outcome::ALL {
                self.messages.remove(&OutcomeLabels {
                    tenant: id.tenant.clone(),
                    handler: id.handler.clone(),
                    partition,
                    outcome,
                });
            }
            for kind in FailureKind::ALL {
                self.failures.remove(&FailureLabels {
                    tenant: id.tenant.clone(),
                    handler: id.handler.clone(),
                    partition,
                    kind,
                });
            }
        }
    }

    /// Counts a dead letter the mover stored.
    pub(crate) fn dead_letter_moved(&self, id: &DeploymentId, reason: Reason) {
        let reason = match reason {
            Reason::Terminated => DeadLetterReason::terminated,
            Reason::MaxDeliveries => DeadLetterReason::max_deliveries,
            Reason::DeletedBeforeProcessing => DeadLetterReason::deleted_before_processing,
        };
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                tenant: id.tenant.clone(),
                handler: id.handler.clone(),
                reason,
            })
            .inc();
    }

    /// Sets what is read at each scrape rather than counted as it happens.
    pub(crate) fn set_node(&self, node: NodeReadings) {
        let _reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        self.member_active.set(i64::from(node.active));
        self.nats_connected.set(i64::from(node.nats_connected));
        let connects = node.nats_connects.saturating_sub(self.nats_connects.get());
        self.nats_connects.inc_by(connects);
        for tenant in node.tenants {
            let labels = TenantLabels {
                tenant: tenant.name,
            };
            let memory = i64::try_from(tenant.memory_bytes).unwrap_or(i64::MAX);
            self.tenant_memory.get_or_create(&labels).set(memory);
            let partitions = i64::try_from(tenant.partitions).unwrap_or(i64::MAX);
            self.tenant_partitions
                .get_or_create(&labels)
                .set(partitions);
            for (counter, total) in [
                (&self.tenant_cpu, tenant.cpu.cpu),
                (&self.tenant_cpu_wait, tenant.cpu.waited),
                (&self.tenant_cpu_preempted, tenant.cpu.preempted),
            ] {
                let counter = counter.get_or_create(&labels);
                let more = total.as_secs_f64() - counter.get();
                if more > 0.0 {
                    counter.inc_by(more);
                }
            }
        }
    }
}

/// What [`Metrics::set_node`] reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeReadings {
    pub(crate) active: bool,
    pub(crate) nats_connected: bool,
    pub(crate) nats_connects: u64,
    pub(crate) tenants: Vec<TenantReadings>,
}

/// One tenant's part of [`NodeReadings`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TenantReadings {
    pub(crate) name: String,
    pub(crate) memory_bytes: u64,
    pub(crate) partitions: usize,
    pub(crate) cpu: CpuUsage,
}

/// One partition's series, held by its worker; dropping it removes them.
#[derive(Debug)]
pub(crate) struct PartitionMetrics {
    labels: PartitionLabels,
    /// Which of the workers that had this partition's series this one is: only the last
    /// zeroes its gauges when it goes.
    generation: u64,
    /// By [`FailureKind::ALL`]'s order, each made on first use.
    failures: [OnceLock<Counter>; FailureKind::ALL.len()],
    /// By [`Outcome::ALL`]'s order.
    outcomes: [Counter; 4],
    families: Metrics,
    call_duration: Histogram,
    publish_to_ack: Histogram,
    outputs: Counter,
    window: Gauge,
    lag: Gauge,
    instance_waits: Counter,
    memory_waits: Counter,
}

impl PartitionMetrics {
    /// A call ended with `outcome` after `took`.
    pub(crate) fn called(&self, outcome: Outcome, took: Duration) {
        self.outcomes[outcome as usize].inc();
        self.call_duration.observe(took.as_secs_f64());
        match outcome {
            Outcome::retry => self.families.totals.retried(),
            Outcome::reject => self.families.totals.rejected(),
            Outcome::ack | Outcome::failure => {}
        }
    }

    /// A call failed, or its outputs could not be stored.
    pub(crate) fn failed(&self, kind: FailureKind) {
        // Made on the first failure of its kind, so that a partition that never fails so has
        // no series of it.
        let counter = self.failures[kind as usize].get_or_init(|| {
            self.families.failures.get_or_create_owned(&FailureLabels {
                tenant: self.labels.tenant.clone(),
                handler: self.labels.handler.clone(),
                partition: self.labels.partition,
                kind,
            })
        });
        counter.inc();
        self.families.totals.failed();
    }

    /// A message was acked after its `outputs` were stored; it was published at
    /// `published_at` (Unix nanoseconds).
    pub(crate) fn acked(&self, outputs: usize, published_at: u64) {
        self.outputs.inc_by(outputs as u64);
        let latency = crate::metrics::since_published(published_at);
        self.publish_to_ack.observe(latency.as_secs_f64());
        self.families.totals.acked_after(outputs, latency);
    }

    /// The worker dropped what it held, unsure the partition was still its own.
    pub(crate) fn fenced(&self) {
        self.families.fenced.get_or_create(&self.labels).inc();
    }

    /// The worker holds `messages` it has not settled.
    pub(crate) fn set_window(&self, messages: usize) {
        self.window.set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// The server had `pending` messages of the partition left to deliver.
    pub(crate) fn set_lag(&self, pending: u64) {
        self.lag.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The partition waits for one of its tenant's quotas.
    pub(crate) fn waits_for(&self, quota: Quota) {
        match quota {
            Quota::instances => self.instance_waits.inc(),
            Quota::memory => self.memory_waits.inc(),
        };
    }

    /// A call had writes to its state refused.
    pub(crate) fn refused_state_writes(&self, refusals: crate::state::Refusals) {
        for (quota, count) in refusals.by_quota() {
            let labels = StateQuotaLabels {
                tenant: self.labels.tenant.clone(),
                handler: self.labels.handler.clone(),
                quota,
            };
            self.families
                .state_refusals
                .get_or_create(&labels)
                .inc_by(u64::from(count));
        }
    }
}

impl Drop for PartitionMetrics {
    /// The worker's gauges say nothing once it is gone, unless another worker of the partition
    /// has started since (a partition that moved away and back while its old worker was still
    /// handing off); its counters stay, as counters do.
    fn drop(&mut self) {
        let mut holders = (self.families.holders.lock()).unwrap_or_else(PoisonError::into_inner);
        if holders.1.get(&self.labels) == Some(&self.generation) {
            holders.1.remove(&self.labels);
            self.window.set(0);
            self.lag.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> DeploymentId {
        DeploymentId::new("acme", "orders").unwrap_or_else(|error| panic!("{error}"))
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| Some(line.strip_prefix(series)?.strip_prefix(' ')?.to_owned()))
    }

    #[test]
    fn a_partitions_series_are_named_and_labelled_by_the_conventions() {
        let metrics = Metrics::new(SharedCounters::default());
        let partition = metrics.partition(&id(), 3);
        partition.called(Outcome::ack, Duration::from_millis(2));
        partition.called(Outcome::failure, Duration::from_millis(1));
        partition.failed(FailureKind::deadline);
        partition.acked(2, 0);
        partition.set_window(5);
        partition.set_lag(7);
        partition.waits_for(Quota::instances);
        partition.fenced();
        let text = metrics.encode();
        let labels = r#"tenant="acme",handler="orders",partition="3""#;
        for (series, expected) in [
            (
                format!("weir_messages_total{{{labels},outcome=\"ack\"}}"),
                "1",
            ),
            (
                format!("weir_messages_total{{{labels},outcome=\"failure\"}}"),
                "1",
            ),
            (
                format!("weir_handler_failures_total{{{labels},kind=\"deadline\"}}"),
                "1",
            ),
            (format!("weir_outputs_stored_total{{{labels}}}"), "2"),
            (format!("weir_partition_fenced_total{{{labels}}}"), "1"),
            (
                format!("weir_handler_call_duration_seconds_count{{{labels}}}"),
                "2",
            ),
            (
                format!("weir_publish_to_ack_seconds_count{{{labels}}}"),
                "1",
            ),
            (format!("weir_window_messages{{{labels}}}"), "5"),
            (format!("weir_consumer_lag_messages{{{labels}}}"), "7"),
            (
                r#"weir_tenant_quota_waits_total{tenant="acme",quota="instances"}"#.to_owned(),
                "1",
            ),
        ] {
            assert_eq!(
                value(&text, &series).as_deref(),
                Some(expected),
                "{series} in\n{text}"
            );
        }
        // The node's totals count the same messages.
        let totals = metrics.totals.snapshot();
        assert_eq!((totals.acked, totals.failed, totals.outputs), (1, 1, 2));
    }

    #[test]
    fn a_worker_that_is_gone_leaves_its_counters_and_zeroes_its_gauges() {
        let metrics = Metrics::new(SharedCounters::default());
        let partition = metrics.partition(&id(), 0);
        partition.called(Outcome::reject, Duration::ZERO);
        partition.set_lag(9);
        drop(partition);
        let text = metrics.encode();
        let labels = r#"tenant="acme",handler="orders",partition="0""#;
        assert_eq!(
            value(
                &text,
                &format!("weir_messages_total{{{labels},outcome=\"reject\"}}")
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, &format!("weir_consumer_lag_messages{{{labels}}}")).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn a_worker_that_goes_after_its_successor_started_leaves_the_successors_gauges() {
        let metrics = Metrics::new(SharedCounters::default());
        let handing_off = metrics.partition(&id(), 0);
        let successor = metrics.partition(&id(), 0);
        successor.set_lag(4);
        drop(handing_off);
        let text = metrics.encode();
        let series = r#"weir_consumer_lag_messages{tenant="acme",handler="orders",partition="0"}"#;
        assert_eq!(value(&text, series).as_deref(), Some("4"));
        drop(successor);
        assert_eq!(value(&metrics.encode(), series).as_deref(), Some("0"));
    }

    #[test]
    fn a_deployment_the_node_no_longer_runs_leaves_no_series() {
        let metrics = Metrics::new(SharedCounters::default());
        let partition = metrics.partition(&id(), 1);
        partition.called(Outcome::ack, Duration::ZERO);
        partition.fenced();
        drop(partition);
        metrics.set_partitions(&id(), Some([(PartitionState::running, 2); 4]));
        metrics.forget(&id(), 2);
        let text = metrics.encode();
        assert!(!text.contains(r#"handler="orders""#), "{text}");
    }

    #[test]
    fn readings_taken_at_each_scrape_are_added_once() {
        let metrics = Metrics::new(SharedCounters::default());
        let readings = NodeReadings {
            active: true,
            nats_connected: true,
            nats_connects: 2,
            tenants: vec![TenantReadings {
                name: "acme".into(),
                memory_bytes: 1 << 20,
                partitions: 3,
                cpu: CpuUsage {
                    cpu: Duration::from_millis(1500),
                    waited: Duration::from_millis(250),
                    preempted: Duration::from_millis(125),
                },
            }],
        };
        metrics.set_node(readings.clone());
        metrics.set_node(readings);
        let text = metrics.encode();
        for (series, expected) in [
            ("weir_nats_connects_total", "2"),
            ("weir_member_active", "1"),
            (r#"weir_tenant_cpu_seconds_total{tenant="acme"}"#, "1.5"),
            (
                r#"weir_tenant_cpu_wait_seconds_total{tenant="acme"}"#,
                "0.25",
            ),
            (
                r#"weir_tenant_cpu_preempted_seconds_total{tenant="acme"}"#,
                "0.125",
            ),
            (r#"weir_tenant_memory_bytes{tenant="acme"}"#, "1048576"),
            (r#"weir_tenant_partitions{tenant="acme"}"#, "3"),
        ] {
            assert_eq!(
                value(&text, series).as_deref(),
                Some(expected),
                "{series} in\n{text}"
            );
        }
    }

    #[test]
    fn the_grafana_dashboard_asks_only_for_metrics_a_node_serves() {
        let metrics = Metrics::new(SharedCounters::default());
        let partition = metrics.partition(&id(), 0);
        partition.called(Outcome::ack, Duration::ZERO);
        partition.failed(FailureKind::trap);
        partition.acked(1, 0);
        metrics.set_partitions(&id(), Some([(PartitionState::running, 1); 4]));
        metrics.dead_letter_moved(&id(), Reason::Terminated);
        metrics.set_node(NodeReadings {
            tenants: vec![TenantReadings::default()],
            ..NodeReadings::default()
        });
        let text = metrics.encode();
        let served: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        let dashboard = include_str!("../../../examples/grafana/weir.json");
        let asked: std::collections::BTreeSet<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("weir_"))
            .collect();
        assert!(!asked.is_empty());
        for name in asked {
            assert!(
                served.contains(name),
                "the dashboard asks for {name}, not served"
            );
        }
    }
}
