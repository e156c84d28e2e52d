//! `weir bench`: weir measured against a plain JetStream consumer, in the same run, on the
//! same server and the same data.
//!
//! For every partition count, each run gets a stream of its own holding the same pre-published
//! messages, and consumes them in one mode:
//! - `raw`: one async-nats pull consumer per partition with a window of `--window` messages
//!   (MaxAckPending), handling each message in stream order and acking it with a plain ack: the
//!   ceiling for in-order processing on this stack;
//! - `raw-serial`: the same consumers with one message in flight (MaxAckPending 1), each ack
//!   confirmed by the server before the next message: what in-order processing costs when it
//!   waits for every round trip;
//! - `native`: a weir node running the built-in native no-op handler ([`crate::builtin`]):
//!   weir's cost without Wasm;
//! - `wasm`: a weir node running a component: the no-op (`examples/noop`), the orders
//!   example (`examples/orders`, which parses each order and publishes an enriched one), and,
//!   for state, the counter (`examples/counter`: one state `get` and one `set` per message,
//!   committed before each ack) beside the same component told to leave state alone
//!   (`counter-stateless`).
//!
//! With `--neighbour spin`, each component runs three times: on a node without `--config`, on
//! one with a `--config` of two tenants (the measured one and a neighbour), and on that node
//! beside the neighbour's handler spinning in an endless loop on every partition of a stream of
//! its own (the `scripted` test guest, told `spin`). The first two say what configuring tenants
//! costs, the last two what a hostile neighbour costs; each tenant's guest CPU is read from the
//! node's `weir_tenant_cpu_seconds_total` over the run, to show that the neighbour is slowed,
//! not starved. `--repeat` runs everything several times, for medians and worst cases.
//!
//! Throughput, CPU time and peak RSS are taken from the first ack to the last, so that setting
//! up consumers and compiling components is left out of every mode alike. Latency, from a
//! message's publication (its stream timestamp) to its ack, is taken afterwards on the same
//! consumers, with messages published at a steady rate: a backlog's latency would only say how
//! long the backlog was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{
        AckPolicy,
        pull::{self, MessagesErrorKind},
    },
    stream,
};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::task::JoinSet;

use super::{NatsArgs, progress_bar};
use crate::builtin::Builtin;
use crate::clock::now_rfc3339;
use crate::connection::{Credentials, connect};
use crate::control::{ControlPlane, DeploymentId};
use crate::deploy::{self, DeployRequest};
use crate::embedded::{NatsServer, ServerOptions};
use crate::host::Host;
use crate::metrics::SharedCounters;
use crate::node::{self, NodeConfig, NodeHandle};
use crate::partition::{self, StreamRequest};
use crate::spec::{DEFAULT_WINDOW, DeploymentSpec, LimitsSpec, MAX_WINDOW, RetrySpec};
use crate::tenants::TenantsConfig;
use crate::traffic::{Payload, Traffic};
use crate::{note, say};

/// Reads `http://<addr>/metrics` every `every`, as a Prometheus server would, until aborted.
async fn scrape(addr: std::net::SocketAddr, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let _ = metrics_text(addr).await;
    }
}

/// The response to `GET http://<addr>/metrics`, headers and all.
async fn metrics_text(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the node's metrics at {addr}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// What a node's metrics page says of each tenant's guests so far, in seconds.
#[derive(Debug, Default, PartialEq)]
struct GuestSeconds {
    /// `weir_tenant_cpu_seconds_total`.
    cpu: BTreeMap<String, f64>,
    /// `weir_tenant_cpu_preempted_seconds_total`.
    preempted: BTreeMap<String, f64>,
}

fn guest_seconds(metrics: &str) -> GuestSeconds {
    GuestSeconds {
        cpu: per_tenant(metrics, "weir_tenant_cpu_seconds_total"),
        preempted: per_tenant(metrics, "weir_tenant_cpu_preempted_seconds_total"),
    }
}

/// Each tenant's value of the counter `name` in a metrics page.
fn per_tenant(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{tenant=\"");
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (tenant, value) = rest.split_once("\"} ")?;
            Some((tenant.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A run that acks nothing for this long has stalled: the bench stops and says which.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the bench looks at the ack count.
const POLL: Duration = Duration::from_millis(2);

/// `weir bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per run, published before the run starts
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Partition counts to measure, e.g. 1,4,16,64; every mode runs at each
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub partitions: Vec<u32>,
    /// Payload size in bytes (orders payloads are order JSON padded to about this size)
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Distinct keys, spread over the partitions
    #[arg(long, default_value_t = 1024)]
    pub keys: u64,
    /// Modes to run, in this order
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,raw-serial,native,wasm"
    )]
    pub modes: Vec<Mode>,
    /// Messages each partition may have in flight: the raw consumers' MaxAckPending, and
    /// weir's deployments' --window
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: u32,
    /// Components the wasm mode runs
    #[arg(long, value_delimiter = ',', default_value = "noop,orders")]
    pub handlers: Vec<WasmHandler>,
    /// Where the components are (`make guests` builds them there)
    #[arg(long, default_value = "target/guests/wasm32-wasip2/release")]
    pub components: PathBuf,
    /// Messages published at --latency-rate after each run's backlog, for its latency
    #[arg(long, default_value_t = 1_000)]
    pub latency_messages: u64,
    /// Messages per second during the latency measurement
    #[arg(long, default_value_t = 500)]
    pub latency_rate: u32,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Scrape each weir node's /metrics this often while it runs, to measure what scraping
    /// costs (compare with a run without)
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub scrape_every: Option<Duration>,
    /// Also run each component beside a hostile neighbour, and on a node with a `--config` of
    /// two tenants (see above)
    #[arg(long)]
    pub neighbour: Option<Neighbour>,
    /// Runs of everything, one after the other; ratios are of the medians
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
}

/// The neighbour of `--neighbour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Neighbour {
    /// A tenant whose handler runs an endless loop on every partition of its stream
    Spin,
}

