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
use crate::traffic::{Payload, Traffic};
use crate::{note, say};

/// Reads `http://<addr>/metrics` every `every`, as a Prometheus server would, until aborted.
async fn scrape(addr: std::net::SocketAddr, every: Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_ok() {
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
        }
    }
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
    Wasm(WasmHandler),
}

impl Run {
    fn mode(self) -> Mode {
        match self {
            Self::Raw => Mode::Raw,
            Self::RawSerial => Mode::RawSerial,
            Self::Native => Mode::Native,
            Self::Wasm(_) => Mode::Wasm,
        }
    }

    fn handler(self) -> &'static str {
        match self {
            Self::Raw | Self::RawSerial => "-",
            Self::Native => "noop",
            Self::Wasm(handler) => handler.name(),
        }
    }

    /// What the run is called in names and messages: its mode, or its component.
    fn name(self) -> &'static str {
        match self {
            Self::Wasm(handler) => handler.name(),
            _ => self.mode().name(),
        }
    }

    /// A name for the run's stream and deployment.
    fn tag(self, partitions: u32) -> String {
        format!("{}{partitions}", self.name().replace('-', ""))
    }

    fn label(self, partitions: u32) -> String {
        format!("{} p{partitions}", self.name())
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
    let runs = runs(&args);
    let mut components = BTreeMap::new();
    for handler in runs.iter().filter_map(|run| match run {
        Run::Wasm(handler) => Some(*handler),
        _ => None,
    }) {
        let path = args
            .components
            .join(format!("{}.wasm", handler.component()));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read the {} component at {} (build it with `make guests`, or point \
                 --components at it)",
                handler.component(),
                path.display()
            )
        })?;
        components.insert(handler.component(), bytes);
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
    for &partitions in &args.partitions {
        for &run in &runs {
            let result = bench
                .measure(run, partitions)
                .await
                .with_context(|| format!("the {} run failed", run.label(partitions)))?;
            if !args.json {
                note!(
                    "{:>14}: {:.0} msg/s, p99 {} µs",
                    run.label(partitions),
                    result.msgs_per_sec,
                    result.p99_us
                );
            }
            results.push(result);
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

/// The runs `args` asks for, in order: every mode, the wasm mode once per handler.
fn runs(args: &BenchArgs) -> Vec<Run> {
    let mut runs = Vec::new();
    for &mode in &args.modes {
        match mode {
            Mode::Raw => runs.push(Run::Raw),
            Mode::RawSerial => runs.push(Run::RawSerial),
            Mode::Native => runs.push(Run::Native),
            Mode::Wasm => runs.extend(args.handlers.iter().map(|&handler| Run::Wasm(handler))),
        }
    }
    runs
}

/// The results as a table, then each run's throughput as a share of raw's at the same
/// partition count.
pub fn table(results: &[RunResult]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:>10} {:<10} {:<7} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>6} {:>9}\n",
        "PARTITIONS",
        "MODE",
        "HANDLER",
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
            "{:>10} {:<10} {:<7} {:>8} {:>7} {:>10.0} {:>8} {:>8} {:>8} {:>6.2} {:>5} MiB",
            run.partitions,
            run.mode.name(),
            run.handler,
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
    for partitions in results
        .iter()
        .map(|run| run.partitions)
        .collect::<BTreeSet<_>>()
    {
        let at = |mode| {
            results
                .iter()
                .find(|run| run.partitions == partitions && run.mode == mode)
        };
        let (raw, serial) = (at(Mode::Raw), at(Mode::RawSerial));
        let ratios: Vec<String> = results
            .iter()
            .filter(|run| run.partitions == partitions && run.mode != Mode::Raw)
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
            results.iter().find(|run| {
                run.partitions == partitions
                    && run.mode == Mode::Wasm
                    && run.handler == handler.name()
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
    }
    out
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
    },
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
        if run == Run::Wasm(WasmHandler::Orders) {
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
        if run == Run::Wasm(WasmHandler::Orders) {
            self.js
                .delete_stream(format!("{stream}_OUT"))
                .await
                .with_context(|| format!("failed to delete stream {stream}_OUT"))?;
        }
        let (throughput, latency) = measured?;
        Ok(RunResult {
            mode: run.mode(),
            handler: run.handler(),
            partitions,
            messages: self.args.messages,
            payload_bytes: self.args.payload_bytes,
            msgs_per_sec: throughput.msgs_per_sec,
            p50_us: latency.value_at_quantile(0.5),
            p99_us: latency.value_at_quantile(0.99),
            p999_us: latency.value_at_quantile(0.999),
            cpu_seconds: throughput.cpu_seconds,
            peak_rss_bytes: throughput.peak_rss_bytes,
        })
    }

    /// The run's messages: a fixed payload, or for the orders handler, orders.
    fn traffic(&self, run: Run, tag: &str) -> Traffic {
        let payload = if run == Run::Wasm(WasmHandler::Orders) {
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

    /// Starts the run's consumers: pull consumers, or a node with the run's deployment.
    async fn start(
        &self,
        run: Run,
        partitions: u32,
        stream: &str,
        tag: &str,
        output_prefix: &str,
    ) -> anyhow::Result<Consumers> {
        let component = match run {
            Run::Raw | Run::RawSerial => {
                let counters = SharedCounters::default();
                let window = match run {
                    Run::Raw => Window::Pipelined(self.args.window),
                    _ => Window::Serial,
                };
                let tasks = raw_consumers(&self.js, stream, partitions, window, &counters);
                return Ok(Consumers::Raw { tasks, counters });
            }
            Run::Native => None,
            Run::Wasm(handler) => Some(handler),
        };
        let node = node::start(
            self.client.clone(),
            NodeConfig {
                builtin_handlers: true,
                dlq_mover: false,
                http: self
                    .args
                    .scrape_every
                    .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                ..NodeConfig::default()
            },
        )
        .await?;
        let deployment = DeploymentId::new("bench", tag)?;
        let deployed = match component {
            None => self.deploy_builtin(&deployment, stream, partitions).await,
            Some(handler) => {
                let mut request = DeployRequest {
                    id: deployment.clone(),
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
                deploy::deploy(&self.js, &self.host, request)
                    .await
                    .map(|_| ())
            }
        };
        let scraper = match (self.args.scrape_every, node.http_addr()) {
            (Some(every), Some(addr)) => Some(tokio::spawn(scrape(addr, every))),
            _ => None,
        };
        let consumers = Consumers::Node {
            node: Box::new(node),
            deployment,
            scraper,
        };
        if let Err(error) = deployed {
            self.stop(consumers).await?;
            return Err(error);
        }
        Ok(consumers)
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
            } => {
                if let Some(scraper) = scraper {
                    scraper.abort();
                }
                node.shutdown().await?;
                ControlPlane::open(&self.js)
                    .await?
                    .deployments
                    .purge(deployment.key())
                    .await
                    .with_context(|| format!("failed to withdraw deployment {deployment}"))?;
                if let Some(state) = crate::lifecycle::kept_state(&self.js, &deployment).await? {
                    state.purge(&deployment).await?;
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
        let (started, cpu_at_start) = (Instant::now(), cpu_time());
        let acked_at_start = running.counters.snapshot().acked;
        reset_peak_rss();
        running.wait_for_acks(messages, &bar).await?;
        let (elapsed, cpu) = (started.elapsed(), cpu_time() - cpu_at_start);
        bar.finish_and_clear();
        // The messages acked by the time the clock started are left out.
        let timed = (messages - acked_at_start.min(messages)).max(1);
        Ok(Throughput {
            msgs_per_sec: timed as f64 / elapsed.as_secs_f64().max(1e-9),
            cpu_seconds: cpu.as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
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
}

/// A run's consumers, and what they have acked.
struct Running {
    consumers: Consumers,
    counters: SharedCounters,
    /// The run, for messages.
    label: String,
}

impl Running {
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
            partitions: 16,
            messages: 1000,
            payload_bytes: 128,
            msgs_per_sec,
            p50_us: 300,
            p99_us: 900,
            p999_us: 2000,
            cpu_seconds: 1.5,
            peak_rss_bytes: 64 << 20,
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
        };
        let handlers: Vec<_> = runs(&args).iter().map(|run| run.handler()).collect();
        assert_eq!(handlers, ["-", "noop", "orders"]);
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
