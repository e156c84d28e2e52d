//! JavaScript guests through the real host: the JavaScript orders example (examples/js-orders),
//! built as `make js-guests` builds it (guest-sdk/js/build.mjs: rolldown, then componentize-js),
//! agrees with the Rust orders example on every vector and refuses the same configuration;
//! deployed with the `weir` binary, a node runs it end to end.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use weir::host::HandlerVersion;

use crate::go_guests::{agrees_with_rust_orders, compile, refuses_like_rust_orders};
use crate::py_guests::a_node_runs_the_orders_example_in_order;
use crate::support::{root, stale};

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
