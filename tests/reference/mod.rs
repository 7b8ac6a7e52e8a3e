//! A sequential reference evaluator of docs/semantics.md §1–§5 and §7 (attempt counting only),
//! and of human-input gates (docs/gates.md: a pending marker makes a gate, answered or
//! expired), for the property tests in `tests/property.rs`.
//!
//! It reads the spec, not the engine: it uses the validated [`Graph`] as data and
//! `serde_json`, and never calls the engine's decision modules (`runtime::semantics::edge`, `join`,
//! `inputs`, `retry`, `failure`, `withdraw`). Every rule below is written out again from
//! docs/semantics.md, in the plainest form: nodes are evaluated one at a time in a
//! topological order, each from the ends of its parents.
//!
//! ## What it takes from the actual run, and why
//! A sequential interpreter has no clock, but `any`, `first` and `quorum` joins and
//! `first` withdrawals depend on the order in which things ended. That order is taken
//! from the run's trace (docs/semantics.md §9: `seq` is the run's single causal order) as a
//! [`Timing`], and nothing else is taken from the run:
//!
//! - **Edge arrival order.** When a node ends, its outgoing edges resolve in definition
//!   order, and a node learns of its incoming edges in the `seq` order of their sources'
//!   terminal events. The reference walks a node's incoming edges sorted by
//!   `(terminal seq of the source, edge index)` and applies the join table of §2 edge by
//!   edge; the first decision stands. So `triggeredBy` is *derived* (first satisfied edge
//!   for `any`/`first`, the first `n` satisfied for `quorum`) and compared with the one
//!   the engine recorded, rather than copied from it.
//! - **"Ended before the join fired" (§3).** A join fires when its deciding edge resolves,
//!   i.e. at the terminal event of the deciding edge's source. A mapping's source counts
//!   as ended before the join fired iff its terminal `seq` is ≤ that event's `seq`. The
//!   node's own first QUEUED/STARTED event is *not* the cut: it is emitted when the
//!   supervisor hears that the join fired, and other parents may end in between; their outputs were not
//!   seen by the join and are absent. (Minimal case: `a`, `b` roots, `w` any-join on
//!   both, mapping `x <- b.v`; trace `a COMPLETED(2)`, `b COMPLETED(6)`, `w STARTED(9)
//!   triggeredBy=[a]` — `w` has no input `x`.)
//! - **Withdrawal (§5), replayed.** Walking the trace in `seq` order: when a `first` node
//!   `w` fires (its first QUEUED or STARTED event, whichever comes first), `w` withdraws from each distinct parent that has no terminal
//!   event yet; a node all of whose distinct dependents have withdrawn is *withdrawn*
//!   (expected CANCELLED); when a withdrawn node's CANCELLED event comes, it withdraws in
//!   turn from its parents that have not ended by then. Withdrawing twice from the same
//!   parent counts once.
//! - **A withdrawal can lose its race.** The engine decides "has not ended" from the
//!   supervisor's view, which lags the node's: a withdrawn node may already have decided
//!   its own end (skipped, or finished its attempt) when the cancellation reaches it, and
//!   then ends as it would have anyway, after the `first` node fired. The trace
//!   cannot tell this apart from a late cancellation, so a withdrawn node whose terminal
//!   event is not CANCELLED is evaluated as if it had not been withdrawn (and must then
//!   end exactly as that evaluation says); it also does not withdraw from its parents.
//! - **failRun cut-off (§4).** Under `failRun`, the run stops at the terminal event of the
//!   first unhandled failure whose policy is `failRun` (its `seq` is [`Timing::cutoff`]).
//!   Edges whose source ended after it never reach their targets (the stop reaches every
//!   node first), withdrawals after it are not started, and a node whose join is not
//!   decided by the edges that did arrive is [`Expectation::Undecided`] (it must end
//!   CANCELLED).
//!
//! ## Readings of the spec where it leaves room
//! - §3 "reached through an `error` edge": the failure a node handles is the one of the
//!   first parent (arrival order) the join saw end FAILED with an `error` edge to the
//!   node, whether or not that edge decided the join.
//! - §7: only attempt counting; no delays (the generated policies have interval 0).
//! - Built-ins are modelled from their documented behaviour (docs/semantics.md):
//!   settings are read inputs-first, then params; an entrypoint outputs its inputs (the
//!   generated ones declare no `runtimeInputs`). `core.process` runs code the reference
//!   cannot read, so it knows one command only, the kill test's (`tests/durable_process.rs`):
//!   a script that logs its attempt, then exits 3 when its `env.FAIL` is `"1"`
//!   (`ProcessError`, not retried) and otherwise copies its stdin (the inputs) to stdout
//!   (output `{stdout: inputs, stderr: "", exitCode: 0}`).

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value, json};
use shipsec_orchestrator::runtime::definition::graph::{
    EdgeIx, EdgeKind, FailurePolicy, Graph, Join, NodeIx,
};
use shipsec_orchestrator::runtime::semantics::event::{EventType, TraceEvent};

