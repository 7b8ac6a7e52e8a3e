//! Human-input gates through the library: a `core.manual_action.*` node asks, the run
//! waits (AWAITING_INPUT), a person answers through `Handle::resolve_input`, and the run
//! goes on along the port the answer activates.

mod common;

use futures::StreamExt;
use serde_json::{Value, json};
use shipsec_orchestrator::gates::{
    InputQuery, RequestStatus, Resolution, ResolveError, Resolved, Signaled,
};
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::runtime::semantics::result::RunQuery;
use shipsec_orchestrator::{EngineError, Handle, RunCommandError, RunHandle};

/// An approval gate `g` whose `approved` port leads to `yes` and `rejected` to `no`, and
/// a second gate, `hold`, that keeps the run going until it is answered.
fn approval() -> Value {
    json!({
        "title": "gate",
        "actions": [
            {"ref": "g", "componentId": "core.manual_action.approval",
             "params": {"title": "Patch {{host}}?", "host": "db1", "timeout": "1h"}},
            {"ref": "hold", "componentId": "core.manual_action.approval"},
            {"ref": "yes", "componentId": "core.echo", "params": {"went": "yes"}},
            {"ref": "no", "componentId": "core.echo", "params": {"went": "no"}}
        ],
        "edges": [
            {"sourceRef": "g", "targetRef": "yes", "sourceHandle": "approved"},
            {"sourceRef": "g", "targetRef": "no", "sourceHandle": "rejected"}
        ]
    })
}

/// Submits `definition` and waits for the AWAITING_INPUT event of its gate `gate`: the
/// run and the event's data.
async fn waiting(handle: &Handle, definition: Value, gate: &str) -> (RunHandle, Value) {
    let workflow = common::workflow(handle, definition);
    let run = handle
        .submit_workflow(&workflow, Default::default(), Default::default())
        .await
        .expect("submitted");
    let mut events = handle.events(run.run_id()).await.expect("events");
    while let Some(event) = events.next().await {
        if event.kind == EventType::AwaitingInput && &*event.node_id == gate {
            let data = event.data.as_deref().cloned().expect("its data");
            return (run, data);
        }
    }
    panic!("the run ended without waiting for input");
}

/// The request id of gate `gate` of a run, from its AWAITING_INPUT event.
async fn ids_of_waiting(handle: &Handle, run_id: &str, gate: &str) -> String {
    let mut events = handle.events(run_id).await.expect("events");
    while let Some(event) = events.next().await {
        if event.kind == EventType::AwaitingInput && &*event.node_id == gate {
            let data = event.data.as_deref().expect("its data");
            return data["requestId"].as_str().expect("a request id").to_owned();
        }
    }
    panic!("{gate} never waited");
}

