//! The `streampca` binary: parse settings, set up logging, serve until SIGINT/SIGTERM; or
//! run a client subcommand against a running server and exit with its status.

use anyhow::Context;
use clap::Parser;
use streampca::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Client(cmd)) = cli.command {
        std::process::exit(streampca::cli::run(cmd).await);
    }
    let settings = cli.into_settings();
    streampca::telemetry::init(settings.log_format, &settings.log);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    streampca::run(listener, settings, streampca::shutdown::shutdown_signal()).await
}
