//! The ShipSec compatibility rules (`docs/shipsec.md`), one test each, through the public
//! handle and the `shipsec` binary. Every definition is written once as YAML, the way a
//! person writes it, and run in both forms — that YAML and the JSON of the same value —
//! which must behave the same.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Finished, engine, run_on};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::definition::graph::Graph;
use shipsec_orchestrator::runtime::definition::load::{LoadError, load_str};
use shipsec_orchestrator::runtime::definition::parse::{Format, parse_typed};
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};

/// The YAML text and the JSON text of the same definition.
fn both_forms(yaml: &str) -> [(Format, String); 2] {
    let value: Value = parse_typed(yaml, Format::Yaml).expect("the YAML form parses");
    let json = serde_json::to_string_pretty(&value).expect("JSON text");
    [(Format::Yaml, yaml.to_owned()), (Format::Json, json)]
}

fn load(text: &str, format: Format) -> Result<Arc<Graph>, LoadError> {
    load_str(text, format, &ComponentRegistry::with_builtins()).map(|l| l.graph)
}

/// Loads and runs each form; returns their runs, YAML first.
async fn run_both(yaml: &str) -> Vec<Finished> {
    let handle = engine().await;
    let mut runs = Vec::new();
    for (format, text) in both_forms(yaml) {
        let workflow = handle
            .load_str(&text, format)
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        runs.push(run_on(&handle, &workflow, JsonObject::new()).await);
    }
    common::shutdown(&handle).await;
    assert_same(&runs[0], &runs[1]);
    runs
}

/// What must not depend on the text format: statuses, outputs, errors, warnings.
fn assert_same(yaml: &Finished, json: &Finished) {
    let (a, b) = (&yaml.result, &json.result);
    assert_eq!(a.status, b.status);
    assert_eq!(a.error, b.error);
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.warnings, b.warnings);
    let statuses = |f: &Finished| -> Vec<(String, NodeStatus)> {
        f.result
            .nodes
            .iter()
            .map(|(r, n)| (r.to_string(), n.status))
            .collect()
    };
    assert_eq!(statuses(yaml), statuses(json));
}

fn warnings(graph: &Graph) -> Vec<(String, String)> {
    graph
        .warnings
        .iter()
        .map(|w| (w.path.clone(), w.message.clone()))
        .collect()
}

// Rule 1: given edges are authoritative whatever the version --------------------------------

const VERSION_1_WITH_EDGES: &str = r#"
version: 1
title: version 1 with edges
entrypoint: { ref: start }
nodes:
  start: { ref: start }
  scan: { ref: scan }
  alert: { ref: alert }
edges:
  - { id: start->scan, sourceRef: start, targetRef: scan, kind: success }
  - { id: scan->alert, sourceRef: scan, targetRef: alert, kind: error }
dependencyCounts: { start: 0, scan: 1, alert: 1 }
actions:
  - { ref: start, componentId: core.workflow.entrypoint, params: {}, inputOverrides: {}, dependsOn: [], inputMappings: {} }
  - { ref: scan, componentId: core.fail, params: { message: nope }, inputOverrides: {}, dependsOn: [start], inputMappings: {} }
  - { ref: alert, componentId: core.echo, params: {}, inputOverrides: {}, dependsOn: [scan], inputMappings: {} }
