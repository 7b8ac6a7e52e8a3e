//! The chaos suite: seeded fault plans on random workflows, with every invariant checked
//! after each run; supervisor death; admission. `CHAOS_RUNS` sets the number of
//! chaotic runs (default 500); a failure prints its seed, replayed with `CHAOS_SEED`.

mod common;
mod remote;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use shipsec_orchestrator::chaos::harness::{
    ChaosReport, FaultPlan, check_strikes, compare_with_oracle, run_with_faults,
};
use shipsec_orchestrator::chaos::workers::WorkerFleet;
use shipsec_orchestrator::chaos::{Chaos, WorkerFault};
use shipsec_orchestrator::messages::orchestrator::RunCommandError;
use shipsec_orchestrator::runtime::definition::RunnerKindDef;
use shipsec_orchestrator::runtime::guardrails::config::{ComponentLimits, WorkerConfig};
use shipsec_orchestrator::runtime::semantics::outcome::RunStatus;
use shipsec_orchestrator::{
    ComponentRegistry, EngineConfig, EngineError, Handle, Orchestrator, Workflow,
};
use tokio_util::sync::CancellationToken;

/// A random deterministic workflow: `all` joins, success/error/always edges, echo, short
/// sleeps, failures and flaky steps with retries.
fn random_workflow(seed: u64) -> Value {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(3..14);
    let mut actions = Vec::new();
    let mut edges = Vec::new();
    for i in 0..n {
        let name = format!("n{i}");
        let retry = json!({"maxAttempts": rng.random_range(1..4), "initialIntervalSeconds": 0});
        let action = match rng.random_range(0..10) {
            0..=3 => json!({"ref": name, "componentId": "core.echo", "params": {"i": i}}),
            4..=6 => {
                json!({"ref": name, "componentId": "core.sleep", "params": {"ms": rng.random_range(0..4), "i": i}})
            }
            7 => {
                json!({"ref": name, "componentId": "core.fail", "params": {"message": format!("n{i} fails")}})
            }
            _ => {
                json!({"ref": name, "componentId": "core.flaky", "params": {"failures": rng.random_range(0..3), "i": i}})
            }
        };
        let mut action = action;
        action["retryPolicy"] = retry;
        actions.push(action);
        if i > 0 {
            for _ in 0..rng.random_range(0..3) {
                let parent = rng.random_range(0..i);
                let kind = match rng.random_range(0..8) {
                    0 => "error",
                    1 => "always",
                    _ => "success",
                };
                edges.push(
                    json!({"sourceRef": format!("n{parent}"), "targetRef": name, "kind": kind}),
                );
            }
        }
    }
    json!({"title": format!("chaos {seed}"), "actions": actions, "edges": edges})
}

/// Injected panics are expected by the hundred: keep them out of the output, and let
/// every other panic through.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.contains("chaos: injected panic") {
            default(info);
        }
    }));
}

