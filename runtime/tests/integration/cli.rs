//! The `weir` binary end to end, and its answers to bad input.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use async_nats::jetstream::stream;

use async_nats::jetstream::consumer::PullConsumer;
use tokio::io::AsyncReadExt as _;
use weir::control::{ControlPlane, DeploymentId};
use weir::spec::DeploymentSpec;

use crate::support::{Env, INPUT, OUTPUT, guest, guest_path, wait_for};

pub fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_CREDS")
        .output()
        .expect("weir runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `weir` and expects it to fail with `expected` in its error.
fn fails_with(args: &[&str], expected: &str) {
    let output = weir(args);
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "weir {args:?} succeeded; stdout: {}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(expected),
        "weir {args:?} said {stderr:?}, which does not mention {expected:?}"
    );
}

/// A `weir` child process, stopped if the test ends (or fails) before it exits.
struct Running(Child);

impl Running {
    fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        Ok(Self(command.spawn()?))
    }

    /// Sends SIGTERM and waits for the process to exit.
    async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        Ok(wait_for("the process to exit after SIGTERM", || {
            let exited = self.0.try_wait().ok().flatten();
            async move { exited }
        })
        .await)
    }
}

impl Drop for Running {
    /// Asks first, so that a node can stop the nats-server it embeds, then insists.
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            for _ in 0..200 {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp file written");
    path
}

#[tokio::test]
async fn deploy_refuses_bad_input_with_a_clear_message_and_stores_nothing() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let url = env.server.url();
    let dir = tempfile::tempdir()?;
    weir(&[
        "stream",
        "create",
        "IN",
        "--subjects",
        "in.*.>",
        "--partitions",
        "4",
        "--nats-url",
        &url,
    ]);
    env.js
        .create_stream(stream::Config {
            name: "PLAIN".into(),
            subjects: vec!["plain.>".into()],
            ..Default::default()
        })
        .await?;
    let scripted = write(dir.path(), "scripted.wasm", &guest("scripted"));
    let deploy = |file: &Path, stream: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "deploy",
            &file.to_string_lossy(),
            "--tenant",
            "acme",
            "--name",
            "h",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(["--stream", stream, "--nats-url", &url].map(str::to_owned));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: Vec<String>, expected: &str| {
        fails_with(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            expected,
        )
    };

    run(
        deploy(
            &write(dir.path(), "notes.wasm", b"just some text"),
            "IN",
            &[],
        ),
        "not a WebAssembly file",
    );
    let core = wat::parse_str("(module)")?;
    run(
        deploy(&write(dir.path(), "core.wasm", &core), "IN", &[]),
        "this core WebAssembly module cannot be made a weir:handler/handler@0.2.0 component",
    );
    let empty = wat::parse_str("(component)")?;
    run(
        deploy(&write(dir.path(), "empty.wasm", &empty), "IN", &[]),
        "does not satisfy the world weir:handler/handler@0.2.0 or @0.1.0",
    );
    let future = wat::parse_str(
        r#"(component (import "weir:handler/host@0.3.0" (instance (export "log" (func)))))"#,
    )?;
    run(
        deploy(&write(dir.path(), "future.wasm", &future), "IN", &[]),
        "weir:handler/host@0.3.0",
    );
    run(deploy(&scripted, "NOPE", &[]), "stream NOPE does not exist");
    run(
        deploy(&scripted, "PLAIN", &[]),
        "stream PLAIN is not partitioned",
    );
    run(
        deploy(&scripted, "IN", &["--config", "refuse=because"]),
        "init refused the configuration: refusing on purpose: because",
    );
    run(
        deploy(&scripted, "IN", &["--config", "a=1", "--config", "a=2"]),
        "--config a is given twice (first as a=1)",
    );
    run(
        deploy(&scripted, "IN", &["--ack-wait", "soon"]),
        "invalid duration",
    );
    run(
        deploy(&scripted, "IN", &["--compile-cache", ""]),
        "name a directory, or `off`",
    );
    run(
        deploy(&scripted, "IN", &["--output", "out.>.x"]),
        "invalid --output",
    );
    run(
        deploy(&scripted, "IN", &["--output", "nowhere.>"]),
        "no stream stores subjects matching --output \"nowhere.>\"",
    );
    fails_with(
        &[
            "deploy",
            &scripted.to_string_lossy(),
            "--tenant",
            "Acme",
            "--name",
            "h",
            "--stream",
            "IN",
            "--nats-url",
            &url,
        ],
        "invalid tenant name",
    );

