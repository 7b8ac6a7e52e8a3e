//! The engine configuration: one [`EngineConfig`], read from a YAML or JSON file and
//! flags by the binary (or built by an embedder), and passed down. No global statics.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::components::registry::{ComponentRegistry, DEFAULT_QUEUE};
use crate::runtime::definition::RunnerKindDef;
use crate::runtime::definition::limits::DefinitionLimits;
use crate::runtime::definition::validate::Problem;
use crate::runtime::guardrails::connections::ConnectionLimits;
use crate::runtime::guardrails::service::ServiceConfig;
use crate::runtime::journal::JournalConfig;

/// A rate limit in configuration form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained attempts per second (> 0).
    pub per_second: f64,
    /// Attempts that may start at once after a quiet period (≥ 1).
    pub burst: u32,
}

/// Per-component overrides of the component's own hints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentLimits {
    /// Most attempts of the component running at once, engine-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Rate limit of the component's attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// `remote`: every attempt of the component runs on a worker (`shipsec serve
    /// --worker-listen`), wherever a definition uses it; the component need not exist in
    /// this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerKindDef>,
    /// The workers' queue for a remote component (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// What a run does with the attempts an engine or worker death took (`resume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// Extra tries an attempt lost to an engine death (found on resume) or to its worker's
    /// death (its lease expired, its worker gone) gets beyond the node's own retry
    /// budget: such a loss is retried while its attempt number is below the policy's
    /// `maxAttempts` plus this, an extra try at once (no backoff). 0 keeps the node's budget alone (a node without a retry
    /// policy then fails with `CrashError`). At least once: a component's side effects
    /// may happen twice, under the same `SHIPSEC_ATTEMPT_ID`.
    pub retry_lost_attempts: u32,
}

impl Default for ResumeConfig {
    fn default() -> ResumeConfig {
        ResumeConfig {
            retry_lost_attempts: 1,
        }
    }
}

/// How human-input gates wait (`gates:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GateConfig {
    /// How long a gate whose component set no timeout waits before it fails with
    /// `TimeoutError`: 7 days unless set; 0 means no limit, and must be said explicitly.
    pub default_timeout_seconds: u64,
}

impl Default for GateConfig {
    fn default() -> GateConfig {
        GateConfig {
            default_timeout_seconds: 7 * 86_400,
        }
    }
}

impl GateConfig {
    /// The default timeout (`None`: no limit).
    pub fn default_timeout(&self) -> Option<Duration> {
        (self.default_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.default_timeout_seconds))
    }
}

/// How the coordinator keeps track of remote workers (`workers:` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// How often a worker heartbeats the attempts it holds.
    #[serde(with = "secs", rename = "heartbeatSeconds")]
    pub heartbeat: Duration,
    /// How long an attempt's lease (and a worker's registration) lasts without a
    /// heartbeat: past it the attempt fails with `CrashError` and goes out again.
    #[serde(with = "secs", rename = "leaseSeconds")]
    pub lease: Duration,
    /// What the worker port lets a peer hold: connections, header and idle timeouts.
    pub connections: ConnectionLimits,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Engine settings: read from a YAML or JSON file and flags by the binary, passed down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Grace period a cancelled attempt gets before it is abandoned (docs/semantics.md §6).
    #[serde(with = "secs", rename = "cancelGraceSeconds")]
    pub cancel_grace: Duration,
    /// Finished runs kept for `status` and `events` queries.
    pub retained_runs: usize,
    /// Most node records (result entries) kept across those runs: past it the oldest
    /// finished runs are let go first, so big runs cannot pile up without bound (with a
    /// journal, one let go is read back from it when asked for). The newest finished run
    /// is always kept.
    pub retained_nodes: usize,
    /// Most bytes those runs' results and traces take (as JSON, inputs and outputs
    /// included): past it the oldest finished runs are let go first (with a journal, read
    /// back from it when asked for). The newest finished run is always kept.
    pub retained_bytes: usize,
    /// Most nodes running at once across all runs.
    pub max_concurrent_nodes: Option<u32>,
    /// Most runs in progress at once; a submission past it is refused, never queued.
    pub max_active_runs: usize,
    /// Per-component limits, by component id, overriding the components' hints.
    pub components: BTreeMap<String, ComponentLimits>,
    /// Limits on definitions and on each node's output.
    pub limits: DefinitionLimits,
    /// The run journal (none unless `journal.dataDir` is set).
    pub journal: JournalConfig,
    /// What `shipsec serve` lets its clients do.
    pub service: ServiceConfig,
    /// Remote workers' heartbeats and leases.
    pub workers: WorkerConfig,
    /// What a run resumed after an engine death does with the attempts it lost.
    pub resume: ResumeConfig,
    /// How human-input gates wait.
    pub gates: GateConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cancel_grace: Duration::from_secs(5),
            retained_runs: 10_000,
            retained_nodes: 250_000,
            retained_bytes: 256 << 20,
            max_concurrent_nodes: None,
            max_active_runs: 5_000,
            components: BTreeMap::new(),
            limits: DefinitionLimits::default(),
            journal: JournalConfig::default(),
            service: ServiceConfig::default(),
            workers: WorkerConfig::default(),
            resume: ResumeConfig::default(),
            gates: GateConfig::default(),
        }
    }
}

