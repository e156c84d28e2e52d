//! Whether a node is alive and whether it is ready, from what its loops say of themselves.
//!
//! - **Alive** (`/healthz`): the registry's loop and the membership's loop each turned within
//!   [`STALL_AFTER`]. Both turn at least every second, and count as turning while they wait for
//!   work that ends by itself (a compilation, a request to the server, bounded by the client's
//!   timeout), so one that has not turned for that long is stuck. A draining node is alive.
//! - **Ready** (`/readyz`): alive, connected to NATS, registered in `weir_nodes`, not draining,
//!   and every deployment record that existed when the node started has been read and acted on
//!   (loaded, or refused with its reason in `weir_status`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a loop may go without turning before the node counts as stuck.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// The loops whose turns [`Health`] follows.
#[derive(Debug, Clone, Copy)]
pub enum Loop {
    /// The registry: deployments, placement, workers.
    Registry,
    /// The membership: the node's record in `weir_nodes`.
    Membership,
}

/// What a node's loops say of themselves. Shared by the loops and the HTTP endpoints.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to each loop's last turn.
    registry_turned: AtomicU64,
    membership_turned: AtomicU64,
    registered: AtomicBool,
    loaded: AtomicBool,
    draining: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            registry_turned: AtomicU64::new(0),
            membership_turned: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }
}

/// What `/healthz` and `/readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the check passes.
    pub ok: bool,
    /// Why not, each reason a sentence; empty when it passes.
    pub reasons: Vec<String>,
}

impl Health {
    fn since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn turned_at(&self, which: Loop) -> &AtomicU64 {
        match which {
            Loop::Registry => &self.registry_turned,
            Loop::Membership => &self.membership_turned,
        }
    }

    /// `which` loop turned now.
    pub fn turned(&self, which: Loop) {
        self.turned_at(which)
            .store(self.since_start(), Ordering::Relaxed);
    }

    /// Awaits `work`, counting `which` loop as turning meanwhile: for work that takes long and
    /// ends by itself (a component's compilation, say), which is not a stall.
    pub async fn turning_while<T>(
        &self,
        which: Loop,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let mut turns = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = turns.tick() => self.turned(which),
            }
        }
    }

    /// Whether the node's record in `weir_nodes` is its own (it registered, and its last
    /// renewal found it so).
    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// Every record that existed at start has been acted on.
    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// The node drains: it takes no partitions any more.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the node drains.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `/healthz`.
    pub fn alive(&self) -> Verdict {
        // A draining node's loops end while it hands its partitions off, within its
        // --shutdown-timeout.
        if self.draining() {
            return verdict(Vec::new());
        }
        let now = self.since_start();
        let stall = u64::try_from(STALL_AFTER.as_millis()).unwrap_or(u64::MAX);
        let reasons = [
            (Loop::Registry, "the registry loop"),
            (Loop::Membership, "the membership loop"),
        ]
        .into_iter()
        .filter_map(|(which, name)| {
            let since = now.saturating_sub(self.turned_at(which).load(Ordering::Relaxed));
            (since > stall).then(|| {
                format!(
                    "{name} has not turned for {}",
                    humantime::format_duration(Duration::from_secs(since / 1000))
                )
            })
        })
        .collect();
        verdict(reasons)
    }

    /// `/readyz`, given whether the NATS connection is up.
    pub fn ready(&self, nats_connected: bool) -> Verdict {
        let mut reasons = self.alive().reasons;
        if !nats_connected {
            reasons.push("not connected to NATS".to_owned());
        }
        if !self.registered.load(Ordering::Relaxed) {
            reasons.push("not registered in weir_nodes".to_owned());
        }
        if self.draining.load(Ordering::Relaxed) {
            reasons.push("draining: takes no partitions".to_owned());
        }
        if !self.loaded.load(Ordering::Relaxed) {
            reasons.push("still reading the deployments".to_owned());
        }
        verdict(reasons)
    }
}

fn verdict(reasons: Vec<String>) -> Verdict {
    Verdict {
        ok: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_once_registered_loaded_and_connected_and_not_while_draining() {
        let health = Health::default();
        health.turned(Loop::Registry);
        health.turned(Loop::Membership);
        assert!(health.alive().ok);
        let not_ready = health.ready(false);
        assert_eq!(
            not_ready.reasons,
            [
                "not connected to NATS",
                "not registered in weir_nodes",
                "still reading the deployments"
            ]
        );
        health.set_registered(true);
        health.set_loaded();
        assert_eq!(health.ready(true), verdict(Vec::new()));
        health.set_draining();
        assert_eq!(
            health.ready(true).reasons,
            ["draining: takes no partitions"]
        );
    }
}