/// A JSON object (params, inputs, outputs).
pub type Object = Map<String, Value>;

/// The terminal states of §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// Succeeded.
    Completed,
    /// Failed after its retries.
    Failed,
    /// Never ran: its join can never be satisfied.
    Skipped,
    /// Withdrawn from (§5) or stopped by a failRun.
    Cancelled,
}

/// How one node ended, as far as the reference can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEnd {
    /// Terminal state.
    pub end: End,
    /// Attempts made; `None` when it depends on when a cancellation landed.
    pub attempts: Option<u32>,
    /// Output, when COMPLETED.
    pub output: Option<Object>,
    /// Ports activated, when the component routes (`core.branch`); `None` = every port.
    pub active_ports: Option<Vec<String>>,
    /// Error type, when FAILED.
    pub error_type: Option<String>,
    /// For `any`/`first`/`quorum` nodes that ran: the sources of the deciding edges.
    pub triggered_by: Vec<NodeIx>,
    /// For nodes that ran: the FAILED parent whose failure they handle (§3, last point).
    pub handles: Option<NodeIx>,
}

impl NodeEnd {
    fn without_running(end: End, attempts: Option<u32>) -> NodeEnd {
        NodeEnd {
            end,
            attempts,
            output: None,
            active_ports: None,
            error_type: None,
            triggered_by: Vec::new(),
            handles: None,
        }
    }
}

/// What the reference expects of one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// The node ends like this.
    Ended(NodeEnd),
    /// Only with a failRun cut-off: the edges that arrived before the stop do not decide
    /// the join, so the node never started and must end CANCELLED.
    Undecided,
}

/// The order in which the run's nodes ended and started, read from its trace.
#[derive(Debug, Clone)]
pub struct Timing {
    /// `seq` of each node's terminal event.
    pub end_seq: Vec<u64>,
    /// Nodes every dependent of which withdrew (§5), per the replay, and that did end
    /// CANCELLED (a withdrawn node that ended otherwise lost the race; see the module doc).
    pub withdrawn: Vec<bool>,
    /// `seq` of the failure that stopped the run under `failRun`, if any.
    pub cutoff: Option<u64>,
    /// Attempts lost to an engine restart (`RESUMED` events' `lostAttempts`): each failed
    /// with a retryable `CrashError`, as §8 has a dead node's attempt fail.
    pub lost: HashSet<(NodeIx, u32)>,
    /// Tries such a loss gets beyond the node's `maxAttempts` (`resume.retryLostAttempts`,
    /// the engine's default unless a test sets it).
    pub retry_lost: u32,
    /// Each gate's request id (its `AWAITING_INPUT` event) and, once answered, when (the
    /// `PROGRESS` event of its resolution): facts of the run, as who answers and when is
    /// outside the spec.
    pub answers: Vec<(Option<String>, Option<String>)>,
}

/// Whether a failure of `ix` is handled (§4: it has an outgoing `error` edge).
pub fn handled(graph: &Graph, ix: NodeIx) -> bool {
    graph
        .edges
        .iter()
        .any(|e| e.source == ix && e.kind == EdgeKind::Error)
}

/// The policy an unhandled failure of `ix` applies (§4: `onFailure`, else the run's).
pub fn policy(graph: &Graph, ix: NodeIx) -> FailurePolicy {
    graph.nodes[ix.ix()]
        .on_failure
        .unwrap_or(graph.settings.failure_policy)
}

fn parents(graph: &Graph, ix: NodeIx) -> BTreeSet<NodeIx> {
    graph
        .edges
        .iter()
        .filter(|e| e.target == ix)
        .map(|e| e.source)
        .collect()
}