/// `Duration` as fractional seconds in configuration files.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl EngineConfig {
    /// The components the configuration runs on workers, with their queue.
    pub fn remote_components(&self) -> BTreeMap<String, String> {
        self.components
            .iter()
            .filter(|(_, l)| l.runner == Some(RunnerKindDef::Remote))
            .map(|(id, l)| {
                let queue = l.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
                (id.clone(), queue.to_owned())
            })
            .collect()
    }
}

/// `components.<id>.runner` and `.queue`: only `remote` may be configured, with an
/// optional non-empty queue, on an engine that has workers.
fn check_runner(
    at: &str,
    limits: &ComponentLimits,
    registry: &ComponentRegistry,
    problem: &mut impl FnMut(String, String),
) {
    match limits.runner {
        Some(RunnerKindDef::Remote) if registry.remote().is_none() => problem(
            format!("{at}.runner"),
            "remote components need workers: this engine has none (start it with `shipsec serve --worker-listen ADDR`)".into(),
        ),
        Some(RunnerKindDef::Remote) | None => {}
        Some(_) => problem(
            format!("{at}.runner"),
            "only `remote` may be configured: a component runs where it was built to, unless it runs on workers".into(),
        ),
    }
    match (&limits.queue, limits.runner) {
        (Some(q), _) if q.is_empty() => {
            problem(format!("{at}.queue"), "must not be empty".into());
        }
        (Some(_), Some(RunnerKindDef::Remote)) | (None, _) => {}
        (Some(_), _) => problem(
            format!("{at}.queue"),
            "a queue is for remote components: set `runner: remote`".into(),
        ),
    }
}

/// Longest grace period a configuration may give (a day).
pub const MAX_CANCEL_GRACE: Duration = Duration::from_secs(86_400);

/// Largest rate (attempts a second) or burst a configuration may give.
const MAX_RATE: f64 = 1.0e9;

/// The bounds of a validated configuration that must be at least 1, typed so: what
/// [`EngineConfig::validate`] gives the engine, which never sees a zero cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    /// `maxActiveRuns`.
    pub max_active_runs: NonZeroUsize,
    /// `retainedRuns`.
    pub retained_runs: NonZeroUsize,
    /// `retainedNodes`.
    pub retained_nodes: NonZeroUsize,
    /// `retainedBytes`.
    pub retained_bytes: NonZeroUsize,
    /// `maxConcurrentNodes`, when capped.
    pub max_concurrent_nodes: Option<NonZeroU32>,
    /// `journal.retainedRuns`.
    pub journal_retained_runs: NonZeroUsize,
}

