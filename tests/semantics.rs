//! One test per rule of docs/semantics.md, through the public handle. Every run's trace is
//! checked against §9 by `common::run_on`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Finished, run};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};

fn echo(r: &str) -> Value {
    json!({"ref": r, "componentId": "core.echo", "params": {"from": r}})
}

fn sleep(r: &str, ms: u64) -> Value {
    json!({"ref": r, "componentId": "core.sleep", "params": {"ms": ms, "from": r}})
}

fn fail(r: &str) -> Value {
    json!({"ref": r, "componentId": "core.fail", "params": {"message": format!("{r} broke"), "errorType": "BrokenError"}})
}

fn e(s: &str, t: &str) -> Value {
    json!({"sourceRef": s, "targetRef": t})
}

fn ek(s: &str, t: &str, kind: &str) -> Value {
    json!({"sourceRef": s, "targetRef": t, "kind": kind})
}

fn wf(actions: Value, edges: Value) -> Value {
    json!({"title": "semantics", "actions": actions, "edges": edges})
}

fn wf_nodes(actions: Value, edges: Value, nodes: Value) -> Value {
    json!({"title": "semantics", "actions": actions, "edges": edges, "nodes": nodes})
}

fn assert_status(f: &Finished, node: &str, status: NodeStatus) {
    assert_eq!(
        f.status(node),
        status,
        "{node}: {:#?}",
        f.result.nodes[node]
    );
}

