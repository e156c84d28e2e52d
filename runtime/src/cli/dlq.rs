//! `weir dlq`: list, show, replay and purge dead letters.

use std::io::Write as _;

use async_nats::jetstream;
use clap::{Args, Subcommand};

use crate::dlq::records::{self, DeadLetter};
use crate::say;

/// `weir dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first
    Ls(LsArgs),
    /// Show one dead letter: why it died, its headers and its payload
    Show(ShowArgs),
    /// Publish dead letters again, through the normal path, and mark them replayed
    Replay(ReplayArgs),
    /// Delete dead letters
    Purge(PurgeArgs),
}

/// Which deployment's dead letters.
#[derive(Debug, Args)]
pub struct Selection {
    /// Only this tenant's
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this handler's
    #[arg(long)]
    pub name: Option<String>,
}

/// `weir dlq ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub selection: Selection,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `weir dlq show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter's id (from `weir dlq ls`)
    pub id: u64,
    /// Print JSON (the payload as text when it is UTF-8)
    #[arg(long, conflicts_with = "payload")]
    pub json: bool,
    /// Write only the payload's bytes to stdout
    #[arg(long)]
    pub payload: bool,
}

/// `weir dlq replay` options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dead letters to replay, by id
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<u64>,
    /// Replay every dead letter not replayed yet (of --tenant / --name, if given)
    #[arg(long)]
    pub all: bool,
    /// Which dead letters, with --all.
    #[command(flatten)]
    pub selection: Selection,
    /// Publish to this subject instead of each message's original subject
    #[arg(long)]
    pub to: Option<String>,
}

/// `weir dlq purge` options.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Dead letters to delete, by id
    #[arg(required_unless_present_any = ["all", "replayed"], conflicts_with_all = ["all", "replayed"])]
    pub ids: Vec<u64>,
    /// Delete every dead letter (of --tenant / --name, if given)
    #[arg(long, conflicts_with = "replayed")]
    pub all: bool,
    /// Delete every dead letter that was replayed (of --tenant / --name, if given)
    #[arg(long)]
    pub replayed: bool,
    /// Which dead letters, with --all or --replayed.
    #[command(flatten)]
    pub selection: Selection,
}

impl Selection {
    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn handler(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(tenant) = &self.tenant {
            crate::control::validate_name("tenant", tenant)?;
        }
        if let Some(handler) = &self.name {
            crate::control::validate_name("handler", handler)?;
        }
        Ok(())
    }
}

/// Runs a `weir dlq` command.
pub async fn run(js: &jetstream::Context, command: DlqCommand) -> anyhow::Result<()> {
    // Reading creates nothing: without the dead-letter stream there are no dead letters.
    let missing = crate::control::stream_missing(js, crate::dlq::DLQ_STREAM).await;
    match (&command, missing) {
        (DlqCommand::Ls(args), true) => {
            args.selection.check()?;
            return say!("no dead letters");
        }
        (DlqCommand::Show(_), true) => anyhow::bail!("there are no dead letters"),
        (DlqCommand::Ls(_) | DlqCommand::Show(_), false) => {}
        // The streams exist once any node or deploy has run; opening the control plane
        // makes sure.
        (DlqCommand::Replay(_) | DlqCommand::Purge(_), _) => {
            crate::control::ControlPlane::open(js).await?;
        }
    }
    match command {
        DlqCommand::Ls(args) => ls(js, args).await,
        DlqCommand::Show(args) => show(js, args).await,
        DlqCommand::Replay(args) => replay(js, args).await,
        DlqCommand::Purge(args) => purge(js, args).await,
    }
}

async fn ls(js: &jetstream::Context, args: LsArgs) -> anyhow::Result<()> {
    args.selection.check()?;
    let letters = records::list(js, args.selection.tenant(), args.selection.handler()).await?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&letters)?)?;
        return Ok(());
    }
    if letters.is_empty() {
        say!("no dead letters")?;
        return Ok(());
    }
    say!(
        "{:>6}  {:<20} {:<24} {:<25} {:<16} {:>4}  {:<14} LAST ERROR",
        "ID",
        "DEAD AT",
        "DEPLOYMENT",
        "REASON",
        "FROM",
        "DLV",
        "REPLAYED AS"
    )?;
    for letter in &letters {
        let replayed = letter
            .replays
            .last()
            .map_or("-", |replay| replay.stored_as.as_str());
        say!(
            "{:>6}  {:<20} {:<24} {:<25} {:<16} {:>4}  {:<14} {}",
            letter.id,
            // To the second: the table has no room for nanoseconds.
            format!("{}Z", letter.dead_at.get(..19).unwrap_or(&letter.dead_at)),
            format!("{}/{}", letter.tenant, letter.handler),
            letter.reason.map_or("?", |r| r.as_str()),
            format!("{}:{}", letter.stream, letter.stream_seq),
            letter.deliveries,
            replayed,
            shorten(&letter.last_error, 60)
        )?;
    }
    say!(
        "{} dead letter(s); `weir dlq show ID` for one, `weir dlq replay ID` to send one again",
        letters.len()
    )?;
    Ok(())
}

