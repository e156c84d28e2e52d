//! A TCP proxy on loopback in front of a NATS server, which a test cuts and heals: a node
//! connected through it is cut off from NATS without knowing it, as by a network partition.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy; it stops when dropped.
pub struct Proxy {
    port: u16,
    /// Whether the line is cut.
    cut: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, line) = watch::channel(false);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *line.borrow() {
                    // Refused while cut: the client sees its connection close, and tries again.
                    continue;
                }
                let line = line.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, line).await;
                    }
                });
            }
        });
        Self {
            port,
            cut,
            accepting,
        }
    }

    /// `nats://127.0.0.1:<port>`, for a node to connect through.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Cuts the line: nothing more passes either way on the connections through it (nobody is
    /// told: no connection closes), and new connections are closed at once.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals the line: the connections that were cut close (what was sent on them meanwhile
    /// is lost, as with a partition that outlasted the connection), and new ones go through.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies bytes both ways until either side closes; once the line is cut, stops copying and
/// waits for it to heal, then closes both sides.
async fn forward(mut client: TcpStream, mut server: TcpStream, mut line: watch::Receiver<bool>) {
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let mut up = [0u8; 16 << 10];
    let mut down = [0u8; 16 << 10];
    loop {
        tokio::select! {
            read = from_client.read(&mut up) => match read {
                Ok(n) if n > 0 && to_server.write_all(&up[..n]).await.is_ok() => {}
                _ => return,
            },
            read = from_server.read(&mut down) => match read {
                Ok(n) if n > 0 && to_client.write_all(&down[..n]).await.is_ok() => {}
                _ => return,
            },
            _ = cut(&mut line, true) => break,
        }
    }
    cut(&mut line, false).await;
}

/// Waits until the line is cut (or healed, for `false`).
async fn cut(line: &mut watch::Receiver<bool>, cut: bool) {
    let _ = line.wait_for(|now| *now == cut).await.map(|_| ());
}
