//! The command-line client: `streampca models|ingest|components|project|limits|demo`, talking
//! HTTP to a running server. Owns argument types, exit codes and terminal output; it
//! never touches the registry or the numerical core directly (only the public API).
//!
//! - [`client`]: the HTTP client (API key, retries on 503, error mapping).
//! - [`input`]: streaming readers for CSV, NDJSON, `.npy` and raw f32 files.
//! - [`commands`]: one function per subcommand.
//! - [`monitoring`]: `limits`, and the statistics of `project --alpha` and `ingest --score`.
//! - [`synthetic`]: the demo's data set with a known spectrum.

pub mod args;
pub mod client;
pub mod commands;
pub mod input;
pub mod monitoring;
pub mod synthetic;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub use client::{CliError, Client};

/// Default server URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Exit status text shared by every client subcommand's `--help`.
pub const EXIT_CODES: &str = "Exit status: 0 success; 1 the server rejected a request (4xx, \
printed as `error: <code>: <message>`) or an input file is invalid; 2 the server could not \
be reached; 3 the server failed (5xx) or stayed overloaded (503) after retries.";

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server URL (plain http; no TLS support is compiled in).
    #[arg(long, env = "STREAMPCA_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    /// (Not `global`: the server's own `--api-key` lives at the top level with another
    /// type, and clap keys global arguments by name across the whole command tree.)
    #[arg(long, env = "STREAMPCA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// The client subcommands (flattened into the binary's `Command`).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create, list, show or delete models.
    #[command(after_help = EXIT_CODES)]
    Models {
        /// The model operation.
        #[command(subcommand)]
        op: ModelsOp,
        /// Server connection.
        #[command(flatten)]
        conn: Connection,
    },
    /// Stream CSV, NDJSON, `.npy` or raw f32 files into a model, in batches.
    #[command(after_help = EXIT_CODES)]
    Ingest(IngestArgs),
    /// Show a model's components: eigenvalues, explained variance, error bounds.
    #[command(after_help = EXIT_CODES)]
    Components(ComponentsArgs),
    /// Project the rows of a file onto a model's components; writes CSV or NDJSON.
    /// With `--alpha`, also each row's T² and SPE, the control limits and the outlier
    /// flags.
    #[command(after_help = EXIT_CODES)]
    Project(ProjectArgs),
    /// Show the control limits of T² and SPE for a model's latest fit.
    #[command(after_help = EXIT_CODES)]
    Limits(LimitsArgs),
    /// Create a model on a running server, stream a synthetic data set with a known
    /// spectrum into it, and print how close the learned components are to the truth.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
}

/// `streampca models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsOp {
    /// Create a model (succeeds without change if an identical one exists).
    Create {
        /// Model name.
        name: String,
        /// Input dimension (values per row of x).
        #[arg(long)]
        dim: usize,
        /// Number of ordered components to learn.
        #[arg(long)]
        components: usize,
        /// Target dimension for a regression model (rows are x then y).
        #[arg(long)]
        target_dim: Option<usize>,
        /// Forgetting half-life, in samples.
        #[arg(long)]
        half_life: Option<f64>,
        /// Optimiser: `subspace` (default) or `gradient`.
        #[arg(long)]
        optimizer: Option<String>,
        /// Convergence tolerance, radians.
        #[arg(long)]
        tolerance: Option<f64>,
        /// PCA of the correlation matrix: scale every variable by its running standard
        /// deviation (for variables in mixed units). Autoencoders only.
        #[arg(long)]
        standardize: bool,
        /// False-alarm rate of the control limits ingest scoring counts against, in
        /// (0, 0.5) (server default 0.01).
        #[arg(long)]
        alpha: Option<f64>,
        /// Print the server's JSON response.
        #[arg(long)]
        json: bool,
    },
    /// List models.
    List {
        /// Print the server's JSON response.
        #[arg(long)]
        json: bool,
    },
    /// Show one model's status.
    Show {
        /// Model name.
        name: String,
        /// Print the server's JSON response.
        #[arg(long)]
        json: bool,
    },
    /// Delete a model.
    Delete {
        /// Model name.
        name: String,
    },
}

/// File formats the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// Comma-separated values, one row per line; an optional header line.
    Csv,
    /// One JSON array (or `{"x": […], "y": […]}`) per line.
    Ndjson,
    /// NumPy `.npy`: a 2-D little-endian float32 or float64 array in C order.
    Npy,
    /// Raw little-endian f32 values, rows back to back.
    F32,
}