async fn show(js: &jetstream::Context, args: ShowArgs) -> anyhow::Result<()> {
    let letter = records::get(js, args.id).await?;
    if args.payload {
        std::io::stdout().write_all(&letter.payload)?;
        return Ok(());
    }
    let text = std::str::from_utf8(&letter.payload).ok();
    if args.json {
        let mut json = serde_json::to_value(&letter)?;
        json["payload"] = text.map_or(serde_json::Value::Null, Into::into);
        say!("{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    print_letter(&letter, text)?;
    Ok(())
}

fn print_letter(letter: &DeadLetter, text: Option<&str>) -> anyhow::Result<()> {
    let field = |name: &str, value: &str| say!("{name:<16} {value}");
    field("id", &letter.id.to_string())?;
    field("dead at", &letter.dead_at)?;
    field(
        "deployment",
        &format!("{}/{}", letter.tenant, letter.handler),
    )?;
    field("version", &letter.handler_version)?;
    field("reason", letter.reason.map_or("?", |r| r.as_str()))?;
    if let Some(term_reason) = &letter.term_reason {
        field("term reason", term_reason)?;
    }
    field("last error", &letter.last_error)?;
    field(
        "from",
        &format!("stream {} sequence {}", letter.stream, letter.stream_seq),
    )?;
    field("subject", letter.subject.as_deref().unwrap_or("(unknown)"))?;
    field("deliveries", &letter.deliveries.to_string())?;
    for replay in &letter.replays {
        field(
            "replayed",
            &format!("{} to {} as {}", replay.at, replay.to, replay.stored_as),
        )?;
    }
    if let Some(why) = &letter.original_missing {
        return field("original", &format!("missing: {why}"));
    }
    say!("headers")?;
    for (name, values) in &letter.headers {
        for value in values {
            say!("  {name}: {value}")?;
        }
    }
    match text {
        Some(text) => say!("payload ({} bytes)\n{text}", letter.payload_bytes)?,
        None => say!(
            "payload ({} bytes, not UTF-8; `weir dlq show {} --payload > FILE` writes it out)",
            letter.payload_bytes,
            letter.id
        )?,
    }
    Ok(())
}

async fn replay(js: &jetstream::Context, args: ReplayArgs) -> anyhow::Result<()> {
    args.selection.check()?;
    if let Some(to) = &args.to {
        crate::subject::validate_publish_subject(to)
            .map_err(|e| anyhow::anyhow!("invalid --to subject {to:?}: {e}"))?;
    }
    let letters = if args.all {
        records::list(js, args.selection.tenant(), args.selection.handler())
            .await?
            .into_iter()
            .filter(|letter| letter.replays.is_empty() && letter.original_missing.is_none())
            .collect()
    } else {
        by_id(js, &args.ids).await?
    };
    if letters.is_empty() {
        say!("nothing to replay")?;
        return Ok(());
    }
    let bar = super::progress_bar(letters.len() as u64, "replaying");
    let mut failed = 0;
    for letter in &letters {
        match records::replay(js, letter, args.to.as_deref()).await {
            Ok(replay) => bar.println(format!(
                "replayed dead letter {} to {} as {}",
                letter.id, replay.to, replay.stored_as
            )),
            Err(error) => {
                failed += 1;
                bar.println(format!("error: {error:#}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} dead letter(s) could not be replayed",
        letters.len()
    );
    say!("replayed {} dead letter(s)", letters.len())?;
    Ok(())
}

async fn purge(js: &jetstream::Context, args: PurgeArgs) -> anyhow::Result<()> {
    args.selection.check()?;
    let (tenant, handler) = (args.selection.tenant(), args.selection.handler());
    if args.all {
        let purged = records::purge_all(js, tenant, handler).await?;
        say!("purged {purged} message(s) from the dead-letter stream")?;
        return Ok(());
    }
    let letters = if args.replayed {
        records::list(js, tenant, handler)
            .await?
            .into_iter()
            .filter(|letter| !letter.replays.is_empty())
            .collect()
    } else {
        by_id(js, &args.ids).await?
    };
    for letter in &letters {
        records::purge(js, letter).await?;
    }
    say!("purged {} dead letter(s)", letters.len())?;
    Ok(())
}

/// The dead letters `ids`, failing on the first that does not exist.
async fn by_id(js: &jetstream::Context, ids: &[u64]) -> anyhow::Result<Vec<DeadLetter>> {
    let mut letters = Vec::with_capacity(ids.len());
    for id in ids {
        letters.push(records::get(js, *id).await?);
    }
    Ok(letters)
}

/// The first `max` characters of `text`, with an ellipsis if it was longer.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
