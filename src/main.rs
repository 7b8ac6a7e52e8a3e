//! The `shipsec` command line: validate, graph and run workflows, resume them, serve the
//! HTTP API.
//!
//! Exit codes (README.md): 0 the run COMPLETED (or the command succeeded), 1 the run ended
//! in any other status, 2 invalid definition, inputs or usage.

/// The engine allocates per node; mimalloc is markedly cheaper than the system allocator
/// for that pattern (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[macro_use]
mod cli;

use cli::{inspect, report, run, serve, work};
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::definition::mermaid;
use shipsec_orchestrator::definition::refuse_warnings;
use shipsec_orchestrator::definition::{LoadError, Loaded, load_file};
use shipsec_orchestrator::telemetry::Telemetry;

/// Exit code of a bad definition, bad inputs or bad usage.
const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "shipsec",
    version,
    about = "Run compiled security-automation workflows on an actor runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a definition and report every problem with its path. Disagreements the
    /// edges decide (`dependsOn`, `dependencyCounts`) are warnings on stderr.
    Validate {
        /// Definition file (JSON or YAML).
        file: PathBuf,
        /// Refuse the definition when it has warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Print the workflow's DAG as a Mermaid flowchart.
    Graph {
        /// Definition file (JSON or YAML).
        file: PathBuf,
    },
    /// Run a workflow, with live progress and a summary.
    Run(run::RunArgs),
    /// Finish the runs a killed `shipsec run --data-dir DIR` left unfinished, and print
    /// their results.
    Resume(run::ResumeArgs),
    /// Serve the HTTP API: runs, their status, results and live events.
    Serve(serve::ServeArgs),
    /// Run components for a coordinator (`serve --worker-listen`): the built-ins and
    /// `core.process`, on this host.
    Worker(work::WorkerArgs),
    /// Print the HTTP API's OpenAPI document (what `/v1/openapi.json` serves).
    Openapi,
    /// Write the run view of an ended run (its result and events) as one HTML page.
    Report(report::ReportArgs),
    /// Look into a journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// List the journal's runs: status, nodes ended, facts and bytes, and its disk use.
    Inspect {
        /// The journal's directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = ComponentRegistry::with_builtins();
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Resume(_) | Command::Serve(_) | Command::Worker(_)
    ) {
        // Logs only: `run` installs its telemetry inside its async runtime.
        let _ = Telemetry::install(None);
    }
    match cli.command {
        Command::Validate { file, strict } => match load_file(&file, &registry) {
            Ok(loaded) => {
                if let Err(e) = checked(&loaded, strict) {
                    return e;
                }
                say!(
                    "{}: valid ({} nodes, {} edges)",
                    file.display(),
                    loaded.graph.len(),
                    loaded.graph.edges.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => invalid(&e),
        },
        Command::Graph { file } => match load_file(&file, &registry) {
            Ok(loaded) => {
                say_text!("{}", mermaid::render(&loaded.graph));
                ExitCode::SUCCESS
            }
            Err(e) => invalid(&e),
        },
        Command::Run(args) => run::run(args, registry),
        Command::Resume(args) => run::resume(args, registry),
        Command::Serve(args) => serve::serve(args, registry),
        Command::Worker(args) => work::worker(args, &registry),
        Command::Report(args) => report::report(args, &registry),
        Command::Openapi => {
            say_text!("{}", shipsec_orchestrator::service::openapi::to_json());
            ExitCode::SUCCESS
        }
        Command::Journal {
            command: JournalCommand::Inspect { dir },
        } => match inspect::inspect(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                complain!("{e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Prints the definition's warnings on stderr; with `strict` they refuse it (exit 2).
pub(crate) fn checked(loaded: &Loaded, strict: bool) -> Result<(), ExitCode> {
    if strict {
        return refuse_warnings(&loaded.graph).map_err(|e| invalid(&LoadError::Invalid(e)));
    }
    for w in &loaded.graph.warnings {
        complain!("warning: {w}");
    }
    Ok(())
}

pub(crate) fn invalid(e: &LoadError) -> ExitCode {
    complain!("{}", e.to_string().trim_end_matches('\n'));
    ExitCode::from(EXIT_INVALID)
}
