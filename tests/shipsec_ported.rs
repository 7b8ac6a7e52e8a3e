//! ShipSec Studio's own scheduler tests, ported: every definition of
//! `workflow-scheduler.test.ts`, `workflow-runner.test.ts`, the "Workflow Execution" tests
//! of `worker-integration.test.ts` and `benchmark-scheduler.ts`, read from
//! `tests/shipsec/definitions` byte for byte as ShipSec wrote them, with only their test
//! components replaced by built-ins of the same behaviour (each test says which), and
//! their assertions translated. Where ShipSec expects something else by design, the test
//! asserts this engine's behaviour and the comment says why (`docs/shipsec.md` lists
//! these differences).

mod common;

use std::path::Path;

use common::{Finished, engine, run_on};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::definition::parse::{Format, from_value, parse_typed};
use shipsec_orchestrator::runtime::definition::{JsonObject, WorkflowDefinition};
use shipsec_orchestrator::runtime::semantics::event::{EventType, Level};
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};

/// One of ShipSec's definitions, as the JSON value its YAML text reads as.
fn shipsec_definition(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/shipsec/definitions")
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("definition file");
    parse_typed(&text, Format::Yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn action_mut<'a>(def: &'a mut Value, node: &str) -> &'a mut Value {
    def["actions"]
        .as_array_mut()
        .expect("actions")
        .iter_mut()
        .find(|a| a["ref"] == node)
        .unwrap_or_else(|| panic!("no action {node}"))
}

/// Replaces the component of `node` (and its params) by a built-in.
fn replace(def: &mut Value, node: &str, component: &str, params: Value) {
    let action = action_mut(def, node);
    action["componentId"] = json!(component);
    action["params"] = params;
}

/// `test.sleep.parallel` waits `delay` ms and reports its times: `core.sleep` waits `ms`
/// and echoes the rest (`label`); the times are in the node records.
fn sleep_parallel_to_core_sleep(def: &mut Value) {
    for action in def["actions"].as_array_mut().expect("actions") {
        if action["componentId"] == "test.sleep.parallel" {
            action["componentId"] = json!("core.sleep");
            let params = action["params"].as_object_mut().expect("params");
            let delay = params.remove("delay").expect("delay");
            params.insert("ms".into(), delay);
        }
    }
}

async fn run(def: Value) -> Finished {
    let handle = engine().await;
    let def: WorkflowDefinition = from_value(def).unwrap_or_else(|e| panic!("{e}"));
    let workflow = handle.prepare(def).unwrap_or_else(|e| panic!("{e}"));
    let finished = run_on(&handle, &workflow, JsonObject::new()).await;
    common::shutdown(&handle).await;
    finished
}