    assert!(
        env.js.get_key_value("weir_deployments").await.is_err(),
        "a failed deploy created weir_deployments"
    );
    assert!(
        env.js
            .get_object_store("weir_artifacts_acme")
            .await
            .is_err(),
        "a failed deploy stored an artifact"
    );
    Ok(())
}

#[test]
fn a_node_pointed_at_nothing_exits_with_an_error() {
    fails_with(
        &["node", "--nats-url", "nats://127.0.0.1:1"],
        "cannot connect to NATS at nats://127.0.0.1:1",
    );
}

#[tokio::test]
async fn a_core_module_is_deployed_as_a_component_and_handles_messages() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    let dir = tempfile::tempdir()?;
    let core = wat::parse_str(include_str!("../../../tests/guests/ack-core.wat"))?;
    let file = write(dir.path(), "ack-core.wasm", &core);
    let url = env.server.url();
    let output = weir(&[
        "deploy",
        &file.to_string_lossy(),
        "--tenant",
        "acme",
        "--name",
        "core",
        "--stream",
        INPUT,
        "--nats-url",
        &url,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // What is stored, and what nodes load, is the component made of it.
    let control = ControlPlane::open(&env.js).await?;
    let spec: DeploymentSpec =
        serde_json::from_slice(&control.deployments.get("acme.core").await?.expect("stored"))?;
    let mut artifact = Vec::new();
    control
        .artifacts
        .get(&spec.artifact)
        .await?
        .read_to_end(&mut artifact)
        .await?;
    assert_eq!(&artifact[..4], b"\0asm");
    assert_eq!(&artifact[6..8], &[1, 0], "a component, not a core module");
    assert_ne!(artifact, core);

    let id = DeploymentId::new("acme", "core")?;
    wait_for("the node to run acme.core", || async {
        control
            .status
            .get(id.status_key(node.id()))
            .await
            .ok()
            .flatten()
    })
    .await;
    for n in 0..10 {
        env.publish(&format!("in.k{n}.ev"), "anything").await?;
    }
    wait_for("every message delivered once and acked", || async {
        let mut delivered = 0;
        for partition in 0..2 {
            let mut consumer: PullConsumer = env
                .js
                .get_consumer_from_stream(id.consumer_name(partition), INPUT)
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())?;
            delivered += info.delivered.consumer_sequence;
        }
        (delivered == 10).then_some(())
    })
    .await;
    node.shutdown().await
}

