//! JavaScript guests through the real host: the JavaScript orders example (examples/js-orders),
//! built as `make js-guests` builds it (guest-sdk/js/build.mjs: rolldown, then componentize-js),
//! agrees with the Rust orders example on every vector and refuses the same configuration;
//! deployed with the `weir` binary, a node runs it end to end. A guest that imports wasi:http
//! (componentize-js's default) deploys, and its `fetch` fails the call without a connection. The
//! stateful test guest in JavaScript (tests/guests/js-stateful) keeps state through a node as
//! the Rust one does.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use weir::host::{HandlerFailure, HandlerInstance, HandlerVersion, Message};

use crate::go_guests::{agrees_with_rust_orders, compile, refuses_like_rust_orders};
use crate::py_guests::a_node_runs_the_orders_example_in_order;
use crate::support::{default_budget, root, stale};

static JS_ORDERS: OnceLock<HandlerVersion> = OnceLock::new();

fn js_orders() -> &'static HandlerVersion {
    JS_ORDERS.get_or_init(|| {
        let path = js_guest("examples/js-orders", &[]);
        compile(&std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}")))
    })
}

/// Where the JavaScript guest in `dir` (its module `app.js`) is built, built again with
/// `build.mjs` and its `options` if it is missing or older than its sources (as `make js-guests`
/// does).
pub(crate) fn js_guest(dir: &str, options: &[&str]) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    // One component for each set of options: `js-conformance-with-http.wasm`.
    let mut name = (Path::new(dir).file_name())
        .expect("a directory name")
        .to_string_lossy()
        .into_owned();
    for option in options {
        name = format!("{name}-{}", option.trim_start_matches('-'));
    }
    let out = root.join("target/guests/js").join(format!("{name}.wasm"));
    let guest = root.join(dir);
    let sources = [
        root.join("guest-sdk/js"),
        guest.clone(),
        root.join("wit/handler.wit"),
    ];
    if !stale(&out, &sources) {
        return out;
    }
    let status = std::process::Command::new("node")
        .arg(root.join("guest-sdk/js/build.mjs"))
        .args(options)
        .arg(guest.join("app.js"))
        .arg(&out)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node (install Node.js 20): {e}"));
    assert!(status.success(), "building {dir} failed");
    out
}

#[tokio::test]
async fn the_javascript_and_rust_orders_examples_agree_on_every_vector() {
    agrees_with_rust_orders(js_orders(), "JavaScript").await;
}

#[tokio::test]
async fn the_javascript_and_rust_orders_examples_refuse_the_same_configuration() {
    refuses_like_rust_orders(js_orders(), "JavaScript").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_deploy_takes_the_javascript_example_and_a_node_runs_it_in_order() -> anyhow::Result<()>
{
    a_node_runs_the_orders_example_in_order(&js_guest("examples/js-orders", &[]), "js-orders").await
}

#[tokio::test]
async fn a_javascript_fetch_fails_the_call_before_it_connects() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let url = format!("http://{}/", listener.local_addr().expect("an address"));
    let version = compile(
        &std::fs::read(js_guest("tests/guests/js-fetch", &["--with-http"])).expect("the component"),
    );
    let context = crate::conformance::context(&[("url".into(), url)], &default_budget(), None);
    let mut instance = HandlerInstance::start(&version, context)
        .await
        .expect("a guest that imports wasi:http starts");
    let message = Message {
        subject: "fetch".into(),
        payload: Vec::new(),
        headers: vec![],
        stream: "IN".into(),
        stream_seq: 1,
        partition: 0,
        delivery_attempt: 1,
        published_at: 0,
    };
    let Err(HandlerFailure::Trap(trap)) = instance.handle(&message).await else {
        panic!("the fetch did not fail the call");
    };
    assert!(trap.contains("weir handlers may not use HTTP"), "{trap}");
    assert!(
        listener.accept().is_err(),
        "the guest connected to {:?}",
        listener.local_addr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_reads_its_own_writes_and_only_acked_calls_change_its_state()
-> anyhow::Result<()> {
    let component = std::fs::read(js_guest("tests/guests/js-stateful", &[]))?;
    crate::state::reads_its_own_writes_and_only_acked_calls_change_its_state(component).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_is_told_which_quota_refused_a_write() -> anyhow::Result<()> {
    let component = std::fs::read(js_guest("tests/guests/js-stateful", &[]))?;
    crate::state::writes_over_the_quotas_are_refused_with_the_quota_that_refused_them(component)
        .await
}
