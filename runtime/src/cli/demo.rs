//! `weir demo`: the whole path on an embedded server, in one command. It creates a partitioned
//! `ORDERS` stream and the `ENRICHED` and `TOTALS` output streams, deploys the orders example
//! and, beside it on the same stream, the totals example (which keeps each customer's running
//! total in state), publishes order events (some malformed, some with a pending payment), shows
//! live counts, and ends with a summary that checks every customer's enriched events arrived
//! in publish order and every customer's total in state is the sum of its orders.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::progress_bar;
use crate::connection::{Credentials, connect_watching};
use crate::control::DeploymentId;
use crate::deploy::{self, DeployRequest};
use crate::embedded::{NatsServer, ServerOptions};
use crate::host::Host;
use crate::metrics::CountersSnapshot;
use crate::node::{self, NodeConfig};
use crate::observe::console::{self, Console};
use crate::partition::{self, StreamRequest};
use crate::say;
use crate::spec::{LimitsSpec, RetrySpec};
use crate::traffic::{self, Payload, Traffic};

/// Every this many orders one is malformed, and is rejected.
const MALFORMED_EVERY: u64 = 97;
/// Every this many orders one has a pending payment, and is retried.
const PENDING_EVERY: u64 = 41;

/// `weir demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The orders example component
    #[arg(
        long,
        default_value = "target/guests/wasm32-wasip2/release/orders.wasm"
    )]
    pub handler: PathBuf,
    /// The totals example component, which keeps each customer's running total in state
    #[arg(
        long,
        default_value = "target/guests/wasm32-wasip2/release/totals.wasm"
    )]
    pub totals: PathBuf,
    /// Order events to publish
    #[arg(long, default_value_t = 2_000)]
    pub messages: u64,
    /// Distinct customers (keys)
    #[arg(long, default_value_t = 50)]
    pub customers: u64,
    /// Partitions of the ORDERS stream
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Where to serve the console while the demo runs [default: a free port]
    #[arg(long, default_value = "127.0.0.1:0")]
    pub console: std::net::SocketAddr,
    /// Keep the server, the node and the console running after the summary, until Ctrl-C
    #[arg(long)]
    pub stay: bool,
    /// Give up waiting for the handler after this long
    #[arg(long, default_value = "120s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

