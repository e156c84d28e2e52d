//! `weir console`, as its users see it: in headless Chromium, driven by Playwright
//! (`tests/console/browse.mjs`), and over HTTP as another site would try it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weir::dlq::records;

use crate::cli::text;
use crate::support::{Env, INPUT, OUTPUT, header, read, scripted};

const PARTITIONS: u32 = 2;

/// A `weir console` child process, killed when dropped.
struct ConsoleProcess {
    child: Child,
    /// Where it listens, as it said.
    addr: String,
}

impl ConsoleProcess {
    /// Starts `weir console` on a free port with `args`, once it says where it listens.
    fn start(url: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["--nats-url", url, "console", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut said = String::new();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("weir console ended saying {said:?}"))
                .expect("stderr reads");
            said.push_str(&line);
            if let Some(rest) = line.split_once("on http://").map(|(_, rest)| rest) {
                break rest.split('/').next().unwrap_or_default().to_owned();
            }
        };
        // Whatever it says next is not read; it must not block on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `browse.mjs` needs, or the reason it is missing.
fn browser_tools() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chromium =
        PathBuf::from(std::env::var("WEIR_CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "the console tests need Chromium at {} (scripts/bootstrap.sh installs Debian's \
         `chromium`; WEIR_CHROMIUM names another)",
        chromium.display()
    );
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "the console tests need playwright-core in node_modules (run scripts/bootstrap.sh)"
    );
    (chromium, root.join("runtime/tests/console/browse.mjs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_console_shows_the_live_deployment_and_replays_a_dead_letter()
-> anyhow::Result<()> {
    let (chromium, script) = browser_tools();
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("console")).await?;
    let rejected = env.publish("in.k1.ev", "reject-unless-fixed").await?;
    env.publish("in.k2.ev", "log-flood 1").await?;
    let letter = env.wait_dead_letters(1).await.remove(0);
    assert_eq!(letter.stream_seq, rejected);
    // The fix, deployed before the replay.
    let mut fixed = scripted("console");
    fixed.config.insert("fixed".into(), "yes".into());
    env.deploy_on(&node, fixed).await?;

    let console = ConsoleProcess::start(&env.server.url(), &[]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let mut browse = Command::new("node");
    browse
        .arg(&script)
        .arg(console.url())
        .arg(&shots)
        .env("WEIR_CHROMIUM", &chromium)
        .env("DEPLOYMENT", "test/console")
        .env("PARTITIONS", PARTITIONS.to_string())
        .env("NODE", node.id())
        .env("LOG_LINE", "flood line 0");
    let browsed = tokio::task::spawn_blocking(move || browse.output()).await??;
    eprintln!("screenshots of every page are in {}", shots.display());
    assert!(
        browsed.status.success(),
        "the browser did not get through the console: {}",
        text(&browsed.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&browsed.stdout)?;
    let replayed_as = said["replayed_as"].as_str().unwrap_or_default().to_owned();

    // The replayed message is handled by the fixed handler: its echo is in the output stream,
    // after the log-flood message's.
    let outputs = env.wait_messages(OUTPUT, 2).await;
    let echoed: Vec<String> = outputs.iter().map(|m| text(&m.payload)).collect();
    assert_eq!(echoed, ["log-flood 1", "reject-unless-fixed"]);
    let input = read(&env.js, INPUT).await;
    let again = input
        .iter()
        .find(|m| header(m, "Weir-Replayed-From") == Some(&letter.id.to_string()))
        .expect("the replayed message is in the input stream");
    assert_eq!(replayed_as, format!("{INPUT}:{}", again.sequence));
    let marked = records::get(&env.js, letter.id).await?;
    assert_eq!(marked.replays.len(), 1, "replayed once, from the page");
    assert_eq!(marked.replays[0].stored_as, replayed_as);
    node.shutdown().await
}

/// `method path` on `addr`, naming `host`, with `headers`: the status code and the body.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    headers: &[&str],
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok((status, body.to_owned()))
}

#[tokio::test]
async fn the_console_shows_only_its_tenant_and_acts_only_for_its_own_pages() -> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("console")).await?;
    env.publish("in.k1.ev", "reject-unless-fixed").await?;
    let id = env.wait_dead_letters(1).await[0].id;
    let everyone = ConsoleProcess::start(&env.server.url(), &[]);
    let acme = ConsoleProcess::start(&env.server.url(), &["--tenant", "acme"]);
    let replay = format!("/api/dead-letters/{id}/replay");
    let shown =
        |c: &ConsoleProcess| format!("localhost:{}", c.addr.rsplit(':').next().unwrap_or(""));

    // A page of another site, reaching the console by a name of its own, gets nothing.
    let (status, body) =
        request(&everyone.addr, "GET", "/api/snapshot", "evil.example", &[]).await?;
    assert_eq!(status, 421, "{body}");
    // Nor can it replay by naming the console: it cannot send the console's header without
    // asking first, and its origin is not the console's.
    let host = shown(&everyone);
    for headers in [
        &[][..],
        &["Origin: http://evil.example", "X-Weir-Console: replay"][..],
    ] {
        let (status, body) = request(&everyone.addr, "POST", &replay, &host, headers).await?;
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    assert!(records::get(&env.js, id).await?.replays.is_empty());

    // A console of tenant acme shows none of tenant test's deployments or dead letters.
    let host = shown(&acme);
    let (status, body) = request(
        &acme.addr,
        "GET",
        &format!("/api/dead-letters/{id}"),
        &host,
        &[],
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(
        &acme.addr,
        "GET",
        "/api/dead-letters?tenant=test",
        &host,
        &[],
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let action = ["X-Weir-Console: replay"];
    let (status, body) = request(&acme.addr, "POST", &replay, &host, &action).await?;
    assert_eq!(status, 404, "{body}");
    let snapshot = crate::support::wait_for("acme's console to read the cluster", || async {
        let (_, body) = request(&acme.addr, "GET", "/api/snapshot", &host, &[])
            .await
            .ok()?;
        let snapshot: serde_json::Value = serde_json::from_str(&body).ok()?;
        snapshot["read_at"].is_string().then_some(snapshot)
    })
    .await;
    assert_eq!(snapshot["tenant"], "acme");
    assert_eq!(snapshot["deployments"], serde_json::json!([]));

    // The console's own page replays.
    let host = shown(&everyone);
    let (status, body) = request(&everyone.addr, "POST", &replay, &host, &action).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(records::get(&env.js, id).await?.replays.len(), 1);
    node.shutdown().await
}