#[tokio::test]
async fn the_binary_creates_deploys_publishes_lists_and_drains() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let url = env.server.url();
    let dir = tempfile::tempdir()?;
    let ok = |args: &[&str]| {
        let output = weir(&[args, &["--nats-url", &url]].concat());
        assert!(
            output.status.success(),
            "weir {args:?} failed: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    };
    let created = ok(&[
        "stream",
        "create",
        "IN",
        "--subjects",
        "in.*.>",
        "--partitions",
        "4",
    ]);
    assert!(
        created.contains("{{partition(4,1)}}.in.{{wildcard(1)}}.>"),
        "{created}"
    );
    let created = ok(&[
        "stream",
        "create",
        OUTPUT,
        "--subjects",
        "out.>",
        "--duplicate-window",
        "10m",
    ]);
    assert!(created.contains("remembered for 10m"), "{created}");
    let output = env
        .js
        .get_stream(OUTPUT)
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(output.duplicate_window, std::time::Duration::from_secs(600));
    for (args, expected) in [
        (
            &["--duplicate-window", "0s"][..],
            "--duplicate-window must be longer than 0s",
        ),
        (
            &["--duplicate-window", "1m", "--partitions", "4"],
            "--duplicate-window is for output streams (without --partitions)",
        ),
    ] {
        let base = ["stream", "create", "OTHER", "--subjects", "other.*.>"];
        fails_with(&[&base[..], args, &["--nats-url", &url]].concat(), expected);
    }

    // The node and `weir deploy` keep compiled code in one place, as on one machine.
    let cache = dir.path().join("compiled");
    let cache = cache.to_string_lossy();
    let log = std::fs::File::create(dir.path().join("node.log"))?;
    let mut node = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "node",
                "--node-id",
                "cli-node",
                "--nats-url",
                &url,
                "--http",
                "off",
                "--compile-cache",
                &cache,
            ])
            .stdout(Stdio::null())
            .stderr(log),
    )?;

    let scripted = write(dir.path(), "scripted.wasm", &guest("scripted"));
    let deployed = ok(&[
        "deploy",
        &scripted.to_string_lossy(),
        "--tenant",
        "acme",
        "--name",
        "echo",
        "--stream",
        "IN",
        "--output",
        "out.>",
        "--config",
        "zeta=z",
        "--config",
        "alpha=a",
        "--compile-cache",
        &cache,
    ]);
    assert!(
        deployed.contains("deployed acme/echo version"),
        "{deployed}"
    );
    let published = ok(&[
        "publish",
        "in.{key}.ev",
        "--count",
        "200",
        "--keys",
        "20",
        "--template",
        "echo {key} {seq}",
    ]);
    assert!(
        published.contains("published 200 message(s)"),
        "{published}"
    );

    let outputs = env.wait_messages(OUTPUT, 200).await;
    assert_eq!(outputs.len(), 200);
    // The handler gets its configuration sorted by key.
    ok(&["publish", "in.k1.ev", "--template", "config"]);
    let outputs = env.wait_messages(OUTPUT, 201).await;
    assert_eq!(&outputs[200].payload[..], b"alpha=a,zeta=z");
    wait_for("weir ls to show the node running 4 partitions", || async {
        let listed = ok(&["ls"]);
        (listed.contains("acme") && listed.contains("cli-node: 4 partitions")).then_some(())
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"]))?;
    assert_eq!(json[0]["deployment"]["stream"], "IN");
    assert_eq!(json[0]["deployment"]["retry"]["max_deliver"], 5);

    // `weir status`: the live node, and every partition owned by it with nothing left over.
    let status: serde_json::Value = wait_for("weir status to show an idle cluster", || {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["status", "--json"])).expect("status is JSON");
        let idle = status["deployments"][0]["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["lag"] == 0 && p["pending"] == 0));
        async move { idle.then_some(status) }
    })
    .await;
    assert_eq!(status["nodes"][0]["node"], "cli-node");
    assert_eq!(status["nodes"][0]["state"], "active");
    let partitions = status["deployments"][0]["partitions"]
        .as_array()
        .expect("partitions");
    assert_eq!(partitions.len(), 4);
    for partition in partitions {
        assert_eq!(
            partition["owners"],
            serde_json::json!(["cli-node"]),
            "{partition}"
        );
    }
    let table = ok(&["status"]);
    for expected in [
        "cli-node",
        "active",
        "acme/echo",
        "PARTITION",
        "OWNER",
        "LAG",
    ] {
        assert!(table.contains(expected), "{table} lacks {expected}");
    }

    // What a guest prints lands in the node's log, tagged with where it came from.
    ok(&["publish", "in.k3.ev", "--template", "trap"]);
    let node_log = dir.path().join("node.log");
    let line = wait_for("the guest's panic in the node log", || {
        let log = std::fs::read_to_string(&node_log).unwrap_or_default();
        let line = log
            .lines()
            .find(|l| l.contains("trap requested by the message"))
            .map(str::to_owned);
        async move { line }
    })
    .await;
    for field in [
        "tenant=\"acme\"",
        "handler=\"echo\"",
        "partition=",
        "stream_seq=202",
    ] {
        assert!(line.contains(field), "{line:?} lacks {field}");
    }

    let status = node.terminate().await?;
    let node_log = std::fs::read_to_string(dir.path().join("node.log"))?;
    assert!(status.success(), "node exited with {status}: {node_log}");
    assert!(node_log.contains("node stopped"), "{node_log}");
    // What `weir deploy` compiled to check the component, the node did not compile again.
    assert!(
        node_log.contains("loaded from the compile cache"),
        "{node_log}"
    );
    Ok(())
}

