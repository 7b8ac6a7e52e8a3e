//! Node statuses and terminal outcomes, shared by the decision logic, the actors and the
//! wire types. Strings appear only at the serde boundary (`COMPLETED`, ...).

use serde::{Deserialize, Serialize};

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
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Terminated => "TERMINATED",
            RunStatus::TimedOut => "TIMED_OUT",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}
