//! The actors' clock: the one place the engine reads the wall clock for its cores, once
//! per message. The cores themselves are given the time (`runtime::semantics::time`).

use std::time::SystemTime;

use crate::runtime::semantics::time::Time;

/// Now.
pub(crate) fn now() -> Time {
    Time::from_system_time(SystemTime::now())
}