#[test]
fn the_demo_processes_orders_in_per_customer_order() {
    let (orders, totals) = (guest_path("orders"), guest_path("totals"));
    let output = weir(&[
        "demo",
        "--messages",
        "300",
        "--customers",
        "12",
        "--handler",
        &orders.to_string_lossy(),
        "--totals",
        &totals.to_string_lossy(),
    ]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}{}",
        stdout,
        text(&output.stderr)
    );
    assert!(stdout.contains("per-customer order: OK"), "{stdout}");
    assert!(
        stdout.contains("running totals: OK (12 customers"),
        "{stdout}"
    );
    for shown in [
        "the console is on http://127.0.0.1:",
        "metrics are on http://127.0.0.1:",
    ] {
        assert!(stdout.contains(shown), "{stdout}");
    }
    let rejected = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("rejected"))
        .unwrap_or_default();
    // Three malformed orders, each rejected by both handlers.
    assert!(rejected.trim_start().starts_with("6 "), "{stdout}");
    assert!(
        stdout.contains("dead letters     6 in WEIR_DLQ"),
        "{stdout}"
    );
}

/// `weir bench` on a tiny workload, with the components `make guests` builds.
fn bench(extra: &[&str]) -> Output {
    let noop = guest_path("noop");
    let components = noop.parent().expect("components are in a directory");
    let mut args = vec![
        "bench",
        "--messages",
        "300",
        "--keys",
        "64",
        "--latency-messages",
        "30",
        "--latency-rate",
        "300",
        "--components",
        components.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let output = weir(&args);
    assert!(
        output.status.success(),
        "weir {args:?} failed: {}",
        text(&output.stderr)
    );
    output
}

#[test]
fn bench_json_reports_every_mode_at_every_partition_count() {
    let output = bench(&["--partitions", "1,3", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("bench --json prints JSON");
    let runs = report["runs"].as_array().expect("an array of runs");
    let seen: Vec<(u64, &str, &str)> = runs
        .iter()
        .map(|run| {
            (
                run["partitions"].as_u64().expect("partitions"),
                run["mode"].as_str().expect("mode"),
                run["handler"].as_str().expect("handler"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "raw", "-"),
            (1, "raw-serial", "-"),
            (1, "native", "noop"),
            (1, "wasm", "noop"),
            (1, "wasm", "orders"),
            (3, "raw", "-"),
            (3, "raw-serial", "-"),
            (3, "native", "noop"),
            (3, "wasm", "noop"),
            (3, "wasm", "orders"),
        ]
    );
    for run in runs {
        assert_eq!(run["messages"], 300, "{run}");
        assert_eq!(run["payload_bytes"], 128, "{run}");
        let positive = |field: &str| run[field].as_f64().is_some_and(|v| v > 0.0);
        for field in ["msgs_per_sec", "cpu_seconds", "peak_rss_bytes", "p50_us"] {
            assert!(positive(field), "{field} in {run}");
        }
        let (p50, p99, p999) = (
            run["p50_us"].as_u64().expect("p50"),
            run["p99_us"].as_u64().expect("p99"),
            run["p999_us"].as_u64().expect("p999"),
        );
        assert!(p50 <= p99 && p99 <= p999, "{run}");
    }
}

#[test]
fn bench_prints_a_table_with_each_mode_as_a_share_of_raw_and_a_multiple_of_raw_serial() {
    let output = bench(&["--partitions", "2", "--handlers", "noop"]);
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("MSGS/S") && lines[0].contains("P999 µs"),
        "{stdout}"
    );
    let modes: Vec<&str> = lines[1..5]
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(modes, ["raw", "raw-serial", "native", "wasm"], "{stdout}");
    assert!(
        lines[5].starts_with("2 partition(s): raw-serial/raw ")
            && lines[5].contains(", native/raw ")
            && lines[5].contains(", wasm(noop)/raw ")
            && lines[5].ends_with("× raw-serial"),
        "{stdout}"
    );
}

#[test]
fn bench_refuses_a_missing_component_before_it_starts() {
    fails_with(
        &["bench", "--components", "/nonexistent", "--modes", "wasm"],
        "cannot read the noop component at /nonexistent/noop.wasm (build it with `make guests`",
    );
    fails_with(
        &["bench", "--partitions", "0"],
        "--partitions takes counts from 1 to 1024",
    );
    fails_with(
        &["bench", "--window", "0"],
        "--window must be between 1 and 4096",
    );
}

/// Uses the default URL, so it needs 127.0.0.1:4222 free; it says so if it is not.
#[tokio::test]
async fn a_node_with_no_server_at_the_default_url_starts_an_embedded_one() -> anyhow::Result<()> {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:4222").is_err(),
        "this test needs 127.0.0.1:4222 free, and something listens there"
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("weir-data");
    let log = dir.path().join("node.log");
    let mut node = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "node",
                "--data-dir",
                &data.to_string_lossy(),
                "--http",
                "off",
            ])
            .env_remove("NATS_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    )?;
    wait_for("the node to say it started an embedded server", || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        async move { said.contains("node started").then_some(()) }
    })
    .await;
    let said = std::fs::read_to_string(&log)?;
    assert!(
        said.contains("started an embedded nats-server: v2.15.1 at nats://127.0.0.1:4222"),
        "{said}"
    );
    let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    let js = async_nats::jetstream::new(client);
    assert!(
        js.get_key_value("weir_deployments").await.is_ok(),
        "the node did not set up its buckets"
    );
    assert!(
        data.join("jetstream").is_dir(),
        "JetStream data is not under --data-dir"
    );

    let status = node.terminate().await?;
    assert!(
        status.success(),
        "node exited with {status}: {}",
        std::fs::read_to_string(&log)?
    );
    Ok(())
}

#[tokio::test]
async fn a_node_whose_server_died_still_exits_on_sigterm() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("node.log");
    let mut node = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["node", "--nats-url", &env.server.url(), "--http", "off"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    )?;
    wait_for("the node to start", || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        async move { said.contains("node started").then_some(()) }
    })
    .await;
    env.server.stop();

    let status = node.terminate().await?;
    let said = std::fs::read_to_string(&log)?;
    assert!(status.success(), "node exited with {status}: {said}");
    assert!(said.contains("node stopped"), "{said}");
    Ok(())
}

#[tokio::test]
async fn a_listing_whose_reader_went_away_ends_quietly_and_successfully() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let url = env.server.url();
    for command in [&["ls"][..], &["status"], &["dlq", "ls"]] {
        // `weir ls | head -3` once head has what it wanted: nobody reads any more.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(command)
            .args(["--nats-url", &url])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()?;
        assert!(
            output.status.success(),
            "weir {command:?} into a closed pipe: {}",
            output.status
        );
        assert_eq!(text(&output.stderr), "", "weir {command:?} said something");
    }
    Ok(())
}
