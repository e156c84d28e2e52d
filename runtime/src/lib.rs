//! weir: a WebAssembly stream-processing runtime for NATS JetStream.
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod deployment;
pub mod embedded;
pub mod host;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod partition;
mod registry;
pub mod resources;
pub mod subject;
pub mod traffic;
mod worker;
