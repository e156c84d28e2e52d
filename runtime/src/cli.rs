//! The `weir` command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{parse_duration, parse_size};
use crate::deploy::{self, DeployRequest};
use crate::deployment::{LimitsSpec, RetrySpec};
use crate::embedded::{NatsServer, ServerOptions};
use crate::host::Host;
use crate::node::{self, NodeConfig};
use crate::partition::{self, StreamRequest};
use crate::resources::{ControlPlane, DeploymentId};
use crate::traffic::{Payload, Traffic};

/// The NATS URL used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// weir: WebAssembly stream processing for NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// Where NATS is.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How log lines on stderr look: `text` for people, `json` (one object per line) for
    /// log collectors
    #[arg(long, env = "WEIR_LOG_FORMAT", global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// See [`Cli::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the node, tenant, handler and partition spans.
    Json,
}

/// The connection options every command takes.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222]
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// NATS credentials file
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
}

/// The `weir` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a processing node (starts an embedded nats-server if none is reachable)
    Node(NodeArgs),
    /// Manage partitioned input streams
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Validate, upload and activate a handler version
    Deploy(DeployArgs),
    /// List deployments and what each node made of them
    Ls(LsArgs),
    /// Live nodes, and for every partition its owner, pending, redelivered and lag
    Status(LsArgs),
    /// Publish test traffic
    Publish(PublishArgs),
    /// Inspect, replay and purge dead letters
    #[command(subcommand)]
    Dlq(crate::dlq::commands::DlqCommand),
    /// Run weir end to end on an embedded nats-server
    Demo(crate::demo::DemoArgs),
    /// Measure weir against a plain JetStream consumer on the same data
    Bench(crate::bench::BenchArgs),
}

/// `weir node` options.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's name [default: <hostname>-<pid>]
    #[arg(long)]
    pub node_id: Option<String>,
    /// Where an embedded nats-server keeps its data
    #[arg(long, default_value = ".weir")]
    pub data_dir: PathBuf,
    /// On SIGTERM or Ctrl-C, how long to wait for the messages in hand before exiting anyway
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long this node's membership record lives without renewal: how soon the other nodes
    /// notice that it died (whole seconds)
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub membership_ttl: Duration,
    /// How long a partition stays pinned to a node that stopped pulling: after a crash, its
    /// partitions resume elsewhere within the membership TTL plus this
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub pin_timeout: Duration,
}

/// `weir stream` subcommands.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create an input stream partitioned by key (with --partitions), or a plain stream, e.g.
    /// for a handler's outputs (without)
    Create(StreamCreateArgs),
}

/// `weir stream create` options.
#[derive(Debug, Args)]
pub struct StreamCreateArgs {
    /// Stream name
    pub name: String,
    /// The subjects publishers use, with the key as a `*` token, e.g. `orders.*.>`
    #[arg(long)]
    pub subjects: String,
    /// Number of partitions (fixed for the stream's life); omit for a plain output stream
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Which `*` tokens form the key, 1-based, comma-separated [default: 1]
    #[arg(long, value_delimiter = ',')]
    pub key_tokens: Vec<u32>,
    /// Stream replicas
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

/// `weir deploy` options; the defaults are those of [`crate::deployment`].
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The handler component (.wasm)
    pub file: PathBuf,
    /// Tenant name
    #[arg(long)]
    pub tenant: String,
    /// Handler name
    #[arg(long)]
    pub name: String,
    /// Partitioned input stream
    #[arg(long)]
    pub stream: String,
    /// Subject pattern the handler may publish to (repeatable)
    #[arg(long = "output", value_name = "PATTERN")]
    pub outputs: Vec<String>,
    /// Configuration handed to the handler's init (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Deliveries before a message becomes a dead letter
    #[arg(long, default_value_t = crate::deployment::DEFAULT_MAX_DELIVER)]
    pub max_deliver: u32,
    /// How long the server waits for an answer before redelivering
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Delays after a retry without delay or a failure, by delivery attempt
    #[arg(long, default_value = "1s,5s,30s", value_delimiter = ',', value_parser = parse_duration)]
    pub backoff: Vec<Duration>,
    /// Linear memory per instance
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_memory: u64,
    /// Deadline for one handler call
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handler_timeout: Duration,
    /// Outputs one call may publish
    #[arg(long, default_value_t = crate::deployment::DEFAULT_MAX_OUTPUTS_PER_CALL)]
    pub max_outputs: u32,
    /// Output bytes one call may publish
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub max_output_bytes: u64,
}

