//! The chaos harness: a seeded, reproducible fault plan for any workflow, a runner that
//! injects it into a run through the public handle, and the invariants checked after.
//!
//! Faults: node actors killed while pending or mid-attempt, components made to panic,
//! edge resolutions to a node delayed, the run cancelled or terminated, its supervisor
//! killed; and for remote runs, the worker that takes an attempt killed, hung or cut off
//! ([`super::workers::WorkerFleet`]). Invariants: the run ends within a bound; every node has exactly one terminal
//! state and one terminal event (`seq` dense); no node actor of the run is left alive;
//! every slot is back. [`compare_with_oracle`] then checks the final states against a
//! fault-free run of the same workflow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workers::Strike;
use super::{Chaos, WorkerFault};
use crate::messages::orchestrator::SubmitOptions;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::{Graph, Join};
use crate::runtime::semantics::event::{EventType, TraceEvent};
use crate::runtime::semantics::outcome::{NodeStatus, RunStatus};
use crate::runtime::semantics::result::RunResult;
use crate::{EngineError, Handle, Workflow};

/// One fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Kill the node's actor as soon as it is spawned (its first parent ended), with that
    /// parent's edge resolution still in its mailbox.
    KillPending {
        /// Node ref.
        node: String,
    },
    /// Kill the node's actor just after its attempt `attempt` started.
    KillRunning {
        /// Node ref.
        node: String,
        /// Attempt number.
        attempt: u32,
    },
    /// Make the node's attempt `attempt` panic.
    Panic {
        /// Node ref.
        node: String,
        /// Attempt number.
        attempt: u32,
    },
    /// Delay every edge resolution sent to the node.
    Delay {
        /// Node ref.
        node: String,
        /// The delay.
        delay: Duration,
    },
    /// Cancel the run once `after` events were seen.
    Cancel {
        /// Events seen first.
        after: u64,
    },
    /// Terminate the run once `after` events were seen.
    Terminate {
        /// Events seen first.
        after: u64,
    },
    /// Kill the run's supervisor once `after` events were seen.
    KillSupervisor {
        /// Events seen first.
        after: u64,
    },
    /// Strike the remote worker that takes the node's attempt `attempt`.
    Worker {
        /// Node ref.
        node: String,
        /// Attempt number.
        attempt: u32,
        /// What strikes it.
        fault: WorkerFault,
    },
}

impl Fault {
    /// Whether the fault stops the whole run.
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            Fault::Cancel { .. } | Fault::Terminate { .. } | Fault::KillSupervisor { .. }
        )
    }
}

/// A reproducible set of faults.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// The seed it was drawn from (print it to replay a failure).
    pub seed: u64,
    /// The faults.
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// Draws a plan for `graph` from `seed`. Crash faults (kills and panics) go only to
    /// attempt 1 of nodes whose retry policy allows a second attempt, so the
    /// fault-free outcome stays reachable; about one plan in three also stops the run.
    pub fn random(seed: u64, graph: &Graph) -> FaultPlan {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults = Vec::new();
        for node in &graph.nodes {
            let name = node.node_ref.to_string();
            let retries = node.retry.max_attempts >= 2;
            match rng.random_range(0..10) {
                0 if retries => faults.push(Fault::KillRunning {
                    node: name,
                    attempt: 1,
                }),
                1 if retries => faults.push(Fault::Panic {
                    node: name,
                    attempt: 1,
                }),
                2 if retries && !node.incoming.is_empty() => {
                    faults.push(Fault::KillPending { node: name });
                }
                3 => faults.push(Fault::Delay {
                    node: name,
                    delay: Duration::from_millis(rng.random_range(1..20)),
                }),
                _ => {}
            }
        }
        let horizon = (graph.len() as u64 * 2).max(2);
        match rng.random_range(0..9) {
            0 => faults.push(Fault::Cancel {
                after: rng.random_range(1..horizon),
            }),
            1 => faults.push(Fault::Terminate {
                after: rng.random_range(1..horizon),
            }),
            2 => faults.push(Fault::KillSupervisor {
                after: rng.random_range(1..horizon),
            }),
            _ => {}
        }
        FaultPlan { seed, faults }
    }

    /// [`FaultPlan::random`], plus one worker fault (kill, hang and partition in turn, by
    /// seed) on attempt 1 of a node whose retry policy allows a second attempt and that
    /// no other crash fault strikes, a root when one qualifies (it runs unless the run is
    /// stopped first). For runs whose nodes run on remote workers.
    pub fn random_with_worker_fault(seed: u64, graph: &Graph) -> FaultPlan {
        let mut plan = FaultPlan::random(seed, graph);
        let crashed = |name: &str| plan.faults.iter().any(|f| crash_of(f) == Some(name));
        let eligible: Vec<&crate::runtime::definition::graph::Node> = graph
            .nodes
            .iter()
            .filter(|n| n.retry.max_attempts >= 2 && !crashed(&n.node_ref))
            .collect();
        let roots: Vec<_> = eligible
            .iter()
            .copied()
            .filter(|n| n.incoming.is_empty())
            .collect();
        let pool = if roots.is_empty() { &eligible } else { &roots };
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f1ee7);
        if !pool.is_empty() {
            let node = pool[rng.random_range(0..pool.len())];
            let fault =
                [WorkerFault::Kill, WorkerFault::Hang, WorkerFault::Partition][(seed % 3) as usize];
            plan.faults.push(Fault::Worker {
                node: node.node_ref.to_string(),
                attempt: 1,
                fault,
            });
        }
        plan
    }
}

