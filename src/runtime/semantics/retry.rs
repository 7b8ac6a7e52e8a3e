//! Retry decisions and delays (docs/semantics.md §7). Pure: the random jitter sample is
//! passed in, so the same inputs always give the same delay.
//!
//! Whether a failed attempt is retried, in order of precedence:
//! 1. never when the attempts are used up (`maxAttempts`; ShipSec's 0 is unlimited);
//! 2. never for [`NEVER_RETRIED`] types (`InputError`, `ValidationError`: no retry can
//!    change the inputs), which a definition cannot override;
//! 3. never for a type listed in `nonRetryableErrorTypes`;
//! 4. as `errorTypePolicies.<type>.retryable` says, when it says;
//! 5. else as the component's error says (its `retryable` flag).
//!
//! The delay before the next attempt is `errorTypePolicies.<type>.retryDelayMs` when
//! given (exactly: no backoff growth, cap or jitter), else the backoff of §7.

use std::time::Duration;

use crate::runtime::components::{ComponentError, INPUT_ERROR, VALIDATION_ERROR};
use crate::runtime::definition::graph::RetryPolicy;

/// The source of retry jitter: a small seeded generator (SplitMix64) indexed by attempt,
/// so that the delay after attempt `n` of a node is a function of the run's seed, the
/// node and `n` alone. A replay, or a node respawned after a crash or a restart, draws the
/// same delays as the run it continues. Nothing here reads entropy.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator for `node` of a run seeded with `seed`.
    pub fn new(seed: u64, node: u32) -> Jitter {
        Jitter(seed ^ (u64::from(node).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The sample of the delay after attempt `attempt`, in `[0, 1)`.
    pub fn after(&self, attempt: u32) -> f64 {
        let mut z = self
            .0
            .wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits, as the fraction of a double.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Error types never retried, whatever a definition says.
pub const NEVER_RETRIED: [&str; 2] = [INPUT_ERROR, VALIDATION_ERROR];

/// Whether a failed attempt number `attempt` (from 1) is followed by another.
#[cfg(test)]
pub fn should_retry(policy: &RetryPolicy, attempt: u32, error: &ComponentError) -> bool {
    should_retry_beyond(policy, attempt, error, 0)
}

/// As [`should_retry`], with `extra` attempts beyond the policy's `max_attempts` (an
/// attempt lost to an engine restart: `resume.retryLostAttempts`).
pub fn should_retry_beyond(
    policy: &RetryPolicy,
    attempt: u32,
    error: &ComponentError,
    extra: u32,
) -> bool {
    let kind = error.error_type.as_str();
    if attempt >= policy.max_attempts.saturating_add(extra)
        || NEVER_RETRIED.contains(&kind)
        || policy.non_retryable_error_types.iter().any(|t| t == kind)
    {
        return false;
    }
    policy
        .error_types
        .get(kind)
        .and_then(|p| p.retryable)
        .unwrap_or(error.retryable)
}

/// The delay before attempt `attempt + 1` after `error`: the error type's own delay when
/// the policy gives one, else the backoff.
pub fn delay_after(
    policy: &RetryPolicy,
    attempt: u32,
    error: &ComponentError,
    sample: f64,
) -> Duration {
    match policy
        .error_types
        .get(&error.error_type)
        .and_then(|p| p.delay)
    {
        Some(delay) => delay,
        None => backoff(policy, attempt, sample),
    }
}

/// The backoff before attempt `attempt + 1`: `min(initial · coefficient^(attempt−1),
/// maximum)`, scaled into `[1 − jitter, 1]` by `sample` (a number in `[0, 1)`).
pub fn backoff(policy: &RetryPolicy, attempt: u32, sample: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(1000) as i32;
    let raw = policy.initial_interval.as_secs_f64() * policy.backoff_coefficient.powi(exponent);
    let capped = raw.min(policy.maximum_interval.as_secs_f64());
    let scale = 1.0 - policy.jitter * sample.clamp(0.0, 1.0);
    Duration::from_secs_f64((capped * scale).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn delays_grow_by_the_coefficient_and_stop_at_the_maximum() {
        let p = RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 3.0,
            maximum_interval: Duration::from_secs(20),
            ..policy(10)
        };
        let secs: Vec<f64> = (1..=5).map(|n| backoff(&p, n, 0.0).as_secs_f64()).collect();
        assert_eq!(secs, vec![1.0, 3.0, 9.0, 20.0, 20.0]);
    }

    #[test]
    fn jitter_scales_the_delay_down_by_at_most_its_fraction() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy(3)
        };
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(&p, 1, 0.5), Duration::from_millis(750));
    }

    #[test]
    fn retries_stop_at_max_attempts() {
        let e = ComponentError::retryable("X", "m");
        assert!(should_retry(&policy(3), 1, &e));
        assert!(should_retry(&policy(3), 2, &e));
        assert!(!should_retry(&policy(3), 3, &e));
        assert!(!should_retry(&policy(1), 1, &e));
    }

    #[test]
    fn non_retryable_errors_are_not_retried() {
        let p = RetryPolicy {
            non_retryable_error_types: vec!["AuthError".into()],
            ..policy(5)
        };
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable("AuthError", "m")
        ));
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable(INPUT_ERROR, "m")
        ));
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable(VALIDATION_ERROR, "m")
        ));
        assert!(!should_retry(&p, 1, &ComponentError::fatal("Other", "m")));
        assert!(should_retry(
            &p,
            1,
            &ComponentError::retryable("Other", "m")
        ));
    }

    fn with_types(types: &[(&str, Option<bool>, Option<u64>)]) -> RetryPolicy {
        let mut p = policy(5);
        for (t, retryable, ms) in types {
            let entry = crate::runtime::definition::graph::ErrorTypePolicy {
                retryable: *retryable,
                delay: ms.map(Duration::from_millis),
            };
            p.error_types.insert((*t).to_owned(), entry);
        }
        p
    }

    #[test]
    fn an_error_type_policy_overrides_the_components_flag_both_ways() {
        let p = with_types(&[
            ("RateLimitError", Some(true), None),
            ("Flaky", Some(false), None),
        ]);
        assert!(should_retry(
            &p,
            1,
            &ComponentError::fatal("RateLimitError", "m")
        ));
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable("Flaky", "m")
        ));
        assert!(should_retry(
            &p,
            1,
            &ComponentError::retryable("Other", "m")
        ));
    }

    #[test]
    fn never_retried_types_and_the_non_retryable_list_win_over_error_type_policies() {
        let mut p = with_types(&[(INPUT_ERROR, Some(true), None), ("Auth", Some(true), None)]);
        p.non_retryable_error_types = vec!["Auth".into()];
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable(INPUT_ERROR, "m")
        ));
        assert!(!should_retry(
            &p,
            1,
            &ComponentError::retryable("Auth", "m")
        ));
    }

    #[test]
    fn max_attempts_bounds_error_type_policies_too() {
        let p = with_types(&[("X", Some(true), None)]);
        assert!(should_retry(&p, 4, &ComponentError::fatal("X", "m")));
        assert!(!should_retry(&p, 5, &ComponentError::fatal("X", "m")));
    }

    #[test]
    fn an_error_types_delay_replaces_the_backoff_exactly() {
        let mut p = with_types(&[("RateLimitError", None, Some(5000))]);
        p.jitter = 1.0;
        let limited = ComponentError::retryable("RateLimitError", "m");
        assert_eq!(delay_after(&p, 3, &limited, 0.9), Duration::from_secs(5));
        let other = ComponentError::retryable("Other", "m");
        assert_eq!(delay_after(&p, 1, &other, 0.0), backoff(&p, 1, 0.0));
    }

    #[test]
    fn jitter_is_a_function_of_seed_node_and_attempt_and_stays_in_range() {
        let draw = |seed, node| {
            let j = Jitter::new(seed, node);
            (1..=1000).map(|n| j.after(n)).collect::<Vec<f64>>()
        };
        let a = draw(7, 3);
        assert_eq!(a, draw(7, 3));
        assert_ne!(a, draw(7, 4));
        assert_ne!(a, draw(8, 3));
        assert!(a.iter().all(|s| (0.0..1.0).contains(s)));
        // Drawn by attempt, not in sequence: a respawned node draws the same delays.
        assert_eq!(Jitter::new(7, 3).after(5), a[4]);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
