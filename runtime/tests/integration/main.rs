//! weir's integration suite: one test binary, a module per topic, every NATS test against a
//! real `nats-server` started by [`support::Env`].

mod cli;
mod containment;
mod host;
mod order;
mod outcomes;
mod outputs;
mod redeploy;
mod support;
