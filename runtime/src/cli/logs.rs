//! `weir logs`: see [`crate::logs`].

use std::time::Duration;

use clap::Args;

use super::Session;
use super::lifecycle::HandlerArgs;
use crate::config::parse_duration;
use crate::logs::{self, LogLine, Query};
use crate::{note, say};

/// Longest part of one line printed; guests print at most 16 KiB a call.
const MAX_LINE_BYTES: usize = 16 << 10;

/// `weir logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub handler: HandlerArgs,
    /// Go on printing new lines as the handler writes them (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    /// Only this partition's lines
    #[arg(long)]
    pub partition: Option<u32>,
    /// From how long ago (the stream keeps an hour)
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub since: Duration,
    /// Print each line as a JSON object
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn logs(session: &Session, args: LogsArgs) -> anyhow::Result<()> {
    let query = Query {
        id: args.handler.id()?,
        partition: args.partition,
        since: args.since,
        follow: args.follow,
    };
    let action = format!("read the log lines of {}", query.id);
    let json = args.json;
    let mut printed = false;
    session
        .guard(
            &action,
            logs::read(&session.js, &query, |line| {
                printed = true;
                print(line, json)
            }),
        )
        .await?;
    if !printed {
        note!(
            "weir: no log lines of {} in the last {}",
            query.id,
            humantime::format_duration(query.since)
        );
    }
    Ok(())
}

/// One line, with where and when it was written. What the guest wrote is the tenant's: no
/// control character of it reaches the terminal.
fn print(line: &LogLine, json: bool) -> anyhow::Result<()> {
    if json {
        return say!("{}", serde_json::to_string(line)?);
    }
    let clip = |text: &str| crate::failures::clip(text, MAX_LINE_BYTES);
    say!(
        "{} {} p{} #{} {:<5} {}",
        clip(&line.at),
        clip(&line.node),
        line.partition,
        line.stream_seq,
        clip(&line.level),
        clip(&line.message)
    )
}