/// The tenant whose handler every node run measures.
const MEASURED: &str = "bench";
/// The tenant who shares the node in `--neighbour` runs.
const NEIGHBOUR: &str = "noisy";
/// What it runs: `scripted.wasm` under `--components`.
const NEIGHBOUR_COMPONENT: &str = "scripted";
/// A spinning call ends at this deadline, and starts again after [`NEIGHBOUR_BACKOFF`]: long
/// enough to hold its guest thread throughout, short enough that a draining node soon lets go.
const NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(3);
/// See [`NEIGHBOUR_TIMEOUT`].
const NEIGHBOUR_BACKOFF: Duration = Duration::from_millis(100);
/// Guest CPU the neighbour must have spent before a run beside it starts: it is spinning.
const NEIGHBOUR_SPINNING: Duration = Duration::from_millis(500);

/// Whom the measured tenant shares its node with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tenancy {
    /// A node without `--config`: every tenant on the built-in quotas.
    Unconfigured,
    /// A node with a `--config` of two tenants; the other runs nothing.
    Configured,
    /// The same node, the other tenant spinning on every partition of its stream.
    BesideSpin,
}

impl Tenancy {
    fn name(self) -> &'static str {
        match self {
            Self::Unconfigured => "none",
            Self::Configured => "two",
            Self::BesideSpin => "spin",
        }
    }
}

/// How a run consumes its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plain async-nats pull consumers, in order, with a window of messages in flight
    Raw,
    /// Plain async-nats pull consumers, in order, one message in flight, every ack confirmed
    RawSerial,
    /// weir with a built-in native no-op handler
    Native,
    /// weir with a component
    Wasm,
}

/// A component the wasm mode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WasmHandler {
    /// `examples/noop`: acks every message
    Noop,
    /// `examples/orders`: parses the order, publishes an enriched event
    Orders,
    /// `examples/counter`: one state get and one set per message
    Counter,
    /// `examples/counter` with `state=off`: the same handler without state
    CounterStateless,
}

impl WasmHandler {
    fn name(self) -> &'static str {
        match self {
            Self::Noop => "noop",
            Self::Orders => "orders",
            Self::Counter => "counter",
            Self::CounterStateless => "counter-stateless",
        }
    }

    /// The component it runs, `<component>.wasm` under `--components`.
    fn component(self) -> &'static str {
        match self {
            Self::CounterStateless => "counter",
            other => other.name(),
        }
    }
}

/// One run's figures, as `--json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `raw`, `native` or `wasm`.
    pub mode: Mode,
    /// The handler: `-` for raw, `noop` or `orders`.
    pub handler: &'static str,
    /// The node's tenants, for a wasm run.
    pub tenancy: Option<Tenancy>,
    /// Which of the `--repeat` runs this is, from 1.
    pub repetition: u32,
    /// Partitions of the run's stream.
    pub partitions: u32,
    /// Messages of the backlog.
    pub messages: u64,
    /// Payload size asked for.
    pub payload_bytes: usize,
    /// Backlog messages acked per second, from the first ack to the last.
    pub msgs_per_sec: f64,
    /// Latency percentiles from publication to ack, microseconds, at a steady rate.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p999_us: u64,
    /// CPU time of this process (weir and the bench's own publisher), first ack to last.
    pub cpu_seconds: f64,
    /// Peak resident memory of this process from the first ack to the end of the run.
    pub peak_rss_bytes: u64,
    /// For a run on a node with a `--config`: the guest CPU each tenant's calls spent per
    /// second of the run (in cores), as the node's metrics count it.
    pub guest_cores: Option<GuestCores>,
}

/// Guest CPU per second of a run, in cores.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GuestCores {
    /// The measured tenant's.
    pub measured: f64,
    /// The neighbour's.
    pub neighbour: f64,
    /// How long the neighbour's guests held turns while kept off a core, per second.
    pub neighbour_preempted: f64,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::RawSerial => "raw-serial",
            Self::Native => "native",
            Self::Wasm => "wasm",
        }
    }
}

/// A mode with its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Raw,
    RawSerial,
    Native,
    Wasm(WasmHandler, Tenancy),
}

impl Run {
    fn mode(self) -> Mode {
        match self {
            Self::Raw => Mode::Raw,
            Self::RawSerial => Mode::RawSerial,
            Self::Native => Mode::Native,
            Self::Wasm(..) => Mode::Wasm,
        }
    }

    fn handler(self) -> &'static str {
        match self {
            Self::Raw | Self::RawSerial => "-",
            Self::Native => "noop",
            Self::Wasm(handler, _) => handler.name(),
        }
    }

    fn is_orders(self) -> bool {
        matches!(self, Self::Wasm(WasmHandler::Orders, _))
    }

    fn tenancy(self) -> Option<Tenancy> {
        match self {
            Self::Wasm(_, tenancy) => Some(tenancy),
            _ => None,
        }
    }

    /// What the run is called in names and messages: its mode, or its component.
    fn name(self) -> &'static str {
        match self {
            Self::Wasm(handler, _) => handler.name(),
            _ => self.mode().name(),
        }
    }

    /// A name for the run's stream and deployment.
    fn tag(self, partitions: u32) -> String {
        let tenancy = match self.tenancy() {
            None | Some(Tenancy::Unconfigured) => "",
            Some(tenancy) => tenancy.name(),
        };
        format!("{}{partitions}{tenancy}", self.name().replace('-', ""))
    }

    fn label(self, partitions: u32) -> String {
        match self.tenancy() {
            Some(tenancy @ (Tenancy::Configured | Tenancy::BesideSpin)) => {
                format!("{} p{partitions} {}", self.name(), tenancy.name())
            }
            _ => format!("{} p{partitions}", self.name()),
        }
    }
}

