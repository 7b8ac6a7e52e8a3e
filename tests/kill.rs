//! Kill tests: node actors killed before and during their component's work, and
//! components that panic. The run always ends, with the states docs/semantics.md §6 gives
//! (a killed attempt fails with `CrashError`, retried per policy).

mod common;

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use shipsec_orchestrator::chaos::Chaos;
use shipsec_orchestrator::runtime::components::registry::{ComponentMeta, ComponentRegistry};
use shipsec_orchestrator::runtime::components::{
    Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext,
};
use shipsec_orchestrator::runtime::definition::graph::Graph;
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator, RunHandle};
use tokio::sync::mpsc;

use common::kit::{Held, Release};

static GATE_META: LazyLock<ComponentMeta> =
    LazyLock::new(|| ComponentMeta::new("test.gate", "blocks attempt 1 until cancelled"));
static STUBBORN_META: LazyLock<ComponentMeta> =
    LazyLock::new(|| ComponentMeta::new("test.stubborn", "ignores its cancellation token"));
static PANIC_META: LazyLock<ComponentMeta> =
    LazyLock::new(|| ComponentMeta::new("test.panic_once", "panics on attempt 1"));
/// Reports each attempt it starts, then blocks attempt 1 until its token fires.
struct Gate(mpsc::UnboundedSender<(String, u32)>);

impl Component for Gate {
    fn meta(&self) -> &ComponentMeta {
        &GATE_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        // The test may have stopped listening; the gate still behaves the same.
        let _ = self.0.send((ctx.node_ref.to_string(), ctx.attempt));
        async move {
            if ctx.attempt == 1 {
                ctx.cancel.cancelled().await;
                return Err(ComponentError::fatal("CancelledError", "gate cancelled"));
            }
            Ok(ComponentOutput::new((*ctx.inputs).clone()))
        }
        .boxed()
    }
}

/// Works for a minute and never looks at its token.
struct Stubborn(mpsc::UnboundedSender<(String, u32)>);

impl Component for Stubborn {
    fn meta(&self) -> &ComponentMeta {
        &STUBBORN_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let _ = self.0.send((ctx.node_ref.to_string(), ctx.attempt));
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok(ComponentOutput::default())
        }
        .boxed()
    }
}

struct PanicOnce;

impl Component for PanicOnce {
    fn meta(&self) -> &ComponentMeta {
        &PANIC_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        async move {
            assert!(ctx.attempt > 1, "attempt {} panics as asked", ctx.attempt);
            Ok(ComponentOutput::default())
        }
        .boxed()
    }
}

/// An engine, what its gate tells of attempts starting, the chaos it was started with,
/// and what lets its `test.held` attempts go.
type Engine = (
    Handle,
    mpsc::UnboundedReceiver<(String, u32)>,
    Arc<Chaos>,
    Release,
);

async fn engine_with_gate() -> Engine {
    engine_with(EngineConfig::default()).await
}

async fn engine_with(config: EngineConfig) -> Engine {
    let chaos = Chaos::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut registry = ComponentRegistry::with_builtins();
    registry.register(Arc::new(Gate(tx.clone())));
    registry.register(Arc::new(Stubborn(tx)));
    registry.register(Arc::new(PanicOnce));
    let (held, release) = Held::new();
    registry.register(held);
    let handle = Orchestrator::start_with_faults(config, registry, chaos.clone())
        .await
        .unwrap();
    (handle, rx, chaos, release)
}

fn def(actions: Value, edges: Value) -> Value {
    json!({"title": "kill", "actions": actions, "edges": edges})
}

/// Submits the workflow of `actions` and `edges` (built-ins and this file's components);
/// returns its graph, for trace checks, and its run.
async fn submit(handle: &Handle, actions: Value, edges: Value) -> (Arc<Graph>, RunHandle) {
    let w = common::workflow(handle, def(actions, edges));
    let run = handle
        .submit_workflow(&w, Default::default(), Default::default())
        .await
        .unwrap();
    (w.graph().clone(), run)
}

/// Kills `node`'s actor once its first attempt is running.
async fn kill_during_attempt_1(
    chaos: &Chaos,
    started: &mut mpsc::UnboundedReceiver<(String, u32)>,
    run: &RunHandle,
    node: &str,
) {
    wait_for_attempt(started, node, 1).await;
    chaos
        .node_actor(run.run_id(), node)
        .unwrap_or_else(|| panic!("{node} is alive"))
        .kill();
}

