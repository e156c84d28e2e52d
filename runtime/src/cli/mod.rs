//! The `weir` command line.

mod bench;
mod console;
mod demo;
mod dlq;
pub mod init;
mod lifecycle;
mod logs;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{parse_duration, parse_size};
use crate::connection::{
    Credentials, Refusals, Refused, RefusedOperation, connect, connect_watching,
};
use crate::control::{ControlPlane, DeploymentId};
use crate::deploy::{self, DeployRequest};
use crate::embedded::{NatsServer, ServerOptions};
use crate::host::{CompileCache, Host};
use crate::node::{self, NodeConfig};
use crate::outputs::{Coverage, Reserved};
use crate::partition::{self, StreamRequest};
use crate::spec::{LimitsSpec, RetrySpec};
use crate::tenants::TenantsConfig;
use crate::traffic::{Payload, Traffic};
use crate::{note, say};

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
    /// NATS user, with --password, for servers whose configuration lists users (a tenant's
    /// user may deploy only that tenant's handlers)
    #[arg(long, env = "NATS_USER", global = true)]
    pub user: Option<String>,
    /// The NATS user's password (prefer the environment variable: arguments show in `ps`)
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
    /// Prefix of the reply subjects instead of `_INBOX`, for a user allowed to receive replies
    /// only under its own prefix, e.g. `_INBOX_acme`
    #[arg(long, env = "NATS_INBOX_PREFIX", global = true)]
    pub inbox_prefix: Option<String>,
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
    /// Stop a handler everywhere and remove it (its dead letters are kept)
    Undeploy(lifecycle::UndeployArgs),
    /// Hold every partition of a handler after the message in hand
    Pause(lifecycle::HandlerArgs),
    /// Go on with a paused handler, in order
    Resume(lifecycle::HandlerArgs),
    /// List the versions of a handler that were deployed
    Versions(lifecycle::VersionsArgs),
    /// Make an earlier version of a handler current again
    Rollback(lifecycle::RollbackArgs),
    /// A handler's log lines and stdout/stderr from every node
    Logs(logs::LogsArgs),
    /// Inspect, replay and purge dead letters
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Inspect and repair the per-partition state of a handler
    #[command(subcommand)]
    State(state::StateCommand),
    /// Serve the web console: nodes, deployments, dead letters and logs, live
    Console(console::ConsoleArgs),
    /// Write a new handler project (Rust, Go, Python or JavaScript) with its unit test
    Init(init::InitArgs),
    /// Run weir end to end on an embedded nats-server
    Demo(demo::DemoArgs),
    /// Measure weir against a plain JetStream consumer on the same data
    Bench(bench::BenchArgs),
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
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub membership_ttl: Duration,
    /// How long a partition stays pinned to a node that stopped pulling without leaving: one cut
    /// off from the server (a crashed node's partitions resume elsewhere once its membership
    /// record expires)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub pin_timeout: Duration,
    /// The node's configuration file: tenants' quotas, allowed streams and subjects, and
    /// credentials (see the README's "Tenants")
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz);
    /// `off` serves none (see the README's "Observe")
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_http)]
    pub http: HttpAddr,
    /// Where to keep the machine code compiled from components, so that a version is compiled
    /// once per machine: a directory, or `off` [default: $WEIR_COMPILE_CACHE, else
    /// $XDG_CACHE_HOME/weir, else ~/.cache/weir]
    #[arg(long, value_name = "DIR|off", value_parser = parse_compile_cache)]
    pub compile_cache: Option<CompileCache>,
}

/// A component whose compile `weir deploy` says it waits for (a Python or JavaScript one, with
/// its interpreter; a Rust handler is tens of KiB).
const LARGE_COMPONENT: usize = 4 << 20;

/// The `--config` pairs as the deployment record keeps them: by key, each key once.
fn config_map(pairs: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut config = BTreeMap::new();
    for (key, value) in pairs {
        if let Some(first) = config.insert(key.clone(), value) {
            anyhow::bail!("--config {key} is given twice (first as {key}={first})");
        }
    }
    Ok(config)
}

fn parse_compile_cache(text: &str) -> Result<CompileCache, String> {
    match text {
        "" => Err("name a directory, or `off`".to_owned()),
        text => Ok(CompileCache::parse(text)),
    }
}

/// `weir node --http`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct HttpAddr(pub Option<std::net::SocketAddr>);

