//! A crash of the process between two of the journal's writes: [`CrashAt`], the
//! journal's [`WriteFaults`] for tests, lets `after` ops be stored, then kills the
//! "process" in the middle of the batch that would store more. Any store can sit under
//! it; the crash tests use the memory store and hand a copy of what survived
//! (`MemoryStore::recovered`) to the next engine.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::runtime::journal::{ProcessDeath, WriteFaults};

/// Kills the journal's "process" once `after` ops are stored.
#[derive(Debug)]
pub struct CrashAt {
    after: u64,
    acked: bool,
    /// Ops stored so far.
    stored: Mutex<u64>,
    crashed: watch::Sender<bool>,
}

impl CrashAt {
    /// Lets `after` ops be stored, then dies; `acked`: whether the process lives to
    /// acknowledge the ops of the batch it dies in that were stored (they go out just
    /// after the crash is signalled, as a real process could answer and then die).
    pub fn new(after: u64, acked: bool) -> CrashAt {
        CrashAt {
            after,
            acked,
            stored: Mutex::new(0),
            crashed: watch::channel(false).0,
        }
    }

    /// Becomes `true` when the crash happens.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.crashed.subscribe()
    }

    /// Whether the crash happened.
    pub fn has_crashed(&self) -> bool {
        *self.crashed.borrow()
    }
}

impl WriteFaults for CrashAt {
    fn before_commit(&self, ops: usize) -> Option<ProcessDeath> {
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.after.saturating_sub(*stored);
        if (ops as u64) <= room {
            *stored += ops as u64;
            return None;
        }
        *stored = self.after;
        Some(ProcessDeath {
            stored: room as usize,
            acked: self.acked,
        })
    }

    fn died(&self) {
        // Only now: a test that saw the crash copies what the store kept, and the cut
        // batch's prefix must be in it.
        self.crashed.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::journal::store::{JournalStore, MemoryStore, Op};
    use crate::runtime::journal::{Durability, Journal};

    fn put(seq: u64) -> Op {
        Op::PutFact {
            run_id: "a".into(),
            seq,
            value: vec![seq as u8],
        }
    }

    #[test]
    fn the_death_cuts_the_batch_that_crosses_it() {
        let crash = CrashAt::new(3, false);
        assert_eq!(crash.before_commit(2), None);
        assert_eq!(
            crash.before_commit(2),
            Some(ProcessDeath {
                stored: 1,
                acked: false
            })
        );
        assert!(!crash.has_crashed(), "not before the writer says it died");
        crash.died();
        assert!(crash.has_crashed());
    }

    #[test]
    fn a_journal_that_died_stores_its_prefix_and_nothing_after() {
        let store = Arc::new(MemoryStore::new());
        let crash = Arc::new(CrashAt::new(3, false));
        let journal = Journal::with_faults(store.clone(), Durability::Fsync, crash.clone());
        for seq in 1..=5 {
            journal.append(put(seq), None);
        }
        journal.close();
        assert!(crash.has_crashed());
        assert_eq!(store.ops(), 3);
        assert_eq!(store.facts("a").unwrap().len(), 3);
    }
}
