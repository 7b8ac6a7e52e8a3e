//! Remote runs against the reference: the random workflows of `tests/random/mod.rs`, with
//! every component but the entrypoint configured remote, run through the coordinator (the
//! gateway served by tonic on 127.0.0.1) and three Rust workers (`worker::client`) over
//! gRPC, must end as the sequential reference evaluator says, node by node, and
//! fail-fast runs must stop as docs/semantics.md §4 says — the checks `tests/property.rs`
//! makes of in-process runs.
//!
//! One engine, coordinator and set of workers serve every case. The case count is 1,024
//! unless `PROPTEST_CASES` says otherwise.

mod common;
#[allow(dead_code)] // not every binary uses every generator
mod random;
mod reference;
mod remote;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::definition::RunnerKindDef;
use shipsec_orchestrator::runtime::guardrails::config::{ComponentLimits, WorkerConfig};
use shipsec_orchestrator::{EngineConfig, Handle};
use tokio_util::sync::CancellationToken;

use random::{Case, Finished, Mode, check_against_reference, check_fail_fast, gated_case_gen};

/// The components the random workflows use besides the entrypoint: all remote here.
const REMOTE: [&str; 5] = [
    "core.echo",
    "core.fail",
    "core.flaky",
    "core.branch",
    "core.sleep",
];

/// The engine, its coordinator and three workers of four slots, on one runtime.
fn remote_engine() -> &'static (tokio::runtime::Runtime, Handle) {
    static ENGINE: OnceLock<(tokio::runtime::Runtime, Handle)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = runtime.block_on(start());
        (runtime, handle)
    })
}

async fn start() -> Handle {
    let mut components = BTreeMap::new();
    for id in REMOTE {
        let limits = ComponentLimits {
            runner: Some(RunnerKindDef::Remote),
            ..ComponentLimits::default()
        };
        components.insert(id.to_owned(), limits);
    }
    let config = EngineConfig {
        cancel_grace: Duration::from_secs(1),
        components,
        // Heartbeats often (a withdrawn attempt frees its worker's slot at the next one),
        // leases long (a loaded machine never expires one by accident).
        workers: WorkerConfig {
            heartbeat: Duration::from_millis(50),
            lease: Duration::from_secs(30),
            ..WorkerConfig::default()
        },
        ..EngineConfig::default()
    };
    // Served for as long as the test binary runs.
    let forever = CancellationToken::new();
    remote::start(config, 3, 4, &REMOTE.join(","), &forever).await
}

fn run(case: &Case) -> Result<Finished, String> {
    let engine = remote_engine();
    let workflow = common::try_workflow(&engine.1, &case.definition)?;
    let options = SubmitOptions::default();
    // Gates are remote too (`core.echo` returning a pending marker on a worker): a person
    // answers them as their titles say.
    let inputs = random::run_inputs();
    let (result, events) =
        common::run_answering_on(engine, &workflow, inputs, options, random::answer_for)?;
    Ok(Finished {
        graph: workflow.graph().clone(),
        result,
        events,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: random::cases(1024), ..ProptestConfig::default() })]

    /// docs/semantics.md §1–§5, §7, §9 under `skipDependents`, every attempt on a worker.
    #[test]
    fn remote_runs_end_as_the_reference_evaluator_says(case in gated_case_gen(Mode::Continue, 40)) {
        run(&case)
            .and_then(|f| check_against_reference(&f))
            .map_err(TestCaseError::fail)?;
    }

    /// docs/semantics.md §4 `failRun`: the stop reaches attempts on workers too, and
    /// every node that ended otherwise than CANCELLED-by-the-stop is explained.
    #[test]
    fn remote_fail_fast_stops_the_run_and_every_node_that_ended_is_explained(
        case in gated_case_gen(Mode::FailFast, 20)
    ) {
        run(&case)
            .and_then(|f| check_fail_fast(&f))
            .map_err(TestCaseError::fail)?;
    }
}
