//! Node statuses and terminal outcomes, shared by the decision logic, the actors and the
//! wire types. Strings appear only at the serde boundary (`COMPLETED`, ...) and in the
//! one `Display` of each cause, which writes the reasons events and results carry
//! (docs/semantics.md §10); no reason is ever read back from its text.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::components::ComponentError;
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::EdgeIx;
use crate::runtime::semantics::report::StopKind;

/// The status of a node at any moment (docs/semantics.md, Words).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    /// Waiting on parents.
    Pending,
    /// Join satisfied, waiting for a slot.
    Queued,
    /// An attempt is running (or backing off before the next).
    Running,
    /// A gate: its attempt asked a person for input, and it waits for the answer.
    AwaitingInput,
    /// Terminal: succeeded.
    Completed,
    /// Terminal: failed after its retries.
    Failed,
    /// Terminal: never ran because its inputs could never be satisfied.
    Skipped,
    /// Terminal: stopped or never started because of a cancellation.
    Cancelled,
}

/// The four terminal states (docs/semantics.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Terminal {
    /// The node succeeded.
    Completed,
    /// The node failed after its retries.
    Failed,
    /// The node was skipped.
    Skipped,
    /// The node was cancelled.
    Cancelled,
}

impl Terminal {
    /// The matching [`NodeStatus`].
    pub fn status(self) -> NodeStatus {
        match self {
            Terminal::Completed => NodeStatus::Completed,
            Terminal::Failed => NodeStatus::Failed,
            Terminal::Skipped => NodeStatus::Skipped,
            Terminal::Cancelled => NodeStatus::Cancelled,
        }
    }

    /// Upper-case name, as in events and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Terminal::Completed => "COMPLETED",
            Terminal::Failed => "FAILED",
            Terminal::Skipped => "SKIPPED",
            Terminal::Cancelled => "CANCELLED",
        }
    }
}

impl NodeStatus {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "PENDING",
            NodeStatus::Queued => "QUEUED",
            NodeStatus::Running => "RUNNING",
            NodeStatus::AwaitingInput => "AWAITING_INPUT",
            NodeStatus::Completed => "COMPLETED",
            NodeStatus::Failed => "FAILED",
            NodeStatus::Skipped => "SKIPPED",
            NodeStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether the status is one of the four terminal ones.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStatus::Completed
                | NodeStatus::Failed
                | NodeStatus::Skipped
                | NodeStatus::Cancelled
        )
    }
}

/// The status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Accepted, not started.
    Queued,
    /// Nodes are running.
    Running,
    /// At least one gate waits for a person and no node runs or waits for a slot.
    AwaitingInput,
    /// Every node ended and no unhandled failure happened.
    Completed,
    /// An unhandled failure happened (or the supervisor died).
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Terminated on request (no grace period).
    Terminated,
    /// The run deadline passed.
    TimedOut,
}

impl RunStatus {
    /// The status [`RunStatus::as_str`] names.
    pub fn parse(name: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::AwaitingInput,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Terminated,
            RunStatus::TimedOut,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "QUEUED",
            RunStatus::Running => "RUNNING",
            RunStatus::AwaitingInput => "AWAITING_INPUT",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Terminated => "TERMINATED",
            RunStatus::TimedOut => "TIMED_OUT",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunStatus::Queued | RunStatus::Running | RunStatus::AwaitingInput
        )
    }
}

/// How a node ended, with what each way of ending carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It succeeded.
    Completed {
        /// Its output. Immutable once written.
        output: Arc<JsonObject>,
        /// The ports it activated (`None`: every port).
        active_ports: Option<Vec<String>>,
    },
    /// It failed after its retries.
    Failed {
        /// The last attempt's error.
        error: ComponentError,
    },
    /// Its join could never be satisfied.
    Skipped(SkipCause),
    /// It was stopped, or never started, because of a cancellation.
    Cancelled(CancelCause),
}

impl Outcome {
    /// Which of the four terminal states this is.
    pub fn terminal(&self) -> Terminal {
        match self {
            Outcome::Completed { .. } => Terminal::Completed,
            Outcome::Failed { .. } => Terminal::Failed,
            Outcome::Skipped(_) => Terminal::Skipped,
            Outcome::Cancelled(_) => Terminal::Cancelled,
        }
    }

    /// Why it was skipped or cancelled, as events and results say it.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Skipped(cause) => Some(cause.to_string()),
            Outcome::Cancelled(cause) => Some(cause.to_string()),
            Outcome::Completed { .. } | Outcome::Failed { .. } => None,
        }
    }
}

/// Why a node was skipped: the incoming edge that went dead and decided its join
/// (docs/semantics.md §2, §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipCause {
    /// The dead edge.
    pub edge: EdgeIx,
    /// The ref of its source.
    pub source: Arc<str>,
    /// The ref of its target (the skipped node).
    pub target: Arc<str>,
    /// How the source ended.
    pub source_ended: Terminal,
    /// The port a completed source did not activate, when a success edge went dead so.
    pub port: Option<Arc<str>>,
    /// The node whose failure or cancellation began the chain of skips (the source
    /// itself, or the origin it carried).
    pub origin: Arc<str>,
}

