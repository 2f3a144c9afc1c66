//! The `streampca` binary: parse settings, set up logging, serve until SIGINT/SIGTERM; or
//! run a client subcommand against a running server and exit with its status.

use anyhow::Context;
use clap::Parser;
use streampca::cli::args::{Cli, Command};
use streampca::config::Settings;

/// jemalloc instead of glibc's malloc: under the overload mix glibc's per-thread arenas
/// fragment and the resident size creeps up for minutes with a flat live heap; jemalloc
/// (with its background purging threads) stays flat (bench/OVERLOAD.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Client(cmd)) = cli.command {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        std::process::exit(runtime.block_on(streampca::cli::run(cmd)));
    }
    let settings = cli.into_settings();
    settings
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings")?;
    // Blocking work runs on a bounded pool (`--blocking-threads`) instead of tokio's
    // default of 512 threads: each thread keeps its stack and the linear-algebra
    // kernels' per-thread workspace (a few MiB reserved) until it exits after 10 s
    // idle, so the thread count bounds that memory (bench/OVERLOAD.md).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(settings.limits.blocking_threads)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    streampca::telemetry::init(settings.log_format, &settings.log);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    streampca::run(listener, settings, streampca::shutdown::shutdown_signal()).await
}
