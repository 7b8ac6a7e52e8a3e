//! The engine configuration: one [`EngineConfig`], read from a YAML or JSON file and
//! flags by the binary (or built by an embedder), and passed down. No global statics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::definition::limits::DefinitionLimits;

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
}

/// Engine settings: read from a YAML or JSON file and flags by the binary, passed down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Grace period a cancelled attempt gets before it is abandoned (SEMANTICS.md §6).
    #[serde(with = "secs", rename = "cancelGraceSeconds")]
    pub cancel_grace: Duration,
    /// Finished runs kept for `status` and `events` queries.
    pub retained_runs: usize,
    /// Most node records (result entries) kept across those runs: past it the oldest
    /// finished runs are forgotten first, so big runs cannot pile up without bound. The
    /// newest finished run is always kept.
    pub retained_nodes: usize,
    /// Most nodes running at once across all runs.
    pub max_concurrent_nodes: Option<u32>,
    /// Most runs in progress at once; a submission past it is refused, never queued.
    pub max_active_runs: usize,
    /// Per-component limits, by component id, overriding the components' hints.
    pub components: BTreeMap<String, ComponentLimits>,
    /// Limits on definitions and on each node's output.
    pub limits: DefinitionLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cancel_grace: Duration::from_secs(5),
            retained_runs: 10_000,
            retained_nodes: 250_000,
            max_concurrent_nodes: None,
            max_active_runs: 5_000,
            components: BTreeMap::new(),
            limits: DefinitionLimits::default(),
        }
    }
}

/// `Duration` as fractional seconds in configuration files.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}
