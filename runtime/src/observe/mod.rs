//! What a node shows of itself over HTTP (`weir node --http ADDR`): Prometheus metrics on
//! `/metrics` ([`metrics`]), and `/healthz` and `/readyz` for a process supervisor
//! ([`health`]). The web console (`weir console`, [`console`]) reads the cluster from NATS.

pub mod console;
pub mod health;
pub mod http;
pub mod metrics;

pub use health::Health;
pub use metrics::Metrics;