/// Runs every mode at every partition count and prints the comparison.
pub async fn run(nats: &NatsArgs, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.keys > 0,
        "--messages and --keys must be at least 1"
    );
    anyhow::ensure!(args.latency_rate > 0, "--latency-rate must be at least 1");
    anyhow::ensure!(
        (1..=MAX_WINDOW).contains(&args.window),
        "--window must be between 1 and {MAX_WINDOW}"
    );
    anyhow::ensure!(
        !args.partitions.is_empty() && args.partitions.iter().all(|p| (1..=1024).contains(p)),
        "--partitions takes counts from 1 to 1024"
    );
    anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let runs = runs(&args);
    let mut wanted: BTreeSet<&'static str> = runs
        .iter()
        .filter_map(|run| match run {
            Run::Wasm(handler, _) => Some(handler.component()),
            _ => None,
        })
        .collect();
    if runs
        .iter()
        .any(|run| run.tenancy() == Some(Tenancy::BesideSpin))
    {
        wanted.insert(NEIGHBOUR_COMPONENT);
    }
    let mut components = BTreeMap::new();
    for component in wanted {
        let path = args.components.join(format!("{component}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read the {component} component at {} (build it with `make guests`, or \
                 point --components at it)",
                path.display()
            )
        })?;
        components.insert(component, bytes);
    }

    let (client, _server) = match &nats.nats_url {
        Some(url) => (connect(url, &nats.credentials()).await?, None),
        None => {
            let server = NatsServer::start(ServerOptions::default())?;
            let client = connect(&server.url(), &Credentials::none()).await?;
            (client, Some(server))
        }
    };
    let bench = Bench {
        js: jetstream::new(client.clone()),
        client,
        host: Host::new()?,
        args: &args,
        components,
    };
    let mut results = Vec::new();
    for repetition in 1..=args.repeat {
        for &partitions in &args.partitions {
            for &run in &runs {
                let mut result = bench
                    .measure(run, partitions)
                    .await
                    .with_context(|| format!("the {} run failed", run.label(partitions)))?;
                result.repetition = repetition;
                if !args.json {
                    note!(
                        "{:>20}: {:.0} msg/s, p99 {} µs",
                        run.label(partitions),
                        result.msgs_per_sec,
                        result.p99_us
                    );
                }
                results.push(result);
            }
        }
    }

    if args.json {
        let json = serde_json::json!({ "runs": results });
        say!("{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        crate::terminal::text(&table(&results))?;
    }
    Ok(())
}

/// The runs `args` asks for, in order: every mode, the wasm mode once per handler (three times
/// with `--neighbour`).
fn runs(args: &BenchArgs) -> Vec<Run> {
    let mut runs = Vec::new();
    for &mode in &args.modes {
        match mode {
            Mode::Raw => runs.push(Run::Raw),
            Mode::RawSerial => runs.push(Run::RawSerial),
            Mode::Native => runs.push(Run::Native),
            Mode::Wasm => {
                for &handler in &args.handlers {
                    runs.push(Run::Wasm(handler, Tenancy::Unconfigured));
                    if args.neighbour == Some(Neighbour::Spin) {
                        runs.push(Run::Wasm(handler, Tenancy::Configured));
                        runs.push(Run::Wasm(handler, Tenancy::BesideSpin));
                    }
                }
            }
        }
    }
    runs
}

/// The results as a table, then each run's throughput as a share of raw's at the same
/// partition count.
pub fn table(results: &[RunResult]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:>10} {:<10} {:<7} {:<7} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>6} {:>9}\n",
        "PARTITIONS",
        "MODE",
        "HANDLER",
        "TENANTS",
        "MESSAGES",
        "PAYLOAD",
        "MSGS/S",
        "P50 µs",
        "P99 µs",
        "P999 µs",
        "CPU s",
        "PEAK RSS"
    );
    for run in results {
        let _ = writeln!(
            out,
            "{:>10} {:<10} {:<7} {:<7} {:>8} {:>7} {:>10.0} {:>8} {:>8} {:>8} {:>6.2} {:>5} MiB",
            run.partitions,
            run.mode.name(),
            run.handler,
            run.tenancy.map_or("-", Tenancy::name),
            run.messages,
            run.payload_bytes,
            run.msgs_per_sec,
            run.p50_us,
            run.p99_us,
            run.p999_us,
            run.cpu_seconds,
            run.peak_rss_bytes >> 20
        );
    }
    let medians = medians(results);
    for partitions in medians
        .iter()
        .map(|run| run.partitions)
        .collect::<BTreeSet<_>>()
    {
        let at = |mode| {
            medians
                .iter()
                .find(|run| run.partitions == partitions && run.mode == mode)
        };
        let (raw, serial) = (at(Mode::Raw), at(Mode::RawSerial));
        let ratios: Vec<String> = medians
            .iter()
            .filter(|run| run.partitions == partitions && run.mode != Mode::Raw)
            .filter(|run| matches!(run.tenancy, None | Some(Tenancy::Unconfigured)))
            .filter_map(|run| {
                let name = match run.mode {
                    Mode::Wasm => format!("wasm({})", run.handler),
                    mode => mode.name().to_owned(),
                };
                let mut shares = Vec::new();
                if let Some(raw) = raw {
                    shares.push(format!(
                        "{name}/raw {:.2}",
                        run.msgs_per_sec / raw.msgs_per_sec
                    ));
                }
                if let Some(serial) = serial.filter(|_| run.mode != Mode::RawSerial) {
                    shares.push(format!(
                        "{:.1}× raw-serial",
                        run.msgs_per_sec / serial.msgs_per_sec
                    ));
                }
                (!shares.is_empty()).then(|| shares.join(" "))
            })
            .collect();
        if !ratios.is_empty() {
            let _ = writeln!(out, "{partitions} partition(s): {}", ratios.join(", "));
        }
        let wasm = |handler: WasmHandler| {
            medians.iter().find(|run| {
                run.partitions == partitions
                    && run.mode == Mode::Wasm
                    && run.handler == handler.name()
                    && run.tenancy == Some(Tenancy::Unconfigured)
            })
        };
        if let (Some(state), Some(stateless)) = (
            wasm(WasmHandler::Counter),
            wasm(WasmHandler::CounterStateless),
        ) {
            let _ = writeln!(
                out,
                "{partitions} partition(s): {}",
                state_cost(state, stateless)
            );
        }
        for handler in results
            .iter()
            .filter(|run| run.partitions == partitions && run.mode == Mode::Wasm)
            .map(|run| run.handler)
            .collect::<BTreeSet<_>>()
        {
            if let Some(cost) = neighbour_cost(results, partitions, handler) {
                let _ = writeln!(out, "{partitions} partition(s), {handler}: {cost}");
            }
        }
    }
    out
}

