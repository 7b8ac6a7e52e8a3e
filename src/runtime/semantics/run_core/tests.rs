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

/// Gates, as the run core keeps their requests.
mod gates {
    use serde_json::json;

    use super::*;
    use crate::runtime::components::ComponentResult;
    use crate::runtime::ids::input_request_id;
    use crate::runtime::semantics::gate::{PendingInput, RequestStatus, Resolved};

    fn at(secs: u64) -> Time {
        Time::from_micros(1_000_000 * secs)
    }

    /// `a` → `b`, `a` started: the core, and `a`'s request once `a` asks for input
    /// (expiring at `deadline`).
    fn asking(deadline: Option<Time>) -> (RunCore, Arc<str>, Vec<RunEffect>) {
        asking_after(Vec::new(), deadline)
    }

    /// As [`asking`], with `first` applied before `a` asks.
    fn asking_after(
        first: Vec<RunFact>,
        deadline: Option<Time>,
    ) -> (RunCore, Arc<str>, Vec<RunEffect>) {
        let mut core = core();
        core.apply(RunFact::Started, at(0));
        for fact in first {
            core.apply(fact, at(0));
        }
        core.apply(
            RunFact::Node(NodeReport::Started(start_of_a(JsonObject::new()))),
            at(1),
        );
        let input: PendingInput =
            serde_json::from_value(json!({"inputType": "approval", "title": "Ship?"}))
                .expect("an input");
        let request_id: Arc<str> = input_request_id("r", "a", 1).into();
        let asked = InputAsked {
            node: NodeIx(0),
            attempt: 1,
            request_id: request_id.clone(),
            input,
            deadline,
        };
        let effects = core.apply(
            RunFact::Node(NodeReport::AwaitingInput(Arc::new(asked))),
            at(2),
        );
        (core, request_id, effects)
    }

    fn resolution(approved: bool) -> RunFact {
        RunFact::InputResolution {
            request_id: input_request_id("r", "a", 1).into(),
            resolution: gate::Resolution {
                approved: Some(approved),
                ..gate::Resolution::default()
            },
        }
    }

    fn outcome(effects: &[RunEffect]) -> Option<&Result<Resolved, ResolveError>> {
        effects.iter().find_map(|e| match e {
            RunEffect::Resolved { outcome, .. } => Some(outcome),
            _ => None,
        })
    }

    fn answered(effects: &[RunEffect]) -> Option<&ComponentResult> {
        effects.iter().find_map(|e| match e {
            RunEffect::Answer { answer, .. } => Some(answer),
            _ => None,
        })
    }

    fn status_of_request(core: &RunCore) -> RequestStatus {
        core.requests[0].1.status
    }

    #[test]
    fn a_gate_awaits_with_its_event_and_its_deadline_armed() {
        let (core, request_id, effects) = asking(Some(at(60)));
        assert!(effects.contains(&RunEffect::ArmTimer {
            due: at(60),
            timer: RunTimer::InputDeadline {
                node: NodeIx(0),
                attempt: 1
            },
        }));
        let event = core.events.last().expect("an event");
        assert_eq!(event.kind, EventType::AwaitingInput);
        let data = event.data.as_deref().expect("its data");
        assert_eq!(data["requestId"], json!(&*request_id));
        assert_eq!(data["inputType"], "approval");
        assert_eq!(data["timeoutAt"], json!(at(60).timestamp().to_string()));
        assert_eq!(core.status_of(NodeIx(0)), NodeStatus::AwaitingInput);
    }

    #[test]
    fn an_answer_completes_the_gate_once_and_another_is_refused() {
        let (mut core, _, _) = asking(None);
        let first = core.apply(resolution(false), at(3));
        assert_eq!(outcome(&first), Some(&Ok(Resolved::Applied)));
        let Some(Ok(output)) = answered(&first) else {
            panic!("the gate is told: {first:#?}");
        };
        assert_eq!(output.output["rejected"], json!(true));
        assert_eq!(
            output.output["respondedAt"],
            json!(at(3).timestamp().to_string())
        );
        let again = core.apply(resolution(false), at(4));
        assert_eq!(outcome(&again), Some(&Ok(Resolved::Duplicate)));
        assert!(answered(&again).is_none(), "no second effect");
        let other = core.apply(resolution(true), at(5));
        assert!(matches!(
            outcome(&other),
            Some(Err(ResolveError::AlreadyResolved(_)))
        ));
        let unknown = core.apply(
            RunFact::InputResolution {
                request_id: "nope".into(),
                resolution: gate::Resolution::default(),
            },
            at(5),
        );
        assert_eq!(
            outcome(&unknown),
            Some(&Err(ResolveError::Unknown("nope".into())))
        );
    }

