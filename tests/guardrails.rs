//! docs/semantics.md §8: concurrency caps and rate limits, measured by the components
//! themselves; FIFO grants across runs; queue timeouts; no slot leaks.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use shipsec_orchestrator::SlotStats;
use shipsec_orchestrator::runtime::components::registry::{ComponentMeta, ComponentRegistry};
use shipsec_orchestrator::runtime::components::{
    Component, ComponentOutput, ComponentResult, ExecutionContext,
};
use shipsec_orchestrator::runtime::guardrails::config::{ComponentLimits, RateLimitConfig};
use shipsec_orchestrator::runtime::semantics::event::EventType;
use shipsec_orchestrator::runtime::semantics::outcome::{NodeStatus, RunStatus};
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator};

static PROBE_META: LazyLock<ComponentMeta> =
    LazyLock::new(|| ComponentMeta::new("test.probe", "counts how many of it run at once"));

/// Counts concurrent attempts (engine-wide and per run) and records start order.
#[derive(Default)]
struct Probe {
    now: AtomicUsize,
    max: AtomicUsize,
    per_run: Mutex<HashMap<String, (usize, usize)>>,
    starts: Mutex<Vec<(String, Instant)>>,
}

struct ProbeComponent(Arc<Probe>);

struct Running(Arc<Probe>, String);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(entry) = self.0.per_run.lock().unwrap().get_mut(&self.1) {
            entry.0 -= 1;
        }
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Component for ProbeComponent {
    fn meta(&self) -> &ComponentMeta {
        &PROBE_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let probe = self.0.clone();
        async move {
            let now = probe.now.fetch_add(1, Ordering::SeqCst) + 1;
            probe.max.fetch_max(now, Ordering::SeqCst);
            {
                let mut runs = probe.per_run.lock().unwrap();
                let entry = runs.entry(ctx.run_id.to_string()).or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(entry.0);
            }
            probe
                .starts
                .lock()
                .unwrap()
                .push((format!("{}/{}", ctx.run_id, ctx.node_ref), Instant::now()));
            // Counted down however the attempt ends, also when it is cancelled and dropped.
            let _running = Running(probe.clone(), ctx.run_id.to_string());
            let ms = ctx.value("ms").and_then(Value::as_u64).unwrap_or(2);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ComponentOutput::default())
        }
        .boxed()
    }
}

async fn engine(config: EngineConfig) -> (Handle, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let mut registry = ComponentRegistry::with_builtins();
    registry.register(Arc::new(ProbeComponent(probe.clone())));
    (
        Orchestrator::start_with(config, registry).await.unwrap(),
        probe,
    )
}

fn probes(n: usize, ms: u64) -> Value {
    let actions: Vec<Value> = (0..n)
        .map(|i| json!({"ref": format!("p{i}"), "componentId": "test.probe", "params": {"ms": ms}}))
        .collect();
    json!({"title": "probes", "actions": actions, "edges": []})
}

