//! `shipsec report RESULT.json EVENTS.jsonl --html OUT`: the run view of a run that has
//! ended, from the files `shipsec run --json --events` (or the API) wrote, as one
//! self-contained HTML page. With `--definition`, the page draws the run's edges too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::definition::load_file;
use shipsec_orchestrator::service::graph::RunGraph;
use shipsec_orchestrator::service::ui::{self, ReportData, UiConfig};

/// Arguments of `shipsec report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The run result (`shipsec run --json`, or `GET /v1/runs/{id}/result`).
    result: PathBuf,
    /// Its trace events, one JSON object per line (`shipsec run --events`).
    events: PathBuf,
    /// The page to write.
    #[arg(long, value_name = "FILE")]
    html: PathBuf,
    /// The workflow's definition: the page then draws its edges and joins.
    #[arg(long, value_name = "FILE")]
    definition: Option<PathBuf>,
    /// A trace's page, `{traceId}` replaced by the run's trace id.
    #[arg(long, value_name = "URL")]
    jaeger_url: Option<String>,
}

/// Writes the report; exit 1 with the reason (and where) when an input is bad.
pub(crate) fn report(args: ReportArgs, registry: &ComponentRegistry) -> ExitCode {
    match write(&args, registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write(args: &ReportArgs, registry: &ComponentRegistry) -> Result<()> {
    let result = read_result(&args.result)?;
    let events = read_events(&args.events)?;
    let graph = match &args.definition {
        Some(path) => Some(RunGraph::of(&load_file(path, registry)?.graph)),
        None => None,
    };
    if let Some(graph) = &graph {
        let nodes = result.get("nodes").and_then(Value::as_object);
        let unknown: Vec<&str> = nodes
            .into_iter()
            .flat_map(|n| n.keys())
            .filter(|r| !graph.nodes.iter().any(|g| &g.node_ref == *r))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            bail!(
                "{}: the result has nodes the definition does not: {}",
                args.result.display(),
                unknown.join(", ")
            );
        }
    }
    let data = ReportData {
        graph: graph.as_ref(),
        result: &result,
        events: &events,
    };
    let config = UiConfig {
        jaeger_url: args.jaeger_url.clone(),
    };
    std::fs::write(&args.html, ui::report(&data, &config))
        .with_context(|| format!("writing {}", args.html.display()))
}

fn read_result(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let result: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    for field in ["runId", "status", "nodes"] {
        if result.get(field).is_none() {
            bail!("{}: not a run result (no `{field}`)", path.display());
        }
    }
    Ok(result)
}

fn read_events(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON event", path.display(), i + 1))?;
        if event.get("seq").and_then(Value::as_u64).is_none() || event.get("type").is_none() {
            bail!(
                "{}:{}: not a trace event (no `seq` or `type`)",
                path.display(),
                i + 1
            );
        }
        events.push(event);
    }
    Ok(events)
}
