//! Go guests through the real host: the Go orders example (examples/go-orders), built with
//! mainline Go as a WASI preview1 reactor and made a component as `weir deploy` makes one,
//! agrees with the Rust orders example message for message, and survives large messages, many
//! headers and a long run of garbage-heavy calls in bounded memory. A Go test guest
//! (tests/guests/go-scripted) panics and allocates on demand.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use weir::control::DeploymentId;
use weir::deploy::DeployRequest;
use weir::host::{
    CallLimits, Handled, HandlerFailure, HandlerInstance, HandlerVersion, Header, Host,
    InstanceContext, Message, Outcome, Output, componentize,
};
use weir::outputs::OutputRules;
use weir::spec::{LimitsSpec, RetrySpec};

use crate::support::{Env, INPUT, OUTPUT, default_budget, guest};

fn limits() -> CallLimits {
    CallLimits {
        max_memory_bytes: 64 << 20,
        handler_timeout: Duration::from_secs(10),
        max_outputs_per_call: 10,
        max_output_bytes_per_call: 4 << 20,
    }
}

/// A Go guest, built with mainline Go, made a component as `weir deploy` makes one, and
/// compiled: once per test run, since compiling a Go component takes a while.
pub(crate) struct GoGuest {
    /// Where its source is, from the repository root.
    dir: &'static str,
    core: OnceLock<Vec<u8>>,
    compiled: OnceLock<HandlerVersion>,
}

static GO_ORDERS: GoGuest = GoGuest {
    dir: "examples/go-orders",
    core: OnceLock::new(),
    compiled: OnceLock::new(),
};
static GO_SCRIPTED: GoGuest = GoGuest {
    dir: "tests/guests/go-scripted",
    core: OnceLock::new(),
    compiled: OnceLock::new(),
};
static GO_TOTALS: GoGuest = GoGuest {
    dir: "examples/go-totals",
    core: OnceLock::new(),
    compiled: OnceLock::new(),
};
pub(crate) static GO_CONFORMANCE: GoGuest = GoGuest {
    dir: "tests/guests/go-conformance",
    core: OnceLock::new(),
    compiled: OnceLock::new(),
};
static RUST_ORDERS: OnceLock<HandlerVersion> = OnceLock::new();

impl GoGuest {
    /// The core module Go builds: what a user hands `weir deploy`.
    fn core(&self) -> &[u8] {
        self.core.get_or_init(|| build_go(self.dir))
    }

    pub(crate) fn version(&self) -> &HandlerVersion {
        self.compiled.get_or_init(|| {
            let component = componentize(self.core().to_vec())
                .unwrap_or_else(|e| panic!("{} does not become a component: {e}", self.dir));
            compile(&component)
        })
    }
}

fn rust_orders() -> &'static HandlerVersion {
    RUST_ORDERS.get_or_init(|| compile(&guest("orders")))
}

pub(crate) fn compile(component: &[u8]) -> HandlerVersion {
    Host::new()
        .expect("host")
        .compile(component)
        .expect("the component compiles")
}

/// Builds the Go module in `dir` into a WASI preview1 reactor and returns its bytes.
fn build_go(dir: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv_go = root.join(".venv/bin/go");
    let go = if venv_go.exists() {
        venv_go
    } else {
        PathBuf::from("go")
    };
    let name = Path::new(dir).file_name().expect("a directory name");
    let out = root
        .join("target/guests/go")
        .join(name)
        .with_extension("wasm");
    let status = std::process::Command::new(&go)
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(root.join(dir))
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (install Go with scripts/bootstrap.sh): {e}",
                go.display()
            )
        });
    assert!(status.success(), "building {dir} failed");
    std::fs::read(&out).unwrap_or_else(|e| panic!("cannot read {}: {e}", out.display()))
}