/// The node a crash fault (one that ends an attempt without its outcome) strikes.
fn crash_of(fault: &Fault) -> Option<&str> {
    match fault {
        Fault::KillRunning { node, .. }
        | Fault::Panic { node, .. }
        | Fault::KillPending { node }
        | Fault::Worker { node, .. } => Some(node),
        _ => None,
    }
}

/// What a chaotic run gave.
#[derive(Debug)]
pub struct ChaosReport {
    /// The run's result.
    pub result: Arc<RunResult>,
    /// Its events.
    pub events: Vec<TraceEvent>,
    /// Faults actually injected (a fault whose moment never came is not).
    pub injected: usize,
    /// Whether a run-stopping fault was injected before the run ended.
    pub stopped: bool,
    /// Time from the last injected fault to the result.
    pub ended_after_fault: Duration,
}

/// An invariant that did not hold.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// The run did not end within the bound.
    #[error("seed {seed}: the run did not end within {bound:?}")]
    Hung {
        /// The plan's seed.
        seed: u64,
        /// The bound.
        bound: Duration,
    },
    /// An invariant of the result or the trace.
    #[error("seed {seed}: {what}")]
    Broken {
        /// The plan's seed.
        seed: u64,
        /// What is wrong.
        what: String,
    },
    /// The engine refused the run.
    #[error("seed {seed}: {source}")]
    Engine {
        /// The plan's seed.
        seed: u64,
        /// Why.
        source: EngineError,
    },
}

