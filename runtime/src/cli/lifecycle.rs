//! `weir undeploy`, `pause`, `resume`, `versions` and `rollback`: see [`crate::lifecycle`].

use clap::Args;
use indicatif::ProgressBar;

use super::Session;
use crate::control::DeploymentId;
use crate::lifecycle::{self, Paused, VersionSpec};
use crate::say;

/// The handler a lifecycle command acts on.
#[derive(Debug, Args)]
pub struct HandlerArgs {
    /// Tenant name
    #[arg(long)]
    pub tenant: String,
    /// Handler name
    #[arg(long)]
    pub name: String,
}

impl HandlerArgs {
    pub(super) fn id(&self) -> anyhow::Result<DeploymentId> {
        DeploymentId::new(&self.tenant, &self.name)
    }
}

/// `weir undeploy` options.
#[derive(Debug, Args)]
pub struct UndeployArgs {
    #[command(flatten)]
    pub handler: HandlerArgs,
    /// Keep the stored components and the version history (`weir versions`)
    #[arg(long)]
    pub keep_artifacts: bool,
    /// Delete the handler's state too (by default it is kept, for a deployment under the same
    /// name to take up; asked on a terminal)
    #[arg(long)]
    pub delete_state: bool,
}

/// `weir versions` options.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    pub handler: HandlerArgs,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `weir rollback` options.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub handler: HandlerArgs,
    /// The version to make current: a REVISION from `weir versions`, or the start of a version
    /// digest (at least 4 hex digits) [default: the version before the current one]
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

/// A spinner on stderr saying what a command waits for (hidden when stderr is not a terminal).
fn spinner() -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

pub(super) async fn undeploy(session: &Session, args: UndeployArgs) -> anyhow::Result<()> {
    let id = args.handler.id()?;
    let action = format!("undeploy {id}");
    let delete_state = args.delete_state
        || session
            .guard(&action, ask_to_delete_state(&session.js, &id))
            .await?;
    let spinner = spinner();
    let undeployed = session
        .guard(
            &action,
            lifecycle::undeploy(
                &session.js,
                &id,
                args.keep_artifacts,
                delete_state,
                |waiting| {
                    spinner.set_message(format!("stopping {id}: {waiting}"));
                },
            ),
        )
        .await;
    spinner.finish_and_clear();
    let undeployed = undeployed?;
    say!(
        "undeployed {id}: stopped on every node, {} partition consumer(s) deleted",
        undeployed.consumers
    )?;
    if !undeployed.unconfirmed.is_empty() {
        say!(
            "warning: {} had not confirmed stopping when the wait ran out",
            undeployed.unconfirmed.join(", ")
        )?;
    }
    if args.keep_artifacts {
        say!("its components and versions are kept (`weir versions` lists them)")?;
    } else {
        say!(
            "{} stored component(s) and its version history removed",
            undeployed.artifacts
        )?;
    }
    say!(
        "{} dead letter(s) kept in WEIR_DLQ (`weir dlq ls --tenant {} --name {}`)",
        undeployed.dead_letters,
        id.tenant,
        id.handler
    )?;
    match undeployed.state {
        Some((keys, true)) => say!("its state deleted: {keys} key(s)")?,
        Some((keys, false)) => say!(
            "its state kept: {keys} key(s) in {} (`weir state ls --tenant {} --name {}`), for \
             a deployment under the same name to take up; `weir state delete --all` removes it",
            crate::state::state_bucket(&id.tenant),
            id.tenant,
            id.handler
        )?,
        None => {}
    }
    Ok(())
}