fn parse_http(text: &str) -> Result<HttpAddr, String> {
    if text == "off" {
        return Ok(HttpAddr(None));
    }
    text.parse().map(|addr| HttpAddr(Some(addr))).map_err(|_| {
        format!("{text:?} is not an address such as 127.0.0.1:9464 or [::1]:9464, nor `off`")
    })
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
    /// How long an output stream remembers a message's id, dropping a second message with it
    /// (output streams only): an output a node cut off or paused for longer than this sends
    /// late can be stored twice [default: the server's, 2m] (see the README's "Reliability")
    #[arg(long, value_parser = parse_duration)]
    pub duplicate_window: Option<Duration>,
}

/// `weir deploy` options; the defaults are those of [`crate::spec`].
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
    /// Messages of a partition in flight at once: delivered, being handled (one at a time, in
    /// order) or having their outputs stored
    #[arg(long, default_value_t = crate::spec::DEFAULT_WINDOW)]
    pub window: u32,
    /// Attempts before a message becomes a dead letter
    #[arg(long, default_value_t = crate::spec::DEFAULT_MAX_DELIVER)]
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
    #[arg(long, default_value_t = crate::spec::DEFAULT_MAX_OUTPUTS_PER_CALL)]
    pub max_outputs: u32,
    /// Output bytes one call may publish
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub max_output_bytes: u64,
    /// Where a new deployment starts on its stream: `all` (every message it holds), `new`
    /// (only messages stored after this deploy), a stream sequence, or a time (RFC 3339, or how
    /// long ago, e.g. `15m`). A redeploy keeps each partition's place [default: all]
    #[arg(long, value_name = "all|new|SEQ|TIME")]
    pub from: Option<crate::deploy::From>,
    /// Start the handler's state over, empty: needed to deploy a handler whose state was laid
    /// out over another partition count (the version running is paused first)
    #[arg(long)]
    pub reset_state: bool,
    /// Where to keep the machine code compiled to check the component: a directory, or `off`
    /// [default: as `weir node --compile-cache`]
    #[arg(long, value_name = "DIR|off", value_parser = parse_compile_cache)]
    pub compile_cache: Option<CompileCache>,
}

/// `weir ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Only this tenant's deployments [default: every tenant's, or, for a user who may read only
    /// one tenant's, the tenant named like the user]
    #[arg(long)]
    pub tenant: Option<String>,
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

impl NatsArgs {
    fn url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    /// Whose identity the command presents.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            creds: self.creds.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            inbox_prefix: self.inbox_prefix.clone(),
        }
    }

    /// Connects, keeping what the server refuses so that a refused command fails at once and
    /// says what was refused.
    async fn session(&self) -> anyhow::Result<Session> {
        let (client, refusals) = connect_watching(self.url(), &self.credentials()).await?;
        Ok(Session {
            js: jetstream::new(client),
            refusals,
            user: self.user.clone(),
        })
    }
}

/// A command's connection.
struct Session {
    js: jetstream::Context,
    refusals: Refusals,
    /// The user the command connected as, if it gave one.
    user: Option<String>,
}

impl Session {
    /// Runs `work`, which is `action`, failing it as soon as the server refuses something
    /// (see [`Refusals::guard`]).
    async fn guard<T>(
        &self,
        action: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.refusals.guard(action, work).await
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
        Command::Undeploy(args) => lifecycle::undeploy(&cli.nats.session().await?, args).await,
        Command::Pause(args) => lifecycle::pause(&cli.nats.session().await?, args, true).await,
        Command::Resume(args) => lifecycle::pause(&cli.nats.session().await?, args, false).await,
        Command::Versions(args) => lifecycle::versions(&cli.nats.session().await?, args).await,
        Command::Rollback(args) => lifecycle::rollback(&cli.nats.session().await?, args).await,
        Command::Logs(args) => logs::logs(&cli.nats.session().await?, args).await,
        Command::Dlq(command) => {
            let session = cli.nats.session().await?;
            session
                .guard("manage dead letters", dlq::run(&session.js, command))
                .await
        }
        Command::State(command) => {
            let session = cli.nats.session().await?;
            session
                .guard(
                    "read or write handler state",
                    state::run(&session.js, command),
                )
                .await
        }
        Command::Console(args) => console::run(&cli.nats, args).await,
        Command::Init(args) => init::run(args),
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(&cli.nats, args).await,
    }
}