/// How batches travel to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Wire {
    /// Little-endian f32 (fastest; values must fit f32, about 7 significant digits).
    #[default]
    Binary,
    /// JSON (keeps every f64 digit; slower).
    Json,
}

/// `streampca ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Model name (must exist; its dimension is checked against every row).
    pub model: String,
    /// Files to ingest, in order. The format follows the extension (`.csv`, `.ndjson`/
    /// `.jsonl`, `.npy`, `.f32`/`.bin`/`.raw`) unless `--format` is given. Rows are x
    /// then y for regression models.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Rows per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// File format, for every file (default: from each file's extension).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Encoding on the wire. `binary` sends little-endian f32, so values are rounded to
    /// f32 and must lie within its range (±3.4e38); `json` keeps f64.
    #[arg(long, value_enum, default_value_t = Wire::Binary)]
    pub wire: Wire,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Score each batch against the model's published fit before it is folded
    /// (`?score=true`) and print how many rows were over the T² and SPE limits (at the
    /// model's alpha).
    #[arg(long)]
    pub score: bool,
    /// Server connection.
    #[command(flatten)]
    pub conn: Connection,
}

/// `streampca components`.
#[derive(Debug, Args)]
pub struct ComponentsArgs {
    /// Model name.
    pub model: String,
    /// Only the first k components.
    #[arg(short, long)]
    pub k: Option<usize>,
    /// Print the server's JSON response (vectors included) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Server connection.
    #[command(flatten)]
    pub conn: Connection,
}

/// Output formats of `project`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Header `score_0,…[,recon_0,…],residual_norm[,t2,spe,limit_t2,limit_spe,
    /// outlier_t2,outlier_spe]`, then one line per input row.
    Csv,
    /// One `{"scores": […], "reconstruction"?: […], "residual_norm": r}` per input row
    /// (with `--alpha` also `t2`, `spe`, `limit_t2`, `limit_spe`, `outlier_t2`,
    /// `outlier_spe`).
    Ndjson,
}

/// `streampca project`.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Model name.
    pub model: String,
    /// Input file (rows of x; formats as for `ingest`).
    pub file: PathBuf,
    /// Project onto the first k components (default: all).
    #[arg(short, long)]
    pub k: Option<usize>,
    /// Also write each row's reconstruction.
    #[arg(long)]
    pub reconstruct: bool,
    /// Divide each score by the square root of its eigenvalue.
    #[arg(long)]
    pub whiten: bool,
    /// Add each row's Hotelling T² and SPE, the control limits at false-alarm rate
    /// ALPHA (0 < ALPHA < 0.5) and the rows' outlier flags; a count of the rows over
    /// each limit goes to standard error.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Output file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format (default: from the output file's extension, else CSV).
    #[arg(long, value_enum)]
    pub output_format: Option<OutputFormat>,
    /// Input format (default: from the extension).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Rows per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Server connection.
    #[command(flatten)]
    pub conn: Connection,
}

/// `streampca limits`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Model name.
    pub model: String,
    /// Components the statistics use (default: every component the fit reports).
    #[arg(short, long)]
    pub k: Option<usize>,
    /// False-alarm rate, in (0, 0.5) (default: the model's alpha).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Print the server's JSON response instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Server connection.
    #[command(flatten)]
    pub conn: Connection,
}

/// `streampca demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Name of the model to create (it is left on the server afterwards).
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// Dimension of the synthetic data.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub dim: u64,
    /// Components to learn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub components: u64,
    /// Rows to stream.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub rows: u64,
    /// Rows per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Seed of the data set.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Server connection.
    #[command(flatten)]
    pub conn: Connection,
}

/// Runs a client subcommand and returns the process exit status (see [`EXIT_CODES`]).
/// Errors are printed to standard error as `error: …`.
pub async fn run(cmd: ClientCommand) -> i32 {
    let result = match cmd {
        ClientCommand::Models { op, conn } => commands::models(&conn, op).await,
        ClientCommand::Ingest(a) => commands::ingest(a).await,
        ClientCommand::Components(a) => commands::components(a).await,
        ClientCommand::Project(a) => commands::project(a).await,
        ClientCommand::Limits(a) => monitoring::limits(a).await,
        ClientCommand::Demo(a) => commands::demo(a).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