/// On a terminal, asks whether to delete `id`'s state, if it keeps any; elsewhere, no.
async fn ask_to_delete_state(
    js: &async_nats::jetstream::Context,
    id: &crate::control::DeploymentId,
) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    let Some(bucket) = lifecycle::kept_state(js, id).await? else {
        return Ok(false);
    };
    let keys = bucket.entries(id, None).await?.len();
    if keys == 0 {
        return Ok(false);
    }
    eprint!("{id} keeps {keys} key(s) of state. Delete them too? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub(super) async fn pause(
    session: &Session,
    args: HandlerArgs,
    paused: bool,
) -> anyhow::Result<()> {
    let id = args.id()?;
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let spinner = spinner();
    let action = format!("{verb} {id}");
    let result = session
        .guard(
            &action,
            lifecycle::set_paused(&session.js, &id, paused, |waiting| {
                spinner.set_message(format!("{action}: {waiting}"));
            }),
        )
        .await;
    spinner.finish_and_clear();
    match result? {
        Paused::Already => say!("{id} is {done} already; nothing changed")?,
        Paused::Done {
            confirmed,
            unconfirmed,
        } if confirmed.is_empty() && unconfirmed.is_empty() => {
            say!("{done} {id}; no node runs it now (see `weir status`)")?
        }
        Paused::Done { unconfirmed, .. } if unconfirmed.is_empty() => say!(
            "{done} {id}: {}",
            if paused {
                "every partition holds its messages after the one in hand"
            } else {
                "every partition goes on in order"
            }
        )?,
        Paused::Done { unconfirmed, .. } => say!(
            "{done} {id}; {} had not confirmed it when the wait ran out (see `weir status`)",
            unconfirmed.join(", ")
        )?,
    }
    Ok(())
}

pub(super) async fn versions(session: &Session, args: VersionsArgs) -> anyhow::Result<()> {
    let id = args.handler.id()?;
    let action = format!("read the versions of {id}");
    let versions = session
        .guard(&action, lifecycle::versions(&session.js, &id))
        .await?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&versions)?)?;
        return Ok(());
    }
    say!(
        "  {:>8}  {:<12} {:<20} {:<12} {:<10} {:<28} CONFIG",
        "REVISION",
        "VERSION",
        "DEPLOYED",
        "BY",
        "STREAM",
        "LIMITS"
    )?;
    for version in &versions {
        let mark = if version.current { "*" } else { " " };
        match &version.spec {
            VersionSpec::Deployment(spec) => {
                let limits = format!(
                    "{} mem, {} timeout, window {}",
                    humansize(spec.limits.max_memory_bytes),
                    humantime::format_duration(spec.limits.handler_timeout),
                    spec.window
                );
                // The record is the tenant's to write: none of it moves the cursor.
                let clip =
                    |text: &str| crate::failures::clip(text, crate::failures::MAX_ERROR_BYTES);
                let config = spec
                    .config
                    .iter()
                    .map(|(key, value)| format!("{}={}", clip(key), clip(value)))
                    .collect::<Vec<_>>()
                    .join(",");
                say!(
                    "{mark} {:>8}  {:<12} {:<20} {:<12} {:<10} {:<28} {config}",
                    version.revision,
                    spec.short_version(),
                    clip(spec.deployed_at.get(..19).unwrap_or(&spec.deployed_at)),
                    clip(spec.deployed_by.as_deref().unwrap_or("-")),
                    spec.stream,
                    limits,
                )?;
            }
            VersionSpec::Invalid(reason) => say!(
                "{mark} {:>8}  (invalid record: {})",
                version.revision,
                crate::failures::clip(reason, crate::failures::MAX_ERROR_BYTES)
            )?,
        }
    }
    if !versions.iter().any(|v| v.current) {
        say!("{id} is not deployed now; `weir rollback` cannot run, `weir deploy` can")?;
    }
    Ok(())
}

pub(super) async fn rollback(session: &Session, args: RollbackArgs) -> anyhow::Result<()> {
    let id = args.handler.id()?;
    let action = format!("roll {id} back");
    let rolled = session
        .guard(
            &action,
            lifecycle::rollback(&session.js, &id, args.to.as_deref(), session.user.clone()),
        )
        .await?;
    say!(
        "rolled {id} back to version {} (revision {}, deployed {}); running nodes switch at the \
         next message of each partition",
        rolled.spec.short_version(),
        rolled.to.revision,
        match &rolled.to.spec {
            VersionSpec::Deployment(spec) =>
                crate::failures::clip(&spec.deployed_at, crate::failures::MAX_ERROR_BYTES),
            VersionSpec::Invalid(_) => "-".to_owned(),
        }
    )?;
    if rolled.spec.paused {
        say!(
            "{id} is paused: `weir resume --tenant {} --name {}` runs it",
            id.tenant,
            id.handler
        )?;
    }
    Ok(())
}

/// A size for people, in the units `--max-memory` takes.
fn humansize(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}
