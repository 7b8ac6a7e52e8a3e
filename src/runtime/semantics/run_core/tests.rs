//! The run core's own tests: its decisions alone, fact by fact.

use super::*;
use crate::runtime::definition::JsonObject;

/// A run of `a` → `b` (echoes).
fn core() -> RunCore {
    let text = r#"{"title": "t",
        "actions": [{"ref": "a", "componentId": "core.echo"},
                    {"ref": "b", "componentId": "core.echo"}],
        "edges": [{"sourceRef": "a", "targetRef": "b"}]}"#;
    RunCore::new(RunPlan::for_tests(text, 7))
}

fn spawns(effects: &[RunEffect]) -> Vec<(NodeIx, u32, &NodeStart)> {
    effects
        .iter()
        .filter_map(|e| match e {
            RunEffect::Spawn {
                node,
                generation,
                start,
            } => Some((*node, *generation, start)),
            _ => None,
        })
        .collect()
}

fn start_of_a(inputs: JsonObject) -> StartReport {
    StartReport {
        node: NodeIx(0),
        attempt: 1,
        triggered_by: Arc::from(Vec::new()),
        withdraw: false,
        failure: None,
        inputs: Arc::new(inputs),
        first_started: Time::from_micros(10),
    }
}

fn exited(generation: u32) -> RunFact {
    RunFact::ActorExited {
        node: NodeIx(0),
        generation,
        cause: "killed".into(),
    }
}

#[test]
fn the_run_starts_with_its_roots_only() {
    let mut core = core();
    let effects = core.apply(RunFact::Started, Time::ZERO);
    let spawned: Vec<_> = spawns(&effects).iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(spawned, vec![(NodeIx(0), 0)]);
    assert_eq!(core.phase(), &RunPhase::Running);
}

#[test]
fn a_node_that_died_running_is_respawned_with_its_inputs_and_its_old_exit_is_fenced() {
    let mut core = core();
    core.apply(RunFact::Started, Time::ZERO);
    let mut inputs = JsonObject::new();
    inputs.insert("x".into(), json!(1));
    let started = start_of_a(inputs.clone());
    core.apply(
        RunFact::Node(NodeReport::Started(started)),
        Time::from_micros(10),
    );
    // The exit is re-checked through the queue before anything is decided.
    let effects = core.apply(exited(0), Time::from_micros(20));
    assert!(
        matches!(
            effects.as_slice(),
            [RunEffect::Recheck { generation: 0, .. }]
        ),
        "{effects:#?}"
    );
    let died = RunFact::NodeDied {
        node: NodeIx(0),
        generation: 0,
        cause: "killed".into(),
    };
    let effects = core.apply(died.clone(), Time::from_micros(30));
    let [(node, generation, NodeStart::Resumed(resume))] = spawns(&effects)[..] else {
        panic!("one respawn: {effects:#?}");
    };
    assert_eq!((node, generation), (NodeIx(0), 1));
    assert_eq!(*resume.started.inputs, inputs, "the inputs travel with it");
    assert!(
        matches!(
            &resume.attempt,
            ResumeAt::Crashed { attempt: 1, error, lost: false } if error.error_type == crate::runtime::components::CRASH_ERROR
        ),
        "an actor's death is no engine restart: no extra try"
    );
    // The dead actor's exit, seen again, changes nothing now that it was replaced.
    assert!(core.apply(exited(0), Time::from_micros(40)).is_empty());
    assert!(core.apply(died, Time::from_micros(40)).is_empty());
}

#[test]
fn the_worker_that_took_an_attempt_is_on_its_end_events_and_the_node_record() {
    let mut core = core();
    core.apply(RunFact::Started, Time::ZERO);
    let placed = |attempt: u32, worker: &str| {
        RunFact::Placed(Placed {
            node: NodeIx(0),
            attempt,
            worker: worker.into(),
        })
    };
    // A placement may arrive before the start report it follows.
    core.apply(placed(1, "w1"), Time::from_micros(5));
    let started = start_of_a(JsonObject::new());
    core.apply(
        RunFact::Node(NodeReport::Started(started.clone())),
        Time::from_micros(10),
    );
    let retry = RetryReport {
        node: NodeIx(0),
        attempt: 1,
        delay: Duration::ZERO,
        error: ComponentError::retryable("CrashError", "lost worker `w1`"),
    };
    core.apply(
        RunFact::Node(NodeReport::Retrying(retry)),
        Time::from_micros(20),
    );
    let again = StartReport {
        attempt: 2,
        ..started
    };
    core.apply(
        RunFact::Node(NodeReport::Started(again)),
        Time::from_micros(30),
    );
    core.apply(placed(2, "w2"), Time::from_micros(31));
    // A placement of an older attempt, told late, does not replace the newer.
    core.apply(placed(1, "w1"), Time::from_micros(32));
    let end = NodeEnd {
        node: NodeIx(0),
        attempts: 2,
        outcome: Outcome::Completed {
            output: Arc::new(JsonObject::new()),
            active_ports: None,
        },
        handled: None,
    };
    core.apply(
        RunFact::Node(NodeReport::Ended(Arc::new(end))),
        Time::from_micros(40),
    );
    core.apply(placed(3, "w3"), Time::from_micros(50));
    let worker_on = |kind: EventType| {
        let event = core.events().iter().find(|e| e.kind == kind).unwrap();
        event.metadata.as_ref().and_then(|m| m.worker_id.clone())
    };
    assert_eq!(worker_on(EventType::Retrying).as_deref(), Some("w1"));
    assert_eq!(worker_on(EventType::Completed).as_deref(), Some("w2"));
    assert_eq!(
        worker_on(EventType::Started),
        None,
        "no worker has it at its start"
    );
    let snapshot = core.snapshot();
    assert_eq!(snapshot.nodes["a"].worker_id.as_deref(), Some("w2"));
    assert_eq!(snapshot.nodes["b"].worker_id, None);
}

#[test]
fn a_cancel_ends_unreached_nodes_and_cancels_live_ones() {
    let mut core = core();
    core.apply(RunFact::Started, Time::ZERO);
    let effects = core.apply(
        RunFact::CancelRequested(StopKind::Cancel),
        Time::from_micros(5),
    );
    assert!(
        effects.iter().any(|e| matches!(
            e,
            RunEffect::Cancel {
                node: NodeIx(0),
                ..
            }
        )),
        "{effects:#?}"
    );
    assert_eq!(core.status_of(NodeIx(1)), NodeStatus::Cancelled);
    assert!(matches!(core.phase(), RunPhase::Stopping(_)));
}
