//! `weir bench`: weir measured against a plain JetStream consumer, in the same run, on the
//! same server and the same data.
//!
//! - `raw`: one async-nats pull consumer per partition with weir's ack discipline (explicit
//!   ack awaited, MaxAckPending 1): the ceiling for in-order processing on this stack;
//! - `wasm`: a weir node running the no-op handler (`examples/noop`) on the same layout.
//!
//! Each mode gets its own stream with the same pre-published messages. The in-process cost of
//! one handler call (message in, outcome out) is measured on its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt as _;
use serde::Serialize;

use crate::cli::{NatsArgs, progress_bar};
use crate::connection::{Credentials, connect};
use crate::deploy::{self, DeployRequest};
use crate::deployment::{LimitsSpec, RetrySpec, instance_context};
use crate::embedded::{NatsServer, ServerOptions};
use crate::host::{HandlerInstance, Host, Message};
use crate::node::{self, NodeConfig};
use crate::partition::{self, StreamRequest};
use crate::resources::DeploymentId;
use crate::tenants::Quotas;
use crate::traffic::{Payload, Traffic};

/// `weir bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per mode
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Partitions of each benchmark stream
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Payload size in bytes
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Distinct keys
    #[arg(long, default_value_t = 256)]
    pub keys: u64,
    /// The no-op handler component
    #[arg(long, default_value = "target/guests/wasm32-wasip2/release/noop.wasm")]
    pub handler: PathBuf,
    /// Handler calls for the in-process call-cost measurement
    #[arg(long, default_value_t = 100_000)]
    pub calls: u64,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct RunResult {
    mode: &'static str,
    handler: &'static str,
    partitions: u32,
    messages: u64,
    payload_bytes: usize,
    msgs_per_sec: f64,
}

/// Runs both modes and prints the comparison.
pub async fn run(nats: &NatsArgs, args: BenchArgs) -> anyhow::Result<()> {
    let component = std::fs::read(&args.handler).with_context(|| {
        format!(
            "cannot read the no-op handler at {} (build it with `make guests`)",
            args.handler.display()
        )
    })?;
    anyhow::ensure!(
        args.messages > 0 && args.keys > 0,
        "--messages and --keys must be at least 1"
    );
    let (client, _server) = match &nats.nats_url {
        Some(url) => (connect(url, &nats.credentials()).await?, None),
        None => {
            let server = NatsServer::start(ServerOptions::default())?;
            (
                connect(&server.url(), &Credentials::none()).await?,
                Some(server),
            )
        }
    };
    let js = jetstream::new(client.clone());

    let call_ns = host_call_cost(&component, args.payload_bytes, args.calls).await?;
    let raw = raw_mode(&js, &args).await?;
    let wasm = wasm_mode(&client, &js, &args, component).await?;

    if args.json {
        let json = serde_json::json!({ "runs": [raw, wasm], "host_call_ns": call_ns });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<8} {:>10} {:>9} {:>8} {:>12}",
        "MODE", "HANDLER", "PARTITIONS", "MESSAGES", "PAYLOAD", "MSGS/S"
    );
    for run in [&raw, &wasm] {
        println!(
            "{:<6} {:<8} {:>10} {:>9} {:>8} {:>12.0}",
            run.mode,
            run.handler,
            run.partitions,
            run.messages,
            run.payload_bytes,
            run.msgs_per_sec
        );
    }
    println!("wasm/raw: {:.2}", wasm.msgs_per_sec / raw.msgs_per_sec);
    println!(
        "host call, no-op handler, {}-byte payload: {:.2} µs per message ({} calls)",
        args.payload_bytes,
        call_ns / 1_000.0,
        args.calls
    );
    Ok(())
}

/// Average nanoseconds for one `handle` call on a warm instance, in process.
async fn host_call_cost(component: &[u8], payload_bytes: usize, calls: u64) -> anyhow::Result<f64> {
    let host = Host::new()?;
    let version = host.compile(component)?;
    let budget = host.tenant_budget("bench", Quotas::default().budget());
    let context = Arc::new(instance_context(
        &LimitsSpec::default(),
        &[],
        &Default::default(),
        &budget,
    ));
    let mut instance = HandlerInstance::start(&version, context).await?;
    let mut message = Message {
        subject: "bench.k1.ev".into(),
        payload: vec![b'x'; payload_bytes],
        headers: vec![],
        stream: "BENCH".into(),
        stream_seq: 0,
        partition: 0,
        delivery_attempt: 1,
        published_at: 0,
    };
    let started = Instant::now();
    for seq in 0..calls.max(1) {
        message.stream_seq = seq;
        instance.handle(&message).await?;
    }
    Ok(started.elapsed().as_nanos() as f64 / calls.max(1) as f64)
}

