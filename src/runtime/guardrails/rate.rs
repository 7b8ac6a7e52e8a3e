//! Rate limits (`{perSecond, burst}`, docs/semantics.md §8) as token buckets with time
//! passed in: a bucket never reads a clock and never sleeps; the slot book asks it when
//! its next token is there.

use std::time::{Duration, Instant};

/// A rate limit: `per_second` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained tokens per second (> 0).
    pub per_second: f64,
    /// Bucket size (≥ 1).
    pub burst: u32,
}

/// A token bucket with time passed in.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    pub(crate) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let cap = f64::from(self.rate.burst.max(1));
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(cap);
        self.at = now;
    }

    /// Follows a changed rate (the engine configuration of a component may differ per run).
    pub(crate) fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// Whether a whole token is there (after [`Bucket::refill`]).
    pub(crate) fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends one token.
    pub(crate) fn take_token(&mut self) {
        self.tokens -= 1.0;
    }

    /// When the next whole token is there (now, if it already is).
    pub(crate) fn ready_at(&self) -> Instant {
        if self.tokens >= 1.0 {
            return self.at;
        }
        let missing = 1.0 - self.tokens;
        self.at + Duration::from_secs_f64(missing / self.rate.per_second)
    }
}