/// One result per run (partitions, mode, handler, tenancy), in the order they first appear,
/// with the median throughput of its repetitions.
fn medians(results: &[RunResult]) -> Vec<RunResult> {
    let mut medians: Vec<RunResult> = Vec::new();
    for run in results {
        let same = |other: &RunResult| {
            (other.partitions, other.mode, other.handler, other.tenancy)
                == (run.partitions, run.mode, run.handler, run.tenancy)
        };
        if medians.iter().any(same) {
            continue;
        }
        let mut median = run.clone();
        median.msgs_per_sec = median_of(results.iter().filter(|r| same(r)).map(|r| r.msgs_per_sec));
        medians.push(median);
    }
    medians
}

/// The median of `values` (the mean of the middle two of an even count); 0 for none.
fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What configuring tenants, and then a spinning neighbour, cost `handler`'s throughput at
/// `partitions`, over the repetitions that ran all three: each repetition's ratios, their
/// median and the worst, and the guest CPU each tenant got beside the neighbour.
fn neighbour_cost(results: &[RunResult], partitions: u32, handler: &str) -> Option<String> {
    let of = |tenancy: Tenancy, repetition: u32| {
        results.iter().find(|run| {
            run.partitions == partitions
                && run.mode == Mode::Wasm
                && run.handler == handler
                && run.tenancy == Some(tenancy)
                && run.repetition == repetition
        })
    };
    let mut configured = Vec::new();
    let mut beside = Vec::new();
    let mut cores = Vec::new();
    for repetition in results
        .iter()
        .map(|run| run.repetition)
        .collect::<BTreeSet<_>>()
    {
        if let (Some(none), Some(two), Some(spin)) = (
            of(Tenancy::Unconfigured, repetition),
            of(Tenancy::Configured, repetition),
            of(Tenancy::BesideSpin, repetition),
        ) {
            configured.push(two.msgs_per_sec / none.msgs_per_sec);
            beside.push(spin.msgs_per_sec / two.msgs_per_sec);
            cores.extend(spin.guest_cores);
        }
    }
    if configured.is_empty() {
        return None;
    }
    let summary = |ratios: &[f64], target: f64| {
        let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        format!(
            "{} (median {:.2}, worst {worst:.2}, target {target:.2})",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            median_of(ratios.iter().copied()),
        )
    };
    let mut line = format!(
        "two tenants/none {}; beside a spinning tenant/alone {}",
        summary(&configured, 0.9),
        summary(&beside, 0.8)
    );
    if !cores.is_empty() {
        line.push_str(&format!(
            "; guest CPU beside it: {handler} {:.2} core(s), the spinning tenant {:.2}, which \
             held its turn off a core for {:.2} more (medians)",
            median_of(cores.iter().map(|c| c.measured)),
            median_of(cores.iter().map(|c| c.neighbour)),
            median_of(cores.iter().map(|c| c.neighbour_preempted)),
        ));
    }
    Some(line)
}

/// The `--config` of a node the measured tenant shares with its neighbour: each may read its
/// own stream only, and run every partition of it.
fn two_tenants(
    partitions: u32,
    stream: &str,
    output_prefix: &str,
    neighbour_stream: &str,
) -> String {
    format!(
        "[tenants.{MEASURED}]\n\
         input_streams = [\"{stream}\"]\n\
         output_subjects = [\"{output_prefix}.>\"]\n\
         max_instances = {partitions}\n\
         \n\
         [tenants.{NEIGHBOUR}]\n\
         input_streams = [\"{neighbour_stream}\"]\n\
         max_instances = {partitions}\n"
    )
}

/// What state costs: the counter's throughput as a share of the same component without
/// state, and the CPU time of each of its two state operations a message.
fn state_cost(state: &RunResult, stateless: &RunResult) -> String {
    let operations = 2.0 * state.messages as f64;
    let cpu_per_operation = (state.cpu_seconds - stateless.cpu_seconds).max(0.0) / operations;
    format!(
        "state: counter/counter-stateless {:.2} (target 0.70), {:.1} µs of CPU per state \
         operation (one get and one set a message, committed before its ack)",
        state.msgs_per_sec / stateless.msgs_per_sec,
        cpu_per_operation * 1e6
    )
}

/// What every run shares.
struct Bench<'a> {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Validates components at deploy time, as `weir deploy` does.
    host: Host,
    args: &'a BenchArgs,
    components: BTreeMap<&'static str, Vec<u8>>,
}

/// What consumes a run's stream.
enum Consumers {
    Raw {
        tasks: JoinSet<anyhow::Result<()>>,
        counters: SharedCounters,
    },
    Node {
        node: Box<NodeHandle>,
        deployment: DeploymentId,
        /// Scrapes the node's metrics at `--scrape-every`, if given.
        scraper: Option<tokio::task::JoinHandle<()>>,
        /// The other tenant, on a node with a `--config`.
        neighbourhood: Option<Neighbourhood>,
    },
}

/// The other tenant of a node with a `--config` of two.
struct Neighbourhood {
    /// The node's metrics, where each tenant's guest CPU is read.
    metrics: std::net::SocketAddr,
    /// The neighbour's spinning deployment and its stream, if it runs one.
    spinning: Option<(DeploymentId, String)>,
}

impl Neighbourhood {
    /// What each tenant's guests have used on the node so far.
    async fn guest_seconds(&self) -> anyhow::Result<GuestSeconds> {
        Ok(guest_seconds(&metrics_text(self.metrics).await?))
    }
}

impl Consumers {
    /// What the consumers have acked.
    fn counters(&self) -> SharedCounters {
        match self {
            Self::Raw { counters, .. } => counters.clone(),
            Self::Node { node, .. } => node.counters(),
        }
    }
}

