//! `weir init`: for every language, a new project passes its own unit test with the command
//! `weir init` prints, builds with the command it prints, and what it builds deploys with the
//! `weir` binary and handles messages on a node: an output for a message, a dead letter for an
//! empty one.

use std::path::Path;
use std::process::Command;

use weir::cli::init::Lang;

use crate::lifecycle::deploy_file;
use crate::support::{Env, OUTPUT, root};

/// Runs `command` with `sh` in `dir`, with the project's tools (`.venv/bin`, `node_modules`) on
/// the path; it must succeed.
fn sh(dir: &Path, command: &str) {
    let root = root();
    let path = format!(
        "{}:{}:{}",
        root.join(".venv/bin").display(),
        root.join("node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        // Rust projects share the guests' compiled dependencies; Go stays offline.
        .env("CARGO_TARGET_DIR", root.join("target/guests"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a `lang` project named `shout`, tests, builds and deploys it, and checks what a node
/// makes of two messages.
async fn a_new_project_builds_and_runs(lang: Lang, tenant_dir: &str) -> anyhow::Result<()> {
    // Inside the repository, where a JavaScript project finds the project's node_modules.
    let parent = tempfile::Builder::new()
        .prefix(tenant_dir)
        .tempdir_in(root().join("target"))?;
    let project = parent.path().join("shout");
    let init = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["init", "--lang"])
        .arg(format!("{lang:?}").to_lowercase())
        .arg(&project)
        .output()?;
    let printed = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "weir init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let template = lang.template();
    let build = template.build("shout");
    assert!(printed.contains(template.test), "{printed}");
    assert!(printed.contains(&build), "{printed}");

    if lang == Lang::Js {
        // What `npm install` would fetch, from the repository's node_modules.
        std::os::unix::fs::symlink(root().join("node_modules"), project.join("node_modules"))?;
    }
    sh(&project, template.test);
    sh(&project, &build);
    let component = match lang {
        Lang::Rust => root().join("target/guests/wasm32-wasip2/release/shout.wasm"),
        _ => project.join(template.component("shout")),
    };

    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    deploy_file(&env, &component, "shout", &[]).await;
    env.publish("in.k1.greeting", "hello, weir").await?;
    let empty = env.publish("in.k2.greeting", "").await?;
    let outputs = env.wait_messages(OUTPUT, 1).await;
    assert_eq!(outputs[0].subject.as_str(), "out.in.k1.greeting");
    assert_eq!(&outputs[0].payload[..], b"HELLO, WEIR");
    let dead = env.wait_dead_letters(1).await;
    assert_eq!(dead[0].stream_seq, empty);
    assert_eq!(dead[0].term_reason.as_deref(), Some("empty message"));
    // The empty message, handled, published nothing.
    assert_eq!(crate::support::read(&env.js, OUTPUT).await.len(), 1);
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_init_writes_a_rust_project_that_builds_and_runs() -> anyhow::Result<()> {
    a_new_project_builds_and_runs(Lang::Rust, "init-rust").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_init_writes_a_go_project_that_builds_and_runs() -> anyhow::Result<()> {
    a_new_project_builds_and_runs(Lang::Go, "init-go").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_init_writes_a_python_project_that_builds_and_runs() -> anyhow::Result<()> {
    a_new_project_builds_and_runs(Lang::Python, "init-python").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_init_writes_a_javascript_project_that_builds_and_runs() -> anyhow::Result<()> {
    a_new_project_builds_and_runs(Lang::Js, "init-js").await
}
