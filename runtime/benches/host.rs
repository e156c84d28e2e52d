//! Micro-benchmarks of what weir does per message and per instance, in process, without NATS:
//!
//! - `host_call/<handler>`: one `handle` call on a warm instance, message in, outcome (and
//!   outputs) out, as a partition worker makes it on a guest thread;
//! - `instantiation/<allocation>`: a new instance of the no-op handler, `init` included, from
//!   the instance pool and from fresh mappings;
//! - `language/<language>/{instantiation,call}`: the orders example in Rust, Go, Python and
//!   JavaScript (the same behaviour in each): a new instance, `init` included, from the pool;
//!   and one order handled on a warm instance. Each also prints its instance's linear memory
//!   after `init` and one order.
//!
//! `cargo bench -p weir-runtime --bench host` after `make guests go-guests py-guests js-guests`.
//! Under `cargo test` each benchmark runs once, as a check that it still works.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use weir::deployment::instance_context;
use weir::host::{Allocation, HandlerInstance, HandlerVersion, Host, InstanceContext, Message};
use weir::outputs::OutputRules;
use weir::spec::LimitsSpec;
use weir::tenants::Quotas;

/// A component `make guests` built.
fn component(name: &str) -> Vec<u8> {
    built(&format!("wasm32-wasip2/release/{name}.wasm"), "guests")
}

/// What a `make` target built, under `target/guests`.
fn built(path: &str, target: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}): run `make {target}`",
            path.display()
        )
    })
}

struct Prepared {
    version: HandlerVersion,
    context: Arc<InstanceContext>,
}

fn prepare(host: &Host, name: &str, outputs: &[&str]) -> Prepared {
    prepare_component(host, name, &component(name), outputs)
}

fn prepare_component(host: &Host, name: &str, component: &[u8], outputs: &[&str]) -> Prepared {
    let version = host
        .compile(component)
        .unwrap_or_else(|error| panic!("{name} does not compile: {error}"));
    let budget = host.tenant_budget("bench", Quotas::default().budget());
    let outputs: Vec<String> = outputs.iter().map(|s| (*s).to_owned()).collect();
    let context = instance_context(
        &LimitsSpec::default(),
        OutputRules::allowing(&outputs),
        &Default::default(),
        &budget,
    );
    Prepared {
        version,
        context: Arc::new(context),
    }
}

fn message(payload: &[u8]) -> Message {
    Message {
        subject: "orders.k1.created".into(),
        payload: payload.to_vec(),
        headers: vec![],
        stream: "ORDERS".into(),
        stream_seq: 1,
        partition: 0,
        delivery_attempt: 1,
        published_at: 0,
    }
}

/// How long `iters` calls of `instance` with `message` take, one after the other.
async fn time_calls(instance: &mut HandlerInstance, message: &Message, iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        let handled = instance.handle(message).await;
        assert!(handled.is_ok(), "{handled:?}");
    }
    started.elapsed()
}

/// How long `iters` new instances of `prepared` take to start, `init` included.
async fn time_starts(prepared: &Prepared, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let instance = HandlerInstance::start(&prepared.version, prepared.context.clone()).await;
        spent += started.elapsed();
        // Dropping the instance returns its slot to the pool: not timed.
        assert!(instance.is_ok(), "{instance:?}");
    }
    spent
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("no tokio runtime: {error}"))
}

fn host_call(c: &mut Criterion) {
    let rt = runtime();
    let host = Host::new().unwrap_or_else(|error| panic!("no host: {error}"));
    let cases: [(&str, &[&str], Message); 2] = [
        ("noop", &[], message(&[b'x'; 128])),
        ("orders", &["enriched.>"], message(ORDER)),
    ];
    let mut group = c.benchmark_group("host_call");
    for (name, outputs, message) in cases {
        let prepared = prepare(&host, name, outputs);
        let mut instance = rt
            .block_on(HandlerInstance::start(&prepared.version, prepared.context))
            .unwrap_or_else(|failure| panic!("{name} does not start: {failure}"));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(time_calls(&mut instance, &message, iters)))
        });
    }
    group.finish();
}

fn instantiation(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("instantiation");
    for (name, allocation) in [
        ("pooling", Allocation::Pooling),
        ("on_demand", Allocation::OnDemand),
    ] {
        let host = Host::with_allocation(allocation)
            .unwrap_or_else(|error| panic!("no {name} host: {error}"));
        let prepared = prepare(&host, "noop", &[]);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(time_starts(&prepared, iters)))
        });
    }
    group.finish();
}

const ORDER: &[u8] =
    br#"{"order_id":"o1","customer":"k1","seq":1,"items":[{"sku":"sku-1","qty":2,"price_cents":1250}]}"#;

/// The orders example in each guest language: instantiation, one call, memory.
fn languages(c: &mut Criterion) {
    let rt = runtime();
    let host = Host::new().unwrap_or_else(|error| panic!("no host: {error}"));
    let go = weir::host::componentize(built("go/go-orders.wasm", "go-guests"))
        .unwrap_or_else(|error| panic!("go-orders does not become a component: {error}"));
    let examples = [
        ("rust", component("orders")),
        ("go", go),
        ("python", built("py/py-orders.wasm", "py-guests")),
        ("javascript", built("js/js-orders.wasm", "js-guests")),
    ];
    let message = message(ORDER);
    let mut group = c.benchmark_group("language");
    for (language, bytes) in examples {
        let prepared = prepare_component(&host, language, &bytes, &["enriched.>"]);
        group.bench_function(format!("{language}/instantiation"), |b| {
            b.iter_custom(|iters| rt.block_on(time_starts(&prepared, iters)))
        });
        let mut instance = rt
            .block_on(HandlerInstance::start(&prepared.version, prepared.context))
            .unwrap_or_else(|failure| panic!("{language} orders does not start: {failure}"));
        let handled = rt.block_on(instance.handle(&message));
        assert!(handled.is_ok(), "{handled:?}");
        println!(
            "language/{language}/memory: {:.1} MiB of linear memory after init and one order \
             ({} bytes of component)",
            instance.memory_bytes() as f64 / f64::from(1 << 20),
            bytes.len()
        );
        group.bench_function(format!("{language}/call"), |b| {
            b.iter_custom(|iters| rt.block_on(time_calls(&mut instance, &message, iters)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = host_call, instantiation, languages
}
criterion_main!(benches);