async fn start(
    version: &HandlerVersion,
    config: &[(&str, &str)],
) -> Result<HandlerInstance, HandlerFailure> {
    let context = Arc::new(InstanceContext {
        limits: limits(),
        outputs: OutputRules::allowing(&["enriched.>".into(), "out.>".into()]),
        budget: default_budget(),
        logs: None,
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    });
    HandlerInstance::start(version, context).await
}

fn message(payload: impl Into<Vec<u8>>, delivery_attempt: u32) -> Message {
    Message {
        subject: "orders.c42.created".into(),
        payload: payload.into(),
        headers: vec![],
        stream: "ORDERS".into(),
        stream_seq: 17,
        partition: 3,
        delivery_attempt,
        published_at: 1_700_000_000_000_000_000,
    }
}

/// A call's result in a form two handlers can be compared by: serde_json's and Go's texts for a
/// malformed order differ after "malformed order:", so only that much of such a reason counts.
fn comparable(result: Result<Handled, HandlerFailure>) -> String {
    match result {
        Ok(handled) => {
            let outcome = match handled.outcome {
                Outcome::Ack => "ack".to_owned(),
                Outcome::Retry(delay) => format!("retry {delay:?}"),
                Outcome::Reject(reason) if reason.starts_with("malformed order:") => {
                    "reject malformed order:".to_owned()
                }
                Outcome::Reject(reason) => format!("reject {reason}"),
            };
            let outputs: Vec<String> = handled
                .outputs
                .iter()
                .map(|o| {
                    format!(
                        "{} {:?} {}",
                        o.subject,
                        o.headers,
                        String::from_utf8_lossy(&o.payload)
                    )
                })
                .collect();
            format!("{outcome} {outputs:?}")
        }
        Err(failure) => format!("failure {failure}"),
    }
}