async fn run_node(nats: &NatsArgs, args: NodeArgs) -> anyhow::Result<()> {
    // A mistake in the configuration is reported before anything starts.
    let tenants = match &args.config {
        Some(path) => TenantsConfig::load(path)?,
        None => TenantsConfig::default(),
    };
    // With no URL given, a reachable server at the default URL is used; failing that, the node
    // brings its own. An explicit URL that does not answer is an error.
    let (client, _server, url) = match &nats.nats_url {
        Some(url) => (connect(url, &nats.credentials()).await?, None, url.clone()),
        None => match connect(DEFAULT_NATS_URL, &nats.credentials()).await {
            Ok(client) => (client, None, DEFAULT_NATS_URL.to_owned()),
            Err(_) => {
                let server = NatsServer::start(ServerOptions {
                    port: Some(4222),
                    data_dir: Some(args.data_dir.clone()),
                    cluster: None,
                })
                .context(
                    "no NATS server at the default URL, and the embedded one failed to start",
                )?;
                note!(
                    "weir: no NATS server at {DEFAULT_NATS_URL}; started an embedded {} at {} (JetStream data in {})",
                    server.version(),
                    server.url(),
                    args.data_dir.display()
                );
                let url = server.url();
                (
                    connect(&url, &Credentials::none()).await?,
                    Some(server),
                    url,
                )
            }
        },
    };
    let config = NodeConfig {
        node_id: args.node_id.unwrap_or_else(node::default_node_id),
        membership: crate::ownership::membership::MembershipConfig {
            ttl: args.membership_ttl,
        },
        pin_timeout: args.pin_timeout,
        claim_all_partitions: false,
        builtin_handlers: false,
        dlq_mover: true,
        tenants,
        nats_urls: Some(url),
        worker_fault: None,
        http: args.http.0,
        compile_cache: args.compile_cache.unwrap_or(CompileCache::Default),
    };
    let mut node = node::start(client, config).await?;
    note!("weir: node {} running; Ctrl-C to stop", node.id());
    if let Some(addr) = node.http_addr() {
        note!("weir: metrics on http://{addr}/metrics, health on /healthz and /readyz");
    }
    tokio::select! {
        result = node.wait() => result,
        signal = shutdown_signal() => {
            signal?;
            note!("weir: stopping node {} after the messages in hand", node.id());
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
    let session = nats.session().await?;
    let action = format!("create stream {}", args.name);
    session
        .guard(&action, create_stream(&session.js, args))
        .await
}

async fn create_stream(js: &jetstream::Context, args: StreamCreateArgs) -> anyhow::Result<()> {
    let Some(partitions) = args.partitions else {
        anyhow::ensure!(
            args.key_tokens.is_empty(),
            "--key-tokens needs --partitions"
        );
        anyhow::ensure!(
            args.duplicate_window != Some(Duration::ZERO),
            "--duplicate-window must be longer than 0s"
        );
        crate::subject::validate_pattern(&args.subjects)
            .map_err(|e| anyhow::anyhow!("invalid --subjects {:?}: {e}", args.subjects))?;
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: args.name.clone(),
                subjects: vec![args.subjects.clone()],
                num_replicas: args.replicas,
                duplicate_window: args.duplicate_window.unwrap_or_default(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("failed to create stream {}", args.name))?;
        say!(
            "created stream {} capturing {}; a message id is remembered for {}",
            args.name,
            args.subjects,
            humantime::format_duration(stream.cached_info().config.duplicate_window)
        )?;
        return Ok(());
    };
    anyhow::ensure!(
        args.duplicate_window.is_none(),
        "--duplicate-window is for output streams (without --partitions)"
    );
    let request = StreamRequest {
        name: args.name,
        subjects: args.subjects,
        partitions,
        key_tokens: args.key_tokens,
        replicas: args.replicas,
    };
    let info = partition::create_stream(js, &request).await?;
    let transform = info
        .config
        .subject_transform
        .map(|t| t.destination)
        .unwrap_or_default();
    say!(
        "created stream {} with {} partitions: {} is stored as {}",
        request.name,
        request.partitions,
        request.subjects,
        transform
    )?;
    Ok(())
}

async fn run_deploy(nats: &NatsArgs, args: DeployArgs) -> anyhow::Result<()> {
    let id = DeploymentId::new(&args.tenant, &args.name)?;
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let session = nats.session().await?;
    let host = Host::with_cache(
        args.compile_cache
            .as_ref()
            .unwrap_or(&CompileCache::Default),
    )?;
    let request = DeployRequest {
        id: id.clone(),
        component,
        stream: args.stream,
        window: args.window,
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
        config: config_map(args.config)?,
        outputs: args.outputs,
        from: args.from,
        deployed_by: session.user.clone(),
        reset_state: args.reset_state,
    };
    if request.component.len() > LARGE_COMPONENT {
        note!(
            "weir: checking {} ({:.1} MB): the first compile of a large component on this \
             machine takes a while",
            args.file.display(),
            request.component.len() as f64 / 1e6
        );
    }
    let action = format!("deploy for tenant {}", id.tenant);
    let spec = session
        .guard(&action, deploy::deploy(&session.js, &host, request))
        .await
        .with_context(|| format!("cannot deploy {} as {id}", args.file.display()))?
        .spec;
    say!(
        "deployed {id} version {} on stream {} ({} partitions); running nodes pick it up now",
        spec.short_version(),
        spec.stream,
        spec.partitions
    )?;
    if spec.start != crate::spec::StartAt::All {
        say!("new partition consumers start at {}", spec.start)?;
    }
    if spec.paused {
        say!(
            "{id} is paused: `weir resume --tenant {} --name {}` runs it",
            id.tenant,
            id.handler
        )?;
    }
    let reserved = Reserved::default();
    for pattern in &spec.outputs {
        if reserved.coverage(pattern) == Coverage::Part {
            say!(
                "note: --output {pattern:?} also matches reserved subjects (`$…`, `_INBOX…`, \
                 `weir.…`); the handler may publish to every subject it matches but those"
            )?;
        }
    }
    Ok(())
}

/// Runs a listing of every tenant's deployments, or of `--tenant`'s. A user who may not read
/// every tenant's is shown the tenant named like the user: a tenant's user may read only its
/// own deployments and their status (see the README's "Who may deploy what").
async fn scoped<T, F, Fut>(session: &Session, tenant: Option<&str>, listing: F) -> anyhow::Result<T>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if let Some(tenant) = tenant {
        crate::control::validate_name("tenant", tenant)?;
        let action = format!("read tenant {tenant}'s deployments");
        return session
            .guard(&action, listing(Some(tenant.to_owned())))
            .await;
    }
    let every = session
        .guard("read every tenant's deployments", listing(None))
        .await;
    // Refused to read a record (a direct get), rather than, say, its replies or a bucket.
    let refused_a_read = |error: &anyhow::Error| {
        error.downcast_ref::<Refused>().is_some_and(|refused| {
            refused.refusal.operation == RefusedOperation::Publish
                && refused.refusal.subject.starts_with("$JS.API.DIRECT.GET.")
        })
    };
    let own = match (&every, &session.user) {
        (Err(error), Some(user)) if refused_a_read(error) => {
            crate::control::validate_name("tenant", user)
                .ok()
                .map(|()| user.clone())
        }
        _ => None,
    };
    let Some(own) = own else {
        return every;
    };
    note!("weir: user {own:?} may read only tenant {own}'s deployments; showing those");
    let action = format!("read tenant {own}'s deployments");
    session.guard(&action, listing(Some(own))).await
}

async fn ls(nats: &NatsArgs, args: LsArgs) -> anyhow::Result<()> {
    let session = nats.session().await?;
    let js = &session.js;
    let rows = scoped(&session, args.tenant.as_deref(), |tenant| async move {
        ls_rows(js, tenant.as_deref()).await
    })
    .await?;
    print_ls(rows, args.json)
}

/// A deployment as `weir ls` shows it: with what the live nodes made of it and its dead letters.
type LsRow = (deploy::Listed, Vec<crate::spec::NodeStatus>, u64);

async fn ls_rows(js: &jetstream::Context, tenant: Option<&str>) -> anyhow::Result<Vec<LsRow>> {
    // Nothing was ever deployed here.
    let Some(control) = ControlPlane::existing(js).await? else {
        return Ok(Vec::new());
    };
    let live: std::collections::BTreeSet<String> =
        crate::ownership::membership::live_nodes(&control.nodes)
            .await?
            .into_iter()
            .map(|record| record.node)
            .collect();
    let mut statuses = crate::status::node_statuses(&control, tenant).await?;
    // Records left by nodes that died are not news.
    for reports in statuses.values_mut() {
        reports.retain(|status| live.contains(&status.node));
    }
    let dead_letters = crate::dlq::counts(js, tenant).await?;
    Ok(deploy::list(&control, tenant)
        .await?
        .into_iter()
        .map(|listed| {
            let nodes = statuses.remove(&listed.key).unwrap_or_default();
            let dead = dead_letters.get(&listed.key).copied().unwrap_or(0);
            (listed, nodes, dead)
        })
        .collect())
}

fn print_ls(rows: Vec<LsRow>, json: bool) -> anyhow::Result<()> {
    if json {
        let json: Vec<_> = rows
            .iter()
            .map(|(listed, nodes, dead)| match &listed.spec {
                Ok(spec) => serde_json::json!({
                    "deployment": spec,
                    "state": crate::status::deployment_state(spec, nodes),
                    "revision": listed.revision,
                    "nodes": nodes,
                    "dead_letters": dead,
                }),
                Err(reason) => serde_json::json!({
                    "key": listed.key,
                    "revision": listed.revision,
                    "invalid": reason,
                    "nodes": nodes,
                    "dead_letters": dead,
                }),
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        say!("no deployments (deploy one with `weir deploy`)")?;
        return Ok(());
    }
    say!(
        "{:<12} {:<16} {:<12} {:<12} {:>10} {:<12} {:>6}  {:<20} NODES",
        "TENANT",
        "HANDLER",
        "VERSION",
        "STREAM",
        "PARTITIONS",
        "STATE",
        "DEAD",
        "OUTPUTS"
    )?;
    for (listed, reports, dead) in rows {
        let nodes = reports
            .iter()
            .map(|s| match &s.error {
                Some(error) => format!("{}: error: {error}", s.node),
                None if s.revision != listed.revision => {
                    format!("{}: switching (on revision {})", s.node, s.revision)
                }
                None => {
                    let troubled = [
                        (s.failing.len(), "failing"),
                        (s.waiting.len(), "waiting"),
                        (s.paused.len(), "paused"),
                    ]
                    .iter()
                    .filter(|(count, _)| *count > 0)
                    .map(|(count, what)| format!("{count} {what}"))
                    .collect::<Vec<_>>();
                    let troubled = if troubled.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", troubled.join(", "))
                    };
                    format!("{}: {} partitions{troubled}", s.node, s.partitions.len())
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        match &listed.spec {
            Ok(spec) => {
                let state = crate::status::deployment_state(spec, &reports);
                let nodes = if nodes.is_empty() { "none yet" } else { &nodes };
                say!(
                    "{:<12} {:<16} {:<12} {:<12} {:>10} {state:<12} {:>6}  {:<20} {nodes}",
                    spec.tenant,
                    spec.handler,
                    spec.short_version(),
                    spec.stream,
                    spec.partitions,
                    dead,
                    spec.outputs.join(",")
                )?;
            }
            Err(reason) => {
                let key = &listed.key;
                let (tenant, handler) = key.split_once('.').unwrap_or((key, ""));
                // Every node's report says why; with none, the record's own fault is the news.
                let nodes = if nodes.is_empty() {
                    format!("invalid record: {reason}")
                } else {
                    nodes
                };
                say!(
                    "{tenant:<12} {handler:<16} {:<12} {:<12} {:>10} {:<12} {dead:>6}  {:<20} {nodes}",
                    "-",
                    "-",
                    "-",
                    "not running",
                    "(invalid record)"
                )?;
            }
        }
    }
    Ok(())
}

async fn status(nats: &NatsArgs, args: LsArgs) -> anyhow::Result<()> {
    let session = nats.session().await?;
    let js = &session.js;
    let mut status = scoped(&session, args.tenant.as_deref(), |tenant| async move {
        match ControlPlane::existing(js).await? {
            Some(control) => crate::status::read(js, &control, tenant.as_deref()).await,
            None => Ok(crate::status::ClusterStatus::default()),
        }
    })
    .await?;
    // A user without the rights of weir's state buckets still gets the rest.
    let state = session.guard(
        "read the handlers' state",
        crate::status::add_state(js, &mut status),
    );
    if let Err(error) = state.await {
        note!("weir: what the handlers keep in state is not shown: {error:#}");
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        crate::status::print(&status)?;
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
    let session = nats.session().await?;
    let bar = progress_bar(args.count, "publishing");
    let started = Instant::now();
    let action = format!("publish to {}", traffic.subject);
    session
        .guard(
            &action,
            traffic.publish(&session.js, |stored| bar.set_position(stored)),
        )
        .await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    say!(
        "published {} message(s) to {} in {:.2}s ({:.0} msg/s)",
        args.count,
        traffic.subject,
        elapsed.as_secs_f64(),
        args.count as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
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