fn chaos_runs() -> u64 {
    std::env::var("CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// Runs `graph` fault-free as the oracle, then with the seeded fault plan, and checks the
/// invariants and the outcome against the oracle; panics with `replay` on a violation.
async fn chaotic_run(
    handle: &Handle,
    chaos: &Chaos,
    workflow: Workflow,
    seed: u64,
    bound: Duration,
    replay: &str,
) -> ChaosReport {
    let oracle = common::run_on(handle, &workflow, Default::default())
        .await
        .result;
    let plan = FaultPlan::random(seed, workflow.graph());
    let report = run_with_faults(handle, chaos, &workflow, Default::default(), &plan, bound)
        .await
        .unwrap_or_else(|v| panic!("{v}\nplan: {plan:?}\nreplay: {replay}"));
    if let Err(diff) = compare_with_oracle(&oracle, &report, &plan) {
        panic!(
            "seed {seed}: {diff}\nplan: {plan:?}\nresult: {:#?}\nreplay: {replay}",
            report.result
        );
    }
    report
}

/// A wide random workflow: a source, `width` middle steps (echo, short sleeps, flaky and
/// failing steps), pair joins over them with random edge kinds, and a sink: far more
/// nodes than the supervisor's spawn window.
fn wide_workflow(seed: u64, width: usize) -> Value {
    let mut rng = StdRng::seed_from_u64(seed);
    let retry = json!({"maxAttempts": 2, "initialIntervalSeconds": 0});
    let mut actions = vec![
        json!({"ref": "src", "componentId": "core.echo"}),
        json!({"ref": "sink", "componentId": "core.echo"}),
    ];
    let mut edges = Vec::new();
    for i in 0..width {
        let name = format!("m{i}");
        let mut action = match rng.random_range(0..10) {
            0..=5 => json!({"ref": name, "componentId": "core.echo", "params": {"i": i}}),
            6 | 7 => {
                json!({"ref": name, "componentId": "core.sleep", "params": {"ms": rng.random_range(0..3), "i": i}})
            }
            8 => {
                json!({"ref": name, "componentId": "core.flaky", "params": {"failures": 1, "i": i}})
            }
            _ => {
                json!({"ref": name, "componentId": "core.fail", "params": {"message": format!("{name} fails")}})
            }
        };
        action["retryPolicy"] = retry.clone();
        actions.push(action);
        edges.push(json!({"sourceRef": "src", "targetRef": name}));
        let join = format!("j{}", i / 2);
        if i % 2 == 0 {
            actions.push(json!({"ref": join, "componentId": "core.echo", "retryPolicy": retry}));
            edges.push(json!({"sourceRef": join, "targetRef": "sink", "kind": "always"}));
        }
        let kind = ["success", "always", "error"][rng.random_range(0..3)];
        edges.push(json!({"sourceRef": name, "targetRef": join, "kind": kind}));
    }
    json!({"title": format!("wide chaos {seed}"), "actions": actions, "edges": edges})
}

#[tokio::test(flavor = "multi_thread")]
async fn wide_chaotic_runs_through_the_spawn_window_keep_every_invariant() {
    let config = EngineConfig {
        cancel_grace: Duration::from_millis(500),
        ..EngineConfig::default()
    };
    quiet_injected_panics();
    let chaos = Chaos::new();
    let handle = Orchestrator::start_with_faults(config, builtins(), chaos.clone())
        .await
        .unwrap();
    let mut injected = 0;
    let runs: u64 = std::env::var("WIDE_CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 0..runs {
        let workflow = common::workflow(&handle, wide_workflow(seed, 2_500));
        let replay = format!("wide_workflow({seed}, 2_500)");
        let report = chaotic_run(
            &handle,
            &chaos,
            workflow,
            seed,
            Duration::from_secs(60),
            &replay,
        )
        .await;
        injected += report.injected;
    }
    eprintln!("wide chaos: {runs} runs of 3,752 nodes, {injected} faults injected");
    assert!(injected > 100, "the plans injected faults ({injected})");
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_chaotic_runs_keep_every_invariant() {
    let config = EngineConfig {
        max_concurrent_nodes: Some(6),
        cancel_grace: Duration::from_millis(500),
        ..EngineConfig::default()
    };
    quiet_injected_panics();
    let chaos = Chaos::new();
    let handle = Orchestrator::start_with_faults(config, builtins(), chaos.clone())
        .await
        .unwrap();
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..chaos_runs()).collect(),
    };
    let (mut injected, mut stopped, mut slowest) = (0, 0, Duration::ZERO);
    for seed in seeds {
        let workflow = common::workflow(&handle, random_workflow(seed));
        let replay = format!("CHAOS_SEED={seed}");
        let report = chaotic_run(
            &handle,
            &chaos,
            workflow,
            seed,
            Duration::from_secs(30),
            &replay,
        )
        .await;
        injected += report.injected;
        stopped += usize::from(report.stopped);
        if report.injected > 0 {
            slowest = slowest.max(report.ended_after_fault);
        }
    }
    eprintln!(
        "chaos: {} runs, {injected} faults injected, {stopped} runs stopped, slowest end after a fault {slowest:?}",
        chaos_runs()
    );
    assert!(injected > 0, "the plans injected faults");
    common::shutdown(&handle).await;
}

/// The components of [`random_workflow`]: all remote in the worker chaos suite.
const REMOTE: [&str; 4] = ["core.echo", "core.sleep", "core.fail", "core.flaky"];

#[tokio::test(flavor = "multi_thread")]
async fn worker_faults_on_remote_runs_keep_every_invariant() {
    let lease = Duration::from_millis(1_500);
    let limits = ComponentLimits {
        runner: Some(RunnerKindDef::Remote),
        ..ComponentLimits::default()
    };
    let config = EngineConfig {
        cancel_grace: Duration::from_millis(500),
        components: REMOTE
            .iter()
            .map(|c| (c.to_string(), limits.clone()))
            .collect(),
        workers: WorkerConfig {
            heartbeat: Duration::from_millis(100),
            lease,
            ..WorkerConfig::default()
        },
        ..EngineConfig::default()
    };
    quiet_injected_panics();
    let stop = CancellationToken::new();
    let chaos = Chaos::new();
    let (handle, coordinator) = remote::start_coordinator_with(config, &stop, chaos.clone()).await;
    // One slot each: a struck worker holds nothing but the attempt the fault is for.
    let fleet = WorkerFleet::start(
        coordinator,
        chaos.clone(),
        4,
        1,
        &REMOTE.join(","),
        lease * 2,
    )
    .await
    .expect("the fleet registers");
    let runs: u64 = std::env::var("CHAOS_WORKER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let seeds: Vec<u64> = match std::env::var("CHAOS_WORKER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..runs).collect(),
    };
    let mut struck: std::collections::HashMap<WorkerFault, usize> = Default::default();
    for seed in seeds {
        let workflow = common::workflow(&handle, random_workflow(seed));
        let replay = format!("CHAOS_WORKER_SEED={seed}");
        eprintln!("worker chaos: seed {seed}");
        let bound = Duration::from_secs(60);
        let oracle = tokio::time::timeout(
            bound,
            common::run_on(&handle, &workflow, Default::default()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("the fault-free run did not end within {bound:?}\nreplay: {replay}")
        })
        .result;
        let plan = FaultPlan::random_with_worker_fault(seed, workflow.graph());
        let report = run_with_faults(&handle, &chaos, &workflow, Default::default(), &plan, bound)
            .await
            .unwrap_or_else(|v| panic!("{v}\nplan: {plan:?}\nreplay: {replay}"));
        let strikes = fleet.strikes_of(&report.result.run_id);
        let checked = compare_with_oracle(&oracle, &report, &plan)
            .and_then(|()| check_strikes(&oracle, &report, &strikes));
        if let Err(diff) = checked {
            panic!(
                "seed {seed}: {diff}\nplan: {plan:?}\nstrikes: {strikes:?}\nresult: {:#?}\nreplay: {replay}",
                report.result
            );
        }
        for s in strikes {
            *struck.entry(s.fault).or_default() += 1;
        }
    }
    eprintln!("worker chaos: {runs} remote runs, strikes {struck:?}");
    if std::env::var("CHAOS_WORKER_SEED").is_err() {
        for fault in [WorkerFault::Kill, WorkerFault::Hang, WorkerFault::Partition] {
            assert!(
                struck.get(&fault).is_some_and(|&n| n > 0),
                "no {fault:?} struck: {struck:?}"
            );
        }
    }
    assert_eq!(fleet.size(), 4, "every killed worker was replaced");
    fleet.stop();
    stop.cancel();
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_supervisor_fails_its_run_and_the_engine_carries_on() {
    let chaos = Chaos::new();
    let handle =
        Orchestrator::start_with_faults(EngineConfig::default(), builtins(), chaos.clone())
            .await
            .unwrap();
    let slow = common::definition(json!({"title": "slow", "actions": [
        {"ref": "long", "componentId": "core.sleep", "params": {"ms": 30_000}},
        {"ref": "after", "componentId": "core.echo"}
    ], "edges": [{"sourceRef": "long", "targetRef": "after"}]}));
    let mut victim = handle
        .submit(slow, Default::default(), Default::default())
        .await
        .unwrap();
    let mut bystander = handle
        .submit(
            common::definition(json!({"title": "b", "actions": [
                {"ref": "s", "componentId": "core.sleep", "params": {"ms": 200}}
            ]})),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    chaos
        .supervisor_actor(victim.run_id())
        .expect("supervisor alive")
        .kill();
    let t = Instant::now();
    let result = victim.result().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        result
            .error
            .as_deref()
            .unwrap_or("")
            .contains("supervisor died"),
        "{:?}",
        result.error
    );
    chaos
        .wait_for_run_actors(victim.run_id(), Duration::from_secs(5))
        .await;
    assert_eq!(
        chaos.live_node_actors_of(victim.run_id()),
        0,
        "its node actors were stopped with it"
    );
    assert_eq!(
        handle.status(victim.run_id()).await.unwrap().status,
        RunStatus::Failed
    );
    assert_eq!(
        bystander.result().await.unwrap().status,
        RunStatus::Completed
    );
    let quick = common::workflow(
        &handle,
        json!({"title": "q", "actions": [{"ref": "e", "componentId": "core.echo"}]}),
    );
    let again = common::run_on(&handle, &quick, Default::default()).await;
    assert_eq!(
        again.result.status,
        RunStatus::Completed,
        "the orchestrator still runs workflows"
    );
    tokio::time::timeout(Duration::from_secs(5), handle.slots_idle())
        .await
        .expect("slots come back")
        .unwrap();
    common::shutdown(&handle).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_admission_limit_is_refused_with_a_clear_error() {
    let config = EngineConfig {
        max_active_runs: 100,
        ..EngineConfig::default()
    };
    let (held, release) = common::kit::Held::new();
    let mut registry = ComponentRegistry::with_builtins();
    registry.register(held);
    let handle = Orchestrator::start_with(config, registry).await.unwrap();
    let workflow = common::workflow(
        &handle,
        json!({"title": "held", "actions": [{"ref": "h", "componentId": "test.held"}]}),
    );
    let (mut accepted, mut refusals) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        match handle
            .submit_workflow(&workflow, Default::default(), Default::default())
            .await
        {
            Ok(run) => accepted.push(run),
            Err(refused) => refusals.push(refused),
        }
    }
    assert_eq!(accepted.len(), 100);
    assert_eq!(refusals.len(), 9_900);
    for refused in &refusals {
        let EngineError::Run(RunCommandError::Overloaded { active, limit }) = refused else {
            panic!("unexpected error: {refused}");
        };
        assert_eq!((*active, *limit), (100, 100));
    }
    let message = refusals[0].to_string();
    assert_eq!(
        message,
        "too many runs in progress (100, the limit is 100); retry later"
    );
    // Released, the accepted runs complete, and capacity is back.
    release.open();
    for run in &mut accepted {
        assert_eq!(run.result().await.unwrap().status, RunStatus::Completed);
    }
    assert!(
        handle
            .submit_workflow(&workflow, Default::default(), Default::default())
            .await
            .is_ok()
    );
    common::shutdown(&handle).await;
}

fn builtins() -> ComponentRegistry {
    ComponentRegistry::with_builtins()
}