    #[test]
    fn the_deadline_expires_a_pending_request_once() {
        let (mut core, _, _) = asking(Some(at(60)));
        let deadline = RunFact::TimerFired(RunTimer::InputDeadline {
            node: NodeIx(0),
            attempt: 1,
        });
        let effects = core.apply(deadline.clone(), at(60));
        let Some(Err(error)) = answered(&effects) else {
            panic!("the gate is told it expired: {effects:#?}");
        };
        assert_eq!(error.error_type, "TimeoutError");
        assert_eq!(status_of_request(&core), RequestStatus::Expired);
        assert!(answered(&core.apply(deadline, at(61))).is_none(), "once");
        let late = core.apply(resolution(true), at(62));
        assert!(matches!(
            outcome(&late),
            Some(Err(ResolveError::NotPending {
                status: RequestStatus::Expired,
                ..
            }))
        ));
    }

    #[test]
    fn a_cancelled_run_leaves_no_request_pending() {
        let (mut core, _, _) = asking(None);
        core.apply(RunFact::CancelRequested(StopKind::Cancel), at(10));
        // The gate, holding no attempt, ends at once when told.
        let end = NodeEnd {
            node: NodeIx(0),
            attempts: 1,
            outcome: Outcome::Cancelled(CancelCause::RunStopping(StopCause::Requested(
                StopKind::Cancel,
            ))),
            handled: None,
        };
        core.apply(RunFact::Node(NodeReport::Ended(Arc::new(end))), at(10));
        assert_eq!(status_of_request(&core), RequestStatus::Cancelled);
    }

    #[test]
    fn a_resumed_run_rearms_its_pending_deadlines() {
        let (mut core, _, _) = asking(Some(at(60)));
        let effects = core.apply(RunFact::Resumed, at(100));
        assert!(effects.contains(&RunEffect::ArmTimer {
            due: at(60),
            timer: RunTimer::InputDeadline {
                node: NodeIx(0),
                attempt: 1
            },
        }));
        let respawned = spawns(&effects);
        assert!(
            matches!(
                respawned.as_slice(),
                [(_, _, NodeStart::Resumed(r))] if matches!(r.attempt, ResumeAt::AwaitingInput { .. })
            ),
            "the gate waits on: {effects:#?}"
        );
    }

    #[test]
    fn a_resumed_run_tells_a_gate_the_answer_it_took_before_the_restart() {
        let (mut core, request_id, _) = asking(Some(at(60)));
        core.apply(resolution(true), at(3));
        // The gate's end was not stored before the engine died: it is respawned waiting,
        // and told its answer again rather than waiting for one already taken.
        let effects = core.apply(RunFact::Resumed, at(100));
        let told = effects.iter().find_map(|e| match e {
            RunEffect::Answer {
                request_id: id,
                answer: Ok(output),
                ..
            } if *id == request_id => Some(output),
            _ => None,
        });
        assert_eq!(told.expect("told again").output["approved"], json!(true));
        assert!(
            !effects.iter().any(|e| matches!(
                e,
                RunEffect::ArmTimer {
                    timer: RunTimer::InputDeadline { .. },
                    ..
                }
            )),
            "an answered request arms no deadline"
        );
    }

    #[test]
    fn a_signal_answer_is_kept_for_its_gate_and_repeats_are_duplicates() {
        use crate::runtime::semantics::inbox::{Signal, Signaled};
        let mut core = core();
        core.apply(RunFact::Started, at(0));
        let signal = |id: &str, payload: serde_json::Value| {
            RunFact::Signal(Arc::new(Signal {
                signal_id: id.into(),
                name: "resolveHumanInput".into(),
                payload,
            }))
        };
        let said = |effects: &[RunEffect]| {
            effects.iter().find_map(|e| match e {
                RunEffect::Signaled { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
        };
        // For a request that is not made yet: kept for it alone.
        let other_attempt = input_request_id("r", "a", 2);
        let early = core.apply(signal("s1", json!({"requestId": other_attempt})), at(1));
        assert_eq!(said(&early), Some(Ok(Signaled::Kept)));
        let again = core.apply(signal("s1", json!({"requestId": other_attempt})), at(1));
        assert_eq!(said(&again), Some(Ok(Signaled::Duplicate)));
        assert_eq!(core.signals_received(), 2);
        // Attempt 1's request does not take attempt 2's answer...
        let for_two = signal("s1", json!({"requestId": other_attempt}));
        let (mut asked, _, effects) = asking_after(vec![for_two], None);
        assert!(answered(&effects).is_none(), "{effects:#?}");
        assert_eq!(asked.kept.len(), 1, "the other attempt's answer stays kept");
        let still = asked.apply(resolution(true), at(3));
        assert_eq!(outcome(&still), Some(&Ok(Resolved::Applied)));
        // ...while an answer kept for the gate itself is taken as soon as it asks.
        let for_a = signal("s2", json!({"nodeRef": "a", "approved": false}));
        let (taken, _, effects) = asking_after(vec![for_a], None);
        let Some(Ok(output)) = answered(&effects) else {
            panic!("the kept answer is taken: {effects:#?}");
        };
        assert_eq!(output.output["rejected"], json!(true));
        assert!(taken.kept.is_empty());
    }
}