impl Bench<'_> {
    /// Publishes the run's backlog, consumes it, then measures latency, and cleans up.
    async fn measure(&self, run: Run, partitions: u32) -> anyhow::Result<RunResult> {
        let tag = run.tag(partitions);
        let stream = format!("BENCH_{}", tag.to_uppercase());
        let output_prefix = format!("bench.out.{tag}");
        let traffic = self.traffic(run, &tag);
        partition::create_stream(
            &self.js,
            &StreamRequest {
                name: stream.clone(),
                subjects: format!("bench.{tag}.*.>"),
                partitions,
                key_tokens: vec![],
                replicas: 1,
            },
        )
        .await?;
        if run.is_orders() {
            self.js
                .create_stream(stream::Config {
                    name: format!("{stream}_OUT"),
                    subjects: vec![format!("{output_prefix}.>")],
                    ..Default::default()
                })
                .await
                .with_context(|| format!("failed to create stream {stream}_OUT"))?;
        }
        let bar = progress_bar(self.args.messages, "publishing");
        traffic
            .publish(&self.js, |stored| bar.set_position(stored))
            .await?;
        bar.finish_and_clear();

        let consumers = self
            .start(run, partitions, &stream, &tag, &output_prefix)
            .await?;
        let mut running = Running {
            counters: consumers.counters(),
            consumers,
            label: run.label(partitions),
        };
        let measured = match self.consume(&mut running).await {
            Ok(throughput) => self
                .latency(&mut running, &traffic)
                .await
                .map(|latency| (throughput, latency)),
            Err(error) => Err(error),
        };
        self.stop(running.consumers).await?;
        self.js
            .delete_stream(&stream)
            .await
            .with_context(|| format!("failed to delete stream {stream}"))?;
        if run.is_orders() {
            self.js
                .delete_stream(format!("{stream}_OUT"))
                .await
                .with_context(|| format!("failed to delete stream {stream}_OUT"))?;
        }
        let (throughput, latency) = measured?;
        Ok(RunResult {
            mode: run.mode(),
            handler: run.handler(),
            tenancy: run.tenancy(),
            repetition: 1,
            partitions,
            messages: self.args.messages,
            payload_bytes: self.args.payload_bytes,
            msgs_per_sec: throughput.msgs_per_sec,
            p50_us: latency.value_at_quantile(0.5),
            p99_us: latency.value_at_quantile(0.99),
            p999_us: latency.value_at_quantile(0.999),
            cpu_seconds: throughput.cpu_seconds,
            peak_rss_bytes: throughput.peak_rss_bytes,
            guest_cores: throughput.guest_cores,
        })
    }

    /// The run's messages: a fixed payload, or for the orders handler, orders.
    fn traffic(&self, run: Run, tag: &str) -> Traffic {
        let payload = if run.is_orders() {
            let order = r#"{"order_id":"o{n}","customer":"{key}","seq":{seq},"items":[{"sku":"sku-1","qty":2,"price_cents":1250},{"sku":"sku-2","qty":1,"price_cents":399}],"note":""}"#;
            let padding = "x".repeat(self.args.payload_bytes.saturating_sub(order.len()));
            Payload::Template(order.replace(r#""note":"""#, &format!(r#""note":"{padding}""#)))
        } else {
            Payload::Fixed(Bytes::from(vec![b'x'; self.args.payload_bytes]))
        };
        Traffic {
            subject: format!("bench.{tag}.{{key}}.ev"),
            payload,
            count: self.args.messages,
            keys: self.args.keys,
            headers: vec![],
        }
    }

    /// Starts the run's consumers: pull consumers, or a node with the run's deployment (and,
    /// beside a spinning neighbour, the neighbour's first).
    async fn start(
        &self,
        run: Run,
        partitions: u32,
        stream: &str,
        tag: &str,
        output_prefix: &str,
    ) -> anyhow::Result<Consumers> {
        let (component, tenancy) = match run {
            Run::Raw | Run::RawSerial => {
                let counters = SharedCounters::default();
                let window = match run {
                    Run::Raw => Window::Pipelined(self.args.window),
                    _ => Window::Serial,
                };
                let tasks = raw_consumers(&self.js, stream, partitions, window, &counters);
                return Ok(Consumers::Raw { tasks, counters });
            }
            Run::Native => (None, Tenancy::Unconfigured),
            Run::Wasm(handler, tenancy) => (Some(handler), tenancy),
        };
        let neighbour_stream = format!("BENCH_{}_{}", NEIGHBOUR.to_uppercase(), tag.to_uppercase());
        let configured = tenancy != Tenancy::Unconfigured;
        let tenants = if configured {
            TenantsConfig::parse(&two_tenants(
                partitions,
                stream,
                output_prefix,
                &neighbour_stream,
            ))?
        } else {
            TenantsConfig::default()
        };
        let node = node::start(
            self.client.clone(),
            NodeConfig {
                builtin_handlers: true,
                dlq_mover: false,
                tenants,
                http: (self.args.scrape_every.is_some() || configured)
                    .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                ..NodeConfig::default()
            },
        )
        .await?;
        let scraper = match (self.args.scrape_every, node.http_addr()) {
            (Some(every), Some(addr)) => Some(tokio::spawn(scrape(addr, every))),
            _ => None,
        };
        let spinning = match tenancy {
            Tenancy::BesideSpin => Some((DeploymentId::new(NEIGHBOUR, tag)?, neighbour_stream)),
            _ => None,
        };
        let neighbourhood = node
            .http_addr()
            .filter(|_| configured)
            .map(|metrics| Neighbourhood { metrics, spinning });
        let deployment = DeploymentId::new(MEASURED, tag)?;
        let consumers = Consumers::Node {
            node: Box::new(node),
            deployment: deployment.clone(),
            scraper,
            neighbourhood,
        };
        let deployed = async {
            if let Consumers::Node {
                neighbourhood: Some(neighbourhood),
                ..
            } = &consumers
            {
                self.start_spinning(neighbourhood, partitions).await?;
            }
            match component {
                None => self.deploy_builtin(&deployment, stream, partitions).await,
                Some(handler) => {
                    self.deploy(handler, &deployment, stream, output_prefix)
                        .await
                }
            }
        }
        .await;
        if let Err(error) = deployed {
            self.stop(consumers).await?;
            return Err(error);
        }
        Ok(consumers)
    }

    /// Deploys `handler` as `id`, as `weir deploy` would.
    async fn deploy(
        &self,
        handler: WasmHandler,
        id: &DeploymentId,
        stream: &str,
        output_prefix: &str,
    ) -> anyhow::Result<()> {
        let mut request = DeployRequest {
            id: id.clone(),
            component: self.components[handler.component()].clone(),
            stream: stream.to_owned(),
            window: self.args.window,
            limits: LimitsSpec::default(),
            retry: RetrySpec::default(),
            config: BTreeMap::new(),
            outputs: vec![],
            from: None,
            deployed_by: None,
            reset_state: false,
        };
        if handler == WasmHandler::Orders {
            request
                .config
                .insert("output_prefix".into(), output_prefix.into());
            request.outputs.push(format!("{output_prefix}.>"));
        }
        if handler == WasmHandler::CounterStateless {
            request.config.insert("state".into(), "off".into());
        }
        deploy::deploy(&self.js, &self.host, request).await?;
        Ok(())
    }

    /// Deploys the neighbour's spinning handler on a stream of its own, gives every partition a
    /// message to spin on, and waits until the node's metrics show it spinning.
    async fn start_spinning(
        &self,
        neighbourhood: &Neighbourhood,
        partitions: u32,
    ) -> anyhow::Result<()> {
        let Some((id, stream)) = &neighbourhood.spinning else {
            return Ok(());
        };
        partition::create_stream(
            &self.js,
            &StreamRequest {
                name: stream.clone(),
                subjects: format!("bench.{}.*.>", stream.to_lowercase()),
                partitions,
                key_tokens: vec![],
                replicas: 1,
            },
        )
        .await?;
        let request = DeployRequest {
            id: id.clone(),
            component: self.components[NEIGHBOUR_COMPONENT].clone(),
            stream: stream.clone(),
            window: 1,
            limits: LimitsSpec {
                handler_timeout: NEIGHBOUR_TIMEOUT,
                ..LimitsSpec::default()
            },
            retry: RetrySpec {
                max_deliver: 10_000,
                ack_wait: NEIGHBOUR_TIMEOUT * 4,
                backoff: vec![NEIGHBOUR_BACKOFF],
            },
            config: BTreeMap::new(),
            outputs: vec![],
            from: None,
            deployed_by: None,
            reset_state: false,
        };
        deploy::deploy(&self.js, &self.host, request).await?;
        // Enough keys that every partition gets one.
        let spin = Traffic {
            subject: format!("bench.{}.{{key}}.ev", stream.to_lowercase()),
            payload: Payload::Fixed(Bytes::from_static(b"spin")),
            count: u64::from(partitions) * 16,
            keys: u64::from(partitions) * 16,
            headers: vec![],
        };
        spin.publish(&self.js, |_| {}).await?;
        let since = Instant::now();
        loop {
            let spent = neighbourhood
                .guest_seconds()
                .await?
                .cpu
                .get(NEIGHBOUR)
                .copied();
            if spent.is_some_and(|spent| spent >= NEIGHBOUR_SPINNING.as_secs_f64()) {
                return Ok(());
            }
            anyhow::ensure!(
                since.elapsed() < STALL_TIMEOUT,
                "the spinning neighbour spent {:.3}s of guest CPU in {STALL_TIMEOUT:?}: it \
                 never got going",
                spent.unwrap_or(0.0)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stores a deployment of the built-in no-op handler, as `weir deploy` would a component's.
    async fn deploy_builtin(
        &self,
        id: &DeploymentId,
        stream: &str,
        partitions: u32,
    ) -> anyhow::Result<()> {
        let artifact = Builtin::Noop.artifact();
        let spec = DeploymentSpec {
            tenant: id.tenant.clone(),
            handler: id.handler.clone(),
            version: artifact.clone(),
            artifact,
            stream: stream.to_owned(),
            partitions,
            window: self.args.window,
            limits: LimitsSpec::default(),
            retry: RetrySpec::default(),
            config: BTreeMap::new(),
            outputs: vec![],
            deployed_at: now_rfc3339(),
            deployed_by: None,
            start: crate::spec::StartAt::All,
            paused: false,
        };
        ControlPlane::open(&self.js)
            .await?
            .deployments
            .put(id.key(), serde_json::to_vec(&spec)?.into())
            .await
            .with_context(|| format!("failed to write deployment {}", id.key()))?;
        Ok(())
    }

    /// Stops a run's consumers: the node drains and its deployment is withdrawn.
    async fn stop(&self, consumers: Consumers) -> anyhow::Result<()> {
        match consumers {
            Consumers::Raw { mut tasks, .. } => tasks.abort_all(),
            Consumers::Node {
                node,
                deployment,
                scraper,
                neighbourhood,
            } => {
                if let Some(scraper) = scraper {
                    scraper.abort();
                }
                node.shutdown().await?;
                let control = ControlPlane::open(&self.js).await?;
                control
                    .deployments
                    .purge(deployment.key())
                    .await
                    .with_context(|| format!("failed to withdraw deployment {deployment}"))?;
                if let Some(state) = crate::lifecycle::kept_state(&self.js, &deployment).await? {
                    state.purge(&deployment).await?;
                }
                if let Some((spinning, stream)) = neighbourhood.and_then(|n| n.spinning) {
                    control
                        .deployments
                        .purge(spinning.key())
                        .await
                        .with_context(|| format!("failed to withdraw deployment {spinning}"))?;
                    // Gone already if the neighbour never started.
                    let _ = self.js.delete_stream(&stream).await;
                }
            }
        }
        Ok(())
    }

    /// Waits for the backlog to be acked, measuring from the first ack to the last.
    async fn consume(&self, running: &mut Running) -> anyhow::Result<Throughput> {
        let messages = self.args.messages;
        let bar = progress_bar(messages, "consuming");
        bar.set_message(running.label.clone());
        running.wait_for_acks(1, &bar).await?;
        let guest_at_start = running.guest_seconds().await?;
        let (started, cpu_at_start) = (Instant::now(), cpu_time());
        let acked_at_start = running.counters.snapshot().acked;
        reset_peak_rss();
        running.wait_for_acks(messages, &bar).await?;
        let (elapsed, cpu) = (started.elapsed(), cpu_time() - cpu_at_start);
        let guest_at_end = running.guest_seconds().await?;
        bar.finish_and_clear();
        // The messages acked by the time the clock started are left out.
        let timed = (messages - acked_at_start.min(messages)).max(1);
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let cores = |tenant: &str, at: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>| {
            (at.get(tenant).unwrap_or(&0.0) - before.get(tenant).unwrap_or(&0.0)) / seconds
        };
        Ok(Throughput {
            msgs_per_sec: timed as f64 / seconds,
            cpu_seconds: cpu.as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
            guest_cores: guest_at_start
                .zip(guest_at_end)
                .map(|(before, after)| GuestCores {
                    measured: cores(MEASURED, &after.cpu, &before.cpu),
                    neighbour: cores(NEIGHBOUR, &after.cpu, &before.cpu),
                    neighbour_preempted: cores(NEIGHBOUR, &after.preempted, &before.preempted),
                }),
        })
    }

    /// Publishes `--latency-messages` at `--latency-rate` and returns their latencies.
    async fn latency(
        &self,
        running: &mut Running,
        traffic: &Traffic,
    ) -> anyhow::Result<Histogram<u64>> {
        running.counters.reset_latencies();
        let count = self.args.latency_messages;
        let bar = progress_bar(count, "latency");
        bar.set_message(running.label.clone());
        let interval = Duration::from_secs(1) / self.args.latency_rate;
        let started = tokio::time::Instant::now();
        for n in 0..count {
            tokio::time::sleep_until(started + interval * u32::try_from(n).unwrap_or(u32::MAX))
                .await;
            let message = traffic.render(self.args.messages + n);
            self.js
                .publish(message.subject, message.payload)
                .await?
                .await
                .context("failed to publish a latency probe")?;
            bar.set_position(n + 1);
        }
        bar.finish_and_clear();
        running
            .wait_for_acks(self.args.messages + count, &ProgressBar::hidden())
            .await?;
        Ok(running.counters.latencies())
    }
}

/// Throughput, CPU and memory over a run's backlog.
struct Throughput {
    msgs_per_sec: f64,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
    guest_cores: Option<GuestCores>,
}

/// A run's consumers, and what they have acked.
struct Running {
    consumers: Consumers,
    counters: SharedCounters,
    /// The run, for messages.
    label: String,
}

impl Running {
    /// What each tenant's guests have used so far, on a node with a `--config`.
    async fn guest_seconds(&self) -> anyhow::Result<Option<GuestSeconds>> {
        match &self.consumers {
            Consumers::Node {
                neighbourhood: Some(neighbourhood),
                ..
            } => Ok(Some(neighbourhood.guest_seconds().await?)),
            _ => Ok(None),
        }
    }

    /// Waits until `target` messages have been acked, showing the count on `bar`. Fails if a
    /// raw consumer fails, or acks stop for [`STALL_TIMEOUT`].
    async fn wait_for_acks(&mut self, target: u64, bar: &ProgressBar) -> anyhow::Result<()> {
        let mut last = (self.counters.snapshot().acked, Instant::now());
        loop {
            let now = self.counters.snapshot();
            bar.set_position(now.acked.min(target));
            if now.acked >= target {
                return Ok(());
            }
            if let Consumers::Raw { tasks, .. } = &mut self.consumers
                && let Some(ended) = tasks.try_join_next()
            {
                let label = &self.label;
                match ended {
                    Ok(Ok(())) => anyhow::bail!("{label}: a consumer's pull stream ended"),
                    Ok(Err(error)) => return Err(error.context(label.clone())),
                    Err(error) => anyhow::bail!("{label}: a consumer task failed: {error}"),
                }
            }
            if now.acked != last.0 {
                last = (now.acked, Instant::now());
            } else if last.1.elapsed() > STALL_TIMEOUT {
                anyhow::bail!(
                    "{}: no message acked for {STALL_TIMEOUT:?} ({} of {target} acked; {} \
                     failed calls, {} retries, {} rejected)",
                    self.label,
                    now.acked,
                    now.failed,
                    now.retried,
                    now.rejected
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The messages async-nats asks for in one pull unless told otherwise.
const DEFAULT_PULL_BATCH: usize = 200;

/// How many messages a raw consumer has in flight, and how it acks them.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Up to this many; each acked with a plain ack, which the server confirms to nobody.
    Pipelined(u32),
    /// One, acked with an ack the server confirms before the next message is delivered.
    Serial,
}

/// Creates a raw consumer, trying again for a while when the server is too busy to answer
/// (a thousand partitions' consumers come up at once), as a node's workers do.
async fn create_raw_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: pull::Config,
) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    const ATTEMPTS: u32 = 5;
    let name = config.durable_name.clone().unwrap_or_default();
    let mut attempt = 1;
    loop {
        let created = match js.get_stream(stream).await {
            Ok(handle) => handle
                .create_consumer(config.clone())
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        match created {
            Ok(consumer) => return Ok(consumer),
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!("failed to create consumer {name} on {stream}: {error:#}; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(error.context(format!(
                    "failed to create consumer {name} on {stream} ({ATTEMPTS} attempts)"
                )));
            }
        }
    }
}

/// One pull consumer per partition, handling its messages one by one in stream order. Each
/// task creates its own consumer, as each of a node's partition workers does, so that in both
/// the consumers come up while the first messages are being processed.
fn raw_consumers(
    js: &jetstream::Context,
    stream: &str,
    partitions: u32,
    window: Window,
    counters: &SharedCounters,
) -> JoinSet<anyhow::Result<()>> {
    let mut tasks = JoinSet::new();
    for p in 0..partitions {
        let (js, stream, counters) = (js.clone(), stream.to_owned(), counters.clone());
        tasks.spawn(async move {
            let in_flight = match window {
                Window::Pipelined(window) => window,
                Window::Serial => 1,
            };
            let config = pull::Config {
                durable_name: Some(format!("raw_p{p:03}")),
                filter_subject: partition::filter_subject(p),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: i64::from(in_flight),
                ..Default::default()
            };
            let consumer = create_raw_consumer(&js, &stream, config).await?;
            // A pull asks for a batch either way; the consumer's MaxAckPending is the window.
            let batch = match window {
                Window::Pipelined(window) => window as usize,
                Window::Serial => DEFAULT_PULL_BATCH,
            };
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(batch)
                .expires(Duration::from_secs(2))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await?;
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(message) => message,
                    // The pull goes on: a busy machine delays a heartbeat, as weir's workers
                    // also allow.
                    Err(error) if error.kind() == MessagesErrorKind::MissingHeartbeat => continue,
                    Err(error) => return Err(error.into()),
                };
                let published = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("unreadable ack metadata: {e}"))?
                    .published
                    .unix_timestamp_nanos();
                match window {
                    Window::Pipelined(_) => message.ack().await,
                    Window::Serial => message.double_ack().await,
                }
                .map_err(anyhow::Error::from_boxed)?;
                counters.acked(0, u64::try_from(published).unwrap_or(0));
            }
            Ok(())
        });
    }
    tasks
}

/// CPU time this process has used, on every thread.
fn cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

/// Starts this process's peak resident memory afresh from what it holds now (Linux 4.0+).
fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!("cannot reset the peak RSS: {error}; it is the process's lifetime peak");
    }
}