/// Creates `name` with `args.partitions` partitions and stores `args.messages` messages in it;
/// returns how many landed in each partition.
async fn prepare_stream(
    js: &jetstream::Context,
    name: &str,
    args: &BenchArgs,
) -> anyhow::Result<Vec<u64>> {
    let prefix = name.to_lowercase();
    partition::create_stream(
        js,
        &StreamRequest {
            name: name.into(),
            subjects: format!("{prefix}.*.>"),
            partitions: args.partitions,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    let traffic = Traffic {
        subject: format!("{prefix}.{{key}}.ev"),
        payload: Payload::Fixed(Bytes::from(vec![b'x'; args.payload_bytes])),
        count: args.messages,
        keys: args.keys,
        headers: vec![],
    };
    let bar = progress_bar(args.messages, "publishing");
    traffic
        .publish(js, |stored| bar.set_position(stored))
        .await?;
    bar.finish_and_clear();
    let mut per_partition = vec![0; args.partitions as usize];
    for n in 0..args.messages {
        per_partition
            [partition::partition_of(&[&traffic.render(n).key], args.partitions) as usize] += 1;
    }
    Ok(per_partition)
}

async fn raw_mode(js: &jetstream::Context, args: &BenchArgs) -> anyhow::Result<RunResult> {
    let expected = prepare_stream(js, "BENCH_RAW", args).await?;
    let stream = js.get_stream("BENCH_RAW").await?;
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(args.messages, "raw");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, expected) in expected.into_iter().enumerate() {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("raw_p{p:03}")),
                filter_subject: partition::filter_subject(p as u32),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 1,
                ..Default::default()
            })
            .await?;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut messages = consumer
                .stream()
                .expires(Duration::from_secs(30))
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await?;
            for _ in 0..expected {
                let message = messages.next().await.context("pull stream ended")??;
                message
                    .double_ack()
                    .await
                    .map_err(anyhow::Error::from_boxed)?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let watcher = {
        let (done, bar) = (done.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for task in tasks {
        task.await.context("a raw consumer panicked")??;
    }
    let elapsed = started.elapsed();
    watcher.abort();
    bar.finish_and_clear();
    Ok(result("raw", "-", args, elapsed))
}

async fn wasm_mode(
    client: &async_nats::Client,
    js: &jetstream::Context,
    args: &BenchArgs,
    component: Vec<u8>,
) -> anyhow::Result<RunResult> {
    prepare_stream(js, "BENCH_WASM", args).await?;
    let node = node::start(client.clone(), NodeConfig::default()).await?;
    let request = DeployRequest {
        id: DeploymentId::new("bench", "noop")?,
        component,
        stream: "BENCH_WASM".into(),
        limits: LimitsSpec::default(),
        retry: RetrySpec::default(),
        config: Default::default(),
        outputs: vec![],
    };
    deploy::deploy(js, &Host::new()?, request).await?;
    // The clock starts once the spec is stored, so it includes the node compiling the handler
    // and creating its consumers, as the raw run includes creating its own.
    let started = Instant::now();
    let bar = progress_bar(args.messages, "wasm");
    let counters = node.counters();
    while counters.snapshot().acked < args.messages {
        bar.set_position(counters.snapshot().acked);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    node.shutdown().await?;
    Ok(result("wasm", "noop", args, elapsed))
}

fn result(
    mode: &'static str,
    handler: &'static str,
    args: &BenchArgs,
    elapsed: Duration,
) -> RunResult {
    RunResult {
        mode,
        handler,
        partitions: args.partitions,
        messages: args.messages,
        payload_bytes: args.payload_bytes,
        msgs_per_sec: args.messages as f64 / elapsed.as_secs_f64(),
    }
}