impl fmt::Display for SkipCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SkipCause {
            source,
            target,
            source_ended,
            port,
            origin,
            ..
        } = self;
        write!(
            f,
            "skipped: edge {source}->{target} dead because {source} {}",
            source_ended.as_str()
        )?;
        if let Some(port) = port {
            write!(f, " without activating port `{port}`")?;
        }
        if origin != source {
            write!(f, " (origin: {origin})")?;
        }
        Ok(())
    }
}

/// Why a run stops (docs/semantics.md §6): each is also what its cancelled nodes record.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    /// Cancel or terminate, on request.
    Requested(StopKind),
    /// The run deadline (`config.timeoutSeconds`) passed.
    Deadline(Duration),
    /// A node failed unhandled under `failRun`: its ref.
    FailRun(Arc<str>),
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Requested(StopKind::Cancel) => {
                f.write_str("cancelled: run cancelled by request")
            }
            StopCause::Requested(StopKind::Terminate) => {
                f.write_str("terminated: run terminated by request")
            }
            StopCause::Deadline(timeout) => write!(
                f,
                "cancelled: run deadline of {}s passed",
                timeout.as_secs_f64()
            ),
            StopCause::FailRun(failed) => write!(f, "cancelled: failRun after {failed} FAILED"),
        }
    }
}

/// Why a node was cancelled.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelCause {
    /// The run is stopping.
    RunStopping(StopCause),
    /// It lost a race (§5): the `first` node `by` fired on `winner` (`None`: on no edge,
    /// which a join never does), and no other dependent needs it.
    Withdrawn {
        /// The node whose join fired.
        by: Arc<str>,
        /// The parent that won.
        winner: Option<Arc<str>>,
    },
    /// It did not end within the grace period of the run's stop, and was abandoned.
    Abandoned(StopCause),
}

impl CancelCause {
    /// Whether the node lost a race, rather than being stopped with its run.
    pub fn is_withdrawal(&self) -> bool {
        matches!(self, CancelCause::Withdrawn { .. })
    }
}

impl fmt::Display for CancelCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelCause::RunStopping(stop) => stop.fmt(f),
            CancelCause::Withdrawn { by, winner } => {
                write!(
                    f,
                    "withdrawn: {by} fired on {}",
                    winner.as_deref().unwrap_or("?")
                )
            }
            CancelCause::Abandoned(stop) => {
                write!(f, "{stop} (abandoned after the grace period)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_says_what_events_and_results_have_always_said() {
        let stop = |s: StopCause| CancelCause::RunStopping(s).to_string();
        assert_eq!(
            stop(StopCause::Requested(StopKind::Cancel)),
            "cancelled: run cancelled by request"
        );
        assert_eq!(
            stop(StopCause::Requested(StopKind::Terminate)),
            "terminated: run terminated by request"
        );
        assert_eq!(
            stop(StopCause::Deadline(Duration::from_millis(1500))),
            "cancelled: run deadline of 1.5s passed"
        );
        assert_eq!(
            stop(StopCause::Deadline(Duration::from_secs(2))),
            "cancelled: run deadline of 2s passed"
        );
        assert_eq!(
            stop(StopCause::FailRun("scan".into())),
            "cancelled: failRun after scan FAILED"
        );
        let withdrawn = CancelCause::Withdrawn {
            by: "pick".into(),
            winner: Some("fast".into()),
        };
        assert_eq!(withdrawn.to_string(), "withdrawn: pick fired on fast");
        assert!(withdrawn.is_withdrawal());
        let nowhere = CancelCause::Withdrawn {
            by: "pick".into(),
            winner: None,
        };
        assert_eq!(nowhere.to_string(), "withdrawn: pick fired on ?");
        assert_eq!(
            CancelCause::Abandoned(StopCause::Requested(StopKind::Cancel)).to_string(),
            "cancelled: run cancelled by request (abandoned after the grace period)"
        );
    }

    #[test]
    fn a_skip_names_its_dead_edge_its_port_and_an_origin_further_up() {
        let skip = |ended: Terminal, port: Option<&str>, origin: &str| SkipCause {
            edge: EdgeIx(0),
            source: "a".into(),
            target: "b".into(),
            source_ended: ended,
            port: port.map(Arc::from),
            origin: origin.into(),
        };
        assert_eq!(
            skip(Terminal::Failed, None, "a").to_string(),
            "skipped: edge a->b dead because a FAILED"
        );
        assert_eq!(
            skip(Terminal::Completed, Some("default"), "a").to_string(),
            "skipped: edge a->b dead because a COMPLETED without activating port `default`"
        );
        assert_eq!(
            skip(Terminal::Skipped, None, "root").to_string(),
            "skipped: edge a->b dead because a SKIPPED (origin: root)"
        );
    }
}