/// Runs `workflow` with the faults of `plan` and checks the invariants; `chaos` is the
/// one `handle`'s engine was started with. Runs must not overlap on `handle` (the slot
/// check reads the engine-wide numbers).
///
/// # Errors
/// The first [`Violation`] found.
pub async fn run_with_faults(
    handle: &Handle,
    chaos: &Chaos,
    workflow: &Workflow,
    inputs: JsonObject,
    plan: &FaultPlan,
    bound: Duration,
) -> Result<ChaosReport, Violation> {
    let seed = plan.seed;
    let run_id = format!("chaos-{seed}-{}", uuid::Uuid::new_v4());
    install(chaos, &run_id, plan);
    let options = SubmitOptions {
        run_id: Some(run_id.clone()),
        ..SubmitOptions::default()
    };
    let engine = |source| Violation::Engine { seed, source };
    let graph = workflow.graph().clone();
    let mut run = handle
        .submit_workflow(workflow, inputs, options)
        .await
        .map_err(engine)?;
    let submitted = Instant::now();
    // The events end with the run: a run that never ends is caught here too.
    let driven = tokio::time::timeout(bound, drive(handle, chaos, &run_id, plan))
        .await
        .map_err(|_| Violation::Hung { seed, bound })?
        .map_err(engine)?;
    let result = tokio::time::timeout(bound, run.result())
        .await
        .map_err(|_| Violation::Hung { seed, bound })?
        .map_err(engine)?;
    let pending_kills = chaos.pending_kills_of(&run_id);
    let injected = driven.injected + pending_kills.len();
    let last_fault = pending_kills
        .into_iter()
        .chain(driven.last_fault)
        .max()
        .unwrap_or(submitted);
    let ended_after_fault = last_fault.elapsed();
    let events: Vec<TraceEvent> = handle
        .events(&run_id)
        .await
        .map_err(engine)?
        .collect()
        .await;
    let broken = |what: String| Violation::Broken { seed, what };
    if !result.status.is_terminal() {
        return Err(broken(format!(
            "run status {:?} is not terminal",
            result.status
        )));
    }
    let supervisor_died = result.nodes.is_empty() && result.status == RunStatus::Failed;
    if !supervisor_died {
        check_trace(&graph, &result, &events).map_err(|b| broken(b.0))?;
    }
    // A run whose supervisor died ends before its node actors finish dying: wait for
    // their exits (bounded) before counting the living.
    chaos.wait_for_run_actors(&run_id, bound).await;
    let live = chaos.live_node_actors_of(&run_id);
    chaos.clear_run(&run_id);
    if live > 0 {
        return Err(broken(format!(
            "{live} node actors still alive after the run"
        )));
    }
    if tokio::time::timeout(bound, handle.slots_idle())
        .await
        .is_err()
    {
        let slots = handle.slots().await.map_err(engine)?;
        return Err(broken(format!("slots not given back: {slots:?}")));
    }
    Ok(ChaosReport {
        result,
        events,
        injected,
        stopped: driven.stopped,
        ended_after_fault,
    })
}

fn install(chaos: &Chaos, run_id: &str, plan: &FaultPlan) {
    for fault in &plan.faults {
        match fault {
            Fault::Panic { node, attempt } => chaos.panic_on_attempt(run_id, node, *attempt),
            Fault::KillRunning { node, attempt } => chaos.kill_on_attempt(run_id, node, *attempt),
            Fault::Delay { node, delay } => chaos.delay_messages_to(run_id, node, *delay),
            Fault::KillPending { node } => chaos.kill_when_pending(run_id, node),
            Fault::Worker {
                node,
                attempt,
                fault,
            } => chaos.arm_worker_fault(run_id, node, *attempt, *fault),
            _ => {}
        }
    }
}

struct Driven {
    injected: usize,
    stopped: bool,
    last_fault: Option<Instant>,
}

/// Follows the run's events and injects the event-triggered faults.
async fn drive(
    handle: &Handle,
    chaos: &Chaos,
    run_id: &str,
    plan: &FaultPlan,
) -> Result<Driven, EngineError> {
    let mut events = handle.events(run_id).await?;
    let mut driven = Driven {
        injected: 0,
        stopped: false,
        last_fault: None,
    };
    let mut stop = plan.faults.iter().find(|f| f.stops_run()).cloned();
    let mut seen = 0u64;
    while let Some(event) = events.next().await {
        seen += 1;
        if event.kind == EventType::Started {
            let attempt = event.metadata.as_ref().and_then(|m| m.attempt).unwrap_or(1);
            let killed = plan.faults.iter().any(|f| {
                matches!(f, Fault::KillRunning { node, attempt: a } if *node == *event.node_id && *a == attempt)
            });
            if killed {
                driven.injected += 1;
                driven.last_fault = Some(Instant::now());
            }
        }
        if let Some(fault) = stop.take_if(|f| due(f, seen)) {
            inject_stop(handle, chaos, run_id, &fault).await?;
            driven.injected += 1;
            driven.stopped = true;
            driven.last_fault = Some(Instant::now());
        }
    }
    Ok(driven)
}

fn due(fault: &Fault, seen: u64) -> bool {
    match fault {
        Fault::Cancel { after } | Fault::Terminate { after } | Fault::KillSupervisor { after } => {
            seen >= *after
        }
        _ => false,
    }
}