/// Runs the demo; fails if the per-customer order check fails.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let component = std::fs::read(&args.handler).with_context(|| {
        format!(
            "cannot read the orders example at {} (build it with `make guests`)",
            args.handler.display()
        )
    })?;
    let totals_component = std::fs::read(&args.totals).with_context(|| {
        format!(
            "cannot read the totals example at {} (build it with `make guests`)",
            args.totals.display()
        )
    })?;
    anyhow::ensure!(args.customers >= 1, "--customers must be at least 1");

    let server = NatsServer::start(ServerOptions::default())?;
    say!(
        "▸ started an embedded {} at {}",
        server.version(),
        server.url()
    )?;
    let (client, refusals) = connect_watching(&server.url(), &Credentials::none()).await?;
    let js = jetstream::new(client.clone());

    let orders = StreamRequest {
        name: "ORDERS".into(),
        subjects: "orders.*.>".into(),
        partitions: args.partitions,
        key_tokens: vec![],
        replicas: 1,
    };
    partition::create_stream(&js, &orders).await?;
    for (name, subjects) in [("ENRICHED", "enriched.>"), ("TOTALS", "totals.>")] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to create stream {name}"))?;
    }
    say!(
        "▸ created stream ORDERS (orders.<customer>.<event>, {} partitions), ENRICHED and TOTALS",
        args.partitions
    )?;

    let config = NodeConfig {
        // Any free port: the demo's node is not the only thing a machine may run.
        http: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..NodeConfig::default()
    };
    let node = node::start(client.clone(), config).await?;
    if let Some(addr) = node.http_addr() {
        say!("▸ the node's metrics are on http://{addr}/metrics (health: /healthz, /readyz)")?;
    }
    let console = console::bind(args.console).await?;
    say!(
        "▸ the console is on http://{}/{}",
        console.local_addr()?,
        if args.stay {
            ""
        } else {
            " (`weir demo --stay` keeps it open after the summary)"
        }
    )?;
    let stop_console = CancellationToken::new();
    tokio::spawn(console::serve(
        console,
        Console {
            js: js.clone(),
            refusals,
            tenant: None,
        },
        stop_console.clone(),
    ));
    let id = DeploymentId::new("demo", "orders")?;
    let spec = deploy::deploy(
        &js,
        &Host::new()?,
        DeployRequest {
            id: id.clone(),
            component,
            stream: "ORDERS".into(),
            window: crate::spec::DEFAULT_WINDOW,
            limits: LimitsSpec::default(),
            retry: RetrySpec {
                backoff: vec![Duration::from_millis(200)],
                ..RetrySpec::default()
            },
            config: BTreeMap::from([
                ("region".into(), "eu-west".into()),
                ("pending_delay".into(), "150".into()),
            ]),
            outputs: vec!["enriched.>".into()],
            from: None,
            deployed_by: None,
            reset_state: false,
        },
    )
    .await?
    .spec;
    say!(
        "▸ deployed {} version {} on node {}",
        id,
        spec.short_version(),
        node.id()
    )?;
    let totals_id = DeploymentId::new("demo", "totals")?;
    let totals_spec = deploy::deploy(
        &js,
        &Host::new()?,
        DeployRequest {
            id: totals_id.clone(),
            component: totals_component,
            stream: "ORDERS".into(),
            window: crate::spec::DEFAULT_WINDOW,
            limits: LimitsSpec::default(),
            retry: RetrySpec::default(),
            config: BTreeMap::from([("milestone_cents".into(), MILESTONE_CENTS.to_string())]),
            outputs: vec!["totals.>".into()],
            from: None,
            deployed_by: None,
            reset_state: false,
        },
    )
    .await?
    .spec;
    say!(
        "▸ deployed {} version {} beside it: each customer's running total, kept in state",
        totals_id,
        totals_spec.short_version(),
    )?;

    let traffic = Traffic {
        subject: "orders.{key}.created".into(),
        payload: Payload::Template(String::new()),
        count: args.messages,
        keys: args.customers,
        headers: vec![],
    };
    let orders: Vec<_> = (0..args.messages)
        .map(|n| order_event(&traffic, n))
        .collect();
    let bar = progress_bar(args.messages, "publishing");
    for (subject, payload) in &orders {
        js.publish(subject.clone(), payload.clone().into())
            .await?
            .await
            .context("failed to publish an order")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let malformed = (0..args.messages).filter(|n| is_malformed(*n)).count() as u64;
    say!(
        "▸ published {} orders for {} customers ({malformed} malformed)",
        args.messages,
        args.customers
    )?;

    let started = Instant::now();
    let counters = node.counters();
    let live = std::io::stdout().is_terminal();
    let line = |c: &CountersSnapshot| {
        format!(
            "  processed {:>6}  retried {:>4}  rejected {:>4}  failed {:>3}  outputs {:>6}",
            c.acked, c.retried, c.rejected, c.failed, c.outputs
        )
    };
    let mut last = CountersSnapshot::default();
    while started.elapsed() < args.timeout {
        last = counters.snapshot();
        if live {
            crate::terminal::text(&format!("\r{}", line(&last)))?;
        }
        // Every order, by each of the two handlers.
        if last.acked + last.rejected >= 2 * args.messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if live {
        say!("")?;
    } else {
        say!("{}", line(&last))?;
    }
    let elapsed = started.elapsed();

    let outputs = traffic::read_stream(&js, "ENRICHED").await?;
    let report = check_order(&outputs, &traffic, args.messages);
    let dead_letters = wait_dead_letters(&js, last.rejected).await?;
    let totals = check_totals(&js, &totals_id, &orders, &args).await;
    let milestones = traffic::read_stream(&js, "TOTALS").await?.len();

    let summary = summary(&args, &last, elapsed, outputs.len(), &dead_letters, report)
        .and_then(|()| totals_summary(totals, milestones));
    if args.stay {
        say!("▸ still running, for a look at the console: Ctrl-C to stop")?;
        super::shutdown_signal().await?;
    }
    stop_console.cancel();
    node.shutdown().await?;
    drop(server);
    summary
}

/// Prints what the demo did, and fails if a rejected order is not a dead letter or a
/// customer's events are out of order.
fn summary(
    args: &DemoArgs,
    last: &CountersSnapshot,
    elapsed: Duration,
    outputs: usize,
    dead_letters: &[crate::dlq::records::DeadLetter],
    report: Result<usize, String>,
) -> anyhow::Result<()> {
    say!("▸ summary")?;
    say!(
        "  orders handled   {} in {:.1}s, by each of the two handlers",
        (last.acked + last.rejected) / 2,
        elapsed.as_secs_f64()
    )?;
    say!("  enriched events  {}", outputs)?;
    say!(
        "  retried          {} (pending payments wait and come back)",
        last.retried
    )?;
    say!(
        "  rejected         {} (malformed orders, terminated with the reason by both handlers)",
        last.rejected
    )?;
    match dead_letters.first() {
        Some(example) => say!(
            "  dead letters     {} in WEIR_DLQ, e.g. #{}: {}, {:?} ({})",
            dead_letters.len(),
            example.id,
            example.reason.map_or("?", |r| r.as_str()),
            example.last_error,
            example.subject.as_deref().unwrap_or("?"),
        )?,
        None => say!("  dead letters     none")?,
    }
    anyhow::ensure!(
        dead_letters.len() as u64 == last.rejected,
        "{} rejected orders but {} dead letters",
        last.rejected,
        dead_letters.len()
    );
    match report {
        Ok(checked) => {
            say!(
                "  per-customer order: OK ({checked} events over {} customers, each in publish order)",
                args.customers
            )?;
            Ok(())
        }
        Err(problem) => anyhow::bail!("per-customer order check failed: {problem}"),
    }
}

/// The dead letters, once there are `expected` of them (the mover copies each rejected order
/// moments after its rejection), or whatever there is after a few seconds.
async fn wait_dead_letters(
    js: &async_nats::jetstream::Context,
    expected: u64,
) -> anyhow::Result<Vec<crate::dlq::records::DeadLetter>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let letters = crate::dlq::records::list(js, None, None).await?;
        if letters.len() as u64 >= expected || Instant::now() >= deadline {
            return Ok(letters);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The totals example publishes a milestone each time a customer's total passes a multiple of
/// this.
const MILESTONE_CENTS: u64 = 100_000;

/// Checks each customer's total in the totals handler's state against the sum of its
/// well-formed orders. Returns how many customers were checked.
async fn check_totals(
    js: &async_nats::jetstream::Context,
    id: &DeploymentId,
    orders: &[(String, String)],
    args: &DemoArgs,
) -> Result<usize, String> {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (n, (_, payload)) in orders.iter().enumerate() {
        if is_malformed(n as u64) {
            continue;
        }
        let order: serde_json::Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let customer = order["customer"].as_str().unwrap_or_default().to_owned();
        let total: u64 = order["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                item["qty"].as_u64().unwrap_or(0) * item["price_cents"].as_u64().unwrap_or(0)
            })
            .sum();
        *expected.entry(customer).or_default() += total;
    }
    let bucket = crate::state::StateBucket::open(js, &id.tenant)
        .await
        .map_err(|e| format!("{e:#}"))?;
    for (customer, want) in &expected {
        let partition = partition::partition_of(&[customer.as_str()], args.partitions);
        let stored = bucket
            .get(id, partition, &format!("total/{customer}"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let got = stored.as_deref().map(String::from_utf8_lossy);
        if got.as_deref() != Some(want.to_string().as_str()) {
            return Err(format!(
                "customer {customer}: its orders sum to {want} cents, its total in state is {got:?}"
            ));
        }
    }
    Ok(expected.len())
}

/// Prints what the totals handler kept, and fails if a total is not the sum of its orders.
fn totals_summary(totals: Result<usize, String>, milestones: usize) -> anyhow::Result<()> {
    match totals {
        Ok(customers) => say!(
            "  running totals: OK ({customers} customers, each the sum of its orders, kept in \
             state exactly once; {milestones} milestone(s) of {MILESTONE_CENTS} cents published)"
        ),
        Err(problem) => anyhow::bail!("running totals check failed: {problem}"),
    }
}

fn is_malformed(n: u64) -> bool {
    n % MALFORMED_EVERY == MALFORMED_EVERY - 1
}

fn order_event(traffic: &Traffic, n: u64) -> (String, String) {
    let message = traffic.render(n);
    if is_malformed(n) {
        return (
            message.subject,
            format!(
                "{{\"order_id\": \"o-{n}\", \"customer\": \"{}\", oops",
                message.key
            ),
        );
    }
    let payment = if n.is_multiple_of(PENDING_EVERY) {
        "pending"
    } else {
        "ok"
    };
    let payload = format!(
        r#"{{"order_id":"o-{n}","customer":"{key}","seq":{seq},"payment":"{payment}","items":[{{"sku":"A-{sku}","qty":{qty},"price_cents":{price}}}]}}"#,
        key = message.key,
        seq = message.seq,
        sku = n % 13,
        qty = 1 + n % 3,
        price = 250 + (n * 37) % 20_000,
    );
    (message.subject, payload)
}

/// Checks that each customer's enriched events carry exactly the sequence numbers of its
/// well-formed orders, in increasing order. Returns how many events were checked.
fn check_order(
    outputs: &[async_nats::jetstream::message::StreamMessage],
    traffic: &Traffic,
    count: u64,
) -> Result<usize, String> {
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in (0..count).filter(|n| !is_malformed(*n)) {
        let message = traffic.render(n);
        expected.entry(message.key).or_default().push(message.seq);
    }
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for output in outputs {
        let event: serde_json::Value = serde_json::from_slice(&output.payload)
            .map_err(|e| format!("unreadable enriched event: {e}"))?;
        let customer = event["customer"].as_str().unwrap_or_default().to_owned();
        seen.entry(customer)
            .or_default()
            .push(event["seq"].as_u64().unwrap_or_default());
    }
    for (customer, want) in &expected {
        let got = seen.get(customer).map(Vec::as_slice).unwrap_or_default();
        if got != want.as_slice() {
            return Err(format!(
                "customer {customer}: expected sequence {want:?}, got {got:?}"
            ));
        }
    }
    Ok(outputs.len())
}
