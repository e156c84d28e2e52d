//! weir: a WebAssembly stream-processing runtime for NATS JetStream.
pub mod host;
pub mod subject;
pub mod config;
pub mod deployment;
pub mod metrics;
pub mod ownership;
pub mod partition;
pub mod resources;
mod worker;
pub mod node;
mod registry;
pub mod embedded;
pub mod deploy;
pub mod traffic;
pub mod cli;
pub mod demo;