async fn inject_stop(
    handle: &Handle,
    chaos: &Chaos,
    run_id: &str,
    fault: &Fault,
) -> Result<(), EngineError> {
    match fault {
        Fault::Cancel { .. } => handle.cancel(run_id).await.map(drop),
        Fault::Terminate { .. } => handle.terminate(run_id).await.map(drop),
        Fault::KillSupervisor { .. } => {
            if let Some(cell) = chaos.supervisor_actor(run_id) {
                cell.kill();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A broken invariant of a run, as a sentence naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Broken(pub String);

impl From<String> for Broken {
    fn from(sentence: String) -> Broken {
        Broken(sentence)
    }
}

/// docs/semantics.md §9 on a finished run — the one trace checker of the test suites:
/// `seq` dense from 1; the run ended; exactly one terminal event per node, matching its
/// record and last among its events (the run's own RESUMED events aside); attempts equal
/// to the node's STARTED events; a node's first QUEUED or STARTED after the terminal
/// events of the parents its join waited for (every parent for `all`, the recorded
/// `triggeredBy` otherwise).
///
/// # Errors
/// A sentence naming the first broken invariant.
pub fn check_trace(graph: &Graph, result: &RunResult, events: &[TraceEvent]) -> Result<(), Broken> {
    for (i, e) in events.iter().enumerate() {
        if e.seq != i as u64 + 1 {
            return Err(Broken(format!(
                "seq is not dense: event #{} has seq {}",
                i + 1,
                e.seq
            )));
        }
    }
    if !result.status.is_terminal() {
        return Err(Broken(format!("run ended {:?}", result.status)));
    }
    let mut terminal: HashMap<&str, &TraceEvent> = HashMap::new();
    for e in events.iter().filter(|e| e.kind != EventType::Resumed) {
        if let Some(end) = terminal.get(&*e.node_id) {
            return Err(Broken(format!(
                "{}: event {:?} (seq {}) after its terminal {:?} (seq {})",
                e.node_id, e.kind, e.seq, end.kind, end.seq
            )));
        }
        if e.kind.is_terminal() {
            terminal.insert(&e.node_id, e);
        }
    }
    for node in &graph.nodes {
        let name = &*node.node_ref;
        let record = result
            .nodes
            .get(name)
            .ok_or_else(|| format!("{name}: no record in the result"))?;
        let end = terminal
            .get(name)
            .ok_or_else(|| format!("{name}: no terminal event"))?;
        if !same_status(end.kind, record.status) {
            return Err(Broken(format!(
                "{name}: record says {:?}, terminal event says {:?}",
                record.status, end.kind
            )));
        }
        let started = events
            .iter()
            .filter(|e| &*e.node_id == name && e.kind == EventType::Started)
            .count() as u32;
        if record.attempts != started {
            return Err(Broken(format!(
                "{name}: {} attempts recorded, {started} STARTED events",
                record.attempts
            )));
        }
        let Some(first_start) = events.iter().find(|e| {
            &*e.node_id == name && matches!(e.kind, EventType::Queued | EventType::Started)
        }) else {
            continue;
        };
        let waited: Vec<Arc<str>> = match (&record.triggered_by, node.join) {
            (Some(t), _) => t.clone(),
            (None, Join::All) => node
                .incoming
                .iter()
                .map(|e| graph.node(graph.edge(*e).source).node_ref.clone())
                .collect(),
            (None, _) if node.incoming.is_empty() => Vec::new(),
            (None, join) => {
                return Err(Broken(format!(
                    "{name}: {join:?} join started with no triggeredBy"
                )));
            }
        };
        for parent in waited {
            let parent_end = terminal
                .get(&*parent)
                .ok_or_else(|| format!("{name}: triggeredBy names {parent}, which never ended"))?;
            if parent_end.seq >= first_start.seq {
                return Err(Broken(format!(
                    "{name}: {:?} at seq {} before its parent {parent} ended (seq {})",
                    first_start.kind, first_start.seq, parent_end.seq
                )));
            }
        }
    }
    Ok(())
}

fn same_status(kind: EventType, status: NodeStatus) -> bool {
    matches!(
        (kind, status),
        (EventType::Completed, NodeStatus::Completed)
            | (EventType::Failed, NodeStatus::Failed)
            | (EventType::Skipped, NodeStatus::Skipped)
            | (EventType::Cancelled, NodeStatus::Cancelled)
    )
}

/// Checks a chaotic run against a fault-free run of the same deterministic workflow
/// (joins `all`, no races). Without a run-stopping fault the node states and outputs
/// must be the oracle's, with at most one more attempt per crash fault on a node; with
/// one, the run ends with the stop's status unless it ended first, and every node that
/// completed has the oracle's output.
///
/// # Errors
/// A sentence naming the first difference.
pub fn compare_with_oracle(
    oracle: &RunResult,
    report: &ChaosReport,
    plan: &FaultPlan,
) -> Result<(), Broken> {
    let got = &report.result;
    if report.stopped {
        for (name, output) in &got.outputs {
            if oracle.outputs.get(name) != Some(output) {
                return Err(Broken(format!(
                    "{name} completed with an output the oracle does not give"
                )));
            }
        }
        return Ok(());
    }
    if got.status != oracle.status {
        return Err(Broken(format!(
            "run {:?}, oracle {:?}",
            got.status, oracle.status
        )));
    }
    for (name, want) in &oracle.nodes {
        let have = &got.nodes[name];
        if have.status != want.status {
            return Err(Broken(format!(
                "{name}: {:?}, oracle {:?} ({:?})",
                have.status, want.status, have.error
            )));
        }
        let crashes = plan
            .faults
            .iter()
            .filter(|f| crash_of(f) == Some(&**name))
            .count() as u32;
        if have.attempts < want.attempts || have.attempts > want.attempts + crashes {
            return Err(Broken(format!(
                "{name}: {} attempts, oracle {} (+{crashes} crash faults)",
                have.attempts, want.attempts
            )));
        }
        if got.outputs.get(name) != oracle.outputs.get(name) {
            return Err(Broken(format!("{name}: output differs from the oracle")));
        }
    }
    Ok(())
}

/// Checks what each worker fault did in a run that no fault stopped: the struck attempt
/// failed with a retryable `CrashError` naming the struck worker, on a `RETRYING` event
/// whose `workerId` is that worker; the node then ended as the oracle says after exactly
/// `max(oracle's attempts, 2)` attempts (attempt numbers decide what the built-ins do);
/// and no attempt of the run has two ends (at most one completion counted per attempt).
///
/// # Errors
/// A sentence naming the first difference.
pub fn check_strikes(
    oracle: &RunResult,
    report: &ChaosReport,
    strikes: &[Strike],
) -> Result<(), Broken> {
    each_attempt_ends_once(&report.events)?;
    if report.stopped {
        return Ok(());
    }
    for strike in strikes {
        let name = strike.node_ref.as_str();
        let retry = report
            .events
            .iter()
            .find(|e| {
                &*e.node_id == name
                    && e.kind == EventType::Retrying
                    && e.metadata.as_ref().and_then(|m| m.attempt) == Some(strike.attempt)
            })
            .ok_or_else(|| format!("{name}: no RETRYING after {:?}", strike.fault))?;
        let error = retry
            .error
            .as_deref()
            .map(|e| (&*e.error_type, &*e.message));
        let worker = retry.metadata.as_ref().and_then(|m| m.worker_id.as_deref());
        let named = error.is_some_and(|(t, m)| {
            t == crate::runtime::components::CRASH_ERROR && m.contains(&strike.worker)
        });
        if !named || worker != Some(strike.worker.as_str()) {
            return Err(Broken(format!(
                "{name}: the {:?} of `{}` ended attempt {} with {error:?} on worker {worker:?}",
                strike.fault, strike.worker, strike.attempt
            )));
        }
        let (have, want) = (&report.result.nodes[name], &oracle.nodes[name]);
        if have.attempts != want.attempts.max(2) || have.status != want.status {
            return Err(Broken(format!(
                "{name}: {:?} after {} attempts; the oracle {:?} after {}",
                have.status, have.attempts, want.status, want.attempts
            )));
        }
    }
    Ok(())
}

/// No attempt has two ends (`RETRYING`, `COMPLETED`, `FAILED`): one outcome counted each.
fn each_attempt_ends_once(events: &[TraceEvent]) -> Result<(), Broken> {
    let mut ended: std::collections::HashSet<(&str, u32)> = Default::default();
    for e in events {
        let ending = matches!(
            e.kind,
            EventType::Retrying | EventType::Completed | EventType::Failed
        );
        if let (true, Some(attempt)) = (ending, e.metadata.as_ref().and_then(|m| m.attempt))
            && !ended.insert((&e.node_id, attempt))
        {
            return Err(Broken(format!(
                "{}: attempt {attempt} ended twice",
                e.node_id
            )));
        }
    }
    Ok(())
}
