//! A run submitted through the library with a W3C `traceparent` joins the caller's trace.
//!
//! Telemetry installs a global subscriber, so this file holds one test (one per test
//! binary). It runs on a multi-thread runtime: the exporter flushes from `shutdown()`,
//! which delivers nothing on a current-thread runtime (opentelemetry-sdk's batch exporter).

mod common;
mod otlp;

use std::time::Duration;

use serde_json::json;
use shipsec_orchestrator::messages::orchestrator::SubmitOptions;
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::telemetry;

use otlp::{Receiver, summarize_spans};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_with_a_traceparent_joins_the_callers_trace() {
    let receiver = Receiver::start_grpc().await;
    let guard =
        telemetry::init_for_tests(&receiver.endpoint(), "grpc").expect("telemetry installs");

    let definition = common::definition(json!({
        "version": 2,
        "title": "joins the caller's trace",
        "edges": [{"sourceRef": "a", "targetRef": "b"}],
        "actions": [
            {"ref": "a", "componentId": "core.echo", "params": {"x": 1}},
            {"ref": "b", "componentId": "core.echo"}
        ]
    }));
    let handle = common::engine().await;
    let mut run = handle
        .submit(
            definition,
            JsonObject::new(),
            SubmitOptions {
                traceparent: Some(format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")),
                ..Default::default()
            },
        )
        .await
        .expect("submit");
    let run_id = run.run_id().to_owned();
    let result = run.result().await.expect("result");
    assert_eq!(result.nodes.len(), 2, "both nodes reached a terminal state");
    common::shutdown(&handle).await;
    // A blocking flush: let the runtime move the receiver's tasks to other workers.
    let dropped = tokio::task::block_in_place(|| guard.shutdown());
    assert_eq!(dropped, 0, "no span was dropped");

    let is_run =
        |s: &otlp::FlatSpan| s.name == telemetry::SPAN_RUN && s.attr_is(telemetry::RUN_ID, &run_id);
    let spans = receiver
        .wait_for_spans(
            |spans| spans.iter().any(is_run) && spans.iter().filter(|s| s.is_node()).count() >= 2,
            Duration::from_secs(10),
        )
        .await;
    let run_span = spans.iter().find(|s| is_run(s)).unwrap();
    assert_eq!(
        run_span.trace_id, TRACE_ID,
        "the run joins the caller's trace"
    );
    assert_eq!(
        run_span.parent_span_id, PARENT_SPAN_ID,
        "the run span is a child of the caller's span"
    );
    for span in spans.iter().filter(|s| !is_run(s)) {
        assert_eq!(
            span.trace_id,
            TRACE_ID,
            "every span of the run is in the caller's trace: {}",
            summarize_spans(&spans)
        );
    }
    let nodes: Vec<_> = spans.iter().filter(|s| s.is_node()).collect();
    assert_eq!(nodes.len(), 2, "{}", summarize_spans(&spans));
    for node in nodes {
        assert_eq!(node.parent_span_id, run_span.span_id);
    }
}