/// Message in, outcome and outputs out: the same table for both examples.
const VECTORS: &[(&str, u32)] = &[
    (
        r#"{"order_id":"o-1","customer":"c42","seq":7,"items":[{"sku":"A","qty":2,"price_cents":1500},{"sku":"B","qty":1,"price_cents":999}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-2","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":10000}],"payment":"paid","extra":[1,{"x":null}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-3","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":99999}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-4","customer":"c1","items":[{"sku":"A","qty":4,"price_cents":25000}]}"#,
        2,
    ),
    (
        "{\"order_id\":\"q\\\"b\\\\s\\u0001\\u001f\u{2028}é<>&\\b\\f\\n\\r\\t\u{7f}\",\"customer\":\"kundé-ü\",\"items\":[{\"sku\":\"€\",\"qty\":1,\"price_cents\":1}]}",
        1,
    ),
    (r#"{"order_id":"o-5","customer":"c1","items":[]}"#, 1),
    (
        r#"{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}"#,
        1,
    ),
    (
        r#"{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}"#,
        2,
    ),
    (
        r#"{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}"#,
        3,
    ),
    (
        r#"{"order_id":"o-7","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":null}"#,
        1,
    ),
    (
        r#"{"order_id":"o-8","customer":"c1","items":[{"sku":"A","qty":4294967295,"price_cents":18446744073709551615},{"sku":"B","qty":2,"price_cents":1}]}"#,
        1,
    ),
    ("not json", 1),
    (
        r#"{"order_id":null,"customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"ORDER_ID":"o-9","order_id":"o-9","Customer":"x","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-11","customer":"c1","items":[{"sku":"A","qty":-1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-13","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]} x"#,
        1,
    ),
    (r#"["o-16","c1",1,[["A",1,2]],null]"#, 1),
    (
        r#"{"order_id":"o-17","order_id":"o-17b","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    // serde refuses only a known field given twice: an unknown one, or a key repeated inside a
    // skipped value or inside an item, is no reason to refuse the order (nor to call an order
    // without items malformed).
    (
        r#"{"order_id":"o-19","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"x":1,"x":2}"#,
        1,
    ),
    (
        r#"{"order_id":"o-20","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"x":{"a":1,"a":[{"b":1,"b":2}]}}"#,
        1,
    ),
    (
        r#"{"order_id":"o-21","customer":"c1","items":[{"sku":"A","z":1,"qty":1,"price_cents":1,"z":2}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-22","customer":"c1","items":[],"x":1,"x":2}"#,
        1,
    ),
    // A key of the order or an item is read as a string, known field or not, and serde_json
    // refuses a lone surrogate escape in any string it reads (not in one it skips).
    (
        r#"{"order_id":"o-23","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"\ud800":1}"#,
        1,
    ),
    (
        r#"{"order_id":"o-24","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1,"\udc00":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-25\ud83d\u0041","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-26","customer":"c\udc00","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-27","customer":"c1","items":[{"sku":"\ud800","qty":1,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-28","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"\ud800"}"#,
        1,
    ),
    // serde_json reads -0 as a floating-point number, which no integer field takes.
    (
        r#"{"order_id":"o-29","customer":"c1","items":[{"sku":"A","qty":-0,"price_cents":1}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-30","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":-0}]}"#,
        1,
    ),
    (
        r#"{"order_id":"o-31","customer":"c1","seq":-0,"items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
    // An output subject the host refuses: publish fails inside the call, with an error string
    // the host writes into the guest's memory.
    (
        r#"{"order_id":"o-18","customer":"a b","items":[{"sku":"A","qty":1,"price_cents":1}]}"#,
        1,
    ),
];

/// Runs every vector through the Rust orders example and `other`, written in `language`, and
/// asserts that they agree.
pub(crate) async fn agrees_with_rust_orders(other: &HandlerVersion, language: &str) {
    let config = [("region", "ap-south"), ("pending_delay", "750")];
    let mut rust = start(rust_orders(), &config)
        .await
        .expect("Rust orders starts");
    let mut other = start(other, &config)
        .await
        .unwrap_or_else(|e| panic!("{language} orders does not start: {e}"));
    for (payload, delivery) in VECTORS {
        let msg = message(*payload, *delivery);
        let expected = comparable(rust.handle(&msg).await);
        let actual = comparable(other.handle(&msg).await);
        assert_eq!(actual, expected, "payload {payload} delivery {delivery}");
    }
}

/// `pending_delay` values that the orders examples must refuse with the same text, or take as
/// the same delay. (None past 9,223,372,036,854 ms: Go's `time.Duration` ends there.)
const PENDING_DELAYS: &[&str] = &[
    "soon",
    "",
    "+",
    "-5",
    "+5",
    "-0",
    "007",
    " 5",
    "0.5",
    "1e3",
    "1_000",
    "99999999999999999999x",
    "1844674407370955161x",
    "18446744073709551616",
    "1234567890123",
];

/// How the Rust orders example and `other`, written in `language`, take each of
/// [`PENDING_DELAYS`]: the same refusal, or the same retry of a pending order; asserted. Returns
/// the refusal of `pending_delay=soon`.
pub(crate) async fn refuses_like_rust_orders(other: &HandlerVersion, language: &str) -> String {
    let pending = message(
        r#"{"order_id":"o-p","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}"#,
        1,
    );
    let mut soon = None;
    for value in PENDING_DELAYS {
        let config = [("pending_delay", *value)];
        let taken = async |version| match start(version, &config).await {
            Ok(mut instance) => Ok(comparable(instance.handle(&pending).await)),
            Err(HandlerFailure::InitRefused(refusal)) => Err(refusal),
            Err(other) => panic!("pending_delay={value:?}: {other}"),
        };
        let rust = taken(rust_orders()).await;
        assert_eq!(
            taken(other).await,
            rust,
            "{language} orders, pending_delay={value:?}"
        );
        if *value == "soon" {
            soon = rust.err();
        }
    }
    soon.expect("Rust orders refuses pending_delay=soon")
}

/// Waits for the one dead letter, the input message `seq`, rejected as a malformed order.
pub(crate) async fn the_malformed_order_is_a_dead_letter(env: &Env, seq: u64) {
    let dead = env.wait_dead_letters(1).await;
    assert_eq!(dead[0].stream_seq, seq);
    assert!(
        dead[0]
            .term_reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with("malformed order:")),
        "{:?}",
        dead[0]
    );
}

/// Hands `msg` to `instance`, which must ack it with one output, and returns that output.
async fn the_one_output(instance: &mut HandlerInstance, msg: &Message) -> Output {
    let handled = instance
        .handle(msg)
        .await
        .expect("the Go handler takes the message");
    assert!(
        matches!(handled.outcome, Outcome::Ack),
        "{:?}",
        handled.outcome
    );
    assert_eq!(handled.outputs.len(), 1);
    handled.outputs.into_iter().next().expect("one output")
}

#[tokio::test]
async fn the_go_and_rust_orders_examples_agree_on_every_vector() {
    agrees_with_rust_orders(GO_ORDERS.version(), "Go").await;
}

#[tokio::test]
async fn the_go_and_rust_orders_examples_refuse_the_same_configuration() {
    assert_eq!(
        refuses_like_rust_orders(GO_ORDERS.version(), "Go").await,
        "pending_delay must be a number of milliseconds: invalid digit found in string"
    );
}

#[tokio::test]
async fn a_go_handler_takes_a_1_mib_payload_with_100_non_ascii_headers() {
    let mut go = start(GO_ORDERS.version(), &[])
        .await
        .expect("Go orders starts");
    let order = r#"{"order_id":"o-big","customer":"ünïcödé","items":[{"sku":"Ä","qty":1,"price_cents":5}],"note":""#;
    let mut payload = order.as_bytes().to_vec();
    payload.resize((1 << 20) - 2, b'x');
    payload.extend_from_slice(br#""}"#);
    assert_eq!(payload.len(), 1 << 20);
    let mut msg = message(payload, 1);
    msg.subject = "orders.kundé.créé".into();
    msg.headers = (0..100)
        .map(|i| Header {
            name: format!("x-größe-{i}"),
            value: format!("wert ✓ {i} {}", "é".repeat(i)),
        })
        .collect();
    // Twice through the same instance: the second call's arguments reuse the first's memory.
    for _ in 0..2 {
        assert_eq!(
            the_one_output(&mut go, &msg).await.subject,
            "enriched.ünïcödé"
        );
    }
}

#[tokio::test]
async fn a_go_handler_takes_a_1_mib_message_of_nothing_but_one_byte_headers() {
    let mut go = start(GO_ORDERS.version(), &[])
        .await
        .expect("Go orders starts");
    let order =
        r#"{"order_id":"o-1","customer":"c","items":[{"sku":"s","qty":1,"price_cents":5}]}"#;
    // As many headers as NATS takes in 1 MiB: "NATS/1.0\r\n", "a:\r\n" each, then "\r\n". Each
    // costs the guest 17 bytes of argument memory, more than four times its wire size.
    let count = ((1 << 20) - 12 - order.len()) / 4;
    let mut msg = message(order, 1);
    msg.headers = (0..count)
        .map(|_| Header {
            name: "a".into(),
            value: String::new(),
        })
        .collect();
    let wire = 10 + 4 * count + 2 + order.len();
    assert!(wire <= 1 << 20, "{wire} bytes on the wire");
    the_one_output(&mut go, &msg).await;
}

#[tokio::test]
async fn a_warm_go_instance_handles_100000_garbage_heavy_messages_in_bounded_memory() {
    let mut go = start(GO_ORDERS.version(), &[])
        .await
        .expect("Go orders starts");
    let items: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"sku":"sku-{i}","qty":{},"price_cents":{}}}"#,
                i % 7 + 1,
                i * 13
            )
        })
        .collect();
    let mut after_warm_up = 0;
    for n in 0..100_000u64 {
        // About 2 KiB of JSON a message, decoded into fresh Go values and thrown away: the
        // collector runs many times, between and during calls.
        let payload = format!(
            r#"{{"order_id":"o-{n}","customer":"c{}","seq":{n},"items":[{}]}}"#,
            n % 50,
            items.join(",")
        );
        let mut msg = message(payload, 1);
        msg.stream_seq = n + 1;
        let handled = go
            .handle(&msg)
            .await
            .unwrap_or_else(|failure| panic!("message {n}: {failure}"));
        assert!(
            matches!(handled.outcome, Outcome::Ack),
            "message {n}: {:?}",
            handled.outcome
        );
        if n == 999 {
            after_warm_up = go.memory_bytes();
        }
    }
    let high_water = go.memory_bytes();
    println!(
        "Go orders linear memory: {} KiB after 1,000 messages, {} KiB after 100,000",
        after_warm_up >> 10,
        high_water >> 10
    );
    assert!(
        high_water <= after_warm_up + (16 << 20),
        "memory kept growing: {after_warm_up} bytes after 1,000 messages, {high_water} after 100,000"
    );
}