fn answer(approved: bool) -> Resolution {
    Resolution {
        approved: Some(approved),
        responded_by: Some("ana".into()),
        ..Resolution::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_approval_routes_the_run_along_its_rejected_port() {
    let handle = common::engine().await;
    let (mut run, data) = waiting(&handle, approval(), "g").await;
    assert_eq!(data["title"], "Patch db1?");
    assert_eq!(data["inputType"], "approval");
    assert!(data["timeoutAt"].is_string(), "{data}");
    let request_id = data["requestId"].as_str().expect("a request id").to_owned();
    let status = handle.status(run.run_id()).await.expect("status");
    assert_eq!(status.nodes["g"].status, NodeStatus::AwaitingInput);

    let first = handle
        .resolve_input(run.run_id(), &request_id, answer(false))
        .await;
    assert_eq!(first.expect("applied"), Resolved::Applied);
    let again = handle
        .resolve_input(run.run_id(), &request_id, answer(false))
        .await;
    assert_eq!(again.expect("a duplicate"), Resolved::Duplicate);
    let other = handle
        .resolve_input(run.run_id(), &request_id, answer(true))
        .await;
    assert!(
        matches!(
            other,
            Err(EngineError::Run(RunCommandError::Input(
                ResolveError::AlreadyResolved(_)
            )))
        ),
        "{other:?}"
    );

    let hold = handle.status(run.run_id()).await.expect("status");
    assert_eq!(hold.nodes["hold"].status, NodeStatus::AwaitingInput);
    let hold_id = ids_of_waiting(&handle, run.run_id(), "hold").await;
    handle
        .resolve_input(run.run_id(), &hold_id, answer(true))
        .await
        .expect("applied");
    let result = run.result().await.expect("a result");
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["no"].status, NodeStatus::Completed);
    assert_eq!(result.nodes["yes"].status, NodeStatus::Skipped);
    let output = &result.outputs["g"];
    assert_eq!(output["rejected"], json!(true));
    assert_eq!(output["respondedBy"], "ana");
    assert_eq!(output["requestId"], json!(request_id));
    // The run has ended: the engine still knows the answer it took.
    let ended = handle.resolve(&request_id, answer(false)).await;
    assert_eq!(ended.expect("a duplicate"), Resolved::Duplicate);
    let changed = handle.resolve(&request_id, answer(true)).await;
    assert!(
        matches!(
            changed,
            Err(EngineError::Run(RunCommandError::Input(
                ResolveError::AlreadyResolved(_)
            )))
        ),
        "{changed:?}"
    );
    let filed = handle.input(&request_id).await.expect("known");
    assert_eq!(filed.request.status, RequestStatus::Resolved);
    assert_eq!(&*filed.run_id, run.run_id());
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selection_activates_a_port_per_option_chosen() {
    let handle = common::engine().await;
    let definition = json!({
        "title": "pick",
        "actions": [
            {"ref": "s", "componentId": "core.manual_action.selection",
             "params": {"options": ["low", "high"], "multiple": true}},
            {"ref": "low", "componentId": "core.echo"},
            {"ref": "high", "componentId": "core.echo"}
        ],
        "edges": [
            {"sourceRef": "s", "targetRef": "low", "sourceHandle": "option:low"},
            {"sourceRef": "s", "targetRef": "high", "sourceHandle": "option:high"}
        ]
    });
    let (mut run, data) = waiting(&handle, definition, "s").await;
    let request_id = data["requestId"].as_str().expect("a request id").to_owned();
    let chosen = Resolution {
        response_data: json!({"selection": ["high"]}).as_object().cloned(),
        ..Resolution::default()
    };
    handle
        .resolve_input(run.run_id(), &request_id, chosen)
        .await
        .expect("applied");
    let result = run.result().await.expect("a result");
    assert_eq!(result.nodes["high"].status, NodeStatus::Completed);
    assert_eq!(result.nodes["low"].status, NodeStatus::Skipped);
    assert_eq!(result.outputs["s"]["selection"], json!(["high"]));
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_refuses_an_answer_to_its_gate() {
    let handle = common::engine().await;
    let (mut run, data) = waiting(&handle, approval(), "g").await;
    let request_id = data["requestId"].as_str().expect("a request id").to_owned();
    assert!(handle.cancel(run.run_id()).await.expect("cancelled"));
    let result = run.result().await.expect("a result");
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(result.nodes["g"].status, NodeStatus::Cancelled);
    let late = handle.resolve(&request_id, answer(true)).await;
    assert!(
        matches!(
            late,
            Err(EngineError::Run(RunCommandError::Input(
                ResolveError::NotPending {
                    status: RequestStatus::Cancelled,
                    ..
                }
            )))
        ),
        "{late:?}"
    );
    let cancelled = handle.input(&request_id).await.expect("known");
    assert_eq!(cancelled.request.status, RequestStatus::Cancelled);
    let events: Vec<_> = handle
        .events(run.run_id())
        .await
        .expect("events")
        .collect()
        .await;
    let said = events.iter().find(|e| {
        e.kind == EventType::Progress
            && e.data
                .as_deref()
                .is_some_and(|d| d["requestId"] == json!(request_id))
    });
    let said = said.expect("the cancelled request has its event");
    assert_eq!(said.data.as_deref().expect("data")["status"], "cancelled");
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_runs_and_their_requests_are_listed_and_answered_by_request_id() {
    let handle = common::engine().await;
    let (mut first, data) = waiting(&handle, approval(), "g").await;
    let (second, _) = waiting(&handle, approval(), "g").await;
    let request_id = data["requestId"].as_str().expect("a request id").to_owned();
    let status = handle.status(first.run_id()).await.expect("status");
    assert_eq!(status.status, RunStatus::AwaitingInput);
    let waiting_runs = handle
        .list(RunQuery {
            status: Some(RunStatus::AwaitingInput),
            limit: 10,
            before: None,
            metadata: None,
        })
        .await
        .expect("a page");
    assert_eq!(waiting_runs.runs.len(), 2, "{waiting_runs:?}");

    // Both gates of both runs wait (the `hold` gates once their events are out).
    ids_of_waiting(&handle, first.run_id(), "hold").await;
    ids_of_waiting(&handle, second.run_id(), "hold").await;
    let pending = |run_id: Option<&str>| InputQuery {
        status: Some(RequestStatus::Pending),
        run_id: run_id.map(str::to_owned),
        metadata: None,
        limit: 10,
        before: None,
    };
    let all = handle.inputs(pending(None)).await.expect("a page");
    assert_eq!(all.requests.len(), 4);
    let of_first = handle
        .inputs(pending(Some(first.run_id())))
        .await
        .expect("a page");
    assert_eq!(of_first.requests.len(), 2);
    let filed = handle.input(&request_id).await.expect("known");
    assert_eq!(filed.request.input.title, "Patch db1?");
    assert_eq!(filed.request.node_ref, "g");

    // Another run's request is unknown to a run; by its id alone it is found.
    let elsewhere = handle
        .resolve_input(second.run_id(), &request_id, answer(true))
        .await;
    assert!(
        matches!(
            elsewhere,
            Err(EngineError::Run(RunCommandError::Input(
                ResolveError::Unknown(_)
            )))
        ),
        "{elsewhere:?}"
    );
    let nobody = handle.resolve("no-such-request", answer(true)).await;
    assert!(
        matches!(
            nobody,
            Err(EngineError::Run(RunCommandError::Input(
                ResolveError::Unknown(_)
            )))
        ),
        "{nobody:?}"
    );
    assert_eq!(
        handle
            .resolve(&request_id, answer(true))
            .await
            .expect("applied"),
        Resolved::Applied
    );
    for filed in handle
        .inputs(pending(Some(first.run_id())))
        .await
        .expect("a page")
        .requests
    {
        handle
            .resolve(&filed.request.request_id, answer(true))
            .await
            .expect("applied");
    }
    let result = first.result().await.expect("a result");
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["yes"].status, NodeStatus::Completed);
    let left = handle.inputs(pending(None)).await.expect("a page");
    assert_eq!(left.requests.len(), 2, "the second run's two gates");
    common::shutdown(&handle).await;
}

/// `hold` then, on its approval, `g` then `done`.
fn two_in_a_row() -> Value {
    json!({
        "title": "two gates",
        "actions": [
            {"ref": "hold", "componentId": "core.manual_action.approval"},
            {"ref": "g", "componentId": "core.manual_action.approval"},
            {"ref": "done", "componentId": "core.echo"}
        ],
        "edges": [
            {"sourceRef": "hold", "targetRef": "g", "sourceHandle": "approved"},
            {"sourceRef": "g", "targetRef": "done", "sourceHandle": "approved"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_is_kept_until_its_gate_asks_and_counted_once() {
    let handle = common::engine().await;
    let (mut run, data) = waiting(&handle, two_in_a_row(), "hold").await;
    let run_id = run.run_id().to_owned();
    let hold = data["requestId"].as_str().expect("a request id").to_owned();

    // `g` has not asked yet: its answer is kept for it.
    let early = json!({"nodeRef": "g", "approved": true, "respondedBy": "bo"});
    let kept = handle
        .signal(&run_id, "resolveHumanInput", Some("s-1"), early.clone())
        .await
        .expect("stored");
    assert_eq!((&*kept.signal_id, kept.outcome), ("s-1", Signaled::Kept));
    let again = handle
        .signal(&run_id, "resolveHumanInput", Some("s-1"), early)
        .await
        .expect("stored");
    assert_eq!(again.outcome, Signaled::Duplicate);
    // A name nothing handles is recorded, not refused; one without an id gets one.
    let other = handle
        .signal(&run_id, "toolCallCompleted", None, json!({"callId": "c1"}))
        .await
        .expect("stored");
    assert_eq!(
        (&*other.signal_id, other.outcome),
        ("sig-3", Signaled::Unhandled)
    );
    let bad = handle
        .signal(
            &run_id,
            "resolveHumanInput",
            None,
            json!({"approved": true}),
        )
        .await;
    assert!(
        matches!(bad, Err(EngineError::Run(RunCommandError::Signal(_)))),
        "{bad:?}"
    );
    let nowhere = handle
        .signal(
            &run_id,
            "resolveHumanInput",
            None,
            json!({"nodeRef": "nope"}),
        )
        .await;
    assert!(
        matches!(nowhere, Err(EngineError::Run(RunCommandError::Signal(_)))),
        "{nowhere:?}"
    );

    // The first gate is answered through the inbox by its request id; the second takes
    // the answer kept for it as soon as it asks.
    let by_id = json!({"requestId": hold, "approved": true});
    let applied = handle
        .signal(&run_id, "resolveHumanInput", None, by_id)
        .await
        .expect("stored");
    assert_eq!(applied.outcome, Signaled::Applied(hold.as_str().into()));
    let result = run.result().await.expect("a result");
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["done"].status, NodeStatus::Completed);
    assert_eq!(result.outputs["g"]["respondedBy"], "bo");
    let events: Vec<_> = handle
        .events(&run_id)
        .await
        .expect("events")
        .collect()
        .await;
    let recorded = events.iter().any(|e| {
        e.kind == EventType::Progress
            && e.data
                .as_deref()
                .is_some_and(|d| d["name"] == "toolCallCompleted")
    });
    assert!(recorded, "the unhandled signal is a trace event");

    // The run has ended: a repeat of a signal it took is still a duplicate.
    let repeated = handle
        .signal(
            &run_id,
            "resolveHumanInput",
            Some("s-1"),
            json!({"nodeRef": "g"}),
        )
        .await
        .expect("a duplicate");
    assert_eq!(repeated.outcome, Signaled::Duplicate);
    let late = handle
        .signal(&run_id, "resolveHumanInput", None, json!({"nodeRef": "g"}))
        .await;
    assert!(
        matches!(late, Err(EngineError::Run(RunCommandError::RunEnded(_)))),
        "{late:?}"
    );
    let unknown = handle.signal("no-such-run", "x", None, json!({})).await;
    assert!(
        matches!(
            unknown,
            Err(EngineError::Run(RunCommandError::UnknownRun(_)))
        ),
        "{unknown:?}"
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_run_cancels_its_waiting_requests() {
    let handle = common::engine().await;
    let (mut run, data) = waiting(&handle, approval(), "g").await;
    let request_id = data["requestId"].as_str().expect("a request id").to_owned();
    let hold = ids_of_waiting(&handle, run.run_id(), "hold").await;
    assert!(handle.terminate(run.run_id()).await.expect("terminated"));
    let result = run.result().await.expect("a result");
    assert_eq!(result.status, RunStatus::Terminated);
    for id in [&request_id, &hold] {
        let filed = handle.input(id).await.expect("known");
        assert_eq!(filed.request.status, RequestStatus::Cancelled, "{id}");
    }
    let pending = InputQuery {
        status: Some(RequestStatus::Pending),
        run_id: Some(run.run_id().to_owned()),
        metadata: None,
        limit: 10,
        before: None,
    };
    assert!(
        handle
            .inputs(pending)
            .await
            .expect("a page")
            .requests
            .is_empty()
    );
    common::shutdown(&handle).await;
}
