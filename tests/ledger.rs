//! The process ledger (`runtime::components::ledger`): one directory per owner, what a
//! dead owner left recorded is killed by the next, and nothing else is.
//!
//! One test, its cases in sequence: a ledger's lock is shared for an instant with any
//! child the process forks, so a case reopening a ledger must not run beside another
//! case's spawns.

use std::path::PathBuf;
use std::process::{Child, Command};

use shipsec_orchestrator::runtime::components::ledger::{LedgerError, ProcessLedger};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A child killed when dropped (a failed assertion leaves no sleeper behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An attempt id of this test process only.
fn attempt(node: &str, n: u32) -> String {
    format!("ledger-test-{}/{node}/{n}", std::process::id())
}

/// The attempt files in `dir`.
fn records(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("attempt-"))
        .count()
}

fn a_second_opener_is_refused_while_the_first_holds_the_directory() {
    let dir = scratch("busy");
    let (first, sweep) = ProcessLedger::open(&dir).unwrap();
    assert_eq!(sweep.dir, dir);
    assert!(sweep.attempts.is_empty() && sweep.killed.is_empty());
    assert!(matches!(
        ProcessLedger::open(&dir),
        Err(LedgerError::Busy { .. })
    ));
    drop(first);
    ProcessLedger::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn entries_are_crossed_out_when_dropped() {
    let dir = scratch("entries");
    let (ledger, _) = ProcessLedger::open(&dir).unwrap();
    let a = ledger.enter(&attempt("a", 1)).unwrap();
    let b = ledger.enter(&attempt("b", 1)).unwrap();
    assert_eq!(records(&dir), 2);
    drop(a);
    assert_eq!(records(&dir), 1);
    drop(b);
    assert_eq!(records(&dir), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn the_sweep_kills_the_processes_of_recorded_attempts_and_only_those() {
    let dir = scratch("sweep");
    let (ledger, _) = ProcessLedger::open(&dir).unwrap();
    let left = attempt("left", 1);
    let entry = ledger.enter(&left).unwrap();
    let spawn = |id: &str| {
        Killed(
            Command::new("/bin/sleep")
                .arg("300")
                .env("SHIPSEC_ATTEMPT_ID", id)
                .spawn()
                .unwrap(),
        )
    };
    let mut recorded = spawn(&left);
    // An id the recorded one is a prefix of: not the same attempt.
    let mut other = spawn(&attempt("left", 10));
    // The owner dies without crossing its entry out.
    std::mem::forget(entry);
    drop(ledger);
    let (_, sweep) = ProcessLedger::open(&dir).unwrap();
    assert_eq!(sweep.attempts, vec![left.clone()]);
    assert_eq!(sweep.killed, vec![(recorded.0.id(), left)]);
    assert!(sweep.lingering.is_empty());
    assert!(
        recorded.0.wait().unwrap().code().is_none(),
        "killed by a signal"
    );
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "the other one runs on"
    );
    assert_eq!(records(&dir), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn abandoned_ledgers_are_swept_and_removed_and_held_ones_left() {
    let parent = scratch("abandoned");
    let (held, _) = ProcessLedger::open(&parent.join("alive")).unwrap();
    let (dead, _) = ProcessLedger::open(&parent.join("dead")).unwrap();
    let gone = attempt("gone", 1);
    std::mem::forget(dead.enter(&gone).unwrap());
    drop(dead);
    let (own, swept) = ProcessLedger::open_among(&parent, "new").unwrap();
    assert_eq!(swept.len(), 2);
    assert_eq!(swept[0].dir, parent.join("new"));
    assert!(swept[0].attempts.is_empty());
    assert_eq!(swept[1].dir, parent.join("dead"));
    assert_eq!(swept[1].attempts, vec![gone]);
    assert!(!parent.join("dead").exists());
    assert!(held.dir().exists() && own.dir().exists());
    let _ = std::fs::remove_dir_all(&parent);
}

#[test]
fn the_process_ledger() {
    a_second_opener_is_refused_while_the_first_holds_the_directory();
    entries_are_crossed_out_when_dropped();
    the_sweep_kills_the_processes_of_recorded_attempts_and_only_those();
    abandoned_ledgers_are_swept_and_removed_and_held_ones_left();
}
