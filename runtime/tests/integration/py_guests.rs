//! Python guests through the real host: the Python orders example (examples/py-orders), built
//! with componentize-py as `make py-guests` builds it, agrees with the Rust orders example on
//! every vector and refuses the same configuration; deployed with the `weir` binary, a node
//! runs it end to end: acks, retries, dead letters, each customer's orders in order. The stateful
//! test guest in Python (tests/guests/py-stateful) keeps state through a node as the Rust one
//! does.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use weir::host::HandlerVersion;

use crate::go_guests::{
    agrees_with_rust_orders, compile, refuses_like_rust_orders,
    the_malformed_order_is_a_dead_letter,
};
use crate::lifecycle::deploy_file;
use crate::support::{Env, OUTPUT, root, stale};

static PY_ORDERS: OnceLock<HandlerVersion> = OnceLock::new();

fn py_orders() -> &'static HandlerVersion {
    PY_ORDERS.get_or_init(|| {
        let path = py_guest("examples/py-orders");
        compile(&std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}")))
    })
}

/// Where the Python guest in `dir` (its module `app`) is built, built again with componentize-py
/// if it is missing or older than its sources (as `make py-guests` does).
pub(crate) fn py_guest(dir: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    let name = Path::new(dir).file_name().expect("a directory name");
    let out = root
        .join("target/guests/py")
        .join(name)
        .with_extension("wasm");
    let guest = root.join(dir);
    let sources = [
        root.join("guest-sdk/python/weir"),
        guest.join("app.py"),
        root.join("wit/handler.wit"),
    ];
    if !stale(&out, &sources) {
        return out;
    }
    let componentize_py = root.join(".venv/bin/componentize-py");
    std::fs::create_dir_all(out.parent().expect("a parent")).expect("target/guests/py");
    let status = std::process::Command::new(&componentize_py)
        .args([
            "-d",
            "wit",
            "-w",
            "handler",
            "componentize",
            "-p",
            "guest-sdk/python",
            "-p",
        ])
        .arg(&guest)
        .arg("app")
        .arg("-o")
        .arg(&out)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (install it with scripts/bootstrap.sh): {e}",
                componentize_py.display()
            )
        });
    assert!(status.success(), "building {dir} failed");
    out
}

#[tokio::test]
async fn the_python_and_rust_orders_examples_agree_on_every_vector() {
    agrees_with_rust_orders(py_orders(), "Python").await;
}

#[tokio::test]
async fn the_python_and_rust_orders_examples_refuse_the_same_configuration() {
    refuses_like_rust_orders(py_orders(), "Python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_deploy_takes_the_python_example_and_a_node_runs_it_in_order() -> anyhow::Result<()> {
    a_node_runs_the_orders_example_in_order(&py_guest("examples/py-orders"), "py-orders").await
}

/// Deploys `component`, a port of the orders example, as `name` with the `weir` binary, and
/// checks what a node makes of three customers' orders: acks, a retried pending payment that
/// holds back its customer's later order, a dead letter, each customer's outputs in order.
pub(crate) async fn a_node_runs_the_orders_example_in_order(
    component: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    deploy_file(
        &env,
        component,
        name,
        &[
            "--config",
            "output_prefix=out",
            "--config",
            "pending_delay=50",
            "--backoff",
            "100ms",
        ],
    )
    .await;

    // Three customers' orders; c2's second waits for its payment and holds back its third.
    let mut malformed = Vec::new();
    for seq in 1..=3 {
        for customer in ["c1", "c2", "c3"] {
            let payment = if customer == "c2" && seq == 2 {
                "pending"
            } else {
                "paid"
            };
            let order = format!(
                r#"{{"order_id":"{customer}-{seq}","customer":"{customer}","seq":{seq},"items":[{{"sku":"A","qty":{seq},"price_cents":100}}],"payment":"{payment}"}}"#
            );
            env.publish(&format!("in.{customer}.created"), &order)
                .await?;
        }
    }
    malformed.push(env.publish("in.c3.created", "{not json").await?);

    let outputs = env.wait_messages(OUTPUT, 9).await;
    for customer in ["c1", "c2", "c3"] {
        let seqs: Vec<serde_json::Value> = outputs
            .iter()
            .filter(|m| m.subject.as_str() == format!("out.{customer}"))
            .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).expect("JSON"))
            .map(|order| order["seq"].clone())
            .collect();
        assert_eq!(seqs, [1, 2, 3], "{customer}'s outputs");
    }
    let pending = outputs
        .iter()
        .find(|m| m.subject.as_str() == "out.c2" && m.payload.windows(5).any(|w| w == b"c2-2\""))
        .expect("c2's pending order");
    assert!(
        String::from_utf8_lossy(&pending.payload).ends_with(r#""delivery_attempt":3}"#),
        "the pending order is published on its third delivery"
    );
    the_malformed_order_is_a_dead_letter(&env, malformed[0]).await;
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_reads_its_own_writes_and_only_acked_calls_change_its_state()
-> anyhow::Result<()> {
    let component = std::fs::read(py_guest("tests/guests/py-stateful"))?;
    crate::state::reads_its_own_writes_and_only_acked_calls_change_its_state(component).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_is_told_which_quota_refused_a_write() -> anyhow::Result<()> {
    let component = std::fs::read(py_guest("tests/guests/py-stateful"))?;
    crate::state::writes_over_the_quotas_are_refused_with_the_quota_that_refused_them(component)
        .await
}
