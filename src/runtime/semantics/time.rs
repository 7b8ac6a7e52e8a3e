//! Time as the cores see it: a value the caller passes in, never a clock read.
//!
//! A [`Time`] is microseconds since the Unix epoch. The actors read the wall clock once
//! per message and hand it to the cores; the simulation in the tests advances a virtual
//! one; a journal replay feeds the times it recorded. Wall-clock time (not a monotonic
//! instant) because due times must keep their meaning across a restart.

use std::ops::Add;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::timestamp::Timestamp;

/// A point in time: microseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(u64);

impl Time {
    /// The epoch itself (where simulations start).
    pub const ZERO: Time = Time(0);

    /// A time `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time of a wall-clock instant (the epoch for instants before it).
    pub fn from_system_time(t: SystemTime) -> Time {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Time(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    /// The wall-clock instant.
    pub fn system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }

    /// The same instant to the millisecond, as events and results carry it.
    pub fn timestamp(self) -> Timestamp {
        Timestamp::from(self.system_time())
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_add_and_subtract_durations_and_saturate() {
        let t = Time::from_micros(1_000);
        assert_eq!((t + Duration::from_millis(2)).as_micros(), 3_000);
        assert_eq!(
            (t + Duration::from_millis(2)).since(t),
            Duration::from_millis(2)
        );
        assert_eq!(t.since(t + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            (Time::from_micros(u64::MAX) + Duration::from_secs(1)).as_micros(),
            u64::MAX
        );
    }

    #[test]
    fn a_time_round_trips_through_the_wall_clock() {
        let now = UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        let t = Time::from_system_time(now);
        assert_eq!(Time::from_system_time(t.system_time()), t);
    }
}