// §1, §2 all ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn diamond_runs_the_join_after_both_branches_with_their_outputs() {
    let mut d = echo("d");
    d["inputMappings"] = json!({"left": {"sourceRef": "b", "sourceHandle": "from"}, "right": {"sourceRef": "c", "sourceHandle": "__self__"}});
    let f = run(wf(
        json!([echo("a"), echo("b"), echo("c"), d]),
        json!([e("a", "b"), e("a", "c"), e("b", "d"), e("c", "d")]),
    ))
    .await;
    assert_eq!(f.result.status, RunStatus::Completed);
    for n in ["a", "b", "c", "d"] {
        assert_status(&f, n, NodeStatus::Completed);
    }
    assert_eq!(f.output("d")["left"], json!("b"));
    assert_eq!(f.output("d")["right"], json!({"from": "c"}));
    assert!(
        f.result.nodes["d"].triggered_by.is_none(),
        "`all` records no triggeredBy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scatter_runs_every_child_of_one_parent() {
    let mut actions = vec![echo("root")];
    let mut edges = Vec::new();
    for i in 0..50 {
        actions.push(echo(&format!("c{i}")));
        edges.push(e("root", &format!("c{i}")));
    }
    let f = run(wf(json!(actions), json!(edges))).await;
    assert_eq!(f.result.status, RunStatus::Completed);
    assert_eq!(f.result.outputs.len(), 51);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_join_is_skipped_at_the_first_dead_edge_with_a_reason_chain() {
    let f = run(wf(
        json!([fail("a"), echo("b"), echo("c"), echo("ok"), echo("j")]),
        json!([e("a", "b"), e("b", "c"), e("c", "j"), e("ok", "j")]),
    ))
    .await;
    assert_eq!(f.result.status, RunStatus::Failed);
    assert_status(&f, "a", NodeStatus::Failed);
    assert_status(&f, "b", NodeStatus::Skipped);
    assert_status(&f, "j", NodeStatus::Skipped);
    assert_eq!(f.reason("b"), "skipped: edge a->b dead because a FAILED");
    assert_eq!(
        f.reason("c"),
        "skipped: edge b->c dead because b SKIPPED (origin: a)"
    );
    assert_eq!(
        f.reason("j"),
        "skipped: edge c->j dead because c SKIPPED (origin: a)"
    );
    assert_eq!(
        f.events_of("j", EventType::Skipped)[0].message.as_deref(),
        Some(f.reason("j").as_str())
    );
}

// §2 any / first / quorum ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn join_any_runs_on_the_succeeding_branch_and_the_run_still_fails() {
    let f = run(wf_nodes(
        json!([echo("s"), sleep("ok", 100), fail("bad"), echo("j")]),
        json!([e("s", "ok"), e("s", "bad"), e("ok", "j"), e("bad", "j")]),
        json!({"j": {"ref": "j", "joinStrategy": "any"}}),
    ))
    .await;
    assert_status(&f, "j", NodeStatus::Completed);
    assert_eq!(
        f.result.nodes["j"].triggered_by,
        Some(vec![Arc::from("ok")])
    );
    assert_eq!(
        f.result.status,
        RunStatus::Failed,
        "bad's failure is unhandled"
    );
    let started = f.events_of("j", EventType::Started)[0];
    assert_eq!(
        started.metadata.as_ref().unwrap().triggered_by,
        Some(vec![Arc::from("ok")])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn join_any_is_skipped_when_every_edge_is_dead() {
    let f = run(wf_nodes(
        json!([fail("x"), fail("y"), echo("j")]),
        json!([e("x", "j"), e("y", "j")]),
        json!({"j": {"ref": "j", "joinStrategy": "any"}}),
    ))
    .await;
    assert_status(&f, "j", NodeStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_runs_when_met_and_records_the_deciding_parents() {
    let f = run(wf_nodes(
        json!([echo("a"), echo("b"), sleep("slow", 300), echo("q")]),
        json!([e("a", "q"), e("b", "q"), e("slow", "q")]),
        json!({"q": {"ref": "q", "joinStrategy": "quorum", "quorum": 2}}),
    ))
    .await;
    assert_status(&f, "q", NodeStatus::Completed);
    let mut by = f.result.nodes["q"].triggered_by.clone().unwrap();
    by.sort();
    assert_eq!(by, [Arc::from("a"), Arc::from("b")]);
    assert_status(&f, "slow", NodeStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_is_skipped_when_it_becomes_impossible() {
    let f = run(wf_nodes(
        json!([fail("a"), fail("b"), echo("c"), echo("q")]),
        json!([e("a", "q"), e("b", "q"), e("c", "q")]),
        json!({"q": {"ref": "q", "joinStrategy": "quorum", "quorum": 2}}),
    ))
    .await;
    assert_status(&f, "q", NodeStatus::Skipped);
    assert!(f.reason("q").contains("dead because"), "{}", f.reason("q"));
}

// §3 inputs -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_parent_without_the_mapped_handle_fails_the_child_with_input_error() {
    let mut b = echo("b");
    b["inputMappings"] = json!({"x": {"sourceRef": "a", "sourceHandle": "nope"}});
    b["retryPolicy"] = json!({"maxAttempts": 3, "initialIntervalSeconds": 0});
    let f = run(wf(json!([echo("a"), b]), json!([e("a", "b")]))).await;
    assert_status(&f, "b", NodeStatus::Failed);
    assert_eq!(f.error_type("b"), "InputError");
    assert_eq!(f.attempts("b"), 1, "InputError is never retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_required_input_whose_source_did_not_complete_is_an_input_error() {
    let s = json!({"ref": "s", "componentId": "core.sleep", "inputMappings": {"ms": {"sourceRef": "a", "sourceHandle": "ms"}}});
    let f = run(wf(json!([fail("a"), s]), json!([ek("a", "s", "always")]))).await;
    assert_status(&f, "s", NodeStatus::Failed);
    assert_eq!(f.error_type("s"), "InputError");
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_are_overrides_then_mappings_with_mappings_winning() {
    let mut b = echo("b");
    b["inputOverrides"] = json!({"x": "override", "y": "kept"});
    b["inputMappings"] = json!({"x": {"sourceRef": "a", "sourceHandle": "from"}});
    let f = run(wf(json!([echo("a"), b]), json!([e("a", "b")]))).await;
    assert_eq!(f.output("b")["x"], json!("a"));
    assert_eq!(f.output("b")["y"], json!("kept"));
}

// §4 failures -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_error_edge_receives_the_failure_and_handles_it() {
    let f = run(wf(
        json!([fail("f"), echo("h"), echo("next")]),
        json!([ek("f", "h", "error"), e("f", "next")]),
    ))
    .await;
    assert_eq!(
        f.result.status,
        RunStatus::Completed,
        "a handled failure does not fail the run"
    );
    assert_status(&f, "h", NodeStatus::Completed);
    assert_status(&f, "next", NodeStatus::Skipped);
    let failure = f.result.nodes["h"]
        .failure
        .clone()
        .expect("failure recorded");
    assert_eq!(failure.at, "f");
    assert_eq!(failure.reason.message, "f broke");
    assert_eq!(failure.reason.name, "BrokenError");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_handler_fails_the_run() {
    let f = run(wf(
        json!([fail("f"), fail("h")]),
        json!([ek("f", "h", "error")]),
    ))
    .await;
    assert_eq!(f.result.status, RunStatus::Failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_dependents_lets_independent_branches_finish() {
    let f = run(wf(
        json!([fail("a"), echo("b"), sleep("other", 100), echo("after")]),
        json!([e("a", "b"), e("other", "after")]),
    ))
    .await;
    assert_eq!(f.result.status, RunStatus::Failed);
    assert_status(&f, "b", NodeStatus::Skipped);
    assert_status(&f, "after", NodeStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_fast_cancels_a_long_sleep_quickly() {
    let t = Instant::now();
    let mut def = wf(
        json!([
            json!({"ref": "a", "componentId": "core.fail", "params": {"ms": 50}}),
            sleep("long", 20_000),
            echo("later")
        ]),
        json!([e("long", "later")]),
    );
    def["config"] = json!({"failurePolicy": "failFast"});
    let f = run(def).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(f.result.status, RunStatus::Failed);
    assert_status(&f, "long", NodeStatus::Cancelled);
    assert_status(&f, "later", NodeStatus::Cancelled);
    assert_eq!(f.reason("long"), "cancelled: failRun after a FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_fail_run_on_a_node_overrides_the_run_policy() {
    let f = run(wf_nodes(
        json!([fail("a"), sleep("long", 20_000)]),
        json!([]),
        json!({"a": {"ref": "a", "onFailure": "failRun"}}),
    ))
    .await;
    assert_eq!(f.result.status, RunStatus::Failed);
    assert_status(&f, "long", NodeStatus::Cancelled);
}

// §1 always, active ports -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn always_edges_run_after_failure_and_after_skip() {
    let f = run(wf(
        json!([fail("f"), echo("cleanup"), echo("s"), echo("after_skip")]),
        json!([
            ek("f", "cleanup", "always"),
            e("f", "s"),
            ek("s", "after_skip", "always")
        ]),
    ))
    .await;
    assert_status(&f, "cleanup", NodeStatus::Completed);
    assert_status(&f, "s", NodeStatus::Skipped);
    assert_status(&f, "after_skip", NodeStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_edges_from_active_ports_are_followed() {
    let branch = json!({"ref": "br", "componentId": "core.branch", "params": {"ports": ["yes"]}});
    let f = run(wf(
        json!([branch, echo("y"), echo("n")]),
        json!([{"sourceRef": "br", "targetRef": "y", "sourceHandle": "yes"}, {"sourceRef": "br", "targetRef": "n", "sourceHandle": "no"}]),
    ))
    .await;
    assert_status(&f, "y", NodeStatus::Completed);
    assert_status(&f, "n", NodeStatus::Skipped);
    assert_eq!(
        f.result.nodes["br"].active_ports,
        Some(vec!["yes".to_owned()])
    );
    assert!(
        f.reason("n").contains("without activating port `no`"),
        "{}",
        f.reason("n")
    );
    let done = f.events_of("br", EventType::Completed)[0];
    assert_eq!(
        done.data.as_deref(),
        Some(&json!({"activatedPorts": ["yes"]}))
    );
}

// §5 races ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn first_cancels_the_losing_branch_transitively_but_never_a_branch_still_needed() {
    // s -> fast -> w ; s -> x -> y -> w ; x -> z. w fires on fast; y (needed only by w) is
    // cancelled; x is still needed by z and completes.
    let f = run(wf_nodes(
        json!([
            echo("s"),
            sleep("fast", 50),
            sleep("x", 300),
            sleep("y", 20_000),
            echo("z"),
            echo("w")
        ]),
        json!([
            e("s", "fast"),
            e("s", "x"),
            e("x", "y"),
            e("y", "w"),
            e("fast", "w"),
            e("x", "z")
        ]),
        json!({"w": {"ref": "w", "joinStrategy": "first"}}),
    ))
    .await;
    assert_eq!(
        f.result.status,
        RunStatus::Completed,
        "a lost race does not fail the run"
    );
    assert_status(&f, "w", NodeStatus::Completed);
    assert_eq!(
        f.result.nodes["w"].triggered_by,
        Some(vec![Arc::from("fast")])
    );
    assert_status(&f, "y", NodeStatus::Cancelled);
    assert_eq!(f.reason("y"), "withdrawn: w fired on fast");
    assert_status(&f, "x", NodeStatus::Completed);
    assert_status(&f, "z", NodeStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn withdrawal_cascades_through_parents_no_one_else_needs() {
    let f = run(wf_nodes(
        json!([
            echo("s"),
            sleep("fast", 50),
            sleep("p", 20_000),
            echo("q"),
            echo("w")
        ]),
        json!([
            e("s", "fast"),
            e("s", "p"),
            e("p", "q"),
            e("q", "w"),
            e("fast", "w")
        ]),
        json!({"w": {"ref": "w", "joinStrategy": "first"}}),
    ))
    .await;
    assert_status(&f, "q", NodeStatus::Cancelled);
    assert_status(&f, "p", NodeStatus::Cancelled);
    assert_eq!(f.reason("p"), "withdrawn: w fired on fast");
    assert_status(&f, "s", NodeStatus::Completed);
    assert_eq!(f.result.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_never_withdraws_from_its_parents() {
    let f = run(wf_nodes(
        json!([sleep("fast", 10), sleep("slow", 300), echo("j")]),
        json!([e("fast", "j"), e("slow", "j")]),
        json!({"j": {"ref": "j", "joinStrategy": "any"}}),
    ))
    .await;
    assert_status(&f, "slow", NodeStatus::Completed);
}

// §6 cancellation, termination, timeouts -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_timeout_fails_with_timeout_error_and_is_retried() {
    let f = run(wf_nodes(
        json!([json!({"ref": "t", "componentId": "core.sleep", "params": {"ms": 20_000}, "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0}})]),
        json!([]),
        json!({"t": {"ref": "t", "timeoutSeconds": 0.2}}),
    ))
    .await;
    assert_status(&f, "t", NodeStatus::Failed);
    assert_eq!(f.error_type("t"), "TimeoutError");
    assert_eq!(f.attempts("t"), 2);
    assert_eq!(f.events_of("t", EventType::Retrying).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_budget_stops_retries() {
    let t = Instant::now();
    let f = run(wf_nodes(
        json!([json!({"ref": "t", "componentId": "core.fail", "params": {"ms": 150, "retryable": true},
                      "retryPolicy": {"maxAttempts": 50, "initialIntervalSeconds": 0.05, "backoffCoefficient": 1}})]),
        json!([]),
        json!({"t": {"ref": "t", "totalTimeoutSeconds": 0.6}}),
    ))
    .await;
    assert_status(&f, "t", NodeStatus::Failed);
    assert_eq!(f.error_type("t"), "TimeoutError");
    assert!(f.attempts("t") < 10, "attempts {}", f.attempts("t"));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_deadline_times_the_run_out() {
    let mut def = wf(
        json!([sleep("long", 20_000), echo("after")]),
        json!([e("long", "after")]),
    );
    def["config"] = json!({"timeoutSeconds": 0.3});
    let t = Instant::now();
    let f = run(def).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(f.result.status, RunStatus::TimedOut);
    assert_status(&f, "long", NodeStatus::Cancelled);
    assert_status(&f, "after", NodeStatus::Cancelled);
    assert!(
        f.reason("long").contains("deadline"),
        "{}",
        f.reason("long")
    );
}

async fn stop_mid_run(terminate: bool) -> Finished {
    use futures::StreamExt;
    let handle = common::engine().await;
    let g = common::workflow(
        &handle,
        wf(
            json!([sleep("long", 20_000), echo("after")]),
            json!([e("long", "after")]),
        ),
    );
    let mut runh = handle
        .submit_workflow(&g, Default::default(), Default::default())
        .await
        .unwrap();
    let mut events = handle.events(runh.run_id()).await.unwrap();
    while let Some(ev) = events.next().await {
        if ev.kind == EventType::Started && &*ev.node_id == "long" {
            break;
        }
    }
    if terminate {
        handle.terminate(runh.run_id()).await.unwrap();
    } else {
        handle.cancel(runh.run_id()).await.unwrap();
    }
    let result = runh.result().await.unwrap();
    let events: Vec<_> = handle.events(runh.run_id()).await.unwrap().collect().await;
    common::check_trace(g.graph(), &result, &events);
    common::shutdown(&handle).await;
    Finished { result, events }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_run_cancels_running_and_pending_nodes() {
    let f = stop_mid_run(false).await;
    assert_eq!(f.result.status, RunStatus::Cancelled);
    assert_status(&f, "long", NodeStatus::Cancelled);
    assert_status(&f, "after", NodeStatus::Cancelled);
    assert_eq!(f.reason("after"), "cancelled: run cancelled by request");
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_mid_run_ends_terminated() {
    let f = stop_mid_run(true).await;
    assert_eq!(f.result.status, RunStatus::Terminated);
    assert_status(&f, "long", NodeStatus::Cancelled);
}

// §7 retries --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_flaky_step_is_retried_until_it_succeeds() {
    let f = run(wf(
        json!([
            json!({"ref": "f", "componentId": "core.flaky", "params": {"failures": 2},
                      "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.02}})
        ]),
        json!([]),
    ))
    .await;
    assert_status(&f, "f", NodeStatus::Completed);
    assert_eq!(f.attempts("f"), 3);
    let retries = f.events_of("f", EventType::Retrying);
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0].metadata.as_ref().unwrap().attempt, Some(1));
    assert_eq!(retries[1].metadata.as_ref().unwrap().attempt, Some(2));
    assert_eq!(retries[1].data.as_ref().unwrap()["delayMs"], json!(40));
    assert_eq!(f.events_of("f", EventType::Started).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stop_at_max_attempts_and_at_non_retryable_types() {
    let f = run(wf(
        json!([
            json!({"ref": "f", "componentId": "core.flaky", "params": {"failures": 5}, "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0}}),
            json!({"ref": "g", "componentId": "core.flaky", "params": {"failures": 5}, "retryPolicy": {"maxAttempts": 4, "initialIntervalSeconds": 0, "nonRetryableErrorTypes": ["FlakyError"]}})
        ]),
        json!([]),
    ))
    .await;
    assert_eq!(f.attempts("f"), 2);
    assert_eq!(f.attempts("g"), 1);
    assert_status(&f, "g", NodeStatus::Failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn error_type_policies_decide_retries_and_their_delays() {
    // `limited` fails with a non-retryable RateLimitError that the policy says to retry
    // after 20 ms; `flaky`'s retryable FlakyError is one the policy says never to retry.
    let limited = json!({"ref": "limited", "componentId": "core.fail",
        "params": {"errorType": "RateLimitError", "retryable": false},
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 30,
            "errorTypePolicies": {"RateLimitError": {"retryable": true, "retryDelayMs": 20}}}});
    let flaky = json!({"ref": "flaky", "componentId": "core.flaky", "params": {"failures": 1},
        "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0,
            "errorTypePolicies": {"FlakyError": {"retryable": false}}}});
    let f = run(wf(json!([limited, flaky]), json!([]))).await;
    assert_eq!(f.attempts("limited"), 3);
    let delays: Vec<Value> = f
        .events_of("limited", EventType::Retrying)
        .iter()
        .map(|e| e.data.as_deref().expect("data")["delayMs"].clone())
        .collect();
    assert_eq!(
        delays,
        [json!(20), json!(20)],
        "the type's delay, not 30 s of backoff"
    );
    assert_eq!(f.attempts("flaky"), 1);
    assert_status(&f, "flaky", NodeStatus::Failed);
}

// Parallelism --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn two_500ms_sleeps_run_in_parallel() {
    let t = Instant::now();
    let f = run(wf(json!([sleep("a", 500), sleep("b", 500)]), json!([]))).await;
    assert_eq!(f.result.status, RunStatus::Completed);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_200ms_sleeps_run_in_parallel() {
    let actions: Vec<Value> = (0..100).map(|i| sleep(&format!("s{i}"), 200)).collect();
    let t = Instant::now();
    let f = run(wf(json!(actions), json!([]))).await;
    assert_eq!(f.result.status, RunStatus::Completed);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "took {:?}",
        t.elapsed()
    );
}

// Entrypoint and inputs ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_entrypoint_outputs_the_run_inputs() {
    let handle = common::engine().await;
    let g = common::workflow(
        &handle,
        json!({
            "title": "t",
            "entrypoint": {"ref": "start"},
            "actions": [
                {"ref": "start", "componentId": "core.workflow.entrypoint", "params": {"runtimeInputs": [{"id": "target", "required": true}]}},
                {"ref": "use", "componentId": "core.echo", "inputMappings": {"t": {"sourceRef": "start", "sourceHandle": "target"}}}
            ],
            "edges": [{"sourceRef": "start", "targetRef": "use"}]
        }),
    );
    let mut inputs = serde_json::Map::new();
    inputs.insert("target".into(), json!("example.com"));
    let f = common::run_on(&handle, &g, inputs).await;
    assert_eq!(f.output("use")["t"], json!("example.com"));
    let missing = handle
        .submit_workflow(&g, Default::default(), Default::default())
        .await;
    assert!(missing.unwrap_err().to_string().contains("target"));
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_during_backoff_ends_the_node_cancelled() {
    use futures::StreamExt;
    let handle = common::engine().await;
    let g = common::workflow(
        &handle,
        wf(
            json!([
                json!({"ref": "f", "componentId": "core.flaky", "params": {"failures": 5},
                      "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 30}})
            ]),
            json!([]),
        ),
    );
    let mut runh = handle
        .submit_workflow(&g, Default::default(), Default::default())
        .await
        .unwrap();
    let mut events = handle.events(runh.run_id()).await.unwrap();
    while let Some(ev) = events.next().await {
        if ev.kind == EventType::Retrying {
            break;
        }
    }
    let t = Instant::now();
    handle.cancel(runh.run_id()).await.unwrap();
    let result = runh.result().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(result.nodes["f"].status, NodeStatus::Cancelled);
    assert_eq!(result.nodes["f"].attempts, 1);
    common::shutdown(&handle).await;
}
