//! Guest stdout and stderr: captured per call, then written to the node's log with the call's
//! tenant, handler, partition and stream sequence.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may write to stdout and stderr together in one call; the rest is dropped and
/// counted, never turned into a write error (a Rust guest panics when `println!` fails).
const MAX_CONSOLE_BYTES_PER_CALL: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Stdout,
    Stderr,
}

/// What a guest wrote during one call.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) lines: Vec<(Channel, String)>,
    pub(crate) dropped_bytes: usize,
}

#[derive(Debug, Default)]
struct Buffer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped_bytes: usize,
}

/// The capture shared by an instance's stdout and stderr streams.
#[derive(Debug, Clone, Default)]
pub(crate) struct Console(Arc<Mutex<Buffer>>);

impl Console {
    pub(crate) fn stdout(&self) -> ConsoleStream {
        ConsoleStream {
            console: self.clone(),
            channel: Channel::Stdout,
        }
    }

    pub(crate) fn stderr(&self) -> ConsoleStream {
        ConsoleStream {
            console: self.clone(),
            channel: Channel::Stderr,
        }
    }

    /// Takes what was written since the last call, split into lines.
    pub(crate) fn take(&self) -> Captured {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if buffer.stdout.is_empty() && buffer.stderr.is_empty() && buffer.dropped_bytes == 0 {
            // Most calls print nothing.
            return Captured::default();
        }
        let mut lines = Vec::new();
        for (channel, bytes) in [
            (Channel::Stdout, std::mem::take(&mut buffer.stdout)),
            (Channel::Stderr, std::mem::take(&mut buffer.stderr)),
        ] {
            lines.extend(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| (channel, line.to_owned())),
            );
        }
        Captured {
            lines,
            dropped_bytes: std::mem::take(&mut buffer.dropped_bytes),
        }
    }

    fn write(&self, channel: Channel, bytes: &[u8]) {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room =
            MAX_CONSOLE_BYTES_PER_CALL.saturating_sub(buffer.stdout.len() + buffer.stderr.len());
        let kept = bytes.len().min(room);
        buffer.dropped_bytes += bytes.len() - kept;
        let target = match channel {
            Channel::Stdout => &mut buffer.stdout,
            Channel::Stderr => &mut buffer.stderr,
        };
        target.extend_from_slice(&bytes[..kept]);
    }
}

/// One of the guest's standard output streams.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleStream {
    console: Console,
    channel: Channel,
}

impl IsTerminal for ConsoleStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ConsoleStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for ConsoleStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.console.write(self.channel, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_CONSOLE_BYTES_PER_CALL)
    }
}

#[async_trait::async_trait]
impl Pollable for ConsoleStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for ConsoleStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.console.write(self.channel, bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_per_channel_and_overflow_is_counted_not_refused() {
        let console = Console::default();
        console.write(Channel::Stdout, b"hello\nworld\n");
        console.write(Channel::Stderr, b"oops\n");
        console.write(Channel::Stdout, &vec![b'x'; MAX_CONSOLE_BYTES_PER_CALL]);
        let captured = console.take();
        assert_eq!(captured.lines[0], (Channel::Stdout, "hello".to_owned()));
        assert_eq!(captured.lines[1], (Channel::Stdout, "world".to_owned()));
        assert!(
            captured
                .lines
                .contains(&(Channel::Stderr, "oops".to_owned()))
        );
        assert_eq!(captured.dropped_bytes, 17);
        assert!(console.take().lines.is_empty());
    }
}
