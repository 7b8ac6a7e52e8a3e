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

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;

use random::{Case, Finished, Mode, check_against_reference, check_fail_fast, gated_case_gen};

/// `PROPTEST_CASES`, else 1,024 (thousands of cases in CI).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: random::cases(1024),
        ..ProptestConfig::default()
    }
}

/// Validates, submits on the shared engine with a person answering its gates as their
/// titles say, waits for the result and collects the events.
fn run(case: &Case) -> Result<Finished, String> {
    let engine = common::shared_engine();
    let workflow = common::try_workflow(&engine.1, &case.definition)?;
    let options = SubmitOptions::default();
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