config: { environment: test, timeoutSeconds: 30 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn version_1_definitions_with_edges_run_on_their_edges() {
    for (format, text) in both_forms(VERSION_1_WITH_EDGES) {
        let graph = load(&text, format).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(graph.edges.len(), 2, "{format:?}");
        assert!(
            graph.warnings.is_empty(),
            "{format:?}: {:?}",
            graph.warnings
        );
    }
    for f in run_both(VERSION_1_WITH_EDGES).await {
        // The error edge from the given edges, which dependsOn alone could not express.
        assert_eq!(f.status("scan"), NodeStatus::Failed);
        assert_eq!(f.status("alert"), NodeStatus::Completed);
        assert_eq!(f.result.status, RunStatus::Completed);
    }
}

const VERSION_1_WITHOUT_EDGES: &str = r#"
version: 1
title: version 1 without edges
actions:
  - { ref: a, componentId: core.echo, params: { x: 1 } }
  - ref: b
    componentId: core.echo
    dependsOn: [a]
    inputMappings: { x: { sourceRef: a, sourceHandle: x } }
  - { ref: c, componentId: core.echo, inputMappings: { y: { sourceRef: b, sourceHandle: x } } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn definitions_without_edges_derive_them_from_depends_on_and_mappings() {
    for f in run_both(VERSION_1_WITHOUT_EDGES).await {
        assert_eq!(f.result.status, RunStatus::Completed);
        assert_eq!(f.output("c")["y"], 1);
    }
}

#[test]
fn an_empty_edge_list_is_given_edges_even_in_version_1() {
    let yaml = r#"
version: 1
title: t
edges: []
actions:
  - { ref: a, componentId: core.echo }
  - { ref: b, componentId: core.echo, dependsOn: [a] }
"#;
    for (format, text) in both_forms(yaml) {
        let graph = load(&text, format).unwrap_or_else(|e| panic!("{e}"));
        assert!(graph.edges.is_empty());
        assert_eq!(
            warnings(&graph),
            [(
                "actions[1].dependsOn[0]".into(),
                "lists `a`, but no edge goes from `a` to `b`; the edges decide".into()
            )]
        );
    }
}

// Rule 2: dependencyCounts counts distinct parents -----------------------------------------

/// Two ports wired between subfinder and dnsx, as ShipSec's compiler writes them.
const TWO_PORTS_ONE_PARENT: &str = r#"
version: 2
title: two ports, one parent
entrypoint: { ref: subfinder }
nodes:
  subfinder: { ref: subfinder, mode: normal, label: Subfinder }
  dnsx: { ref: dnsx, mode: normal, label: dnsx }
edges:
  - { id: xy-edge__subfindersubdomains-dnsxdomains, sourceRef: subfinder, targetRef: dnsx,
      sourceHandle: subdomains, targetHandle: domains, kind: success }
  - { id: xy-edge__subfinderdomain-dnsxwildcardDomain, sourceRef: subfinder, targetRef: dnsx,
      sourceHandle: domain, targetHandle: wildcardDomain, kind: success }
dependencyCounts: { subfinder: 0, dnsx: COUNT }
actions:
  - ref: subfinder
    componentId: core.echo
    params: { domain: example.com, subdomains: [www.example.com, api.example.com] }
    inputOverrides: {}
    dependsOn: []
    inputMappings: {}
  - ref: dnsx
    componentId: core.echo
    params: {}
    inputOverrides: {}
    dependsOn: [subfinder]
    inputMappings:
      domains: { sourceRef: subfinder, sourceHandle: subdomains }
      wildcardDomain: { sourceRef: subfinder, sourceHandle: domain }
config: { environment: default, timeoutSeconds: 0 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_count_of_distinct_parents_agrees_with_two_edges_from_one_parent() {
    let yaml = TWO_PORTS_ONE_PARENT.replace("COUNT", "1");
    for (format, text) in both_forms(&yaml) {
        let graph = load(&text, format).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            graph.warnings.is_empty(),
            "{format:?}: {:?}",
            graph.warnings
        );
    }
    for f in run_both(&yaml).await {
        assert_eq!(f.result.status, RunStatus::Completed);
        assert_eq!(
            f.output("dnsx")["domains"],
            json!(["www.example.com", "api.example.com"])
        );
        assert_eq!(f.output("dnsx")["wildcardDomain"], "example.com");
    }
}

#[test]
fn a_count_of_edges_instead_of_parents_is_a_warning() {
    let yaml = TWO_PORTS_ONE_PARENT.replace("COUNT", "2");
    for (format, text) in both_forms(&yaml) {
        let graph = load(&text, format).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            warnings(&graph),
            [(
                "dependencyCounts.dnsx".into(),
                "says 2 but `dnsx` has 1 distinct parent(s); the edges decide".into()
            )]
        );
    }
}

// Rule 3: disagreements with the edges are warnings, never refusals ------------------------

/// A hand-written definition: the error-edge source is missing from the handler's
/// `dependsOn`, its count is stale, and a count names a node that is gone.
const STALE: &str = r#"
version: 2
title: stale derived fields
edges:
  - { sourceRef: scan, targetRef: notify, kind: error }
  - { sourceRef: scan, targetRef: report }
dependencyCounts: { scan: 0, notify: 0, report: 1, old: 2 }
actions:
  - { ref: scan, componentId: core.fail, params: { message: scanner down } }
  - { ref: notify, componentId: core.echo, dependsOn: [] }
  - { ref: report, componentId: core.echo, dependsOn: [scan, gone] }
"#;

fn stale_warnings() -> Vec<(String, String)> {
    [
        (
            "actions[1].dependsOn",
            "omits `scan`, which has an edge to `notify`; the edges decide",
        ),
        (
            "actions[2].dependsOn[1]",
            "names unknown node `gone`; the edges decide",
        ),
        (
            "dependencyCounts.notify",
            "says 0 but `notify` has 1 distinct parent(s); the edges decide",
        ),
        (
            "dependencyCounts.old",
            "names unknown node `old`; the edges decide",
        ),
    ]
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_depends_on_and_counts_are_warnings_with_paths_and_the_edges_decide() {
    for (format, text) in both_forms(STALE) {
        let graph = load(&text, format).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(warnings(&graph), stale_warnings(), "{format:?}");
    }
    for f in run_both(STALE).await {
        // The error edge decides: the handler runs and the failure is handled.
        assert_eq!(f.status("notify"), NodeStatus::Completed);
        assert_eq!(f.status("report"), NodeStatus::Skipped);
        assert_eq!(f.result.status, RunStatus::Completed);
        let got: Vec<(String, String)> = f
            .result
            .warnings
            .iter()
            .map(|w| (w.path.clone(), w.message.clone()))
            .collect();
        assert_eq!(got, stale_warnings(), "the run result carries the warnings");
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("shipsec-rules-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("temp file");
    path
}

fn shipsec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shipsec"))
        .args(args)
        .output()
        .expect("shipsec runs")
}

#[test]
fn validate_prints_warnings_on_stderr_and_exits_0_and_strict_refuses_with_exit_2() {
    for (format, text) in both_forms(STALE) {
        let ext = if format == Format::Yaml {
            "yaml"
        } else {
            "json"
        };
        let file = temp_file(&format!("stale.{ext}"), &text);
        let file = file.to_str().expect("utf-8 path");

        let out = shipsec(&["validate", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid (3 nodes, 2 edges)"));
        for (path, message) in stale_warnings() {
            assert!(
                stderr.contains(&format!("warning: {path}: {message}")),
                "{stderr}"
            );
        }

        let out = shipsec(&["validate", "--strict", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("invalid workflow definition (4 problems)"),
            "{stderr}"
        );
        assert!(
            stderr.contains("dependencyCounts.notify: says 0"),
            "{stderr}"
        );

        let out = shipsec(&["run", "--strict", file]);
        assert_eq!(out.status.code(), Some(2), "run --strict refuses too");
        std::fs::remove_file(file).ok();
    }
}

// Rule 4: tool-mode nodes are registered, not executed -----------------------------------

/// `lookup` is an agent's tool: its component would fail (and `enrich` lacks its required
/// `ms`), but tool-mode nodes do not execute their component.
const TOOL_MODE: &str = r#"
version: 2
title: an agent with two tools
nodes:
  lookup: { ref: lookup, mode: tool }
  enrich: { ref: enrich, mode: tool }
  agent: { ref: agent, mode: normal, connectedToolNodeIds: [lookup, enrich] }
edges:
  - { sourceRef: start, targetRef: lookup }
  - { sourceRef: start, targetRef: enrich }
  - { sourceRef: lookup, targetRef: agent, sourceHandle: tools, targetHandle: tools }
  - { sourceRef: enrich, targetRef: agent, sourceHandle: tools, targetHandle: tools }
  - { sourceRef: lookup, targetRef: audit }
  - { sourceRef: lookup, targetRef: dump, sourceHandle: records }
actions:
  - { ref: start, componentId: core.echo }
  - { ref: lookup, componentId: core.fail, params: { message: must not run } }
  - { ref: enrich, componentId: core.sleep }
  - { ref: agent, componentId: core.echo, params: { prompt: triage } }
  - { ref: audit, componentId: core.echo }
  - { ref: dump, componentId: core.echo }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn tool_mode_nodes_complete_as_registered_tools_on_default_and_tools() {
    for f in run_both(TOOL_MODE).await {
        let registered = json!({"mode": "tool", "status": "ready", "tools": []});
        for tool in ["lookup", "enrich"] {
            assert_eq!(f.status(tool), NodeStatus::Completed, "{tool}");
            assert_eq!(Value::Object(f.output(tool).clone()), registered);
            let ports = f.result.nodes[tool].active_ports.clone();
            assert_eq!(ports, Some(vec!["default".into(), "tools".into()]));
            let done = f.events_of(tool, EventType::Completed);
            let data = done[0].data.as_deref().expect("data");
            assert_eq!(data["activatedPorts"], json!(["default", "tools"]));
        }
        // The agent they feed runs; so does a plain child (default port); a child on
        // another port is skipped, as for any routing node.
        assert_eq!(f.status("agent"), NodeStatus::Completed);
        assert_eq!(f.status("audit"), NodeStatus::Completed);
        assert_eq!(f.status("dump"), NodeStatus::Skipped);
        assert!(
            f.reason("dump")
                .contains("without activating port `records`")
        );
        assert_eq!(f.result.status, RunStatus::Completed);
    }
}

// Rule 5: {success: false} completes the node and fails the run -------------------------

const REPORTED_FAILURE: &str = r#"
version: 2
title: components that report failure
edges:
  - { sourceRef: scan, targetRef: slow }
  - { sourceRef: scan, targetRef: report }
  - { sourceRef: slow, targetRef: report }
actions:
  - { ref: scan, componentId: core.echo, params: { success: false, error: quota exceeded } }
  - { ref: slow, componentId: core.sleep, params: { ms: 20, success: false } }
  - { ref: report, componentId: core.echo, params: { success: true } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_reported_failure_completes_its_node_and_fails_the_run_once_the_dag_ends() {
    for f in run_both(REPORTED_FAILURE).await {
        for node in ["scan", "slow", "report"] {
            assert_eq!(
                f.status(node),
                NodeStatus::Completed,
                "{node}: children still run"
            );
        }
        assert_eq!(f.result.status, RunStatus::Failed);
        assert!(!f.result.success);
        assert_eq!(
            f.result.error.as_deref(),
            Some("Workflow failed: [scan] quota exceeded; [slow] Component reported failure")
        );
    }
}

#[test]
fn shipsec_run_exits_1_on_a_reported_failure_and_says_which_node() {
    let file = temp_file("reported.yaml", REPORTED_FAILURE);
    let out = shipsec(&["run", file.to_str().expect("utf-8 path")]);
    std::fs::remove_file(&file).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("reported failure: quota exceeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: Workflow failed: [scan] quota exceeded"),
        "{stdout}"
    );
}

// Rule 6: spilled outputs pass through with the selected handle ---------------------------

const SPILLED: &str = r#"
version: 2
title: a spilled output
edges:
  - { sourceRef: scan, targetRef: parse }
actions:
  - ref: scan
    componentId: core.echo
    params: { __spilled__: true, storageRef: runs/r1/scan.json, originalSize: 3145728 }
  - ref: parse
    componentId: core.echo
    inputMappings:
      hosts: { sourceRef: scan, sourceHandle: hosts }
      raw: { sourceRef: scan, sourceHandle: __self__ }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_mapping_from_a_spilled_output_gets_the_marker_and_its_handle() {
    for f in run_both(SPILLED).await {
        assert_eq!(f.result.status, RunStatus::Completed);
        let marker = json!({"__spilled__": true, "storageRef": "runs/r1/scan.json",
                            "originalSize": 3145728});
        assert_eq!(Value::Object(f.output("scan").clone()), marker, "untouched");
        let parse = f.output("parse");
        assert_eq!(parse["raw"], marker);
        let mut selected = marker.clone();
        selected["__spilled_handle__"] = json!("hosts");
        assert_eq!(parse["hosts"], selected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_handle_of_an_ordinary_output_is_still_an_input_error() {
    let yaml = SPILLED.replace("__spilled__: true", "__spilled__: false");
    for f in run_both(&yaml).await {
        assert_eq!(f.status("parse"), NodeStatus::Failed);
        assert_eq!(f.error_type("parse"), "InputError");
    }
}

// The shape ShipSec's compiler emits ------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_compiled_fan_out_recon_definition_validates_without_warnings_and_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let json = std::fs::read_to_string(dir.join("shipsec-recon.json")).expect("example");
    let yaml = std::fs::read_to_string(dir.join("shipsec-recon.yaml")).expect("example");
    let as_value = |text: &str, format| parse_typed::<Value>(text, format).expect("parses");
    assert_eq!(
        as_value(&json, Format::Json),
        as_value(&yaml, Format::Yaml),
        "one workflow"
    );
    let graph = load(&json, Format::Json).unwrap_or_else(|e| panic!("{e}"));
    assert!(graph.warnings.is_empty(), "{:?}", graph.warnings);
    let subfinder = graph.find("subfinder").expect("subfinder");
    let dnsx = graph.find("dnsx").expect("dnsx");
    let pair = graph
        .edges
        .iter()
        .filter(|e| e.source == subfinder && e.target == dnsx);
    assert_eq!(pair.count(), 2, "two ports wired between one pair");

    let handle = engine().await;
    let mut inputs = JsonObject::new();
    inputs.insert("domains".into(), json!(["example.com"]));
    let workflow = handle.load_str(&json, Format::Json).expect("valid");
    let f = run_on(&handle, &workflow, inputs).await;
    common::shutdown(&handle).await;
    assert_eq!(
        f.result.status,
        RunStatus::Completed,
        "{:?}",
        f.result.error
    );
    assert_eq!(f.output("subfinder")["domains"], json!(["example.com"]));
    assert_eq!(f.output("dnsx")["wildcardDomain"], "example.com");
    let nuclei = f.output("nuclei");
    for input in ["hosts", "targets", "openPorts"] {
        assert!(nuclei.contains_key(input), "nuclei got {input}");
    }
    // The fan-out and the fan-in: each scanner started after subfinder, nuclei after all.
    let started = |n: &str| f.result.nodes[n].started_at.expect("started");
    let ended = |n: &str| f.result.nodes[n].completed_at.expect("ended");
    for scanner in ["dnsx", "httpx", "naabu"] {
        assert!(started(scanner) >= ended("subfinder"));
        assert!(started("nuclei") >= ended(scanner));
    }
}