async fn wait_for_attempt(
    rx: &mut mpsc::UnboundedReceiver<(String, u32)>,
    node: &str,
    attempt: u32,
) {
    while let Some((n, a)) = rx.recv().await {
        if n == node && a == attempt {
            return;
        }
    }
    panic!("{node} never started attempt {attempt}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_during_its_component_fails_the_attempt_with_crash_error_and_is_retried() {
    let (handle, mut started, chaos, _) = engine_with_gate().await;
    let (g, mut run) = submit(
        &handle,
            json!([{"ref": "g", "componentId": "test.gate", "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0}},
                   {"ref": "after", "componentId": "core.echo"}]),
            json!([{"sourceRef": "g", "targetRef": "after"}]),
    )
    .await;
    kill_during_attempt_1(&chaos, &mut started, &run, "g").await;
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["g"].status, NodeStatus::Completed);
    assert_eq!(result.nodes["g"].attempts, 2);
    assert_eq!(result.nodes["after"].status, NodeStatus::Completed);
    let events: Vec<_> = StreamExt::collect(handle.events(run.run_id()).await.unwrap()).await;
    common::check_trace(&g, &result, &events);
    let retry = events
        .iter()
        .find(|e| e.kind == EventType::Retrying)
        .expect("a RETRYING event");
    assert_eq!(retry.error.as_ref().unwrap().error_type, "CrashError");
    common::shutdown(&handle).await;
}

/// The respawned actor resumes with the inputs its join resolved: its parents' outputs
/// are not asked for again (the parent's actor is long gone).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_attempt_retries_with_the_inputs_mapped_from_its_parents() {
    let (handle, mut started, chaos, _) = engine_with_gate().await;
    let (_, mut run) = submit(
        &handle,
        json!([{"ref": "p", "componentId": "core.echo", "params": {"v": 7}},
                   {"ref": "g", "componentId": "test.gate",
                    "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0},
                    "inputMappings": {"x": {"sourceRef": "p", "sourceHandle": "v"}}}]),
        json!([{"sourceRef": "p", "targetRef": "g"}]),
    )
    .await;
    kill_during_attempt_1(&chaos, &mut started, &run, "g").await;
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed, "{result:#?}");
    assert_eq!(result.nodes["g"].attempts, 2);
    assert_eq!(
        result.outputs["g"]["x"],
        json!(7),
        "attempt 2 had the mapped input"
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_without_retries_left_fails_and_its_dependents_are_skipped() {
    let (handle, mut started, chaos, _) = engine_with_gate().await;
    let (g, mut run) = submit(
        &handle,
            json!([{"ref": "g", "componentId": "test.gate"}, {"ref": "after", "componentId": "core.echo"}]),
            json!([{"sourceRef": "g", "targetRef": "after"}]),
    )
    .await;
    kill_during_attempt_1(&chaos, &mut started, &run, "g").await;
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(
        result.nodes["g"].error.as_ref().unwrap().error_type,
        "CrashError"
    );
    assert_eq!(result.nodes["after"].status, NodeStatus::Skipped);
    let events: Vec<_> = StreamExt::collect(handle.events(run.run_id()).await.unwrap()).await;
    common::check_trace(&g, &result, &events);
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_node_killed_before_its_component_runs_is_respawned_and_still_runs() {
    let (handle, _started, chaos, release) = engine_with_gate().await;
    // `c` is spawned when `p` ends and then waits for `slow`, which runs until released:
    // kill `c` while it waits.
    let (_, mut run) = submit(
        &handle,
            json!([{"ref": "p", "componentId": "core.echo", "params": {"v": 1}},
                   {"ref": "slow", "componentId": "test.held"},
                   {"ref": "c", "componentId": "core.echo", "inputMappings": {"x": {"sourceRef": "p", "sourceHandle": "__self__"}}}]),
            json!([{"sourceRef": "p", "targetRef": "c"}, {"sourceRef": "slow", "targetRef": "c"}]),
    )
    .await;
    let mut events = handle.events(run.run_id()).await.unwrap();
    while let Some(e) = events.next().await {
        if &*e.node_id == "p" && e.kind == EventType::Completed {
            break;
        }
    }
    // The supervisor spawns `c` in the handler that recorded `p`'s end; a status request
    // queued behind it is answered once `c` exists.
    handle.status(run.run_id()).await.unwrap();
    chaos
        .node_actor(run.run_id(), "c")
        .expect("c is alive, waiting for slow")
        .kill();
    // The kill signal is ahead of anything `slow`'s end could send `c`: `c` dies waiting,
    // whether the run respawns it before or after `slow` ends.
    release.let_go(1);
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["c"].status, NodeStatus::Completed);
    assert_eq!(
        result.nodes["c"].attempts, 1,
        "no attempt was running when it died"
    );
    assert_eq!(
        result.outputs["c"]["x"],
        json!({"v": 1}),
        "inputs come from the replayed parent end"
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_component_fails_its_attempt_not_the_engine() {
    let (handle, _started, _chaos, _) = engine_with_gate().await;
    let g = common::workflow(
        &handle,
        def(
            json!([{"ref": "p", "componentId": "test.panic_once", "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0}},
                   {"ref": "q", "componentId": "test.panic_once"}]),
            json!([]),
        ),
    );
    let f = common::run_on(&handle, &g, Default::default()).await;
    assert_eq!(f.status("p"), NodeStatus::Completed);
    assert_eq!(f.attempts("p"), 2);
    assert_eq!(f.status("q"), NodeStatus::Failed);
    assert_eq!(f.error_type("q"), "CrashError");
    // The engine carries on.
    let again = common::run_on(
        &handle,
        &common::workflow(
            &handle,
            def(json!([{"ref": "e", "componentId": "core.echo"}]), json!([])),
        ),
        Default::default(),
    )
    .await;
    assert_eq!(again.result.status, RunStatus::Completed);
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_leaves_no_node_actor_alive() {
    let (handle, mut started, chaos, _) = engine_with_gate().await;
    let (_, mut run) = submit(
        &handle,
            json!([{"ref": "g", "componentId": "test.gate"}, {"ref": "after", "componentId": "core.echo"}]),
            json!([{"sourceRef": "g", "targetRef": "after"}]),
    )
    .await;
    wait_for_attempt(&mut started, "g", 1).await;
    handle.cancel(run.run_id()).await.unwrap();
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Cancelled);
    assert!(chaos.node_actor(run.run_id(), "g").is_none());
    assert!(chaos.node_actor(run.run_id(), "after").is_none());
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_that_ignores_cancellation_is_abandoned_after_the_grace_period() {
    let config = EngineConfig {
        cancel_grace: std::time::Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let (handle, mut started, _chaos, _) = engine_with(config).await;
    let (_, mut run) = submit(
        &handle,
        json!([{"ref": "s", "componentId": "test.stubborn"}]),
        json!([]),
    )
    .await;
    wait_for_attempt(&mut started, "s", 1).await;
    let t = std::time::Instant::now();
    handle.cancel(run.run_id()).await.unwrap();
    let result = run.result().await.unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(150),
        "the grace period was given: {waited:?}"
    );
    assert!(
        waited < std::time::Duration::from_secs(5),
        "then the attempt was abandoned: {waited:?}"
    );
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(result.nodes["s"].status, NodeStatus::Cancelled);
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_actors_are_spawned_when_the_run_reaches_them_and_unreached_nodes_end_cancelled() {
    let (handle, mut started, chaos, _) = engine_with_gate().await;
    let (_, mut run) = submit(
        &handle,
        json!([{"ref": "g", "componentId": "test.gate"},
                   {"ref": "a", "componentId": "core.echo"},
                   {"ref": "b", "componentId": "core.echo"}]),
        json!([{"sourceRef": "g", "targetRef": "a"}, {"sourceRef": "a", "targetRef": "b"}]),
    )
    .await;
    wait_for_attempt(&mut started, "g", 1).await;
    assert!(chaos.node_actor(run.run_id(), "g").is_some());
    assert!(
        chaos.node_actor(run.run_id(), "a").is_none(),
        "a waits for g without an actor"
    );
    assert!(chaos.node_actor(run.run_id(), "b").is_none());
    handle.cancel(run.run_id()).await.unwrap();
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Cancelled);
    for node in ["g", "a", "b"] {
        assert_eq!(result.nodes[node].status, NodeStatus::Cancelled, "{node}");
    }
    for node in ["a", "b"] {
        assert_eq!(result.nodes[node].attempts, 0, "{node}");
        assert_eq!(
            result.nodes[node].reason.as_deref(),
            Some("cancelled: run cancelled by request"),
            "{node}"
        );
    }
    let events: Vec<_> = StreamExt::collect(handle.events(run.run_id()).await.unwrap()).await;
    for node in ["g", "a", "b"] {
        let ends = events
            .iter()
            .filter(|e| &*e.node_id == node && e.kind == EventType::Cancelled)
            .count();
        assert_eq!(ends, 1, "one CANCELLED event for {node}");
    }
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_race_withdraws_a_losing_chain_the_run_has_not_reached_down_to_its_running_head() {
    let (handle, _started, _chaos, _) = engine_with_gate().await;
    // `win` fires the `first` join at once; `t2` and `t1` were never reached and `g` runs.
    let g = common::workflow(
        &handle,
        json!({"title": "kill", "actions": [
                {"ref": "win", "componentId": "core.echo"},
                {"ref": "g", "componentId": "test.gate"},
                {"ref": "t1", "componentId": "core.echo"},
                {"ref": "t2", "componentId": "core.echo"},
                {"ref": "j", "componentId": "core.echo"}],
            "nodes": {"j": {"ref": "j", "joinStrategy": "first"}},
            "edges": [{"sourceRef": "g", "targetRef": "t1"}, {"sourceRef": "t1", "targetRef": "t2"},
                      {"sourceRef": "t2", "targetRef": "j"}, {"sourceRef": "win", "targetRef": "j"}]}),
    );
    let mut run = handle
        .submit_workflow(&g, Default::default(), Default::default())
        .await
        .unwrap();
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes["j"].status, NodeStatus::Completed);
    for node in ["t2", "t1", "g"] {
        assert_eq!(result.nodes[node].status, NodeStatus::Cancelled, "{node}");
        assert!(
            result.nodes[node]
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("withdrawn: j fired on win")),
            "{node}: {:?}",
            result.nodes[node].reason
        );
    }
    common::shutdown(&handle).await;
}

fn fan_out(width: usize, pairs: bool) -> Value {
    let mut actions = vec![
        json!({"ref": "s", "componentId": "core.echo"}),
        json!({"ref": "t", "componentId": "core.echo"}),
    ];
    let mut edges = Vec::new();
    for i in 0..width {
        actions
            .push(json!({"ref": format!("m{i}"), "componentId": "core.echo", "params": {"i": i}}));
        edges.push(json!({"sourceRef": "s", "targetRef": format!("m{i}")}));
        if pairs {
            // m{2k} and m{2k+1} meet in j{k}, which waits for both.
            let join = format!("j{}", i / 2);
            if i % 2 == 0 {
                actions.push(json!({"ref": join, "componentId": "core.echo"}));
                edges.push(json!({"sourceRef": join, "targetRef": "t"}));
            }
            edges.push(json!({"sourceRef": format!("m{i}"), "targetRef": join}));
        } else {
            edges.push(json!({"sourceRef": format!("m{i}"), "targetRef": "t"}));
        }
    }
    json!({"title": "fan", "actions": actions, "edges": edges})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wide_fan_out_holds_a_bounded_number_of_node_actors_at_once() {
    let (handle, _started, chaos, _) = engine_with_gate().await;
    let width = 5_000;
    let mut run = handle
        .submit(
            common::definition(fan_out(width, false)),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.outputs.len(), width + 2);
    let peak = chaos.peak_node_actors_of(run.run_id());
    assert!(
        (1..=1_100).contains(&peak),
        "{peak} node actors alive at once for a {width}-way fan-out"
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_held_back_by_the_spawn_window_never_wait_on_each_other() {
    let (handle, _started, _chaos, _) = engine_with_gate().await;
    // 3,000 middle nodes fill the window many times over while 1,500 joins wait on them.
    let mut run = handle
        .submit(
            common::definition(fan_out(3_000, true)),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let result = run.result().await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.nodes.len(), 2 + 3_000 + 1_500);
    assert!(
        result
            .nodes
            .values()
            .all(|n| n.status == NodeStatus::Completed)
    );
    common::shutdown(&handle).await;
}
