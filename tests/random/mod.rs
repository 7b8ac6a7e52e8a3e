//! Random workflows and the checks of their runs against the sequential reference
//! evaluator (`tests/reference/mod.rs`), shared by the property tests of the actor runtime
//! (`tests/property.rs`) and the simulation of the pure cores (`tests/simulation.rs`).
//!
//! The generated workflows: edges only from lower to higher index (acyclic), of every kind
//! and with ports `a`/`b`/`default`/`approved`/`rejected`; joins `all`/`any`/`first`/`quorum n`; `core.echo`,
//! `core.fail` (retryable or not), `core.flaky` (0–3 failures, `failures` sometimes mapped
//! from a parent), `core.branch` (ports among the edges' handles) and, rarely, a short
//! `core.sleep` so that `first` joins find parents still running; gates (`core.echo`
//! returning a pending marker) that the run's driver approves, rejects or lets expire as
//! their title says ([`answer_for`]); retry policies of 1–4
//! attempts with interval 0, sometimes listing the error type as non-retryable; input
//! mappings from parents, some to handles their outputs lack (InputError); overrides that
//! mappings must win over; sometimes `config.maxParallelism` (nodes wait QUEUED,
//! docs/semantics.md §8).
//!
//! Two checks:
//! - [`check_against_reference`]: under `skipDependents` (the run default `continue`) the
//!   outcome is a function of the definition and the order of ends, so the run is
//!   compared node by node (status, attempts, output, activated ports, error type,
//!   `triggeredBy`, handled failure) and on the run status.
//! - [`check_fail_fast`]: with `failRun` failures, which nodes the stop catches depends on
//!   timing; see its doc for the rules.
//!
//! Timing is taken from the trace, as the reference module's doc explains. A failing
//! case prints its workflow definition as pretty JSON, and the failure message lists
//! every difference and the trace.

use std::fmt;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use shipsec_orchestrator::gates::Resolution;
use shipsec_orchestrator::runtime::definition::graph::{Graph, NodeIx};
use shipsec_orchestrator::runtime::semantics::event::TraceEvent;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::runtime::semantics::result::{NodeRecord, RunResult};

use crate::reference::{End, Expectation, NodeEnd, Object, Timing, evaluate, expect_node, handled};

/// `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The run's inputs: the entrypoint's output.
pub fn run_inputs() -> Object {
    let Value::Object(inputs) = json!({"seed": 42, "who": "proptest"}) else {
        unreachable!("a JSON object literal")
    };
    inputs
}

/// A finished run: the graph it ran, its result and every event.
pub struct Finished {
    /// The graph.
    pub graph: Arc<Graph>,
    /// Its result.
    pub result: Arc<RunResult>,
    /// Its trace, in `seq` order.
    pub events: Vec<TraceEvent>,
}

// ---------------------------------------------------------------------------------------
// Generated workflows
// ---------------------------------------------------------------------------------------

/// Which failure policies a property generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `continue` / `skipDependents` only: the outcome is a function of the definition
    /// and the order of ends, so the whole run is compared with the reference.
    Continue,
    /// `failFast` and per-node `failRun` too.
    FailFast,
}