#[tokio::test]
async fn a_go_panic_is_a_trap_and_a_new_instance_takes_the_message() {
    let mut go = start(GO_SCRIPTED.version(), &[])
        .await
        .expect("go-scripted starts");
    let Err(HandlerFailure::Trap(detail)) = go.handle(&message("panic at the disco", 1)).await
    else {
        panic!("a Go panic did not trap");
    };
    assert!(
        detail.contains("panic: at the disco"),
        "the trap does not say what the Go guest said: {detail}"
    );
    let mut fresh = start(GO_SCRIPTED.version(), &[])
        .await
        .expect("go-scripted starts again");
    let handled = fresh
        .handle(&message("ack", 2))
        .await
        .expect("the next instance handles the redelivery");
    assert!(matches!(handled.outcome, Outcome::Ack));
}

#[tokio::test]
async fn heavy_allocation_inside_go_calls_collects_without_a_trap() {
    let mut go = start(GO_SCRIPTED.version(), &[])
        .await
        .expect("go-scripted starts");
    // 20 calls of 128 MiB each in 64 KiB pieces, with a 64 MiB memory limit: the collector must
    // run inside the calls, reading the clock through WASI, and memory must stay bounded.
    for n in 0..20 {
        let handled = go
            .handle(&message("churn 128", 1))
            .await
            .unwrap_or_else(|failure| panic!("call {n}: {failure}"));
        assert!(
            matches!(handled.outcome, Outcome::Ack),
            "call {n}: {:?}",
            handled.outcome
        );
    }
    println!(
        "go-scripted linear memory after 2.5 GiB of garbage: {} KiB",
        go.memory_bytes() >> 10
    );
}