/// This process's peak resident memory (VmHWM), or 0 where /proc does not say.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(mode: Mode, handler: &'static str, msgs_per_sec: f64) -> RunResult {
        RunResult {
            mode,
            handler,
            tenancy: (mode == Mode::Wasm).then_some(Tenancy::Unconfigured),
            repetition: 1,
            partitions: 16,
            messages: 1000,
            payload_bytes: 128,
            msgs_per_sec,
            p50_us: 300,
            p99_us: 900,
            p999_us: 2000,
            cpu_seconds: 1.5,
            peak_rss_bytes: 64 << 20,
            guest_cores: None,
        }
    }

    #[test]
    fn the_table_gives_each_run_as_a_share_of_raw_and_a_multiple_of_raw_serial() {
        let table = table(&[
            result(Mode::Raw, "-", 1000.0),
            result(Mode::RawSerial, "-", 300.0),
            result(Mode::Native, "noop", 950.0),
            result(Mode::Wasm, "noop", 900.0),
        ]);
        assert!(
            table.contains(
                "16 partition(s): raw-serial/raw 0.30, native/raw 0.95 3.2× raw-serial, \
                 wasm(noop)/raw 0.90 3.0× raw-serial"
            ),
            "{table}"
        );
        assert!(table.contains("64 MiB"), "{table}");
    }

    #[test]
    fn wasm_runs_once_per_handler_after_the_modes_before_it() {
        let args = BenchArgs {
            messages: 1,
            partitions: vec![1],
            payload_bytes: 1,
            keys: 1,
            modes: vec![Mode::Raw, Mode::Wasm],
            window: DEFAULT_WINDOW,
            handlers: vec![WasmHandler::Noop, WasmHandler::Orders],
            components: PathBuf::new(),
            latency_messages: 1,
            latency_rate: 1,
            json: false,
            scrape_every: None,
            neighbour: None,
            repeat: 1,
        };
        let handlers: Vec<_> = runs(&args).iter().map(|run| run.handler()).collect();
        assert_eq!(handlers, ["-", "noop", "orders"]);
    }

    #[test]
    fn each_tenants_cpu_is_read_from_a_metrics_page() {
        let page = "HTTP/1.1 200 OK\r\n\r\n# TYPE weir_tenant_cpu_seconds counter\n\
                    weir_tenant_cpu_seconds_total{tenant=\"bench\"} 0.25\n\
                    weir_tenant_cpu_wait_seconds_total{tenant=\"bench\"} 9\n\
                    weir_tenant_cpu_seconds_total{tenant=\"noisy\"} 1.5\n\
                    weir_tenant_cpu_preempted_seconds_total{tenant=\"noisy\"} 2\n";
        assert_eq!(
            guest_seconds(page),
            GuestSeconds {
                cpu: BTreeMap::from([("bench".to_owned(), 0.25), ("noisy".to_owned(), 1.5)]),
                preempted: BTreeMap::from([("noisy".to_owned(), 2.0)]),
            }
        );
    }

    #[test]
    fn the_neighbour_line_gives_each_runs_ratios_their_median_and_the_worst() {
        let mut results = Vec::new();
        for (repetition, none, two, spin) in [(1, 100.0, 90.0, 45.0), (2, 100.0, 100.0, 90.0)] {
            for (tenancy, msgs_per_sec) in [
                (Tenancy::Unconfigured, none),
                (Tenancy::Configured, two),
                (Tenancy::BesideSpin, spin),
            ] {
                let mut run = result(Mode::Wasm, "noop", msgs_per_sec);
                run.tenancy = Some(tenancy);
                run.repetition = repetition;
                run.guest_cores = (tenancy == Tenancy::BesideSpin).then_some(GuestCores {
                    measured: 0.1,
                    neighbour: 0.5,
                    neighbour_preempted: 0.25,
                });
                results.push(run);
            }
        }
        let table = table(&results);
        assert!(
            table.contains(
                "16 partition(s), noop: two tenants/none 0.90 1.00 (median 0.95, worst 0.90, \
                 target 0.90); beside a spinning tenant/alone 0.50 0.90 (median 0.70, worst \
                 0.50, target 0.80); guest CPU beside it: noop 0.10 core(s), the spinning \
                 tenant 0.50, which held its turn off a core for 0.25 more (medians)"
            ),
            "{table}"
        );
    }

    #[test]
    fn process_figures_come_from_proc() {
        assert!(peak_rss_bytes() > 0);
        let before = cpu_time();
        let mut x = 0u64;
        for n in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(n);
        }
        std::hint::black_box(x);
        assert!(cpu_time() > before);
    }
}
