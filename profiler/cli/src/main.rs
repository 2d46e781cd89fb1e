//! `prof`: run a command under the in-process sampler, and report on the profile.
//!
//! Errors are printed as one line, `prof: what went wrong: why`, and exit non-zero:
//! 2 when `prof run` refuses to start the command (it does not exist, cannot be
//! profiled, the output cannot be written, the agent is missing), 1 otherwise.
//! `prof run` otherwise exits with the command's own status.

mod error;
mod jit;
mod marker_file;
mod markers;
mod merge;
mod report;
mod run;
mod signals;
mod source;
mod target;
mod warm;
mod web;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::exit_code;

#[derive(Parser)]
#[command(
    name = "prof",
    version,
    about = "A sampling profiler for native programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command under the profiler and write its profile.
    Run(RunArgs),
    /// Print a report of a profile written by `prof run`.
    Report(ReportArgs),
    /// Run the prof server: store uploaded profiles and serve them to browsers and the API.
    Serve(prof_server::ServeArgs),
    /// Upload a profile (and the debug files the server lacks) to a prof server.
    Upload(web::UploadArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Sample threads while they use CPU time.
    Cpu,
    /// Sample every thread at wall-clock intervals, running or blocked.
    Wall,
}

impl Mode {
    fn env_value(self) -> &'static str {
        match self {
            Mode::Cpu => "cpu",
            Mode::Wall => "wall",
        }
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Sampling rate in samples per second (per thread). Every sample is a timer interrupt
    /// and a signal (~10 µs each in a VM): above a few thousand Hz the profiled program
    /// slows down noticeably (1.4x at 10000 Hz here).
    #[arg(long, default_value_t = 999, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// What to sample: CPU time, or wall-clock time including blocked threads.
    #[arg(long, value_enum, default_value_t = Mode::Cpu)]
    mode: Mode,
    /// Where to write the profile (an existing file is renamed to PATH.old).
    #[arg(short, long, value_name = "PATH", default_value = "prof.data")]
    output: PathBuf,
    /// Do not print the summary at the end.
    #[arg(short, long)]
    quiet: bool,
    /// Show the Python interpreter's own C frames between Python frames (hidden by default).
    #[arg(long)]
    native_internals: bool,
    /// Do not turn on the runtimes' JIT maps (node --perf-basic-prof, HotSpot's
    /// DumpPerfMapAtExit, PYPYLOG); see docs/TIERS.md.
    #[arg(long)]
    no_jit_maps: bool,
    /// Tier rules to try before the built-in ones (format: docs/TIERS.md).
    #[arg(long, value_name = "FILE")]
    tier_rules: Option<PathBuf>,
    /// Do not store the text of the program's sampled script files in the profile (by
    /// default `prof run` stores those inside the program's tree, for the viewer's
    /// per-line view; see docs/FORMAT.md, SOURCE).
    #[arg(long)]
    no_source: bool,
    /// Upload the profile to a prof server and print its link: to URL, else to
    /// $PROF_SERVER, else to a local server started on a free port that serves until Ctrl-C.
    #[arg(long, value_name = "URL", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    web: Option<String>,
    /// With --web and no server: keep the local server's database and profiles in DIR
    /// (default: a temporary directory, removed when prof exits).
    #[arg(long, value_name = "DIR", requires = "web")]
    data: Option<PathBuf>,
    /// The command to profile and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Top functions by self and total time.
    Text,
    /// The whole summary as JSON (fields described in README.md).
    Json,
    /// Folded stacks, one per line: `main;f;g 42`.
    Collapsed,
    /// speedscope JSON (one sampled profile per thread).
    Speedscope,
    /// pprof protobuf, gzipped (`go tool pprof`); binary: use -o FILE.
    Pprof,
    /// Firefox Profiler processed profile (tiers as categories).
    Firefox,
    /// A self-contained HTML page with an interactive flamegraph.
    Html,
    /// A flamegraph SVG coloured by tier.
    Svg,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The profile: written by `prof run`, or a vmprof log, `perf script` output or
    /// folded stacks (recognized from their content).
    #[arg(value_name = "PATH", default_value = "prof.data")]
    path: PathBuf,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// How many functions to show (text: default 20; json: default all).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Show the Python interpreter's own C frames between Python frames (hidden by default).
    #[arg(long)]
    native_internals: bool,
    /// Tier rules to try before the built-in ones (format: docs/TIERS.md).
    #[arg(long, value_name = "FILE")]
    tier_rules: Option<PathBuf>,
    /// Compare with the base profile BASE: the functions whose share of the samples changed
    /// most (text or json). Code-only (runtime frames folded) when the profile mostly runs
    /// interpreted/JIT code, unless --native-internals.
    #[arg(long, value_name = "BASE")]
    diff: Option<PathBuf>,
    /// Largest expansion of gzipped input (vmprof logs) read, in MiB: a gzip bomb is
    /// refused rather than expanded.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_gunzip_mb: u64,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::report(args).map(|()| 0),
        Command::Serve(args) => web::serve(args),
        Command::Upload(args) => web::upload(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // One line: the context chain joined with ": ".
            let msg = format!("{err:#}").replace('\n', " ");
            eprintln!("prof: {msg}");
            std::process::exit(exit_code(&err));
        }
    }
}
