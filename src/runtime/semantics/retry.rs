//! Retry decisions and delays (SEMANTICS.md §7). Pure: the random jitter sample is
//! passed in, so the same inputs always give the same delay.

use std::time::Duration;

use crate::runtime::components::{ComponentError, INPUT_ERROR, VALIDATION_ERROR};
use crate::runtime::definition::graph::RetryPolicy;

/// Whether a failed attempt number `attempt` (from 1) is followed by another.
pub fn should_retry(policy: &RetryPolicy, attempt: u32, error: &ComponentError) -> bool {
    error.retryable
        && attempt < policy.max_attempts
        && error.error_type != INPUT_ERROR
        && error.error_type != VALIDATION_ERROR
        && !policy.non_retryable_error_types.contains(&error.error_type)
}

/// The delay before attempt `attempt + 1`: `min(initial · coefficient^(attempt−1), maximum)`,
/// scaled into `[1 − jitter, 1]` by `sample` (a number in `[0, 1)`).
pub fn delay_after(policy: &RetryPolicy, attempt: u32, sample: f64) -> Duration {
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
        let secs: Vec<f64> = (1..=5)
            .map(|n| delay_after(&p, n, 0.0).as_secs_f64())
            .collect();
        assert_eq!(secs, vec![1.0, 3.0, 9.0, 20.0, 20.0]);
    }

    #[test]
    fn jitter_scales_the_delay_down_by_at_most_its_fraction() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy(3)
        };
        assert_eq!(delay_after(&p, 1, 0.0), Duration::from_secs(1));
        assert_eq!(delay_after(&p, 1, 1.0), Duration::from_millis(500));
        assert_eq!(delay_after(&p, 1, 0.5), Duration::from_millis(750));
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
}
