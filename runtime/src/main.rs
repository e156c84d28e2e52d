use std::io::IsTerminal as _;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = weir::cli::Cli::parse();
    let default_level = match cli.command {
        weir::cli::Command::Node(_) => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        weir::cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        weir::cli::LogFormat::Json => logs.json().init(),
    }
    match weir::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `weir ls | head -3`: the reader has what it wanted.
        Err(error) if weir::terminal::reader_gone(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            weir::note!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