async fn run_many(
    handle: &Handle,
    def: Value,
    runs: usize,
) -> Vec<Arc<shipsec_orchestrator::runtime::semantics::result::RunResult>> {
    let graph = common::workflow(handle, def);
    let mut pending = Vec::new();
    for _ in 0..runs {
        pending.push(
            handle
                .submit_workflow(&graph, Default::default(), Default::default())
                .await
                .unwrap(),
        );
    }
    let mut results = Vec::new();
    for mut run in pending {
        results.push(run.result().await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_wide_cap_holds_under_1000_concurrent_runs() {
    let config = EngineConfig {
        max_concurrent_nodes: Some(8),
        ..EngineConfig::default()
    };
    let (handle, probe) = engine(config).await;
    let results = run_many(&handle, probes(5, 1), 1000).await;
    assert!(results.iter().all(|r| r.status == RunStatus::Completed));
    let max = probe.max.load(Ordering::SeqCst);
    assert!(max <= 8, "observed {max} running at once");
    assert!(max >= 2, "the cap is used, not serialised: {max}");
    // A node gives its slot back to the limiter as it reports its end to its supervisor:
    // two mailboxes, so the last result can come first. Every slot comes back.
    tokio::time::timeout(Duration::from_secs(30), handle.slots_idle())
        .await
        .expect("every slot came back")
        .unwrap();
    assert_eq!(
        handle.slots().await.unwrap(),
        SlotStats {
            queued: 0,
            active: 0
        }
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_component_and_group_caps_hold() {
    let mut components = BTreeMap::new();
    components.insert(
        "test.probe".to_owned(),
        ComponentLimits {
            max_concurrency: Some(6),
            rate_limit: None,
            ..ComponentLimits::default()
        },
    );
    let config = EngineConfig {
        components,
        ..EngineConfig::default()
    };
    let (handle, probe) = engine(config).await;
    let mut def = probes(10, 3);
    def["config"] = json!({"maxParallelism": 2});
    let results = run_many(&handle, def, 50).await;
    assert!(results.iter().all(|r| r.status == RunStatus::Completed));
    assert!(probe.max.load(Ordering::SeqCst) <= 6, "component cap");
    let per_run = probe
        .per_run
        .lock()
        .unwrap()
        .values()
        .map(|v| v.1)
        .max()
        .unwrap();
    assert!(per_run <= 2, "run cap: {per_run}");

    // Group: nodes sharing a groupId share the smallest cap declared among them.
    let (handle2, probe2) = engine(EngineConfig::default()).await;
    let mut def = probes(6, 5);
    def["nodes"] = json!({
        "p0": {"ref": "p0", "groupId": "scan", "maxConcurrency": 3},
        "p1": {"ref": "p1", "groupId": "scan", "maxConcurrency": 1},
        "p2": {"ref": "p2", "groupId": "scan"},
        "p3": {"ref": "p3", "groupId": "scan"},
    });
    let results = run_many(&handle2, def, 1).await;
    assert_eq!(results[0].status, RunStatus::Completed);
    assert!(
        probe2.max.load(Ordering::SeqCst) <= 3,
        "two ungrouped nodes plus one of the group"
    );
    common::shutdown(&handle).await;
    common::shutdown(&handle2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_are_granted_first_come_first_served_across_runs() {
    let config = EngineConfig {
        max_concurrent_nodes: Some(1),
        ..EngineConfig::default()
    };
    let (handle, probe) = engine(config).await;
    let a = common::workflow(&handle, probes(3, 30));
    let b = common::workflow(&handle, probes(1, 1));
    let mut run_a = handle
        .submit_workflow(&a, Default::default(), Default::default())
        .await
        .unwrap();
    let mut events = handle.events(run_a.run_id()).await.unwrap();
    let mut waiting = 0;
    while let Some(e) = events.next().await {
        if matches!(e.kind, EventType::Queued | EventType::Started) {
            waiting += 1;
        }
        if waiting == 3 + 1 {
            break; // three QUEUED and the first STARTED: every request of A is in line
        }
    }
    let mut run_b = handle
        .submit_workflow(&b, Default::default(), Default::default())
        .await
        .unwrap();
    run_a.result().await.unwrap();
    run_b.result().await.unwrap();
    let order: Vec<String> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(order.len(), 4);
    assert!(
        order[3].starts_with(run_b.run_id()),
        "B waits behind A's earlier requests: {order:?}"
    );
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_spaces_attempts_within_tolerance() {
    let mut components = BTreeMap::new();
    components.insert(
        "core.echo".to_owned(),
        ComponentLimits {
            max_concurrency: None,
            rate_limit: Some(RateLimitConfig {
                per_second: 20.0,
                burst: 1,
            }),
            ..ComponentLimits::default()
        },
    );
    let config = EngineConfig {
        components,
        ..EngineConfig::default()
    };
    let (handle, _) = engine(config).await;
    let actions: Vec<Value> = (0..21)
        .map(|i| json!({"ref": format!("e{i}"), "componentId": "core.echo"}))
        .collect();
    let t = Instant::now();
    let results = run_many(&handle, json!({"title": "rate", "actions": actions}), 1).await;
    let took = t.elapsed();
    assert_eq!(results[0].status, RunStatus::Completed);
    // 1 token at once, then 20 more at 20 per second: about one second.
    assert!(took >= Duration::from_millis(800), "too fast: {took:?}");
    assert!(took < Duration::from_secs(3), "too slow: {took:?}");
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_queued_too_long_fails_with_queue_timeout_error() {
    let config = EngineConfig {
        max_concurrent_nodes: Some(1),
        ..EngineConfig::default()
    };
    let (handle, _) = engine(config).await;
    let mut def = probes(2, 1000);
    def["nodes"] = json!({
        "p0": {"ref": "p0", "queueTimeoutSeconds": 0.1},
        "p1": {"ref": "p1", "queueTimeoutSeconds": 0.1}
    });
    // Whichever asks first takes the only slot for 1 s; the other times out waiting.
    let f = common::run_on(&handle, &common::workflow(&handle, def), Default::default()).await;
    let (first, second) = if f.status("p0") == NodeStatus::Completed {
        ("p0", "p1")
    } else {
        ("p1", "p0")
    };
    assert_eq!(f.status(first), NodeStatus::Completed);
    assert_eq!(f.status(second), NodeStatus::Failed);
    assert_eq!(f.error_type(second), "QueueTimeoutError");
    assert_eq!(f.attempts(second), 0, "it never ran");
    assert_eq!(f.events_of(second, EventType::Queued).len(), 1);
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_slot_leaks_after_cancellations_timeouts_and_failures() {
    let config = EngineConfig {
        max_concurrent_nodes: Some(4),
        cancel_grace: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let (handle, probe) = engine(config).await;
    // Timeouts and failures.
    let mut def = probes(6, 2000);
    def["nodes"] = json!({"p0": {"ref": "p0", "timeoutSeconds": 0.05}, "p1": {"ref": "p1", "timeoutSeconds": 0.05}});
    def["actions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"ref": "bad", "componentId": "core.fail"}));
    def["config"] = json!({"failurePolicy": "failFast"});
    let results = run_many(&handle, def, 3).await;
    assert!(results.iter().all(|r| r.status == RunStatus::Failed));
    // Cancellations of queued and running nodes.
    let g = common::workflow(&handle, probes(10, 5000));
    let mut run = handle
        .submit_workflow(&g, Default::default(), Default::default())
        .await
        .unwrap();
    let mut events = handle.events(run.run_id()).await.unwrap();
    while let Some(e) = events.next().await {
        if e.kind == EventType::Started {
            break;
        }
    }
    handle.cancel(run.run_id()).await.unwrap();
    assert_eq!(run.result().await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(
        handle.slots().await.unwrap(),
        SlotStats {
            queued: 0,
            active: 0
        }
    );
    // A following run gets the full cap.
    probe.max.store(0, Ordering::SeqCst);
    let results = run_many(&handle, probes(8, 50), 1).await;
    assert_eq!(results[0].status, RunStatus::Completed);
    assert_eq!(probe.max.load(Ordering::SeqCst), 4);
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_over_the_limit_fails_the_node_and_is_not_retried() {
    let mut config = EngineConfig::default();
    config.limits.max_output_bytes = 100;
    let (handle, _) = engine(config).await;
    let big = "x".repeat(200);
    let def = json!({"title": "big", "actions": [
        {"ref": "small", "componentId": "core.echo", "params": {"v": "ok"}},
        {"ref": "big", "componentId": "core.echo", "params": {"v": big},
         "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0}}
    ]});
    let f = common::run_on(&handle, &common::workflow(&handle, def), Default::default()).await;
    assert_eq!(f.status("small"), NodeStatus::Completed);
    assert_eq!(f.status("big"), NodeStatus::Failed);
    assert_eq!(f.error_type("big"), "OutputLimitError");
    assert_eq!(f.attempts("big"), 1);
    assert!(
        !f.result.outputs.contains_key("big"),
        "the oversized output is not kept"
    );
    common::shutdown(&handle).await;
}

fn echo_chain(n: usize) -> Value {
    let actions: Vec<Value> = (0..n)
        .map(|i| json!({"ref": format!("n{i}"), "componentId": "core.echo"}))
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"sourceRef": format!("n{}", i - 1), "targetRef": format!("n{i}")}))
        .collect();
    json!({"title": "chain", "actions": actions, "edges": edges})
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_runs_are_forgotten_oldest_first_past_the_retained_node_budget() {
    let handle = Orchestrator::start(EngineConfig {
        retained_nodes: 25,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for n in [10, 10, 10, 40] {
        let mut run = handle
            .submit(
                common::definition(echo_chain(n)),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        run.result().await.unwrap();
        ids.push(run.run_id().to_owned());
        let known: Vec<bool> = futures::future::join_all(ids.iter().map(|id| handle.status(id)))
            .await
            .iter()
            .map(Result::is_ok)
            .collect();
        let expected: &[bool] = match ids.len() {
            1 => &[true],
            2 => &[true, true],
            // 30 node records: the oldest run goes.
            3 => &[false, true, true],
            // A run bigger than the budget is still kept, alone.
            _ => &[false, false, false, true],
        };
        assert_eq!(known, expected, "after {} runs", ids.len());
    }
    let gone = handle.status(&ids[0]).await.unwrap_err();
    assert!(gone.to_string().contains(&ids[0]), "{gone}");
    common::shutdown(&handle).await;
}

// Engine configuration -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_that_would_hang_the_engine_is_refused_at_start_with_every_path() {
    // A zero rate never gives a token and a zero cap never gives a slot: both used to
    // start an engine whose nodes then waited QUEUED forever.
    let mut components = BTreeMap::new();
    components.insert(
        "core.echo".to_owned(),
        ComponentLimits {
            max_concurrency: Some(0),
            rate_limit: Some(RateLimitConfig {
                per_second: 0.0,
                burst: 1,
            }),
            ..ComponentLimits::default()
        },
    );
    let config = EngineConfig {
        max_concurrent_nodes: Some(0),
        max_active_runs: 0,
        components,
        ..EngineConfig::default()
    };
    let err = match Orchestrator::start(config).await {
        Ok(_) => panic!("the configuration was accepted"),
        Err(err) => err,
    };
    let shipsec_orchestrator::EngineError::Config(config_error) = &err else {
        panic!("expected a configuration error, got {err}");
    };
    let paths: Vec<&str> = config_error
        .problems
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "maxConcurrentNodes",
            "maxActiveRuns",
            "components.core.echo.maxConcurrency",
            "components.core.echo.rateLimit.perSecond"
        ]
    );
    assert!(
        err.to_string()
            .contains("invalid engine configuration (4 problems)"),
        "{err}"
    );
}

#[test]
fn shipsec_run_refuses_a_bad_configuration_file_with_exit_2() {
    let config =
        std::env::temp_dir().join(format!("shipsec-bad-config-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        "maxConcurrentNodes: 0\ncomponents:\n  core.nope: { rateLimit: { perSecond: 0, burst: 0 } }\n",
    )
    .unwrap();
    let example = format!("{}/examples/race.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipsec"))
        .args(["run", "--config"])
        .arg(&config)
        .arg(example)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for path in [
        "maxConcurrentNodes:",
        "components.core.nope: no component `core.nope` is registered",
        "components.core.nope.rateLimit.perSecond:",
        "components.core.nope.rateLimit.burst:",
    ] {
        assert!(stderr.contains(path), "{path} in {stderr}");
    }
}
