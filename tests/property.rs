//! Property tests: random workflows run through the actor runtime must end as the
//! sequential reference evaluator (`tests/reference/mod.rs`) says docs/semantics.md makes
//! them end, and every run's trace must keep the invariants of §9.
//!
//! Two properties, over the workflows `tests/random/mod.rs` generates and with its checks:
//! - [`random_workflows_end_as_the_reference_evaluator_says`]: DAGs of up to 40 nodes under
//!   `skipDependents`, compared node by node and on the run status; gates among them are
//!   approved, rejected or left to expire by a person following the run's events.
//! - [`fail_fast_stops_the_run_and_every_node_that_ended_is_explained`]: DAGs of up to 20
//!   nodes with `failRun` failures, where which nodes the stop catches depends on timing.
//!
//! Every case runs on one shared orchestrator (one multi-thread tokio runtime). The case
//! count is 1,024 per property unless `PROPTEST_CASES` says otherwise. The same checks
//! run over the pure cores alone, under a seeded scheduler, in `tests/simulation.rs`.

mod common;
#[allow(dead_code)] // not every binary uses every generator
mod random;
mod reference;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shipsec_orchestrator::Handle;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::semantics::event::EventType;

use random::{Case, Finished, Mode, check_against_reference, check_fail_fast, gated_case_gen};

/// `PROPTEST_CASES`, else 1,024 (thousands of cases in CI).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: random::cases(1024),
        ..ProptestConfig::default()
    }
}

/// Validates, submits on the shared engine, answers its gates as their titles say (a
/// person beside the run, following its events), waits for the result and collects the
/// events.
fn run(case: &Case) -> Result<Finished, String> {
    let (runtime, handle) = common::shared_engine();
    let workflow = common::try_workflow(handle, &case.definition)?;
    let (result, events) = runtime.block_on(async {
        let submitted = handle
            .submit_workflow(&workflow, random::run_inputs(), SubmitOptions::default())
            .await;
        let mut run = submitted.map_err(|e| format!("submit: {e}"))?;
        let person = tokio::spawn(answer_gates(handle.clone(), run.run_id().to_owned()));
        let result = run.result().await.map_err(|e| format!("result: {e}"))?;
        person.await.map_err(|e| format!("the person: {e}"))?;
        let events = handle
            .events(run.run_id())
            .await
            .map_err(|e| format!("events after the result: {e}"))?
            .collect::<Vec<_>>()
            .await;
        Ok::<_, String>((result, events))
    })?;
    Ok(Finished {
        graph: workflow.graph().clone(),
        result,
        events,
    })
}

/// Answers each gate of run `run_id` as it asks (`random::answer_for` its title), until the
/// run's events end. A refused answer (the gate was withdrawn or its run stopped first) is
/// what a person would meet too, and is not an error.
async fn answer_gates(handle: Handle, run_id: String) {
    let Ok(mut events) = handle.events(&run_id).await else {
        return;
    };
    while let Some(event) = events.next().await {
        if event.kind != EventType::AwaitingInput {
            continue;
        }
        let data = event.data.as_deref();
        let asked = |key: &str| data.and_then(|d| d[key].as_str()).unwrap_or_default();
        if let Some(answer) = random::answer_for(asked("title")) {
            let _ = handle.resolve(asked("requestId"), answer).await;
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// docs/semantics.md §1–§5, §7, §9 under `skipDependents`.
    #[test]
    fn random_workflows_end_as_the_reference_evaluator_says(case in gated_case_gen(Mode::Continue, 40)) {
        run(&case)
            .and_then(|f| check_against_reference(&f))
            .map_err(TestCaseError::fail)?;
    }

    /// docs/semantics.md §4 `failRun`: the run fails, nothing starts on an edge resolved
    /// after the failure, and every node that ended otherwise than CANCELLED-by-the-stop
    /// ended as the reference says it must given its parents.
    #[test]
    fn fail_fast_stops_the_run_and_every_node_that_ended_is_explained(
        case in gated_case_gen(Mode::FailFast, 20)
    ) {
        run(&case)
            .and_then(|f| check_fail_fast(&f))
            .map_err(TestCaseError::fail)?;
    }
}