fn children(graph: &Graph, ix: NodeIx) -> BTreeSet<NodeIx> {
    graph
        .edges
        .iter()
        .filter(|e| e.source == ix)
        .map(|e| e.target)
        .collect()
}

/// §5 replay state: which (parent, child) withdrawals happened, which nodes ended.
struct Withdrawals<'g> {
    graph: &'g Graph,
    pairs: HashSet<(NodeIx, NodeIx)>,
    ended: Vec<bool>,
    withdrawn: Vec<bool>,
}

impl Withdrawals<'_> {
    /// `child` withdraws from each of its parents that has not ended.
    fn withdraw_from_parents(&mut self, child: NodeIx) {
        for parent in parents(self.graph, child) {
            if self.ended[parent.ix()] || !self.pairs.insert((parent, child)) {
                continue;
            }
            let all_gone = children(self.graph, parent)
                .iter()
                .all(|c| self.pairs.contains(&(parent, *c)));
            if all_gone {
                self.withdrawn[parent.ix()] = true;
            }
        }
    }
}

fn node_of(graph: &Graph, event: &TraceEvent) -> Result<NodeIx, String> {
    graph
        .find(&event.node_id)
        .ok_or_else(|| format!("event {} names unknown node {}", event.seq, event.node_id))
}

impl Timing {
    /// Reads the timing of a run from its events (in `seq` order).
    ///
    /// # Errors
    /// When a node has no terminal event or an event names an unknown node.
    pub fn from_trace(graph: &Graph, all_events: &[TraceEvent]) -> Result<Timing, String> {
        let lost = lost_attempts(graph, all_events)?;
        // The run's own events (RESUMED) name no node.
        let node_events: Vec<TraceEvent> = all_events
            .iter()
            .filter(|e| e.kind != EventType::Resumed)
            .cloned()
            .collect();
        let events = &node_events[..];
        let n = graph.nodes.len();
        let mut end_seq = vec![None; n];
        let mut fired_seq = vec![None; n];
        for e in events {
            let ix = node_of(graph, e)?.ix();
            if e.kind.is_terminal() {
                end_seq[ix].get_or_insert(e.seq);
            } else if matches!(e.kind, EventType::Queued | EventType::Started) {
                fired_seq[ix].get_or_insert(e.seq);
            }
        }
        let end_seq = end_seq
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| format!("{} has no terminal event", graph.nodes[i].node_ref))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        let cutoff = events
            .iter()
            .filter(|e| e.kind == EventType::Failed)
            .find(|e| {
                graph.find(&e.node_id).is_some_and(|ix| {
                    !handled(graph, ix) && policy(graph, ix) == FailurePolicy::FailRun
                })
            })
            .map(|e| e.seq);
        let mut answers = vec![(None, None); n];
        for e in events {
            let ix = node_of(graph, e)?.ix();
            let data = e.data.as_deref();
            let text = |key: &str| data.and_then(|d| d[key].as_str()).map(str::to_owned);
            match e.kind {
                EventType::AwaitingInput => answers[ix].0 = text("requestId"),
                EventType::Progress if text("status").as_deref() == Some("resolved") => {
                    answers[ix].1 = Some(e.timestamp.to_string());
                }
                _ => {}
            }
        }
        let doomed = replay_withdrawals(graph, events, &fired_seq, cutoff)?;
        let cancelled = cancelled_nodes(graph, events)?;
        let withdrawn = doomed
            .iter()
            .zip(&cancelled)
            .map(|(d, c)| *d && *c)
            .collect();
        Ok(Timing {
            end_seq,
            withdrawn,
            cutoff,
            lost,
            retry_lost: shipsec_orchestrator::EngineConfig::default()
                .resume
                .retry_lost_attempts,
            answers,
        })
    }

    /// Whether the edges of `source` reached their targets (always, without a cut-off).
    fn arrived(&self, source: NodeIx) -> bool {
        self.cutoff.is_none_or(|c| self.end_seq[source.ix()] < c)
    }
}