#[tokio::test]
async fn weir_deploy_takes_the_go_core_module_and_a_node_runs_it() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    let request = DeployRequest {
        id: DeploymentId::new("acme", "go-orders")?,
        component: GO_ORDERS.core().to_vec(),
        stream: INPUT.into(),
        window: weir::spec::DEFAULT_WINDOW,
        limits: LimitsSpec::default(),
        retry: RetrySpec {
            backoff: vec![Duration::from_millis(100)],
            ..RetrySpec::default()
        },
        config: [("output_prefix", "out"), ("pending_delay", "50")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        outputs: vec!["out.>".into()],
        from: None,
        deployed_by: None,
        reset_state: false,
    };
    env.deploy_on(&node, request).await?;

    env.publish(
        "in.c1.created",
        r#"{"order_id":"o-1","customer":"c1","items":[{"sku":"A","qty":2,"price_cents":50}]}"#,
    )
    .await?;
    env.publish(
        "in.c2.created",
        r#"{"order_id":"o-2","customer":"c2","items":[{"sku":"B","qty":1,"price_cents":7}],"payment":"pending"}"#,
    )
    .await?;
    let malformed = env.publish("in.c3.created", "{not json").await?;

    let outputs = env.wait_messages(OUTPUT, 2).await;
    let by_subject = |subject: &str| {
        outputs
            .iter()
            .find(|m| m.subject.as_str() == subject)
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .unwrap_or_else(|| panic!("nothing on {subject}"))
    };
    assert!(by_subject("out.c1").starts_with(
        r#"{"order_id":"o-1","customer":"c1","seq":0,"total_cents":100,"item_count":2,"skus":["A"],"tier":"standard","region":"eu-west","partition":"#
    ));
    assert!(
        by_subject("out.c2").ends_with(r#""delivery_attempt":3}"#),
        "the pending order is published on its third delivery"
    );
    the_malformed_order_is_a_dead_letter(&env, malformed).await;
    node.shutdown().await
}

#[tokio::test]
async fn the_go_and_rust_totals_examples_keep_the_same_state_and_publish_the_same_outputs()
-> anyhow::Result<()> {
    use weir::state::StateBucket;

    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    let request = |handler: &str, component: Vec<u8>, prefix: &str| DeployRequest {
        id: DeploymentId::new("acme", handler).expect("a valid name"),
        component,
        stream: INPUT.into(),
        window: weir::spec::DEFAULT_WINDOW,
        limits: LimitsSpec::default(),
        retry: RetrySpec::default(),
        config: [("output_prefix", prefix), ("milestone_cents", "1000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        outputs: vec!["out.>".into()],
        from: None,
        deployed_by: None,
        reset_state: false,
    };
    env.deploy_on(&node, request("totals", guest("totals"), "out.rust"))
        .await?;
    env.deploy_on(
        &node,
        request("go-totals", GO_TOTALS.core().to_vec(), "out.go"),
    )
    .await?;
    for n in 0..30u64 {
        let customer = format!("c{}", n % 3);
        let order = format!(
            r#"{{"order_id":"o-{n}","customer":"{customer}","items":[{{"sku":"A","qty":{},"price_cents":{}}}]}}"#,
            1 + n % 4,
            100 + 25 * n
        );
        env.publish(&format!("in.{customer}.created"), &order)
            .await?;
    }
    env.publish("in.c0.created", "{not json").await?;
    env.wait_dead_letters(2).await;
    crate::fleet::drained(&env.js, "totals").await;
    crate::fleet::drained(&env.js, "go-totals").await;

    // Every order: a milestone roughly every fourth order of a customer, in both languages.
    let outputs = env.wait_messages(OUTPUT, 2).await;
    let of = |prefix: &str| -> Vec<(String, serde_json::Value)> {
        outputs
            .iter()
            .filter_map(|m| {
                let subject = m.subject.as_str().strip_prefix(prefix)?.to_owned();
                Some((subject, serde_json::from_slice(&m.payload).expect("JSON")))
            })
            .collect()
    };
    let (rust, go) = (of("out.rust."), of("out.go."));
    assert!(rust.len() >= 9, "few milestones: {rust:?}");
    let per_subject = |outputs: &[(String, serde_json::Value)]| {
        let mut by: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
        for (subject, value) in outputs {
            by.entry(subject.clone()).or_default().push(value.clone());
        }
        by
    };
    assert_eq!(per_subject(&rust), per_subject(&go));

    let bucket = StateBucket::open(&env.js, "acme").await?;
    let state = |handler: &str| {
        let id = DeploymentId::new("acme", handler).expect("a valid name");
        let bucket = bucket.clone();
        async move {
            let mut values = Vec::new();
            for entry in bucket.entries(&id, None).await? {
                let value = bucket.get(&id, entry.partition, &entry.key).await?;
                values.push((entry.partition, entry.key, value));
            }
            anyhow::Ok(values)
        }
    };
    let rust_state = state("totals").await?;
    assert_eq!(
        rust_state.len(),
        6,
        "a total and a window per customer: {rust_state:?}"
    );
    assert_eq!(rust_state, state("go-totals").await?);
    node.shutdown().await
}
