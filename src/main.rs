//! The `streampca` binary: parse settings, set up logging, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use streampca::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Cli::parse().into_settings();
    streampca::telemetry::init(settings.log_format, &settings.log);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    streampca::run(listener, settings, streampca::shutdown::shutdown_signal()).await
}