/// The attempts the `RESUMED` events of a trace say were lost.
fn lost_attempts(graph: &Graph, events: &[TraceEvent]) -> Result<HashSet<(NodeIx, u32)>, String> {
    let mut lost = HashSet::new();
    for e in events.iter().filter(|e| e.kind == EventType::Resumed) {
        let list = e
            .data
            .as_ref()
            .and_then(|d| d.get("lostAttempts"))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("RESUMED event {} has no lostAttempts", e.seq))?;
        for a in list {
            let node = a.get("nodeId").and_then(Value::as_str).unwrap_or_default();
            let ix = graph
                .find(node)
                .ok_or_else(|| format!("RESUMED event {} names unknown node {node}", e.seq))?;
            let attempt = a.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32;
            lost.insert((ix, attempt));
        }
    }
    Ok(lost)
}

/// The nodes whose terminal event is CANCELLED.
fn cancelled_nodes(graph: &Graph, events: &[TraceEvent]) -> Result<Vec<bool>, String> {
    let mut cancelled = vec![false; graph.nodes.len()];
    for e in events.iter().filter(|e| e.kind == EventType::Cancelled) {
        cancelled[node_of(graph, e)?.ix()] = true;
    }
    Ok(cancelled)
}

/// §5, replayed over the events before the cut-off (see the module doc).
fn replay_withdrawals(
    graph: &Graph,
    events: &[TraceEvent],
    fired_seq: &[Option<u64>],
    cutoff: Option<u64>,
) -> Result<Vec<bool>, String> {
    let n = graph.nodes.len();
    let mut w = Withdrawals {
        graph,
        pairs: HashSet::new(),
        ended: vec![false; n],
        withdrawn: vec![false; n],
    };
    for e in events.iter().filter(|e| cutoff.is_none_or(|c| e.seq < c)) {
        let ix = node_of(graph, e)?;
        let fires = !e.kind.is_terminal() && fired_seq[ix.ix()] == Some(e.seq);
        if fires && graph.nodes[ix.ix()].join == Join::First {
            w.withdraw_from_parents(ix);
        }
        if e.kind.is_terminal() {
            w.ended[ix.ix()] = true;
            if e.kind == EventType::Cancelled && w.withdrawn[ix.ix()] {
                w.withdraw_from_parents(ix);
            }
        }
    }
    Ok(w.withdrawn)
}

/// §1: whether an edge of `kind` leaving port `handle` is satisfied by its source's end.
fn satisfied(kind: EdgeKind, handle: Option<&str>, source: &NodeEnd) -> bool {
    match source.end {
        End::Completed => match kind {
            EdgeKind::Success => match &source.active_ports {
                None => true,
                Some(ports) => ports.iter().any(|p| p == handle.unwrap_or("default")),
            },
            EdgeKind::Error => false,
            EdgeKind::Always => true,
        },
        End::Failed => kind != EdgeKind::Success,
        End::Skipped => kind == EdgeKind::Always,
        End::Cancelled => false,
    }
}

/// The outcome of a join (§2).
enum Decision {
    /// Runs; the deciding edges' sources, and the `seq` at which it fired.
    Run {
        triggered_by: Vec<NodeIx>,
        fired_at: u64,
    },
    /// Skipped.
    Skip,
    /// Not decided by the edges that arrived.
    Open,
}

/// §2: walks the arrived incoming edges in arrival order; the first decision stands.
fn decide(
    graph: &Graph,
    ix: NodeIx,
    timing: &Timing,
    parent: &dyn Fn(NodeIx) -> Option<NodeEnd>,
) -> Decision {
    let incoming: Vec<EdgeIx> = (0..graph.edges.len() as u32)
        .map(EdgeIx)
        .filter(|e| graph.edges[e.ix()].target == ix)
        .collect();
    let k = incoming.len() as u32;
    if k == 0 {
        return Decision::Run {
            triggered_by: Vec::new(),
            fired_at: 0,
        };
    }
    let mut arrived: Vec<(u64, EdgeIx, NodeEnd)> = incoming
        .iter()
        .filter_map(|e| {
            let source = graph.edges[e.ix()].source;
            let end = parent(source).filter(|_| timing.arrived(source))?;
            Some((timing.end_seq[source.ix()], *e, end))
        })
        .collect();
    arrived.sort_by_key(|(seq, e, _)| (*seq, *e));
    let join = graph.nodes[ix.ix()].join;
    let (mut s, mut d) = (0u32, 0u32);
    let mut satisfied_from = Vec::new();
    for (seq, e, end) in arrived {
        let edge = &graph.edges[e.ix()];
        if satisfied(edge.kind, edge.source_handle.as_deref(), &end) {
            s += 1;
            satisfied_from.push(edge.source);
        } else {
            d += 1;
        }
        let (run, skip) = match join {
            Join::All => (s == k, d >= 1),
            Join::Any | Join::First => (s >= 1, d == k),
            Join::Quorum(n) => (s == n, d > k - n),
        };
        if run {
            let triggered_by = match join {
                Join::All => Vec::new(),
                Join::Any | Join::First => satisfied_from[..1].to_vec(),
                Join::Quorum(_) => satisfied_from,
            };
            return Decision::Run {
                triggered_by,
                fired_at: seq,
            };
        }
        if skip {
            return Decision::Skip;
        }
    }
    Decision::Open
}

