//! Replay: the facts an actor run fed its cores, recorded (the `chaos` feature's
//! recorder) and fed again to fresh cores, reproduce the run — the same trace events,
//! byte for byte, the same result, the same node states, and, node by node, the same
//! reports the node actors sent. This is what a journal does on restart; here it is
//! checked on random workflows (`tests/random/mod.rs`, gates answered, refused or expired
//! among them), some with a node actor killed mid-attempt so that the facts include its
//! death and its respawn.
//!
//! 256 cases per property unless `PROPTEST_CASES` says otherwise.

mod common;
#[allow(dead_code)] // not every binary uses every generator
mod random;
mod reference;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use shipsec_orchestrator::Handle;
use shipsec_orchestrator::chaos::{Chaos, Recording};
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::definition::graph::NodeIx;
use shipsec_orchestrator::runtime::semantics::event::TraceEvent;
use shipsec_orchestrator::runtime::semantics::node_core::{NodeCore, NodeEffect, NodeFact};
use shipsec_orchestrator::runtime::semantics::report::NodeReport;
use shipsec_orchestrator::runtime::semantics::result::RunResult;
use shipsec_orchestrator::runtime::semantics::run_core::{RunCore, RunEffect, RunFact};

use random::{Case, Finished, Mode, check_against_reference, check_fail_fast, gated_case_gen};

/// An actor run and what it recorded.
struct Recorded {
    result: Arc<RunResult>,
    events: Vec<TraceEvent>,
    recording: Recording,
}

/// Runs `case` on the actors with the recorder on, killing the actor of node `kill` (if
/// any) as its first attempt starts.
fn run_recorded(case: &Case, kill: Option<Index>) -> Result<Recorded, String> {
    let (engine, chaos) = recording_engine();
    let (runtime, handle) = engine;
    let workflow = common::try_workflow(handle, &case.definition)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    chaos.record_facts(&run_id);
    if let Some(kill) = kill {
        let graph = workflow.graph();
        let node = &graph.nodes[kill.index(graph.len())];
        chaos.kill_on_attempt(&run_id, &node.node_ref, 1);
    }
    let options = SubmitOptions {
        run_id: Some(run_id.clone()),
        ..SubmitOptions::default()
    };
    let inputs = random::run_inputs();
    let outcome = common::run_answering_on(engine, &workflow, inputs, options, random::answer_for);
    // Every actor of the run has stopped, so every fact is recorded.
    runtime.block_on(chaos.wait_for_run_actors(&run_id, Duration::from_secs(30)));
    let recording = chaos.take_recording(&run_id);
    chaos.clear_run(&run_id);
    let (result, events) = outcome?;
    Ok(Recorded {
        result,
        events,
        recording: recording.ok_or("nothing was recorded")?,
    })
}

/// The engine this file's runs share (as `common::shared_engine`'s), started with the
/// chaos that records their facts and kills their actors.
fn recording_engine() -> &'static ((tokio::runtime::Runtime, Handle), Arc<Chaos>) {
    static ENGINE: OnceLock<((tokio::runtime::Runtime, Handle), Arc<Chaos>)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let chaos = Chaos::new();
        (common::engine_on_own_runtime(chaos.clone()), chaos)
    })
}