/// A configuration that cannot run an engine: every problem, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in field order.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid engine configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl EngineConfig {
    /// Checks every number against its range, and every per-component entry against the
    /// components the engine knows, reporting every problem at once. A value that passes
    /// cannot stop the engine: a zero cap would hold every node QUEUED forever, a zero
    /// rate would never give a token.
    ///
    /// Returns its bounds that must be at least 1, typed so.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem with its path.
    pub fn validate(&self, registry: &ComponentRegistry) -> Result<Capacities, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| problems.push(Problem { path, message });
        if self.cancel_grace > MAX_CANCEL_GRACE {
            problem(
                "cancelGraceSeconds".into(),
                format!(
                    "must be at most {} s, got {} s",
                    MAX_CANCEL_GRACE.as_secs(),
                    self.cancel_grace.as_secs_f64()
                ),
            );
        }
        for (path, value) in [
            ("workers.heartbeatSeconds", self.workers.heartbeat),
            ("service.keepAliveSeconds", self.service.keep_alive),
            (
                "service.requestTimeoutSeconds",
                self.service.request_timeout,
            ),
        ] {
            if value < Duration::from_millis(10) {
                problem(
                    path.into(),
                    format!("must be at least 0.01 s, got {} s", value.as_secs_f64()),
                );
            }
        }
        for (at, limits) in [
            ("service.connections", &self.service.connections),
            ("workers.connections", &self.workers.connections),
        ] {
            for (path, message) in limits.problems(at) {
                problem(path, message);
            }
        }
        if self.workers.lease <= self.workers.heartbeat {
            problem(
                "workers.leaseSeconds".into(),
                format!(
                    "must be longer than workers.heartbeatSeconds ({} s), got {} s",
                    self.workers.heartbeat.as_secs_f64(),
                    self.workers.lease.as_secs_f64()
                ),
            );
        }
        let mut at_least_one = |path: &str, value: usize| {
            let typed = NonZeroUsize::new(value);
            if typed.is_none() {
                problem(path.into(), "must be at least 1, got 0".into());
            }
            typed
        };
        // In field order, as the problems are listed.
        let retained_runs = at_least_one("retainedRuns", self.retained_runs);
        let retained_nodes = at_least_one("retainedNodes", self.retained_nodes);
        let retained_bytes = at_least_one("retainedBytes", self.retained_bytes);
        // `Some(None)`: no cap; `None`: a zero cap, refused.
        let max_concurrent_nodes = match self.max_concurrent_nodes {
            None => Some(None),
            Some(cap) => at_least_one("maxConcurrentNodes", cap as usize)
                .and(NonZeroU32::new(cap))
                .map(Some),
        };
        let max_active_runs = at_least_one("maxActiveRuns", self.max_active_runs);
        let journal_retained_runs =
            at_least_one("journal.retainedRuns", self.journal.retained_runs);
        for (path, value) in [
            (
                "limits.maxDefinitionBytes",
                self.limits.max_definition_bytes,
            ),
            ("limits.maxNodes", self.limits.max_nodes),
            ("limits.maxStringBytes", self.limits.max_string_bytes),
            ("limits.maxNestingDepth", self.limits.max_nesting_depth),
            ("limits.maxOutputBytes", self.limits.max_output_bytes),
        ] {
            at_least_one(path, value);
        }
        for (id, limits) in &self.components {
            let at = format!("components.{id}");
            let remote = limits.runner == Some(RunnerKindDef::Remote);
            check_runner(&at, limits, registry, &mut problem);
            if !remote && registry.get(id).is_none() {
                problem(
                    at.clone(),
                    format!(
                        "no component `{id}` is registered (known: {})",
                        registry.ids().join(", ")
                    ),
                );
            }
            if limits.max_concurrency == Some(0) {
                problem(
                    format!("{at}.maxConcurrency"),
                    "must be at least 1, got 0".into(),
                );
            }
            if let Some(rate) = limits.rate_limit {
                let ok = rate.per_second.is_finite()
                    && rate.per_second > 0.0
                    && rate.per_second <= MAX_RATE;
                if !ok {
                    problem(
                        format!("{at}.rateLimit.perSecond"),
                        format!(
                            "must be a number above 0 and at most 1e9, got {}",
                            rate.per_second
                        ),
                    );
                }
                if rate.burst == 0 {
                    problem(
                        format!("{at}.rateLimit.burst"),
                        "must be at least 1, got 0".into(),
                    );
                }
            }
        }
        let capacities = || {
            Some(Capacities {
                max_active_runs: max_active_runs?,
                retained_runs: retained_runs?,
                retained_nodes: retained_nodes?,
                retained_bytes: retained_bytes?,
                max_concurrent_nodes: max_concurrent_nodes?,
                journal_retained_runs: journal_retained_runs?,
            })
        };
        match capacities() {
            Some(capacities) if problems.is_empty() => Ok(capacities),
            _ => Err(ConfigError { problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_configuration_gives_its_bounds_typed_and_a_zero_gives_none() {
        let registry = ComponentRegistry::with_builtins();
        let config = EngineConfig {
            max_concurrent_nodes: Some(8),
            ..EngineConfig::default()
        };
        let capacities = config.validate(&registry).expect("the defaults are valid");
        assert_eq!(capacities.max_active_runs.get(), config.max_active_runs);
        assert_eq!(capacities.retained_runs.get(), config.retained_runs);
        assert_eq!(capacities.retained_nodes.get(), config.retained_nodes);
        assert_eq!(capacities.retained_bytes.get(), config.retained_bytes);
        assert_eq!(
            capacities.journal_retained_runs.get(),
            config.journal.retained_runs
        );
        assert_eq!(
            capacities.max_concurrent_nodes.map(NonZeroU32::get),
            Some(8)
        );
        let zero = EngineConfig {
            retained_bytes: 0,
            journal: JournalConfig {
                retained_runs: 0,
                ..JournalConfig::default()
            },
            ..EngineConfig::default()
        };
        let paths: Vec<String> = zero
            .validate(&registry)
            .expect_err("zeros are refused")
            .problems
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, ["retainedBytes", "journal.retainedRuns"]);
    }
}