fn ms_between(f: &Finished, from: &str, to: &str) -> i128 {
    let started = f.result.nodes[from]
        .started_at
        .expect("started")
        .system_time();
    let ended = f.result.nodes[to]
        .completed_at
        .expect("ended")
        .system_time();
    match ended.duration_since(started) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

fn elapsed_ms(f: &Finished, node: &str) -> i128 {
    ms_between(f, node, node)
}

/// How far apart two nodes started, in milliseconds.
fn start_gap_ms(f: &Finished, a: &str, b: &str) -> u128 {
    let start = |n: &str| f.result.nodes[n].started_at.expect("started").system_time();
    let (a, b) = (start(a), start(b));
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
        .as_millis()
}

fn triggered_by(f: &Finished, node: &str) -> Vec<String> {
    let record = &f.result.nodes[node];
    let refs = record.triggered_by.as_ref().expect("triggeredBy");
    refs.iter().map(|r| r.to_string()).collect()
}

fn warning_paths(f: &Finished) -> Vec<&str> {
    f.result.warnings.iter().map(|w| w.path.as_str()).collect()
}

// workflow-scheduler.test.ts ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_allows_join_any_dependents_to_run_when_at_least_one_parent_succeeds() {
    // Their `noop` component answers by ref: `branchFail` throws `branch failed` after
    // 5 ms, `branchSuccess` returns after 15 ms, the others at once.
    let mut def = shipsec_definition("scheduler_join_any_tolerates_partial_failure");
    replace(&mut def, "start", "core.echo", json!({}));
    replace(
        &mut def,
        "branchFail",
        "core.fail",
        json!({"ms": 5, "message": "branch failed"}),
    );
    replace(&mut def, "branchSuccess", "core.sleep", json!({"ms": 15}));
    replace(&mut def, "merge", "core.echo", json!({}));
    let f = run(def).await;
    // "rejects: One or more workflow actions failed": branchFail's failure is unhandled.
    assert_eq!(f.result.status, RunStatus::Failed);
    assert_eq!(f.status("branchFail"), NodeStatus::Failed);
    // "order contains merge", "merge triggered by branchSuccess".
    assert_eq!(f.status("merge"), NodeStatus::Completed);
    assert_eq!(triggered_by(&f, "merge"), ["branchSuccess"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_propagates_failure_metadata_to_error_edge_dependents() {
    // `noop` throws `boom` for `fail` and returns for the others.
    let mut def = shipsec_definition("scheduler_error_edge_failure_metadata");
    replace(&mut def, "start", "core.echo", json!({}));
    replace(&mut def, "fail", "core.fail", json!({"message": "boom"}));
    replace(&mut def, "errorHandler", "core.echo", json!({}));
    let f = run(def).await;
    // ShipSec rejects the run; here a failure with an error edge is handled (try/catch,
    // docs/semantics.md §4), so the run completes with the handler's outcome.
    assert_eq!(f.result.status, RunStatus::Completed);
    assert_eq!(f.status("fail"), NodeStatus::Failed);
    let failure = f.result.nodes["errorHandler"]
        .failure
        .as_ref()
        .expect("failure");
    assert_eq!(failure.at, "fail");
    assert_eq!(failure.reason.message, "boom");
}

// workflow-runner.test.ts ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn runner_records_trace_events_with_explicit_levels_in_order_of_execution() {
    // `test.echo` echoes `value` and emits one progress event: `core.echo`. Built-ins
    // report no PROGRESS (components have no progress channel yet), so each node has
    // STARTED then COMPLETED where ShipSec has STARTED, PROGRESS, COMPLETED.
    let mut def = shipsec_definition("runner_trace_ordering");
    for node in ["node-1", "node-2"] {
        replace(&mut def, node, "core.echo", json!({}));
    }
    let f = run(def).await;
    assert!(f.result.success);
    let kinds: Vec<(&str, EventType)> = f.events.iter().map(|e| (&*e.node_id, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("node-1", EventType::Started),
            ("node-1", EventType::Completed),
            ("node-2", EventType::Started),
            ("node-2", EventType::Completed),
        ]
    );
    for (node, stream, join) in [
        ("node-1", "stream-node-1", "all"),
        ("node-2", "stream-node-2", "any"),
    ] {
        let started = f.events_of(node, EventType::Started);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].level, Level::Info);
        let meta = started[0].metadata.as_ref().expect("metadata");
        assert_eq!(meta.stream_id.as_deref(), Some(stream));
        assert_eq!(meta.join_strategy.as_deref(), Some(join));
    }
    assert_eq!(f.output("node-2")["value"], "second");
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_executes_independent_branches_in_parallel() {
    let mut def = shipsec_definition("runner_parallel_branches");
    sleep_parallel_to_core_sleep(&mut def);
    let f = run(def).await;
    assert!(f.result.success);
    for node in ["start", "branchA", "branchB", "merge"] {
        assert_eq!(f.output(node)["label"], node);
    }
    // ShipSec asserts the branches start within 75 ms of each other and the whole run
    // takes under 350 ms. Widened for a shared machine to what still proves overlap: the
    // branches start within less than one branch's 200 ms, and the run beats the 450 ms
    // that running them one after the other would take.
    let start_delta = start_gap_ms(&f, "branchA", "branchB");
    assert!(start_delta < 200, "branches started {start_delta} ms apart");
    for branch in ["branchA", "branchB"] {
        assert!(
            elapsed_ms(&f, branch) >= 190,
            "{branch}: {} ms",
            elapsed_ms(&f, branch)
        );
    }
    let total = ms_between(&f, "start", "merge");
    assert!(total < 450, "the run took {total} ms");
}

/// A node's events, without run-specific parts (ids, times): what must repeat.
fn per_node_trace(f: &Finished, node: &str) -> Vec<Value> {
    f.events
        .iter()
        .filter(|e| &*e.node_id == node)
        .map(|e| json!({"type": e.kind, "level": e.level, "metadata": e.metadata}))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_produces_a_deterministic_trace_sequence_across_repeated_runs() {
    let mut def = shipsec_definition("runner_deterministic_trace");
    sleep_parallel_to_core_sleep(&mut def);
    let first = run(def.clone()).await;
    let second = run(def).await;
    for f in [&first, &second] {
        assert!(f.result.success);
        // "node I/O recorded for all four nodes, all completed, merge among them".
        assert_eq!(f.result.nodes.len(), 4);
        assert!(
            f.result
                .nodes
                .values()
                .all(|n| n.status == NodeStatus::Completed)
        );
        assert_eq!(f.status("merge"), NodeStatus::Completed);
    }
    // ShipSec runs ready nodes in batches, so even the interleaving of two concurrent
    // branches repeats. Here each node is an actor and concurrent nodes report in the
    // order they happen to (docs/semantics.md §11 promises states and outputs, and
    // causality in `seq` order, not the interleaving): every node's own events repeat.
    for node in ["start", "branchLeft", "branchRight", "merge"] {
        assert_eq!(
            per_node_trace(&first, node),
            per_node_trace(&second, node),
            "{node}"
        );
    }
    assert_eq!(first.result.outputs, second.result.outputs);
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_triggers_downstream_when_join_strategy_is_any() {
    // `test.trigger.capture` outputs the `triggeredBy` of its context: `core.echo`; the
    // engine records `triggeredBy` on the node.
    let mut def = shipsec_definition("runner_join_any");
    sleep_parallel_to_core_sleep(&mut def);
    replace(&mut def, "merge", "core.echo", json!({}));
    let f = run(def).await;
    assert!(f.result.success);
    assert_eq!(triggered_by(&f, "merge"), ["branchFast"]);
    // Their `dependencyCounts.merge` is 1 for two parents: the edges decide, with a warning.
    assert_eq!(warning_paths(&f), ["dependencyCounts.merge"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_fails_deterministically_when_an_input_mapping_is_missing() {
    // `test.echo`: `core.echo`, whose output is `{value: "first"}` without `missing-handle`.
    let mut def = shipsec_definition("runner_missing_input_mapping");
    for node in ["node-1", "node-2"] {
        replace(&mut def, node, "core.echo", json!({}));
    }
    let f = run(def).await;
    assert!(!f.result.success);
    // ShipSec emits a warning PROGRESS event ("Input 'value' ... was undefined") and fails
    // the run; here a completed parent without the mapped handle fails the node with an
    // InputError naming the input (docs/semantics.md §3: never a warning and a null).
    assert_eq!(f.status("node-2"), NodeStatus::Failed);
    assert_eq!(f.error_type("node-2"), "InputError");
    let message = &f.result.nodes["node-2"]
        .error
        .as_ref()
        .expect("error")
        .message;
    assert!(
        message.contains("input `value`") && message.contains("missing-handle"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_routes_failure_edges_when_an_action_throws() {
    // `test.fail.always` throws its `message` input: `core.fail`, which reads the same
    // input, so the action is unchanged but for its component. `test.record.execution`
    // records that it ran: `core.echo`; a node ran when it COMPLETED.
    let mut def = shipsec_definition("runner_failure_edges");
    replace(&mut def, "fail", "core.fail", json!({}));
    replace(&mut def, "errorHandler", "core.echo", json!({}));
    let f = run(def).await;
    // ShipSec fails this run; a handled failure does not fail a run here (§4).
    assert_eq!(f.result.status, RunStatus::Completed);
    assert_eq!(f.status("fail"), NodeStatus::Failed);
    assert_eq!(f.status("errorHandler"), NodeStatus::Completed);
    assert_eq!(f.output("errorHandler")["label"], "handled");
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_injects_failure_metadata_into_error_edge_components() {
    // `test.capture.failure-metadata` records `context.metadata.failure`: `core.echo`; the
    // failure a node handles is in its context and in its node record.
    let mut def = shipsec_definition("runner_failure_metadata");
    replace(&mut def, "fail", "core.fail", json!({}));
    replace(&mut def, "errorHandler", "core.echo", json!({}));
    let f = run(def).await;
    // ShipSec: success false; handled here (§4).
    assert_eq!(f.result.status, RunStatus::Completed);
    let failure = f.result.nodes["errorHandler"]
        .failure
        .as_ref()
        .expect("failure");
    assert_eq!(failure.at, "fail");
    assert_eq!(failure.reason.message, "boom");
    let completed = f.events_of("errorHandler", EventType::Completed);
    let meta = completed[0].metadata.as_ref().expect("metadata");
    assert_eq!(meta.failure.as_ref().map(|f| f.at.as_str()), Some("fail"));
}

// worker-integration.test.ts, "Workflow Execution" ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn integration_executes_a_simple_workflow_with_trigger_component() {
    let f = run(shipsec_definition("integration_simple_trigger")).await;
    assert!(f.result.success);
    assert_eq!(f.output("trigger"), &JsonObject::new());
}

/// `core.file.loader` reads a stored file: `core.process` running `cat` on a file the
/// test wrote (the engine has no file store; the component reads real bytes).
fn loader_to_cat(def: &mut Value, node: &str, path: &Path) {
    let path = path.to_str().expect("utf-8 path");
    replace(def, node, "core.process", json!({"command": ["cat", path]}));
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_injects_services_into_components_during_execution() {
    let dir = std::env::temp_dir().join(format!("shipsec-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("integration-test.txt");
    let content = "Integration test file content";
    std::fs::write(&file, content).expect("write file");
    let mut def = shipsec_definition("integration_file_loader");
    loader_to_cat(&mut def, "loader", &file);
    let f = run(def).await;
    std::fs::remove_dir_all(&dir).ok();
    assert!(f.result.success);
    // "loader.textContent is the content": the loaded text.
    assert_eq!(f.output("loader")["stdout"], content);
    assert_eq!(f.output("loader")["exitCode"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_handles_workflow_failures_gracefully() {
    let missing = std::env::temp_dir().join(format!("shipsec-missing-{}", std::process::id()));
    let mut def = shipsec_definition("integration_failing_workflow");
    loader_to_cat(&mut def, "loader", &missing);
    let f = run(def).await;
    assert!(!f.result.success);
    // "the error mentions the file not being found": cat's words for it.
    let error = f.result.error.as_deref().expect("error");
    assert!(error.contains("No such file or directory"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_executes_a_multi_step_workflow_with_dependencies() {
    let f = run(shipsec_definition("integration_multi_step")).await;
    assert!(f.result.success);
    for node in ["trigger", "step2", "step3"] {
        assert_eq!(f.output(node), &JsonObject::new(), "{node}");
    }
    assert!(
        ms_between(&f, "step3", "step2") <= 0,
        "step3 started after step2 ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_routes_error_edges_when_an_activity_fails() {
    let missing = std::env::temp_dir().join(format!("shipsec-missing-edge-{}", std::process::id()));
    let mut def = shipsec_definition("integration_error_edge");
    loader_to_cat(&mut def, "willFail", &missing);
    let f = run(def).await;
    // ShipSec fails the run; the failure is handled here (§4) and the handler ran.
    assert_eq!(f.result.status, RunStatus::Completed);
    assert_eq!(f.status("errorHandler"), NodeStatus::Completed);
    let failed = f.events_of("willFail", EventType::Failed);
    assert_eq!(failed.len(), 1);
    let error = failed[0].error.as_ref().expect("error");
    assert!(
        error.message.contains("No such file or directory"),
        "{}",
        error.message
    );
    // Their handler's `dependsOn: []` and `dependencyCounts.errorHandler: 0` disagree with
    // the error edge into it: the edge decides, and both are warnings.
    assert_eq!(
        warning_paths(&f),
        ["actions[2].dependsOn", "dependencyCounts.errorHandler"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_persists_ordered_traces_for_parallel_branches() {
    let f = run(shipsec_definition("integration_parallel_trace_order")).await;
    assert!(f.result.success);
    assert!(f.events.len() >= 6, "{} events", f.events.len());
    let seqs: Vec<u64> = f.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=f.events.len() as u64).collect::<Vec<_>>());
    for branch in ["branchA", "branchB"] {
        assert_eq!(
            f.events_of(branch, EventType::Completed).len(),
            1,
            "{branch}"
        );
    }
}

// benchmark-scheduler.ts --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn benchmark_serial_definition_runs_its_steps_one_after_the_other() {
    let mut def = shipsec_definition("benchmark_serial");
    sleep_parallel_to_core_sleep(&mut def);
    let f = run(def).await;
    // The script throws unless the run succeeds.
    assert!(f.result.success);
    for (before, after) in [("stepA", "stepB"), ("stepB", "stepC")] {
        assert!(
            ms_between(&f, after, before) <= 0,
            "{after} started before {before} ended"
        );
    }
    assert!(f.result.duration_ms >= 450, "{} ms", f.result.duration_ms);
}

#[tokio::test(flavor = "multi_thread")]
async fn benchmark_parallel_definition_runs_its_branches_at_once() {
    let mut def = shipsec_definition("benchmark_parallel");
    sleep_parallel_to_core_sleep(&mut def);
    let f = run(def).await;
    assert!(f.result.success);
    // Overlap: the run beats the 300 ms of the two 150 ms branches one after the other.
    let total = ms_between(&f, "start", "merge");
    assert!((150..300).contains(&total), "{total} ms");
    assert!(start_gap_ms(&f, "branch1", "branch2") < 150);
}