/// Feeds the recorded run facts to a fresh run core: the same events, result and node
/// states. Returns the reports the core was given, by node, for the node replay.
fn replay_run(recorded: &Recorded) -> Result<HashMap<NodeIx, Vec<NodeReport>>, String> {
    let plan = recorded.recording.plan.clone().ok_or("no plan recorded")?;
    let mut core = RunCore::new(plan.clone());
    let mut result = None;
    let mut reports: HashMap<NodeIx, Vec<NodeReport>> = HashMap::new();
    for (fact, now) in &recorded.recording.run {
        if let RunFact::Node(report) = fact {
            reports
                .entry(report.node())
                .or_default()
                .push(report.clone());
        }
        for effect in core.apply(fact.clone(), *now) {
            if let RunEffect::Finish(r) = effect {
                result = Some(r);
            }
        }
    }
    let json = |events: &[TraceEvent]| -> Vec<Value> {
        events
            .iter()
            .map(|e| serde_json::to_value(e).expect("events serialize"))
            .collect()
    };
    let (want, got) = (json(&recorded.events), json(core.events()));
    if want != got {
        let at = want.iter().zip(&got).position(|(a, b)| a != b);
        return Err(format!(
            "replayed events differ ({} recorded, {} replayed), first at {at:?}:\n{:#?}\n{:#?}",
            want.len(),
            got.len(),
            at.and_then(|i| want.get(i)),
            at.and_then(|i| got.get(i)),
        ));
    }
    let result = result.ok_or("the replayed run did not finish")?;
    if *result != *recorded.result {
        return Err(format!(
            "replayed result differs:\n{:#?}\n{:#?}",
            recorded.result, result
        ));
    }
    for ix in plan.graph.node_indices() {
        let record = recorded
            .result
            .nodes
            .get(&**plan.node_ref(ix))
            .ok_or("a node has no record")?;
        if core.status_of(ix) != record.status {
            return Err(format!(
                "{}: replayed state {:?}, recorded {:?}",
                plan.node_ref(ix),
                core.status_of(ix),
                record.status
            ));
        }
    }
    Ok(reports)
}

/// Feeds each node's recorded facts to fresh node cores (a new one at each `Spawned`: a
/// respawned actor's): they report exactly what the run core was told.
fn replay_nodes(
    recorded: &Recorded,
    reports: &HashMap<NodeIx, Vec<NodeReport>>,
) -> Result<(), String> {
    let plan = recorded.recording.plan.clone().ok_or("no plan recorded")?;
    for (&node, facts) in &recorded.recording.nodes {
        let mut core = NodeCore::new(plan.clone(), node);
        let mut replayed = Vec::new();
        for (fact, now) in facts {
            if matches!(fact, NodeFact::Spawned(_)) {
                core = NodeCore::new(plan.clone(), node);
            }
            for effect in core.apply(fact.clone(), *now) {
                if let NodeEffect::Report(report) = effect {
                    replayed.push(report);
                }
            }
        }
        let sent = reports.get(&node).map_or(&[][..], Vec::as_slice);
        if replayed != sent {
            return Err(format!(
                "{}: replayed reports differ from those the run core got:\n{replayed:#?}\n{sent:#?}",
                plan.node_ref(node)
            ));
        }
    }
    Ok(())
}

/// The check a replayed run must also pass, so that what is replayed is a right run.
type Check = fn(&Finished) -> Result<(), String>;

/// Runs `case` (killing `kill` once), replays it, and checks the recorded run.
fn check_replay(case: &Case, kill: Option<Index>, check: Option<Check>) -> Result<(), String> {
    let recorded = run_recorded(case, kill)?;
    let reports = replay_run(&recorded)?;
    replay_nodes(&recorded, &reports)?;
    if let Some(check) = check {
        let plan = recorded.recording.plan.as_ref().ok_or("no plan recorded")?;
        check(&Finished {
            graph: plan.graph.clone(),
            result: recorded.result.clone(),
            events: recorded.events.clone(),
        })?;
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: random::cases(256),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Runs under `skipDependents`, replayed (and right by the reference).
    #[test]
    fn recorded_facts_replay_to_the_same_run(case in gated_case_gen(Mode::Continue, 30)) {
        check_replay(&case, None, Some(check_against_reference)).map_err(TestCaseError::fail)?;
    }

    /// Runs with `failRun` stops, replayed (and explained by the reference).
    #[test]
    fn recorded_facts_of_stopped_runs_replay_to_the_same_run(case in gated_case_gen(Mode::FailFast, 20)) {
        check_replay(&case, None, Some(check_fail_fast)).map_err(TestCaseError::fail)?;
    }

    /// Runs in which one node actor is killed as its first attempt starts (the run core
    /// respawns it), replayed.
    #[test]
    fn recorded_facts_with_a_dead_node_replay_to_the_same_run(
        case in gated_case_gen(Mode::Continue, 20),
        kill in any::<Index>(),
    ) {
        check_replay(&case, Some(kill), None).map_err(TestCaseError::fail)?;
    }
}