/// A failed attempt: its error type and whether the component said it may be retried.
struct Failure {
    error_type: String,
    retryable: bool,
}

fn failure(error_type: &str, retryable: bool) -> Failure {
    Failure {
        error_type: error_type.to_owned(),
        retryable,
    }
}

/// §3: overrides, then the run's inputs for the entrypoint, then every mapping whose source
/// COMPLETED and had ended when the join fired (mapped values win); a completed source
/// lacking the handle, or a required input left without a value, is an `InputError`.
fn inputs(
    graph: &Graph,
    ix: NodeIx,
    run_inputs: &Object,
    timing: &Timing,
    fired_at: u64,
    parent: &dyn Fn(NodeIx) -> Option<NodeEnd>,
) -> Result<Object, Failure> {
    let node = &graph.nodes[ix.ix()];
    let mut inputs = node.input_overrides.clone();
    if graph.entrypoint == Some(ix) {
        inputs.extend(run_inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for m in &node.input_mappings {
        let seen = timing.end_seq[m.source.ix()] <= fired_at && timing.arrived(m.source);
        let Some(output) = parent(m.source)
            .filter(|p| seen && p.end == End::Completed)
            .and_then(|p| p.output)
        else {
            continue;
        };
        let value = if m.source_handle == "__self__" {
            Value::Object(output)
        } else {
            match output.get(&m.source_handle) {
                Some(v) => v.clone(),
                None => return Err(failure("InputError", false)),
            }
        };
        inputs.insert(m.target.clone(), value);
    }
    let required: &[&str] = match &*node.component_id {
        "core.flaky" => &["failures"],
        "core.sleep" => &["ms"],
        "core.process" => &["command"],
        _ => &[],
    };
    for name in required {
        if !inputs.contains_key(*name) && !node.params.contains_key(*name) {
            return Err(failure("InputError", false));
        }
    }
    Ok(inputs)
}

/// A value by name, inputs winning over params (how every built-in reads its settings).
fn value<'a>(params: &'a Object, inputs: &'a Object, name: &str) -> Option<&'a Value> {
    inputs.get(name).or_else(|| params.get(name))
}

/// A non-negative integer setting; `null`/absent is `None`; anything else a ValidationError.
fn count(params: &Object, inputs: &Object, name: &str) -> Result<Option<u64>, Failure> {
    match value(params, inputs, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| failure("ValidationError", false)),
    }
}

/// Params merged with inputs, inputs winning, without the keys in `skip`.
fn echo(params: &Object, inputs: &Object, skip: &[&str]) -> Object {
    let mut out: Object = params
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// One attempt of a built-in component: its output and activated ports, or a failure.
fn attempt(
    component: &str,
    params: &Object,
    inputs: &Object,
    n: u32,
) -> Result<(Object, Option<Vec<String>>), Failure> {
    match component {
        "core.workflow.entrypoint" => Ok((inputs.clone(), None)),
        "core.echo" => Ok((echo(params, inputs, &[]), None)),
        "core.sleep" => {
            count(params, inputs, "ms")?;
            Ok((echo(params, inputs, &["ms"]), None))
        }
        "core.fail" => {
            count(params, inputs, "ms")?;
            let error_type = value(params, inputs, "errorType")
                .and_then(Value::as_str)
                .unwrap_or("ComponentError");
            let retryable = value(params, inputs, "retryable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Err(failure(error_type, retryable))
        }
        "core.flaky" => {
            let failures = count(params, inputs, "failures")?.unwrap_or(0);
            if u64::from(n) <= failures {
                Err(failure("FlakyError", true))
            } else {
                Ok((echo(params, inputs, &[]), None))
            }
        }
        "core.branch" => {
            let chosen = inputs
                .get("port")
                .or_else(|| params.get("ports"))
                .or_else(|| params.get("port"));
            let ports = match chosen {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| failure("ValidationError", false))?,
                Some(_) => return Err(failure("ValidationError", false)),
            };
            Ok((echo(params, inputs, &[]), Some(ports)))
        }
        "core.process" => {
            let env = value(params, inputs, "env").and_then(Value::as_object);
            if env.and_then(|e| e.get("FAIL")) == Some(&Value::from("1")) {
                return Err(failure("ProcessError", false));
            }
            let mut output = Object::new();
            output.insert("stdout".into(), Value::Object(inputs.clone()));
            output.insert("stderr".into(), Value::from(""));
            output.insert("exitCode".into(), Value::from(0));
            Ok((output, None))
        }
        other => panic!("the reference does not model component {other}"),
    }
}

/// §7: attempts until one succeeds, the error may not be retried, or `maxAttempts` is used.
fn run_attempts(graph: &Graph, ix: NodeIx, inputs: &Object, timing: &Timing) -> NodeEnd {
    let node = &graph.nodes[ix.ix()];
    let policy = &node.retry;
    let mut n = 1;
    loop {
        let lost = timing.lost.contains(&(ix, n));
        let outcome = if lost {
            Err(failure("CrashError", true))
        } else {
            attempt(&node.component_id, &node.params, inputs, n)
        };
        let budget = policy.max_attempts + if lost { timing.retry_lost } else { 0 };
        if let Ok((output, _)) = &outcome
            && output.get("pending") == Some(&Value::Bool(true))
        {
            return gate(ix, output, n, timing);
        }
        match outcome {
            Ok((output, active_ports)) => {
                return NodeEnd {
                    end: End::Completed,
                    attempts: Some(n),
                    output: Some(output),
                    active_ports,
                    error_type: None,
                    triggered_by: Vec::new(),
                    handles: None,
                };
            }
            Err(f) => {
                let never = ["InputError", "ValidationError"].contains(&f.error_type.as_str())
                    || policy.non_retryable_error_types.contains(&f.error_type);
                if f.retryable && !never && n < budget {
                    n += 1;
                    continue;
                }
                return NodeEnd {
                    end: End::Failed,
                    attempts: Some(n),
                    output: None,
                    active_ports: None,
                    error_type: Some(f.error_type),
                    triggered_by: Vec::new(),
                    handles: None,
                };
            }
        }
    }
}

/// §12: an attempt whose output is a pending marker makes its node a gate. The property
/// tests' person answers what the marker's title says (`approve`, `reject`) as `driver`,
/// and leaves `expire` to its deadline (`timeoutAt` long past): then the gate fails with a
/// `TimeoutError` that is never retried. Answered, it completes with ShipSec's resolved
/// output on ShipSec's ports; its request id and answer time are the run's.
fn gate(ix: NodeIx, marker: &Object, attempts: u32, timing: &Timing) -> NodeEnd {
    let approved = match marker.get("title").and_then(Value::as_str) {
        Some("approve") => true,
        Some("reject") => false,
        _ => {
            return NodeEnd {
                end: End::Failed,
                attempts: Some(attempts),
                output: None,
                active_ports: None,
                error_type: Some("TimeoutError".into()),
                triggered_by: Vec::new(),
                handles: None,
            };
        }
    };
    let (request_id, answered_at) = &timing.answers[ix.ix()];
    let mut output = Object::new();
    output.insert("approved".into(), Value::Bool(approved));
    output.insert("rejected".into(), Value::Bool(!approved));
    output.insert("respondedBy".into(), Value::from("driver"));
    output.insert("responseNote".into(), Value::Null);
    output.insert("respondedAt".into(), json!(answered_at));
    output.insert("requestId".into(), json!(request_id));
    let port = if approved { "approved" } else { "rejected" };
    let ports = [
        "respondedBy",
        "responseNote",
        "respondedAt",
        "requestId",
        port,
    ];
    NodeEnd {
        end: End::Completed,
        attempts: Some(attempts),
        output: Some(output),
        active_ports: Some(ports.iter().map(|p| (*p).to_owned()).collect()),
        error_type: None,
        triggered_by: Vec::new(),
        handles: None,
    }
}

/// What node `ix` does, given how its parents ended (`parent`) and the run's timing.
pub fn expect_node(
    graph: &Graph,
    ix: NodeIx,
    run_inputs: &Object,
    timing: &Timing,
    parent: &dyn Fn(NodeIx) -> Option<NodeEnd>,
) -> Expectation {
    if timing.withdrawn[ix.ix()] {
        return Expectation::Ended(NodeEnd::without_running(End::Cancelled, None));
    }
    let (triggered_by, fired_at) = match decide(graph, ix, timing, parent) {
        Decision::Open => return Expectation::Undecided,
        Decision::Skip => {
            return Expectation::Ended(NodeEnd::without_running(End::Skipped, Some(0)));
        }
        Decision::Run {
            triggered_by,
            fired_at,
        } => (triggered_by, fired_at),
    };
    let mut end = match inputs(graph, ix, run_inputs, timing, fired_at, parent) {
        Ok(inputs) => run_attempts(graph, ix, &inputs, timing),
        Err(f) => NodeEnd {
            error_type: Some(f.error_type),
            ..NodeEnd::without_running(End::Failed, Some(1))
        },
    };
    end.triggered_by = triggered_by;
    end.handles = handled_failure(graph, ix, timing, fired_at, parent);
    Expectation::Ended(end)
}

/// §3: a node reached through an `error` edge gets the failure it handles. Read as: the
/// first parent, in arrival order, that the join saw end FAILED and that has an `error`
/// edge to the node (whether or not that edge was the deciding one).
fn handled_failure(
    graph: &Graph,
    ix: NodeIx,
    timing: &Timing,
    fired_at: u64,
    parent: &dyn Fn(NodeIx) -> Option<NodeEnd>,
) -> Option<NodeIx> {
    graph
        .edges
        .iter()
        .filter(|e| e.target == ix && e.kind == EdgeKind::Error)
        .map(|e| e.source)
        .filter(|p| timing.arrived(*p) && timing.end_seq[p.ix()] <= fired_at)
        .filter(|p| parent(*p).is_some_and(|end| end.end == End::Failed))
        .min_by_key(|p| timing.end_seq[p.ix()])
}

/// A topological order of the graph's nodes (Kahn), computed here from the edges.
fn topological(graph: &Graph) -> Vec<NodeIx> {
    let n = graph.nodes.len();
    let mut indegree = vec![0usize; n];
    for e in &graph.edges {
        indegree[e.target.ix()] += 1;
    }
    let mut order: Vec<NodeIx> = (0..n as u32)
        .map(NodeIx)
        .filter(|ix| indegree[ix.ix()] == 0)
        .collect();
    let mut head = 0;
    while head < order.len() {
        let ix = order[head];
        head += 1;
        for e in graph.edges.iter().filter(|e| e.source == ix) {
            indegree[e.target.ix()] -= 1;
            if indegree[e.target.ix()] == 0 {
                order.push(e.target);
            }
        }
    }
    assert_eq!(order.len(), n, "the graph is acyclic");
    order
}

/// The whole run, evaluated from the reference's own node ends (no failRun: each node's
/// parents have ended before it is looked at, so every join is decided).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per node, by index.
    pub nodes: Vec<NodeEnd>,
    /// §4: whether an unhandled failure happened (the run ends FAILED).
    pub failed: bool,
}

/// Evaluates every node in a topological order (see the module doc for [`Timing`]).
pub fn evaluate(graph: &Graph, run_inputs: &Object, timing: &Timing) -> Evaluation {
    let mut ends: Vec<Option<NodeEnd>> = vec![None; graph.nodes.len()];
    for ix in topological(graph) {
        let expectation = {
            let lookup = |p: NodeIx| ends[p.ix()].clone();
            expect_node(graph, ix, run_inputs, timing, &lookup)
        };
        let end = match expectation {
            Expectation::Ended(end) => end,
            Expectation::Undecided => {
                panic!("every parent of {ix:?} ended, so its join is decided")
            }
        };
        ends[ix.ix()] = Some(end);
    }
    let nodes: Vec<NodeEnd> = ends.into_iter().flatten().collect();
    let failed = nodes
        .iter()
        .enumerate()
        .any(|(i, e)| e.end == End::Failed && !handled(graph, NodeIx(i as u32)));
    Evaluation { nodes, failed }
}
