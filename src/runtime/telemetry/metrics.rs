//! The engine's metric instruments (OpenTelemetry): queue depth, active nodes, attempts
//! by component and error type, queue waits, node and run durations, runs by status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use opentelemetry::{KeyValue, StringValue, global};

use super::{COMPONENT_ID, ERROR_TYPE, NODE_STATUS, OUTCOME, RUN_STATUS};

/// Whether [`super::Telemetry::install`] set up a meter provider; until then the engine skips
/// building metric attributes altogether.
pub(crate) static METRICS_ON: AtomicBool = AtomicBool::new(false);

/// The engine's metric instruments; inert (no attribute is even built) when telemetry
/// exports nothing.
#[derive(Debug, Clone)]
pub struct Metrics {
    on: bool,
    queued: UpDownCounter<i64>,
    running: UpDownCounter<i64>,
    attempts: Counter<u64>,
    node_duration: Histogram<f64>,
    queue_wait: Histogram<f64>,
    run_duration: Histogram<f64>,
    runs: Counter<u64>,
}

impl Metrics {
    /// Whether anything is recorded (telemetry exports metrics).
    pub fn enabled(&self) -> bool {
        self.on
    }

    /// Instruments from the global meter provider (install telemetry first).
    pub fn from_global() -> Metrics {
        let mut metrics = Metrics::new(&global::meter("shipsec-orchestrator"));
        metrics.on = METRICS_ON.load(Ordering::Relaxed);
        metrics
    }

    /// Instruments from `meter`, recording.
    pub fn new(meter: &Meter) -> Metrics {
        Metrics {
            on: true,
            queued: meter.i64_up_down_counter("workflow.nodes.queued").build(),
            running: meter.i64_up_down_counter("workflow.nodes.running").build(),
            attempts: meter.u64_counter("workflow.node.attempts").build(),
            node_duration: meter
                .f64_histogram("workflow.node.duration")
                .with_unit("s")
                .build(),
            queue_wait: meter
                .f64_histogram("workflow.node.queue_wait")
                .with_unit("s")
                .build(),
            run_duration: meter
                .f64_histogram("workflow.run.duration")
                .with_unit("s")
                .build(),
            runs: meter.u64_counter("workflow.runs").build(),
        }
    }

    /// Nodes waiting for a slot went up or down by `delta`.
    pub fn queued(&self, delta: i64) {
        if self.on {
            self.queued.add(delta, &[]);
        }
    }

    /// Attempts running went up or down by `delta`.
    pub fn running(&self, delta: i64) {
        if self.on {
            self.running.add(delta, &[]);
        }
    }

    /// Records a finished attempt.
    pub fn attempt(&self, component: &Arc<str>, error_type: Option<&str>) {
        if !self.on {
            return;
        }
        // The component id is shared, not copied: these run on the supervisor, per node.
        let component = KeyValue::new(COMPONENT_ID, StringValue::from(component.clone()));
        match error_type {
            None => self
                .attempts
                .add(1, &[component, KeyValue::new(OUTCOME, "completed")]),
            Some(t) => self.attempts.add(
                1,
                &[
                    component,
                    KeyValue::new(OUTCOME, "failed"),
                    KeyValue::new(ERROR_TYPE, t.to_owned()),
                ],
            ),
        }
    }

    /// Records how long an attempt waited for its slots before it started.
    pub fn queue_wait(&self, component: &Arc<str>, seconds: f64) {
        if self.on {
            let attrs = [KeyValue::new(
                COMPONENT_ID,
                StringValue::from(component.clone()),
            )];
            self.queue_wait.record(seconds, &attrs);
        }
    }

    /// Records a node's duration at its end.
    pub fn node_ended(&self, component: &Arc<str>, status: &'static str, seconds: f64) {
        if self.on {
            let attrs = [
                KeyValue::new(COMPONENT_ID, StringValue::from(component.clone())),
                KeyValue::new(NODE_STATUS, status),
            ];
            self.node_duration.record(seconds, &attrs);
        }
    }

    /// Records a run's end.
    pub fn run_ended(&self, status: &'static str, seconds: f64) {
        if self.on {
            let attrs = [KeyValue::new(RUN_STATUS, status)];
            self.runs.add(1, &attrs);
            self.run_duration.record(seconds, &attrs);
        }
    }
}
