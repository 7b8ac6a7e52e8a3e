//! What a listener lets its peers hold: the [`ConnectionLimits`] of the HTTP API
//! (`service.connections`) and of the worker port (`workers.connections`), and the
//! [`DescriptorBudget`] that fits both under the process's open-file limit with room left
//! for the journal.
//!
//! Why: every open socket is a file descriptor. Without a cap, a peer that reaches the port
//! can hold sockets until the process has none left, and then the journal's next file
//! (a flush, a new table) fails with EMFILE, which poisons it. Here the caps are derived
//! from (or checked against) the limit, so that [`RESERVED_DESCRIPTORS`] always stay free
//! for the journal, the component processes' pipes and the exporters. Pure arithmetic: the
//! binary reads the limit (`net::descriptors`) and the listeners enforce the caps
//! (`net::guard`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::guardrails::config::secs;

/// Descriptors kept out of every connection cap: the journal's files (at most
/// [`JOURNAL_CACHED_FILES`] tables open at once, its logs, its lock), the pipes of
/// `core.process` children, the exporters' sockets, stdio, epoll and signal pipes.
pub const RESERVED_DESCRIPTORS: u64 = 512;

/// Tables the journal keeps open at once (its store would otherwise cache up to 900).
pub const JOURNAL_CACHED_FILES: usize = 128;

/// The largest cap derived for the HTTP API when none is configured.
pub const DEFAULT_MAX_API_CONNECTIONS: usize = 4_096;

/// The largest cap derived for the worker port when none is configured.
pub const DEFAULT_MAX_WORKER_CONNECTIONS: usize = 1_024;

/// The limits of one listener's connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Most connections open at once; past it a new connection is answered at once
    /// (503 `TOO_MANY_CONNECTIONS` on the HTTP API, closed on the worker port) and closed.
    /// Absent: derived from the open-file limit ([`DescriptorBudget`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// How long a peer has to send a whole request head: counted from the connection's
    /// accept for its first request, and from the first byte of each later one. Also how
    /// long a connection may go without a request that carries an accepted token.
    #[serde(with = "secs", rename = "headerReadTimeoutSeconds")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open after its last request.
    #[serde(with = "secs", rename = "idleTimeoutSeconds")]
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ConnectionLimits {
    /// The problems of these limits, each with its path under `at`.
    pub fn problems(&self, at: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.max_connections == Some(0) {
            problems.push((format!("{at}.maxConnections"), "must be at least 1".into()));
        }
        for (name, value) in [
            ("headerReadTimeoutSeconds", self.header_read_timeout),
            ("idleTimeoutSeconds", self.idle_timeout),
        ] {
            if value < Duration::from_millis(10) {
                problems.push((
                    format!("{at}.{name}"),
                    format!("must be at least 0.01 s, got {} s", value.as_secs_f64()),
                ));
            }
        }
        problems
    }
}

/// The connection caps of a server's listeners, fitted under its open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The open-file limit (`ulimit -n`) the caps were fitted under.
    pub limit: u64,
    /// Most HTTP API connections at once, all its listeners together.
    pub api: usize,
    /// Most worker connections at once (0 without a worker port).
    pub workers: usize,
}

/// Why the configured caps do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the open-file limit is {limit} (ulimit -n): {wanted}, with {RESERVED_DESCRIPTORS} descriptors kept for the journal and component processes; raise the limit or lower the caps"
)]
pub struct BudgetError {
    /// The limit.
    pub limit: u64,
    /// What was asked for, as a sentence.
    pub wanted: String,
}

impl DescriptorBudget {
    /// Fits the caps under `limit`. An absent cap is derived from what the other leaves
    /// (the API three quarters, the workers a quarter when both are derived), never over
    /// its default maximum; a configured one is taken as it is, and refused when the caps
    /// and [`RESERVED_DESCRIPTORS`] together pass the limit. `workers` is `None` without a
    /// worker port.
    ///
    /// # Errors
    /// [`BudgetError`] with the numbers.
    pub fn fit(
        limit: u64,
        api: Option<usize>,
        workers: Option<Option<usize>>,
    ) -> Result<DescriptorBudget, BudgetError> {
        let spare =
            usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
        let refuse = |wanted: String| BudgetError { limit, wanted };
        if spare < 2 {
            return Err(refuse("no descriptor is left for connections".into()));
        }
        let (api, workers) = match (api, workers) {
            (api, None) => (api.unwrap_or(spare.min(DEFAULT_MAX_API_CONNECTIONS)), 0),
            (Some(api), Some(Some(workers))) => (api, workers),
            (Some(api), Some(None)) => (
                api,
                spare
                    .saturating_sub(api)
                    .clamp(1, DEFAULT_MAX_WORKER_CONNECTIONS),
            ),
            (None, Some(Some(workers))) => (
                spare
                    .saturating_sub(workers)
                    .clamp(1, DEFAULT_MAX_API_CONNECTIONS),
                workers,
            ),
            (None, Some(None)) => (
                (spare / 4 * 3).min(DEFAULT_MAX_API_CONNECTIONS),
                (spare / 4).clamp(1, DEFAULT_MAX_WORKER_CONNECTIONS),
            ),
        };
        if api.saturating_add(workers) > spare {
            return Err(refuse(format!(
                "{api} API connections and {workers} worker connections do not fit"
            )));
        }
        Ok(DescriptorBudget {
            limit,
            api,
            workers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_caps_leave_the_reserve_free_and_stop_at_their_maximum() {
        let b = DescriptorBudget::fit(1_024, None, Some(None)).unwrap();
        assert_eq!((b.api, b.workers), (384, 128));
        assert!(b.api + b.workers + RESERVED_DESCRIPTORS as usize <= 1_024);
        let b = DescriptorBudget::fit(1 << 20, None, Some(None)).unwrap();
        assert_eq!(
            (b.api, b.workers),
            (DEFAULT_MAX_API_CONNECTIONS, DEFAULT_MAX_WORKER_CONNECTIONS)
        );
        let b = DescriptorBudget::fit(1_024, None, None).unwrap();
        assert_eq!((b.api, b.workers), (512, 0));
    }

    #[test]
    fn a_configured_cap_is_kept_and_the_other_takes_what_is_left() {
        let b = DescriptorBudget::fit(1_024, Some(500), Some(None)).unwrap();
        assert_eq!((b.api, b.workers), (500, 12));
        let b = DescriptorBudget::fit(1_024, None, Some(Some(100))).unwrap();
        assert_eq!((b.api, b.workers), (412, 100));
    }

    #[test]
    fn caps_past_the_limit_are_refused_with_the_numbers() {
        let e = DescriptorBudget::fit(1_024, Some(1_000), None).unwrap_err();
        assert!(e.to_string().contains("open-file limit is 1024"), "{e}");
        assert!(e.to_string().contains("1000 API connections"), "{e}");
        assert!(DescriptorBudget::fit(300, None, None).is_err());
    }

    #[test]
    fn limits_below_ten_milliseconds_or_a_zero_cap_are_problems() {
        let limits = ConnectionLimits {
            max_connections: Some(0),
            header_read_timeout: Duration::ZERO,
            idle_timeout: Duration::from_secs(1),
        };
        let paths: Vec<String> = limits
            .problems("service.connections")
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            paths,
            [
                "service.connections.maxConnections",
                "service.connections.headerReadTimeoutSeconds"
            ]
        );
    }
}
