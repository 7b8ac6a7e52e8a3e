//! `shipsec run`: one workflow through an in-process orchestrator, with live progress on a
//! terminal, an optional JSON-lines event file, and a summary (or the run result as JSON).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::RunResult;
use shipsec_orchestrator::RunStatus;
use shipsec_orchestrator::components::Process;
use shipsec_orchestrator::components::ProcessLedger;
use shipsec_orchestrator::components::reported_failure;
use shipsec_orchestrator::config::Durability;
use shipsec_orchestrator::definition::Graph;
use shipsec_orchestrator::definition::JsonObject;
use shipsec_orchestrator::definition::{Format, parse_typed};
use shipsec_orchestrator::definition::{Loaded, load_file_with};
use shipsec_orchestrator::service::graph::RunGraph;
use shipsec_orchestrator::service::ui::{self, ReportData, UiConfig};
use shipsec_orchestrator::telemetry::{ExportConfig, Telemetry};
use shipsec_orchestrator::{EngineConfig, EngineError, Orchestrator};
use shipsec_orchestrator::{EventType, TraceEvent};
use shipsec_orchestrator::{ShutdownMode, SubmitOptions};

/// Arguments of `shipsec run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Definition file (JSON or YAML).
    pub(crate) file: PathBuf,
    /// A run input, `key=value` (the value is read as JSON when it parses, else as text).
    #[arg(long = "input", value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    /// A JSON or YAML file holding an object of run inputs.
    #[arg(long = "inputs", value_name = "FILE")]
    inputs_file: Option<PathBuf>,
    /// Print the run result as JSON on stdout, and nothing else there.
    #[arg(long)]
    json: bool,
    /// Write every trace event to this file as JSON lines.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Write the run view of the finished run to this file: one self-contained HTML page
    /// (its DAG, timeline and node details), for CI artefacts and bug reports.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Engine configuration (YAML or JSON): caps, rate limits, grace period.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Most nodes running at once (overrides the configuration file).
    #[arg(long, value_name = "N")]
    max_concurrent_nodes: Option<u32>,
    /// Refuse a definition with warnings (derived fields that disagree with the edges).
    #[arg(long)]
    strict: bool,
    /// Journal the run in DIR, so that `shipsec resume --data-dir DIR` finishes it if
    /// this process dies.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How hard the journal keeps what it is given: fsync, process or off.
    #[arg(long, value_name = "MODE", default_value = "fsync")]
    durability: Durability,
    /// Open a journal that lost acknowledged data (a damaged or missing write-ahead log)
    /// without what it lost; the loss is listed and recorded in its `losses` file.
    #[arg(long)]
    accept_journal_loss: bool,
}

/// `shipsec resume`: finishes the runs a killed `shipsec run` (or server) left unfinished.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The journal's directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// How hard the journal keeps what it is given: fsync, process or off.
    #[arg(long, value_name = "MODE", default_value = "fsync")]
    durability: Durability,
    /// Open a journal that lost acknowledged data (a damaged or missing write-ahead log)
    /// without what it lost; the loss is listed and recorded in its `losses` file.
    #[arg(long)]
    accept_journal_loss: bool,
    /// Engine configuration file (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the results as a JSON array instead of summaries.
    #[arg(long)]
    json: bool,
}

/// The engine configuration from `--config`, then flags, validated.
fn engine_config(args: &RunArgs, registry: &ComponentRegistry) -> Result<EngineConfig> {
    let mut config = read_config(args.config.as_ref())?;
    if let Some(n) = args.max_concurrent_nodes {
        config.max_concurrent_nodes = Some(n);
    }
    if let Some(dir) = &args.data_dir {
        config.journal.data_dir = Some(dir.clone());
        config.journal.durability = args.durability;
        config.journal.loss = crate::cli::serve::loss_policy(args.accept_journal_loss);
    }
    config.validate(registry)?;
    Ok(config)
}

pub(crate) fn read_config(path: Option<&PathBuf>) -> Result<EngineConfig> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_typed(&text, Format::detect(Some(path), &text))
                .with_context(|| format!("invalid engine configuration {}", path.display()))?
        }
        None => EngineConfig::default(),
    })
}

/// The ledger of running `core.process` attempts for the journal in `data_dir`
/// (`<data_dir>/processes`), after killing what an earlier process using that journal
/// left running (a kill -9 takes a child along, not what the child started in the
/// background): that happens before any run resumes, so no lost attempt's leftovers run
/// beside its retry.
pub(crate) fn process_ledger(data_dir: &Path) -> Result<Arc<ProcessLedger>> {
    let (ledger, sweep) = ProcessLedger::open(&data_dir.join("processes"))?;
    if !sweep.killed.is_empty() {
        let killed: Vec<String> = sweep
            .killed
            .iter()
            .map(|(pid, attempt)| format!("{pid} ({attempt})"))
            .collect();
        complain!(
            "killed {} processes left running by {} attempts of an earlier process using {}: {}",
            sweep.killed.len(),
            sweep.attempts.len(),
            ledger.dir().display(),
            killed.join(", ")
        );
    }
    if !sweep.lingering.is_empty() {
        bail!(
            "processes left running by an earlier process using {} did not exit within ten seconds of SIGKILL: {:?}",
            ledger.dir().display(),
            sweep.lingering
        );
    }
    Ok(ledger)
}

