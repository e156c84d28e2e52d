//! `weir state`: inspect and repair the per-partition state of a handler.

use std::path::PathBuf;

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use clap::{Args, Subcommand};

use crate::control::DeploymentId;
use crate::say;
use crate::state::{StateBucket, StateEntry, key};

/// `weir state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List a handler's keys: partition, key, size and revision
    Ls(LsArgs),
    /// Print the value of a key
    Get(GetArgs),
    /// Set a key, as a repair (the partition's owner reads its state again)
    Put(PutArgs),
    /// Delete a key as a repair, or (`--all`) all of a handler's state
    Delete(DeleteArgs),
}

/// Whose state.
#[derive(Debug, Args)]
pub struct Handler {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    /// The handler's name
    #[arg(long)]
    pub name: String,
}

impl Handler {
    fn id(&self) -> anyhow::Result<DeploymentId> {
        DeploymentId::new(&self.tenant, &self.name)
    }
}

/// `weir state ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Whose state.
    #[command(flatten)]
    pub handler: Handler,
    /// Only this partition's keys
    #[arg(long)]
    pub partition: Option<u32>,
    /// Only the keys that start with this
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `weir state get` options.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Whose state.
    #[command(flatten)]
    pub handler: Handler,
    /// The key
    pub key: String,
    /// The partition whose key it is [default: every partition that has it]
    #[arg(long)]
    pub partition: Option<u32>,
    /// Print JSON: partition, key, and the value as text (or base64, when it is not UTF-8)
    #[arg(long)]
    pub json: bool,
}

/// `weir state put` options.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Whose state.
    #[command(flatten)]
    pub handler: Handler,
    /// The partition whose key it is
    #[arg(long)]
    pub partition: u32,
    /// The key
    pub key: String,
    /// The value, as text
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value's bytes from this file instead
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `weir state delete` options.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Whose state.
    #[command(flatten)]
    pub handler: Handler,
    /// The partition whose key it is
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub partition: Option<u32>,
    /// The key
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub key: Option<String>,
    /// Every key of every partition, and the record of which messages were applied
    #[arg(long)]
    pub all: bool,
}

/// Runs a `weir state` command.
pub async fn run(js: &jetstream::Context, command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Ls(args) => ls(js, args).await,
        StateCommand::Get(args) => get(js, args).await,
        StateCommand::Put(args) => {
            let value = match (&args.value, &args.file) {
                (_, Some(path)) => std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (Some(text), None) => text.clone().into_bytes(),
                (None, None) => anyhow::bail!("give a value, or --file"),
            };
            repair(
                js,
                &args.handler,
                args.partition,
                &args.key,
                Some(value.into()),
            )
            .await
        }
        StateCommand::Delete(DeleteArgs {
            handler,
            partition: Some(partition),
            key: Some(key),
            all: false,
        }) => repair(js, &handler, partition, &key, None).await,
        StateCommand::Delete(args) => delete_all(js, &args.handler).await,
    }
}

async fn ls(js: &jetstream::Context, args: LsArgs) -> anyhow::Result<()> {
    let id = args.handler.id()?;
    let bucket = StateBucket::open(js, &id.tenant).await?;
    let entries: Vec<StateEntry> = bucket
        .entries(&id, args.partition)
        .await?
        .into_iter()
        .filter(|entry| entry.key.starts_with(&args.prefix))
        .collect();
    if args.json {
        let entries: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "partition": e.partition,
                    "key": e.key,
                    "size": e.size,
                    "revision": e.revision,
                })
            })
            .collect();
        return say!("{}", serde_json::to_string_pretty(&entries)?);
    }
    if entries.is_empty() {
        return say!(
            "{id} keeps no state{}",
            match args.partition {
                Some(p) => format!(" in partition {p}"),
                None => String::new(),
            }
        );
    }
    say!(
        "{:<9}  {:>10}  {:>9}  KEY",
        "PARTITION",
        "BYTES",
        "REVISION"
    )?;
    for entry in &entries {
        say!(
            "{:<9}  {:>10}  {:>9}  {}",
            entry.partition,
            entry.size,
            entry.revision,
            printable(&entry.key)
        )?;
    }
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    say!("{} key(s), {bytes} byte(s) of values", entries.len())
}

async fn get(js: &jetstream::Context, args: GetArgs) -> anyhow::Result<()> {
    let id = args.handler.id()?;
    check_key(&args.key)?;
    let bucket = StateBucket::open(js, &id.tenant).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(partition) => vec![partition],
        None => bucket
            .entries(&id, None)
            .await?
            .into_iter()
            .filter(|entry| entry.key == args.key)
            .map(|entry| entry.partition)
            .collect(),
    };
    let mut found = Vec::new();
    for partition in partitions {
        if let Some(value) = bucket.get(&id, partition, &args.key).await? {
            found.push((partition, value));
        }
    }
    anyhow::ensure!(
        !found.is_empty(),
        "{id} has no key {:?}{}",
        args.key,
        match args.partition {
            Some(p) => format!(" in partition {p}"),
            None => String::new(),
        }
    );
    if args.json {
        let values: Vec<_> = found
            .iter()
            .map(|(partition, value)| {
                let mut object = serde_json::json!({"partition": partition, "key": args.key});
                match std::str::from_utf8(value) {
                    Ok(text) => object["value"] = text.into(),
                    Err(_) => {
                        use base64::Engine as _;
                        object["value_base64"] = base64::engine::general_purpose::STANDARD
                            .encode(value)
                            .into();
                    }
                }
                object
            })
            .collect();
        return say!("{}", serde_json::to_string_pretty(&values)?);
    }
    for (partition, value) in &found {
        if found.len() > 1 {
            say!("partition {partition}:")?;
        }
        say!("{}", String::from_utf8_lossy(value))?;
    }
    Ok(())
}

async fn repair(
    js: &jetstream::Context,
    handler: &Handler,
    partition: u32,
    key: &str,
    value: Option<Bytes>,
) -> anyhow::Result<()> {
    let id = handler.id()?;
    check_key(key)?;
    // A running worker has the partition's state in memory: the messages it handled before its
    // next commit found the repair would see the old value.
    anyhow::ensure!(
        !crate::lifecycle::running(js, &id).await?,
        "{id} is running: pause it first (`weir pause --tenant {} --name {}`), repair its \
         state, then resume it; its partitions read their state again when they resume",
        id.tenant,
        id.handler
    );
    let bucket = StateBucket::open(js, &id.tenant).await?;
    let what = if value.is_some() { "set" } else { "deleted" };
    bucket.repair(&id, partition, key, value).await?;
    say!("{what} {key:?} in partition {partition} of {id}")
}

async fn delete_all(js: &jetstream::Context, handler: &Handler) -> anyhow::Result<()> {
    let id = handler.id()?;
    anyhow::ensure!(
        !crate::lifecycle::deployed(js, &id).await?,
        "{id} is deployed: its state goes with `weir undeploy --delete-state`, or with \
         `weir deploy --reset-state`"
    );
    let bucket = StateBucket::open(js, &id.tenant).await?;
    let keys = bucket.purge(&id).await?;
    say!("deleted the state of {id}: {keys} key(s)")
}

fn check_key(key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        key::encode(key).is_some(),
        "invalid key {key:?}: use 1 to {} bytes of UTF-8",
        key::MAX_KEY_BYTES
    );
    Ok(())
}

/// A key as one line of a table: control characters escaped.
fn printable(key: &str) -> String {
    key.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
}