/// `weir ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `weir publish` options.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Subject; may use {key}, {n} and {seq}, e.g. `orders.{key}.created`
    pub subject: String,
    /// Number of messages
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Number of distinct keys (k0, k1, ...), taken in turn
    #[arg(long, default_value_t = 1)]
    pub keys: u64,
    /// Payload template; may use {key}, {n} (1.. over all) and {seq} (1.. per key)
    #[arg(long, conflicts_with = "payload_file")]
    pub template: Option<String>,
    /// Send this file's bytes as every payload
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Header to set on every message (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Connects to NATS at `urls` (one URL, or several separated by commas, for a cluster), naming
/// them in the error.
pub async fn connect(urls: &str, creds: Option<&Path>) -> anyhow::Result<async_nats::Client> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|url| {
            url.trim()
                .parse()
                .with_context(|| format!("invalid NATS URL {url:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut options = async_nats::ConnectOptions::new()
        .name("weir")
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("failed to read credentials {}", creds.display()))?;
    }
    options
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {urls}"))
}

impl NatsArgs {
    fn url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        connect(self.url(), self.creds.as_deref()).await
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(args) => run_node(&cli.nats, args).await,
        Command::Stream(StreamCommand::Create(args)) => stream_create(&cli.nats, args).await,
        Command::Deploy(args) => run_deploy(&cli.nats, args).await,
        Command::Ls(args) => ls(&cli.nats, args).await,
        Command::Status(args) => status(&cli.nats, args).await,
        Command::Publish(args) => publish(&cli.nats, args).await,
        Command::Dlq(command) => {
            crate::dlq::commands::run(&jetstream::new(cli.nats.connect().await?), command).await
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Bench(args) => crate::bench::run(&cli.nats, args).await,
    }
}

async fn run_node(nats: &NatsArgs, args: NodeArgs) -> anyhow::Result<()> {
    // With no URL given, a reachable server at the default URL is used; failing that, the node
    // brings its own. An explicit URL that does not answer is an error.
    let (client, _server) = match &nats.nats_url {
        Some(url) => (connect(url, nats.creds.as_deref()).await?, None),
        None => match connect(DEFAULT_NATS_URL, nats.creds.as_deref()).await {
            Ok(client) => (client, None),
            Err(_) => {
                let server = NatsServer::start(ServerOptions {
                    port: Some(4222),
                    data_dir: Some(args.data_dir.clone()),
                    cluster: None,
                })
                .context(
                    "no NATS server at the default URL, and the embedded one failed to start",
                )?;
                eprintln!(
                    "weir: no NATS server at {DEFAULT_NATS_URL}; started an embedded {} at {} (JetStream data in {})",
                    server.version(),
                    server.url(),
                    args.data_dir.display()
                );
                (connect(&server.url(), None).await?, Some(server))
            }
        },
    };
    let config = NodeConfig {
        node_id: args.node_id.unwrap_or_else(node::default_node_id),
        membership: crate::membership::MembershipConfig {
            ttl: args.membership_ttl,
        },
        pin_timeout: args.pin_timeout,
        claim_all_partitions: false,
        dlq_mover: true,
    };
    let mut node = node::start(client, config).await?;
    eprintln!("weir: node {} running; Ctrl-C to stop", node.id());
    tokio::select! {
        result = node.wait() => result,
        signal = shutdown_signal() => {
            signal?;
            eprintln!("weir: stopping node {} after the messages in hand", node.id());
            let id = node.id().to_owned();
            tokio::time::timeout(args.shutdown_timeout, node.shutdown()).await.with_context(|| {
                format!(
                    "node {id} did not stop within --shutdown-timeout {}; unacknowledged messages will be redelivered",
                    humantime::format_duration(args.shutdown_timeout)
                )
            })?
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn stream_create(nats: &NatsArgs, args: StreamCreateArgs) -> anyhow::Result<()> {
    let js = jetstream::new(nats.connect().await?);
    let Some(partitions) = args.partitions else {
        anyhow::ensure!(
            args.key_tokens.is_empty(),
            "--key-tokens needs --partitions"
        );
        crate::subject::validate_pattern(&args.subjects)
            .map_err(|e| anyhow::anyhow!("invalid --subjects {:?}: {e}", args.subjects))?;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: args.name.clone(),
            subjects: vec![args.subjects.clone()],
            num_replicas: args.replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to create stream {}", args.name))?;
        println!("created stream {} capturing {}", args.name, args.subjects);
        return Ok(());
    };
    let request = StreamRequest {
        name: args.name,
        subjects: args.subjects,
        partitions,
        key_tokens: args.key_tokens,
        replicas: args.replicas,
    };
    let info = partition::create_stream(&js, &request).await?;
    let transform = info
        .config
        .subject_transform
        .map(|t| t.destination)
        .unwrap_or_default();
    println!(
        "created stream {} with {} partitions: {} is stored as {}",
        request.name, request.partitions, request.subjects, transform
    );
    Ok(())
}

async fn run_deploy(nats: &NatsArgs, args: DeployArgs) -> anyhow::Result<()> {
    let id = DeploymentId::new(&args.tenant, &args.name)?;
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let js = jetstream::new(nats.connect().await?);
    let host = Host::new()?;
    let request = DeployRequest {
        id: id.clone(),
        component,
        stream: args.stream,
        limits: LimitsSpec {
            max_memory_bytes: args.max_memory,
            handler_timeout: args.handler_timeout,
            max_outputs_per_call: args.max_outputs,
            max_output_bytes_per_call: args.max_output_bytes,
        },
        retry: RetrySpec {
            max_deliver: args.max_deliver,
            ack_wait: args.ack_wait,
            backoff: args.backoff,
        },
        config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
        outputs: args.outputs,
    };
    let spec = deploy::deploy(&js, &host, request)
        .await
        .with_context(|| format!("cannot deploy {} as {id}", args.file.display()))?
        .spec;
    println!(
        "deployed {id} version {} on stream {} ({} partitions); running nodes pick it up now",
        spec.short_version(),
        spec.stream,
        spec.partitions
    );
    Ok(())
}

async fn ls(nats: &NatsArgs, args: LsArgs) -> anyhow::Result<()> {
    let js = jetstream::new(nats.connect().await?);
    let control = ControlPlane::open(&js).await?;
    let live: std::collections::BTreeSet<String> = crate::membership::live_nodes(&control.nodes)
        .await?
        .into_iter()
        .map(|record| record.node)
        .collect();
    let mut statuses = crate::status::node_statuses(&control).await?;
    // Records left by nodes that died are not news.
    for reports in statuses.values_mut() {
        reports.retain(|status| live.contains(&status.node));
    }
    let dead_letters = crate::dlq::counts(&js).await?;
    let rows: Vec<_> = deploy::list(&control)
        .await?
        .into_iter()
        .map(|deployed| {
            let key = format!("{}.{}", deployed.spec.tenant, deployed.spec.handler);
            let nodes = statuses.remove(&key).unwrap_or_default();
            let dead = dead_letters.get(&key).copied().unwrap_or(0);
            (deployed, nodes, dead)
        })
        .collect();
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(d, nodes, dead)| {
                serde_json::json!({
                    "deployment": d.spec,
                    "revision": d.revision,
                    "nodes": nodes,
                    "dead_letters": dead,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no deployments (deploy one with `weir deploy`)");
        return Ok(());
    }
    println!(
        "{:<12} {:<16} {:<12} {:<12} {:>10} {:>6}  {:<20} NODES",
        "TENANT", "HANDLER", "VERSION", "STREAM", "PARTITIONS", "DEAD", "OUTPUTS"
    );
    for (deployed, nodes, dead) in rows {
        let spec = &deployed.spec;
        let nodes = if nodes.is_empty() {
            "none yet".to_owned()
        } else {
            nodes
                .iter()
                .map(|s| match &s.error {
                    Some(error) => format!("{}: error: {error}", s.node),
                    None if s.revision != deployed.revision => {
                        format!("{}: switching (on revision {})", s.node, s.revision)
                    }
                    None => format!("{}: {} partitions", s.node, s.partitions.len()),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "{:<12} {:<16} {:<12} {:<12} {:>10} {:>6}  {:<20} {nodes}",
            spec.tenant,
            spec.handler,
            spec.short_version(),
            spec.stream,
            spec.partitions,
            dead,
            spec.outputs.join(",")
        );
    }
    Ok(())
}

async fn status(nats: &NatsArgs, args: LsArgs) -> anyhow::Result<()> {
    let js = jetstream::new(nats.connect().await?);
    let control = ControlPlane::open(&js).await?;
    let status = crate::status::read(&js, &control).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        crate::status::print(&status);
    }
    Ok(())
}

async fn publish(nats: &NatsArgs, args: PublishArgs) -> anyhow::Result<()> {
    let payload = match (&args.payload_file, &args.template) {
        (Some(file), _) => Payload::Fixed(
            std::fs::read(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .into(),
        ),
        (None, Some(template)) => Payload::Template(template.clone()),
        (None, None) => Payload::Template("message {n} for {key}".to_owned()),
    };
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    let traffic = Traffic {
        subject: args.subject,
        payload,
        count: args.count,
        keys: args.keys,
        headers: args.headers,
    };
    let js = jetstream::new(nats.connect().await?);
    let bar = progress_bar(args.count, "publishing");
    let started = Instant::now();
    traffic
        .publish(&js, |stored| bar.set_position(stored))
        .await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    println!(
        "published {} message(s) to {} in {:.2}s ({:.0} msg/s)",
        args.count,
        traffic.subject,
        elapsed.as_secs_f64(),
        args.count as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}