/// `registry` with `core.process` recording its attempts in the ledger of the journal in
/// `data_dir`, when there is a journal.
fn with_ledger(
    mut registry: ComponentRegistry,
    data_dir: Option<&Path>,
) -> Result<ComponentRegistry> {
    if let Some(dir) = data_dir {
        registry.register(Arc::new(Process::recording(process_ledger(dir)?)));
    }
    Ok(registry)
}

/// Resumes the unfinished runs of a journal and prints their results; exit 0 when every
/// one COMPLETED, 1 otherwise (or when the journal cannot be opened).
pub(crate) fn resume(args: ResumeArgs, registry: ComponentRegistry) -> ExitCode {
    let outcome = (|| -> Result<Vec<std::sync::Arc<RunResult>>> {
        let mut config = read_config(args.config.as_ref())?;
        config.journal.data_dir = Some(args.data_dir.clone());
        config.journal.durability = args.durability;
        config.journal.loss = crate::cli::serve::loss_policy(args.accept_journal_loss);
        config.validate(&registry)?;
        let registry = with_ledger(registry, Some(&args.data_dir))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(async {
            let handle = Orchestrator::start_with(config, registry).await?;
            let mut results = Vec::new();
            for run_id in handle.resumed() {
                results.push(handle.run(run_id).await?.result().await?);
            }
            handle.shutdown(ShutdownMode::Drain).await?;
            Ok(results)
        })
    })();
    match outcome {
        Ok(results) => {
            if args.json {
                let all: Vec<&RunResult> = results.iter().map(|r| &**r).collect();
                match serde_json::to_string_pretty(&all) {
                    Ok(text) => say!("{text}"),
                    Err(e) => complain!("{e}"),
                }
            } else if results.is_empty() {
                say!("no unfinished run in {}", args.data_dir.display());
            } else {
                for result in &results {
                    print_result_line(result);
                }
            }
            let all_completed = results.iter().all(|r| r.status == RunStatus::Completed);
            if all_completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            complain!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn print_result_line(result: &RunResult) {
    print_headline(result);
    if let Some(error) = &result.error {
        say!("  error: {error}");
    }
}

/// Runs `future` on a multi-thread runtime with the telemetry installed inside it (the
/// gRPC exporter needs one), then shuts the telemetry down while the runtime is still
/// alive, so that the last spans are flushed. Its output, and how many spans could not be
/// exported.
pub(crate) fn with_telemetry<F: std::future::Future>(
    future: F,
) -> Result<(F::Output, u64), ExitCode> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("cannot start the async runtime: {e}");
            return Err(ExitCode::from(1));
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        match Telemetry::install(ExportConfig::from_env()) {
            Ok(t) => Some(t),
            Err(e) => {
                complain!("telemetry disabled: {e}");
                None
            }
        }
    };
    let output = runtime.block_on(future);
    let dropped = telemetry.map_or(0, Telemetry::shutdown);
    Ok((output, dropped))
}

/// Runs the workflow and maps its status to the exit code.
pub(crate) fn run(args: RunArgs, registry: ComponentRegistry) -> ExitCode {
    let config = match engine_config(&args, &registry) {
        Ok(config) => config,
        Err(e) => {
            complain!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let registry = match with_ledger(registry, config.journal.data_dir.as_deref()) {
        Ok(registry) => registry,
        Err(e) => {
            complain!("{e:#}");
            return ExitCode::from(1);
        }
    };
    let loaded = match load_file_with(&args.file, &registry, &config.limits) {
        Ok(loaded) => loaded,
        Err(e) => return crate::invalid(&e),
    };
    if let Err(code) = crate::checked(&loaded, args.strict) {
        return code;
    }
    let inputs = match run_inputs(&args) {
        Ok(inputs) => inputs,
        Err(e) => {
            complain!("invalid inputs: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (outcome, dropped) = match with_telemetry(execute(&args, config, loaded, registry, inputs))
    {
        Ok(both) => both,
        Err(code) => return code,
    };
    if dropped > 0 {
        complain!("telemetry: {dropped} spans could not be exported");
    }
    match outcome {
        Ok(result) => {
            if result.status == RunStatus::Completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let invalid = matches!(
                e.downcast_ref::<EngineError>(),
                Some(EngineError::Run(
                    shipsec_orchestrator::RunCommandError::InvalidInputs(_)
                ))
            );
            complain!("{e:#}");
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

fn run_inputs(args: &RunArgs) -> Result<JsonObject> {
    let mut inputs = JsonObject::new();
    if let Some(path) = &args.inputs_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let object: JsonObject = parse_typed(&text, Format::detect(Some(path), &text))
            .with_context(|| format!("{} must hold an object of inputs", path.display()))?;
        inputs.extend(object);
    }
    for pair in &args.inputs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("`--input {pair}` must be KEY=VALUE");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        inputs.insert(key.to_owned(), value);
    }
    Ok(inputs)
}

async fn execute(
    args: &RunArgs,
    config: EngineConfig,
    loaded: Loaded,
    registry: ComponentRegistry,
    inputs: JsonObject,
) -> Result<std::sync::Arc<RunResult>> {
    let handle = Orchestrator::start_with(config, registry).await?;
    // The engine checks the definition again, against its own limits and components.
    let workflow = handle.prepare(loaded.definition)?;
    let mut run = handle
        .submit_workflow(&workflow, inputs, SubmitOptions::default())
        .await?;
    let mut events = handle.events(run.run_id()).await?;
    let mut sink = match &args.events {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut progress = Progress::new(
        workflow.graph().len(),
        !args.json && std::io::stderr().is_terminal(),
    );
    let mut kept = Vec::new();
    while let Some(event) = events.next().await {
        if let Some(sink) = sink.as_mut() {
            serde_json::to_writer(&mut *sink, &event)?;
            sink.write_all(b"\n")?;
        }
        progress.on_event(&event);
        if args.html.is_some() {
            kept.push(event);
        }
    }
    if let Some(mut sink) = sink {
        sink.flush()?;
    }
    progress.finish();
    let result = run.result().await?;
    handle.shutdown(ShutdownMode::Drain).await?;
    if let Some(path) = &args.html {
        let graph = RunGraph::of(workflow.graph());
        let data = ReportData {
            graph: Some(&graph),
            result: &*result,
            events: &kept,
        };
        std::fs::write(path, ui::report(&data, &UiConfig::default()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&*result)?);
    } else {
        print_summary(&result, workflow.graph());
    }
    Ok(result)
}

/// Live counts on stderr while the run goes (only on a terminal).
struct Progress {
    bar: Option<ProgressBar>,
    running: BTreeMap<String, ()>,
    done: u64,
    failed: u64,
}

impl Progress {
    fn new(total: usize, live: bool) -> Progress {
        let bar = live.then(|| {
            let bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            running: BTreeMap::new(),
            done: 0,
            failed: 0,
        }
    }

    fn on_event(&mut self, event: &TraceEvent) {
        match event.kind {
            EventType::Started => {
                self.running.insert(event.node_id.to_string(), ());
            }
            kind if kind.is_terminal() => {
                self.running.remove(&*event.node_id);
                self.done += 1;
                if kind == EventType::Failed {
                    self.failed += 1;
                }
            }
            _ => {}
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            let names: Vec<&str> = self.running.keys().take(5).map(String::as_str).collect();
            let more = self.running.len().saturating_sub(names.len());
            let extra = if more > 0 {
                format!(" +{more}")
            } else {
                String::new()
            };
            bar.set_message(format!(
                "running {} · failed {} · now: {}{extra}",
                self.running.len(),
                self.failed,
                names.join(", ")
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `<title> — <status> in <ms> ms (run <id>)`.
fn print_headline(result: &RunResult) {
    say!(
        "{} — {} in {} ms (run {})",
        result.title,
        result.status.as_str(),
        result.duration_ms,
        result.run_id
    );
}

/// The run's summary, one line per node in the DAG's topological order (a run reads
/// top-down).
fn print_summary(result: &RunResult, graph: &Graph) {
    print_headline(result);
    let width = result
        .nodes
        .keys()
        .map(|r| r.len())
        .max()
        .unwrap_or(4)
        .max(4);
    say!(
        "  {:width$}  {:9}  {:8}  detail",
        "node",
        "status",
        "attempts"
    );
    let in_order = graph.topo_order.iter().filter_map(|ix| {
        let name = &graph.node(*ix).node_ref;
        result.nodes.get_key_value(&**name)
    });
    for (name, node) in in_order {
        let detail = node
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.error_type, e.message))
            .or_else(|| {
                let output = result.outputs.get(name)?;
                reported_failure(output).map(|m| format!("reported failure: {m}"))
            })
            .or_else(|| node.reason.clone())
            .or_else(|| {
                node.triggered_by
                    .as_ref()
                    .map(|t| format!("triggered by {}", t.join(", ")))
            })
            .unwrap_or_default();
        say!(
            "  {name:width$}  {:9}  {:8}  {detail}",
            node.status.as_str(),
            node.attempts
        );
    }
    if let Some(error) = &result.error {
        say!("error: {error}");
    }
}