#[derive(Debug, Clone)]
enum ComponentGen {
    Echo,
    Fail {
        retryable: bool,
    },
    /// `mapped`: take `failures` from a parent's `v` instead of params.
    Flaky {
        failures: u8,
        mapped: Option<Index>,
    },
    Branch {
        ports: Vec<&'static str>,
    },
    Sleep {
        ms: u8,
    },
    /// A gate (`core.echo` returning a pending marker) that the test's person answers as its
    /// title says: `approve`, `reject`, or `expire` (its deadline long past).
    Gate {
        title: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
enum KindGen {
    Success,
    Error,
    Always,
}

#[derive(Debug, Clone)]
struct EdgeGen {
    parent: Index,
    kind: KindGen,
    handle: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct MappingGen {
    edge: Index,
    handle: &'static str,
}

#[derive(Debug, Clone)]
enum JoinGen {
    All,
    Any,
    First,
    Quorum(Index),
}

#[derive(Debug, Clone, Copy)]
enum PolicyGen {
    SkipDependents,
    FailRun,
}

#[derive(Debug, Clone)]
struct NodeGen {
    component: ComponentGen,
    edges: Vec<EdgeGen>,
    join: JoinGen,
    mappings: Vec<MappingGen>,
    on_failure: Option<PolicyGen>,
    /// `(maxAttempts, nonRetryable)`.
    retry: Option<(u8, bool)>,
    v: u8,
    override_in0: bool,
}

/// A generated workflow definition. Its `Debug` is the definition as pretty JSON, so a
/// shrunk failing case prints as something one can paste into `shipsec run`.
#[derive(Clone)]
pub struct Case {
    /// The definition, as JSON.
    pub definition: Value,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string_pretty(&self.definition).map_err(|_| fmt::Error)?;
        write!(f, "\n{text}\n")
    }
}

fn component_gen(gates: bool) -> impl Strategy<Value = ComponentGen> {
    let ports = proptest::sample::subsequence(vec!["a", "b", "default"], 0..=3);
    let gate_weight = if gates { 2 } else { 0 };
    prop_oneof![
        8 => Just(ComponentGen::Echo),
        3 => any::<bool>().prop_map(|retryable| ComponentGen::Fail { retryable }),
        4 => (0u8..=3, proptest::option::weighted(0.3, any::<Index>()))
            .prop_map(|(failures, mapped)| ComponentGen::Flaky { failures, mapped }),
        4 => ports.prop_map(|ports| ComponentGen::Branch { ports }),
        1 => (1u8..=15).prop_map(|ms| ComponentGen::Sleep { ms }),
        gate_weight => proptest::sample::select(vec!["approve", "reject", "expire"])
            .prop_map(|title| ComponentGen::Gate { title }),
    ]
}

fn edge_gen() -> impl Strategy<Value = EdgeGen> {
    let kind = prop_oneof![
        6 => Just(KindGen::Success),
        2 => Just(KindGen::Error),
        2 => Just(KindGen::Always),
    ];
    let handle = prop_oneof![
        3 => Just(None),
        2 => Just(Some("a")),
        2 => Just(Some("b")),
        1 => Just(Some("default")),
        1 => Just(Some("approved")),
        1 => Just(Some("rejected")),
    ];
    (any::<Index>(), kind, handle).prop_map(|(parent, kind, handle)| EdgeGen {
        parent,
        kind,
        handle,
    })
}

fn mapping_gen() -> impl Strategy<Value = MappingGen> {
    let handle = prop_oneof![
        3 => Just("v"),
        2 => Just("id"),
        2 => Just("__self__"),
        1 => Just("missing"),
        1 => Just("in0"),
        1 => Just("seed"),
    ];
    (any::<Index>(), handle).prop_map(|(edge, handle)| MappingGen { edge, handle })
}

fn join_gen() -> impl Strategy<Value = JoinGen> {
    prop_oneof![
        4 => Just(JoinGen::All),
        2 => Just(JoinGen::Any),
        2 => Just(JoinGen::First),
        2 => any::<Index>().prop_map(JoinGen::Quorum),
    ]
}

fn policy_gen(mode: Mode) -> BoxedStrategy<Option<PolicyGen>> {
    match mode {
        Mode::Continue => proptest::option::weighted(0.2, Just(PolicyGen::SkipDependents)).boxed(),
        Mode::FailFast => prop_oneof![
            2 => Just(None),
            1 => Just(Some(PolicyGen::SkipDependents)),
            1 => Just(Some(PolicyGen::FailRun)),
        ]
        .boxed(),
    }
}

fn node_gen(mode: Mode, gates: bool) -> impl Strategy<Value = NodeGen> {
    let retry = proptest::option::weighted(0.6, (1u8..=4, proptest::bool::weighted(0.2)));
    (
        component_gen(gates),
        proptest::collection::vec(edge_gen(), 0..=3),
        join_gen(),
        proptest::collection::vec(mapping_gen(), 0..=2),
        policy_gen(mode),
        retry,
        0u8..=3,
        proptest::bool::weighted(0.15),
    )
        .prop_map(
            |(component, edges, join, mappings, on_failure, retry, v, override_in0)| NodeGen {
                component,
                edges,
                join,
                mappings,
                on_failure,
                retry,
                v,
                override_in0,
            },
        )
}

pub fn case_gen(mode: Mode, max_nodes: usize) -> impl Strategy<Value = Case> {
    any_case_gen(mode, max_nodes, false)
}

/// As [`case_gen`], with gates among the nodes: whoever runs the case answers them with
/// [`answer_for`].
pub fn gated_case_gen(mode: Mode, max_nodes: usize) -> impl Strategy<Value = Case> {
    any_case_gen(mode, max_nodes, true)
}

fn any_case_gen(mode: Mode, max_nodes: usize, gates: bool) -> impl Strategy<Value = Case> {
    let run_policy = match mode {
        Mode::Continue => prop_oneof![Just(None), Just(Some("continue"))].boxed(),
        Mode::FailFast => prop_oneof![
            3 => Just(Some("failFast")),
            1 => Just(Some("continue")),
        ]
        .boxed(),
    };
    (
        proptest::collection::vec(node_gen(mode, gates), 1..=max_nodes),
        proptest::bool::weighted(0.5),
        run_policy,
        prop_oneof![6 => Just(None), 1 => Just(Some(1u8)), 1 => Just(Some(2)), 1 => Just(Some(4))],
    )
        .prop_map(|(nodes, entrypoint, policy, parallelism)| Case {
            definition: build(&nodes, entrypoint, policy, parallelism),
        })
}

fn node_ref(i: usize) -> String {
    format!("n{i}")
}

/// Turns the generated parts into a version 2 definition. Edges go from lower to higher
/// indices only (so the graph is acyclic); node 0 is the entrypoint when `entrypoint`.
/// A `maxParallelism` makes nodes wait QUEUED for a slot (§8), which must change no
/// outcome, only the timing.
fn build(
    nodes: &[NodeGen],
    entrypoint: bool,
    run_policy: Option<&str>,
    max_parallelism: Option<u8>,
) -> Value {
    let mut actions = Vec::new();
    let mut edges = Vec::new();
    let mut metadata = serde_json::Map::new();
    for (i, g) in nodes.iter().enumerate() {
        let r = node_ref(i);
        if i == 0 && entrypoint {
            actions.push(json!({"ref": r, "componentId": "core.workflow.entrypoint"}));
            continue;
        }
        let node_edges = &g.edges;
        let parents: Vec<usize> = if i == 0 {
            Vec::new()
        } else {
            node_edges.iter().map(|e| e.parent.index(i)).collect()
        };
        for (e, &p) in node_edges.iter().zip(&parents) {
            let mut edge = json!({"sourceRef": node_ref(p), "targetRef": r});
            let kind = match e.kind {
                KindGen::Success => None,
                KindGen::Error => Some("error"),
                KindGen::Always => Some("always"),
            };
            if let Some(kind) = kind {
                edge["kind"] = json!(kind);
            }
            if let Some(handle) = e.handle {
                edge["sourceHandle"] = json!(handle);
            }
            edges.push(edge);
        }
        actions.push(action(i, g, &parents));
        if let Some(meta) = node_metadata(&r, g, parents.len()) {
            metadata.insert(r, meta);
        }
    }
    let mut def = json!({
        "version": 2,
        "title": "property",
        "actions": actions,
        "edges": edges,
        "nodes": metadata,
    });
    if entrypoint {
        def["entrypoint"] = json!({"ref": node_ref(0)});
    }
    let mut config = serde_json::Map::new();
    if let Some(policy) = run_policy {
        config.insert("failurePolicy".into(), json!(policy));
    }
    if let Some(n) = max_parallelism {
        config.insert("maxParallelism".into(), json!(n));
    }
    if !config.is_empty() {
        def["config"] = Value::Object(config);
    }
    def
}

/// A gate deadline long past: the request expires as soon as it is made.
const EXPIRED: &str = "2000-01-01T00:00:00Z";

/// The answer the property tests' person gives to a gate that asked `title` (see
/// [`ComponentGen::Gate`]); `None`: it lets the request expire.
pub fn answer_for(title: &str) -> Option<Resolution> {
    let approved = match title {
        "approve" => true,
        "reject" => false,
        _ => return None,
    };
    Some(Resolution {
        approved: Some(approved),
        responded_by: Some("driver".into()),
        ..Resolution::default()
    })
}

fn action(i: usize, g: &NodeGen, parents: &[usize]) -> Value {
    let r = node_ref(i);
    let mut mappings = serde_json::Map::new();
    if !parents.is_empty() {
        for (j, m) in g.mappings.iter().enumerate() {
            let source = node_ref(parents[m.edge.index(parents.len())]);
            mappings.insert(
                format!("in{j}"),
                json!({"sourceRef": source, "sourceHandle": m.handle}),
            );
        }
    }
    let (component, params, nonretryable) = match &g.component {
        ComponentGen::Echo => ("core.echo", json!({"id": r, "v": g.v}), "X"),
        ComponentGen::Fail { retryable } => (
            "core.fail",
            json!({"retryable": retryable, "message": format!("{r} fails")}),
            "ComponentError",
        ),
        ComponentGen::Flaky { failures, mapped } => {
            let mut params = json!({"id": r, "v": g.v});
            match mapped.filter(|_| !parents.is_empty()) {
                Some(pick) => {
                    let source = node_ref(parents[pick.index(parents.len())]);
                    mappings.insert(
                        "failures".into(),
                        json!({"sourceRef": source, "sourceHandle": "v"}),
                    );
                }
                None => params["failures"] = json!(failures),
            }
            ("core.flaky", params, "FlakyError")
        }
        ComponentGen::Branch { ports } => (
            "core.branch",
            json!({"id": r, "v": g.v, "ports": ports}),
            "X",
        ),
        ComponentGen::Sleep { ms } => ("core.sleep", json!({"id": r, "v": g.v, "ms": ms}), "X"),
        ComponentGen::Gate { title } => {
            let mut marker = json!({"pending": true, "inputType": "approval", "title": title});
            if *title == "expire" {
                marker["timeoutAt"] = json!(EXPIRED);
            }
            ("core.echo", marker, "X")
        }
    };
    let mut action = json!({"ref": r, "componentId": component, "params": params});
    if !mappings.is_empty() {
        action["inputMappings"] = Value::Object(mappings);
    }
    if g.override_in0 {
        action["inputOverrides"] = json!({"in0": "override"});
    }
    if let Some((max_attempts, nonretryable_listed)) = g.retry {
        let listed: Vec<&str> = if nonretryable_listed {
            vec![nonretryable]
        } else {
            Vec::new()
        };
        action["retryPolicy"] = json!({
            "maxAttempts": max_attempts,
            "initialIntervalSeconds": 0,
            "nonRetryableErrorTypes": listed,
        });
    }
    action
}

/// `nodes.<ref>`: join strategy (quorum `n` in 1..=k) and `onFailure`, when not default.
fn node_metadata(r: &str, g: &NodeGen, k: usize) -> Option<Value> {
    let mut meta = json!({"ref": r});
    match (&g.join, k) {
        (JoinGen::All, _) | (JoinGen::Quorum(_), 0) => {}
        (JoinGen::Any, _) => meta["joinStrategy"] = json!("any"),
        (JoinGen::First, _) => meta["joinStrategy"] = json!("first"),
        (JoinGen::Quorum(n), k) => {
            meta["joinStrategy"] = json!("quorum");
            meta["quorum"] = json!(n.index(k) + 1);
        }
    }
    match g.on_failure {
        None => {}
        Some(PolicyGen::SkipDependents) => meta["onFailure"] = json!("skipDependents"),
        Some(PolicyGen::FailRun) => meta["onFailure"] = json!("failRun"),
    }
    (meta.as_object().map_or(0, |m| m.len()) > 1).then_some(meta)
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn refs(graph: &Graph, nodes: &[NodeIx]) -> Vec<String> {
    nodes
        .iter()
        .map(|ix| graph.nodes[ix.ix()].node_ref.to_string())
        .collect()
}

fn record(finished: &Finished, ix: NodeIx) -> Result<&NodeRecord, String> {
    let r = &finished.graph.nodes[ix.ix()].node_ref;
    finished
        .result
        .nodes
        .get(&**r)
        .ok_or_else(|| format!("{r}: no record in the result"))
}

/// docs/semantics.md §9 on one run, by the one trace checker
/// (`chaos::harness::check_trace`).
fn check_trace(finished: &Finished) -> Result<(), String> {
    shipsec_orchestrator::chaos::harness::check_trace(
        &finished.graph,
        &finished.result,
        &finished.events,
    )
    .map_err(|broken| broken.0)
}

fn end_of(status: NodeStatus) -> Option<End> {
    match status {
        NodeStatus::Completed => Some(End::Completed),
        NodeStatus::Failed => Some(End::Failed),
        NodeStatus::Skipped => Some(End::Skipped),
        NodeStatus::Cancelled => Some(End::Cancelled),
        _ => None,
    }
}

/// How node `ix` actually ended, in the reference's terms.
fn actual_end(finished: &Finished, ix: NodeIx) -> Option<NodeEnd> {
    let rec = record(finished, ix).ok()?;
    let r = &*finished.graph.nodes[ix.ix()].node_ref;
    Some(NodeEnd {
        end: end_of(rec.status)?,
        attempts: Some(rec.attempts),
        output: finished.result.outputs.get(r).map(|o| (**o).clone()),
        active_ports: rec.active_ports.clone(),
        error_type: rec.error.as_ref().map(|e| e.error_type.clone()),
        triggered_by: Vec::new(),
        handles: None,
    })
}

/// Differences between what the reference expects of node `ix` and what it did.
fn compare_node(finished: &Finished, ix: NodeIx, want: &NodeEnd) -> Result<Vec<String>, String> {
    let graph = &finished.graph;
    let r = &*graph.nodes[ix.ix()].node_ref;
    let rec = record(finished, ix)?;
    let mut diffs = Vec::new();
    let status = end_of(rec.status);
    if status != Some(want.end) {
        diffs.push(format!(
            "{r}: status {:?}, reference {:?}",
            rec.status, want.end
        ));
        return Ok(diffs);
    }
    if let Some(attempts) = want.attempts
        && attempts != rec.attempts
    {
        diffs.push(format!(
            "{r}: {} attempts, reference {attempts}",
            rec.attempts
        ));
    }
    let output = finished.result.outputs.get(r).map(|o| &**o);
    if output != want.output.as_ref() {
        diffs.push(format!(
            "{r}: output {}, reference {}",
            json!(output),
            json!(want.output)
        ));
    }
    if want.end == End::Completed && rec.active_ports != want.active_ports {
        diffs.push(format!(
            "{r}: activePorts {:?}, reference {:?}",
            rec.active_ports, want.active_ports
        ));
    }
    let error_type = rec.error.as_ref().map(|e| &e.error_type);
    if want.end == End::Failed && error_type != want.error_type.as_ref() {
        diffs.push(format!(
            "{r}: error {error_type:?}, reference {:?}",
            want.error_type
        ));
    }
    if matches!(want.end, End::Completed | End::Failed) {
        let triggered: Vec<String> = rec
            .triggered_by
            .iter()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        let expected = refs(graph, &want.triggered_by);
        if triggered != expected {
            diffs.push(format!(
                "{r}: triggeredBy {triggered:?}, reference {expected:?}"
            ));
        }
        diffs.extend(compare_handled_failure(finished, ix, want)?);
    }
    Ok(diffs)
}

/// §3: the `failure` a node records is the one of the parent the reference names, with
/// that parent's error type.
fn compare_handled_failure(
    finished: &Finished,
    ix: NodeIx,
    want: &NodeEnd,
) -> Result<Option<String>, String> {
    let graph = &finished.graph;
    let r = &*graph.nodes[ix.ix()].node_ref;
    let failure = record(finished, ix)?.failure.as_ref();
    let got = failure.map(|f| (f.at.clone(), f.reason.name.clone()));
    let expected = match want.handles {
        None => None,
        Some(p) => {
            let name = record(finished, p)?
                .error
                .as_ref()
                .map(|e| e.error_type.clone());
            Some((
                graph.nodes[p.ix()].node_ref.to_string(),
                name.unwrap_or_default(),
            ))
        }
    };
    Ok((got != expected).then(|| format!("{r}: handles failure {got:?}, reference {expected:?}")))
}

/// Whether any node that actually FAILED had an unhandled failure (§4).
fn unhandled_failure(finished: &Finished) -> Result<bool, String> {
    let graph = &finished.graph;
    for ix in (0..graph.nodes.len() as u32).map(NodeIx) {
        if record(finished, ix)?.status == NodeStatus::Failed && !handled(graph, ix) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn report(finished: &Finished, diffs: Vec<String>) -> Result<(), String> {
    if diffs.is_empty() {
        return Ok(());
    }
    let mut text = diffs.join("\n");
    text.push_str("\n-- trace --\n");
    for e in &finished.events {
        let trig = e
            .metadata
            .as_ref()
            .and_then(|m| m.triggered_by.clone())
            .map(|t| format!(" triggeredBy={t:?}"))
            .unwrap_or_default();
        let attempt = e.metadata.as_ref().and_then(|m| m.attempt);
        let attempt = attempt.map(|a| format!(" attempt={a}")).unwrap_or_default();
        text.push_str(&format!(
            "{:>3} {} {:?}{attempt}{trig}\n",
            e.seq, e.node_id, e.kind
        ));
    }
    Err(text)
}

/// The whole run against the reference evaluation (no failRun in play).
pub fn check_against_reference(finished: &Finished) -> Result<(), String> {
    check_trace(finished).or_else(|e| report(finished, vec![e]))?;
    let graph = &finished.graph;
    let timing = Timing::from_trace(graph, &finished.events)?;
    let evaluation = evaluate(graph, &run_inputs(), &timing);
    let mut diffs = Vec::new();
    for &ix in &graph.topo_order {
        diffs.extend(compare_node(finished, ix, &evaluation.nodes[ix.ix()])?);
    }
    diffs.extend(compare_run_status(finished, evaluation.failed));
    report(finished, diffs)
}

/// §4: the run is FAILED iff an unhandled failure happened, else COMPLETED; `success`
/// says the same.
fn compare_run_status(finished: &Finished, failed: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let result = &finished.result;
    if result.success != (result.status == RunStatus::Completed) {
        diffs.push("run: `success` disagrees with `status`".into());
    }
    let want = if failed {
        RunStatus::Failed
    } else {
        RunStatus::Completed
    };
    if result.status != want {
        diffs.push(format!(
            "run: status {:?}, expected {want:?}",
            result.status
        ));
    }
    diffs
}

/// Under `failRun`, which nodes the stop catches depends on timing, so each node is
/// checked against the reference *given how its parents actually ended* (and the order of
/// ends in the trace), with the failRun failure's terminal event as the cut-off:
/// - a node whose join the edges resolved before the cut-off do not decide never starts:
///   it ends CANCELLED, after the cut-off;
/// - a node they skip ends SKIPPED (the skip reaches it before the stop does);
/// - a node they run ends exactly as the reference says (status, attempts, output,
///   ports, error, `triggeredBy`, handled failure), or CANCELLED after the cut-off when
///   the stop caught it running;
/// - a node that ended before the cut-off ended exactly as the reference says;
/// - the run is FAILED iff some node's failure was unhandled (the failRun one included).
pub fn check_fail_fast(finished: &Finished) -> Result<(), String> {
    check_trace(finished).or_else(|e| report(finished, vec![e]))?;
    let graph = &finished.graph;
    let timing = Timing::from_trace(graph, &finished.events)?;
    let inputs = run_inputs();
    let mut diffs = Vec::new();
    for &ix in &graph.topo_order {
        let r = &*graph.nodes[ix.ix()].node_ref;
        let rec = record(finished, ix)?;
        let after_cutoff = timing.cutoff.is_some_and(|c| timing.end_seq[ix.ix()] > c);
        let lookup = |p: NodeIx| actual_end(finished, p);
        match expect_node(graph, ix, &inputs, &timing, &lookup) {
            Expectation::Undecided => {
                if rec.status != NodeStatus::Cancelled || !after_cutoff {
                    diffs.push(format!(
                        "{r}: {:?} (seq {}), but its join was not decided before the failRun \
                         at seq {:?}: it must end CANCELLED after it",
                        rec.status,
                        timing.end_seq[ix.ix()],
                        timing.cutoff
                    ));
                }
            }
            Expectation::Ended(want) => {
                let stopped =
                    rec.status == NodeStatus::Cancelled && after_cutoff && want.end != End::Skipped;
                if !stopped {
                    diffs.extend(compare_node(finished, ix, &want)?);
                }
            }
        }
    }
    diffs.extend(compare_run_status(finished, unhandled_failure(finished)?));
    report(finished, diffs)
}
