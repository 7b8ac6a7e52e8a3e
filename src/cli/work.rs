//! `shipsec worker`: runs the built-in components (and `core.process`) for a coordinator
//! (`shipsec serve --worker-listen`), over `shipsec.worker.v1`.
//!
//! It prints `registered as ID with URL (N slots: components)` once the coordinator has
//! taken it, and on SIGTERM or SIGINT drains: it takes no new attempt, finishes those it
//! holds, prints its tally and exits 0. A second signal exits at once (1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::components::Process;
use shipsec_orchestrator::components::ProcessLedger;
use shipsec_orchestrator::worker::client::{
    OnStart, Worker, WorkerError, WorkerOptions, WorkerSummary,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Options of `shipsec worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The coordinator: `http://HOST:PORT` (its --worker-listen).
    #[arg(long, value_name = "URL")]
    coordinator: String,
    /// A file holding this worker's bearer token (its first line that is not blank or a
    /// `#` comment).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Attempts run at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    slots: u32,
    /// The components to host: comma-separated ids, `*` matching any characters
    /// (`core.*`).
    #[arg(long, default_value = "*", value_name = "PATTERN")]
    components: String,
    /// The worker's id; default `<hostname>-<pid>`.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// A queue to serve (repeatable); none: the default queue.
    #[arg(long = "queue", value_name = "NAME")]
    queues: Vec<String>,
    /// A label to register with, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The CA certificate (PEM) of an `https://` coordinator (its --worker-tls-cert's
    /// issuer).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Print `started <attemptId>` as each attempt starts here.
    #[arg(long)]
    print_attempts: bool,
    /// Where this worker records its running `core.process` attempts, so that the next
    /// worker started with the same directory kills what a kill -9 of this one left
    /// running. Default: `shipsec-workers-<uid>/<id>-<pid>` in the temporary directory,
    /// where a starting worker sweeps the directories of every worker that died.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub(crate) fn worker(args: WorkerArgs, registry: &ComponentRegistry) -> ExitCode {
    let outcome = match crate::cli::run::with_telemetry(run(args, registry)) {
        Ok((outcome, _)) => outcome,
        Err(code) => return code,
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            complain!("shipsec worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn options(args: &WorkerArgs) -> Result<WorkerOptions> {
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            let token = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            match token {
                Some(t) => Some(t.to_owned()),
                None => bail!("the token file {} holds no token", path.display()),
            }
        }
        None => None,
    };
    let mut labels = std::collections::HashMap::new();
    for label in &args.labels {
        let Some((key, value)) = label.split_once('=') else {
            bail!("--label {label}: expected KEY=VALUE");
        };
        labels.insert(key.to_owned(), value.to_owned());
    }
    let worker_id = args.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    Ok(WorkerOptions {
        coordinator: args.coordinator.clone(),
        token,
        worker_id,
        slots: args.slots,
        queues: args.queues.clone(),
        labels,
        tls_ca: match &args.tls_ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => None,
        },
        on_start: args.print_attempts.then(|| {
            OnStart(std::sync::Arc::new(|attempt: &str| {
                say!("started {attempt}");
            }))
        }),
    })
}

/// This worker's ledger of running `core.process` attempts, opened after sweeping what
/// earlier workers left running: those that used `--state-dir`, or, by default, every
/// worker of this user on this host that died.
fn process_ledger(args: &WorkerArgs, worker_id: &str) -> Result<Arc<ProcessLedger>> {
    let (ledger, swept) = match &args.state_dir {
        Some(dir) => {
            let (ledger, sweep) = ProcessLedger::open(dir)?;
            (ledger, vec![sweep])
        }
        None => {
            // SAFETY: getuid has no preconditions.
            let parent =
                std::env::temp_dir().join(format!("shipsec-workers-{}", unsafe { libc::getuid() }));
            let name: String = worker_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            ProcessLedger::open_among(&parent, &format!("{name}-{}", std::process::id()))?
        }
    };
    for sweep in swept.iter().filter(|s| !s.killed.is_empty()) {
        complain!(
            "killed {} processes left running by {} attempts of a worker that died ({})",
            sweep.killed.len(),
            sweep.attempts.len(),
            sweep.dir.display()
        );
    }
    Ok(ledger)
}

async fn run(args: WorkerArgs, registry: &ComponentRegistry) -> Result<ExitCode> {
    let options = options(&args)?;
    let (id, slots) = (options.worker_id.clone(), options.slots);
    let mut registry = registry.clone();
    registry.register(Arc::new(Process::recording(process_ledger(&args, &id)?)));
    let worker = Worker::new(options, &registry, &args.components)?;
    let hosted = worker.component_ids().collect::<Vec<_>>().join(", ");
    let drain = CancellationToken::new();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        bail!("cannot listen for SIGTERM and SIGINT");
    };
    let registered = tokio::select! {
        registered = worker.register() => registered?,
        _ = term.recv() => return Ok(ExitCode::SUCCESS),
        _ = int.recv() => return Ok(ExitCode::SUCCESS),
    };
    say!(
        "registered as {id} with {} ({slots} slots: {hosted})",
        args.coordinator
    );
    let mut serving = tokio::spawn(registered.serve(drain.clone()));
    let summary = tokio::select! {
        // It stops by itself only when the coordinator refuses it for good.
        done = &mut serving => done.context("the worker's task")??,
        _ = term.recv() => drained(&drain, serving, &mut term, &mut int).await??,
        _ = int.recv() => drained(&drain, serving, &mut term, &mut int).await??,
    };
    say!(
        "stopped: {} acknowledged, {} stale, {} stopped",
        summary.acknowledged,
        summary.stale,
        summary.stopped
    );
    Ok(ExitCode::SUCCESS)
}

/// Drains the worker; a second signal gives up on it (exit 1).
async fn drained(
    drain: &CancellationToken,
    serving: tokio::task::JoinHandle<Result<WorkerSummary, WorkerError>>,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Result<Result<WorkerSummary, WorkerError>> {
    say!("draining");
    drain.cancel();
    tokio::select! {
        done = serving => done.context("the worker's task"),
        _ = term.recv() => bail!("stopped before the attempts it holds ended"),
        _ = int.recv() => bail!("stopped before the attempts it holds ended"),
    }
}
