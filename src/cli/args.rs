//! The command-line tree: `streampca [serve] [OPTIONS]` or a client subcommand. Parsing
//! only; [`crate::config::Settings`] holds the server's settings.

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// The command line: `streampca [serve] [OPTIONS]`. The bare binary serves.
#[derive(Debug, Parser)]
#[command(
    name = "streampca",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; omitted means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for the bare binary (same as `serve`'s).
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(Settings),
    /// The command-line client (`models`, `ingest`, `components`, `project`, `limits`,
    /// `demo`), which talks to a running server; see [`crate::cli`].
    #[command(flatten)]
    Client(super::ClientCommand),
}

impl Cli {
    /// The settings to serve with, whichever form the command line took.
    pub fn into_settings(self) -> Settings {
        match self.command {
            Some(Command::Serve(s)) => s,
            Some(Command::Client(_)) | None => self.settings,
        }
    }
}
