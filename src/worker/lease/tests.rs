//! The lease book's rules, by example and against random schedules of workers.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const LEASE: Duration = Duration::from_secs(10);

fn t(secs: u64) -> Time {
    Time::from_micros(secs * 1_000_000)
}

fn spec(pools: &[&str], slots: u32) -> WorkerSpec {
    WorkerSpec {
        pools: pools.iter().map(|p| Arc::from(*p)).collect(),
        slots,
    }
}

#[test]
fn a_worker_gets_attempts_of_its_pools_oldest_first_within_its_slots() {
    let mut book = LeaseBook::new(LEASE, 100);
    book.register("w".into(), spec(&["scan@default", "echo@default"], 2), t(0));
    book.submit("a".into(), "scan@default".into());
    book.submit("b".into(), "other@default".into());
    book.submit("c".into(), "echo@default".into());
    book.submit("d".into(), "scan@default".into());
    let got = book.poll("w", 5, t(1)).unwrap();
    assert_eq!(
        got,
        vec![
            Lease {
                attempt: "a".into(),
                fence: 100
            },
            Lease {
                attempt: "c".into(),
                fence: 101
            },
        ]
    );
    assert!(
        book.poll("w", 5, t(1)).unwrap().is_empty(),
        "both slots taken"
    );
    assert_eq!(
        book.complete("a", 100, Some("w")),
        Verdict::Accepted { worker: "w".into() }
    );
    assert_eq!(book.poll("w", 1, t(2)).unwrap()[0].attempt.as_ref(), "d");
    assert_eq!(book.waiting(), 1, "`b` waits for a worker of its pool");
}

#[test]
fn a_completion_counts_once_and_only_with_the_live_fence() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w".into(), spec(&["p"], 1), t(0));
    book.submit("a".into(), "p".into());
    let lease = book.poll("w", 1, t(0)).unwrap().remove(0);
    assert_eq!(book.complete("a", lease.fence + 1, None), Verdict::Stale);
    assert_eq!(
        book.complete("a", lease.fence, Some("intruder")),
        Verdict::Stale
    );
    assert_eq!(
        book.complete("a", lease.fence, Some("w")),
        Verdict::Accepted { worker: "w".into() }
    );
    assert_eq!(
        book.complete("a", lease.fence, Some("w")),
        Verdict::Repeated
    );
    assert_eq!(book.held("w"), 0);
}

#[test]
fn a_silent_worker_loses_its_attempts_and_their_fences_go_stale() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w1".into(), spec(&["p"], 4), t(0));
    book.register("w2".into(), spec(&["p"], 4), t(0));
    book.submit("a".into(), "p".into());
    let old = book.poll("w1", 4, t(0)).unwrap().remove(0);
    book.heartbeat("w2", &[], t(8)).unwrap();
    assert!(
        book.expire(t(10)).is_empty(),
        "a lease lasts its whole length"
    );
    let lost = book.expire(t(11));
    assert_eq!(lost.len(), 1);
    assert_eq!((&*lost[0].attempt, &*lost[0].worker), ("a", "w1"));
    assert!(
        lost[0].reason.contains("lost worker `w1`"),
        "{}",
        lost[0].reason
    );
    assert!(!book.is_registered("w1"));
    assert_eq!(book.complete("a", old.fence, Some("w1")), Verdict::Stale);
    let beat = book.heartbeat("w1", &[("a".into(), old.fence)], t(12));
    assert_eq!(beat, Err(UnknownWorker("w1".into())));
    // The engine retries it: a new attempt, a new fence, another worker.
    book.submit("a2".into(), "p".into());
    let new = book.poll("w2", 4, t(12)).unwrap().remove(0);
    assert!(new.fence > old.fence);
}

#[test]
fn a_lease_not_heartbeated_expires_while_its_worker_lives() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w".into(), spec(&["p"], 2), t(0));
    book.submit("a".into(), "p".into());
    book.submit("b".into(), "p".into());
    let leases = book.poll("w", 2, t(0)).unwrap();
    let a = (leases[0].attempt.clone(), leases[0].fence);
    // The worker reports only `a`: `b` is not renewed.
    for s in [4, 8, 12] {
        let beat = book.heartbeat("w", std::slice::from_ref(&a), t(s)).unwrap();
        assert!(beat.stale.is_empty() && beat.until == t(s + 10));
    }
    let lost = book.expire(t(12));
    assert_eq!(lost.iter().map(|l| &*l.attempt).collect::<Vec<_>>(), ["b"]);
    assert!(book.is_registered("w"));
    assert_eq!(book.held("w"), 1);
}

#[test]
fn cancellation_reaches_the_worker_in_its_heartbeat_and_withdrawal_makes_it_stale() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w".into(), spec(&["p"], 2), t(0));
    book.submit("a".into(), "p".into());
    book.submit("b".into(), "other".into());
    assert_eq!(book.cancel("b"), Cancelled::Waiting);
    assert_eq!(book.waiting(), 1, "only `a` waits");
    let lease = book.poll("w", 2, t(0)).unwrap().remove(0);
    assert_eq!(book.cancel("a"), Cancelled::Leased("w".into()));
    let held = [(lease.attempt.clone(), lease.fence)];
    let beat = book.heartbeat("w", &held, t(1)).unwrap();
    assert_eq!(beat.cancel, vec![Arc::from("a")]);
    assert!(book.withdraw("a"));
    let beat = book.heartbeat("w", &held, t(2)).unwrap();
    assert_eq!(beat.stale, vec![Arc::from("a")]);
    assert_eq!(book.cancel("a"), Cancelled::Unknown);
}

#[test]
fn what_the_book_remembers_keeps_the_newest_and_a_key_set_again_outlives_its_first_setting() {
    let mut recent = Recent::new(2);
    recent.insert("a".into(), 1);
    recent.insert("b".into(), 2);
    // Past the limit: the first setting of `a` goes, not `a` itself.
    recent.insert("a".into(), 3);
    assert_eq!((recent.get("a"), recent.get("b")), (Some(&3), Some(&2)));
    recent.insert("c".into(), 4);
    assert_eq!(recent.get("b"), None, "the oldest goes");
    assert_eq!(recent.remove("a"), Some(3));
    assert_eq!(recent.get("a"), None);
}

#[test]
fn the_retry_of_a_lost_attempt_goes_to_another_worker_while_one_has_a_free_slot() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w1".into(), spec(&["p"], 2), t(0));
    book.submit("run/n/1".into(), "p".into());
    book.submit("run/m/1".into(), "p".into());
    assert_eq!(book.poll("w1", 2, t(0)).unwrap().len(), 2);
    // w1 stops heartbeating its leases (while it lives on) and loses both.
    book.heartbeat("w1", &[], t(9)).unwrap();
    book.register("w2".into(), spec(&["p"], 1), t(9));
    let lost = book.expire(t(11));
    assert_eq!(lost.len(), 2, "{lost:?}");
    book.heartbeat("w1", &[], t(11)).unwrap();
    book.submit("run/n/2".into(), "p".into());
    book.submit("run/m/2".into(), "p".into());
    book.submit("run/fresh/1".into(), "p".into());
    // w1 polls first: it is passed the retries while w2 has its free slot, but takes the
    // attempt that avoids no one.
    let got = book.poll("w1", 2, t(11)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt.as_ref(), "run/fresh/1");
    assert_eq!(
        book.poll("w2", 1, t(11)).unwrap()[0].attempt.as_ref(),
        "run/n/2"
    );
    // w2 is full now: the last retry is w1's after all, rather than waiting.
    assert_eq!(
        book.poll("w1", 2, t(11)).unwrap()[0].attempt.as_ref(),
        "run/m/2"
    );
    assert_eq!(book.waiting(), 0);
}

#[test]
fn a_lost_attempt_s_retry_returns_to_the_only_worker_of_its_pool() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w".into(), spec(&["p"], 1), t(0));
    book.register("elsewhere".into(), spec(&["q"], 4), t(0));
    book.submit("run/n/1".into(), "p".into());
    book.poll("w", 1, t(0)).unwrap();
    let lost = book.register("w".into(), spec(&["p"], 1), t(1));
    assert_eq!(lost.len(), 1, "restarted");
    book.submit("run/n/2".into(), "p".into());
    assert_eq!(
        book.poll("w", 1, t(1)).unwrap()[0].attempt.as_ref(),
        "run/n/2"
    );
}

#[test]
fn a_restarted_worker_loses_what_it_held_and_a_draining_one_takes_nothing() {
    let mut book = LeaseBook::new(LEASE, 1);
    book.register("w".into(), spec(&["p"], 2), t(0));
    book.submit("a".into(), "p".into());
    book.poll("w", 2, t(0)).unwrap();
    let lost = book.register("w".into(), spec(&["p"], 3), t(1));
    assert_eq!(lost.len(), 1);
    assert!(
        lost[0].reason.contains("registered again"),
        "{}",
        lost[0].reason
    );
    assert_eq!(book.capacities().get("p"), Some(&3));
    book.submit("b".into(), "p".into());
    assert_eq!(book.drain("w", t(2)), Ok(0));
    assert!(book.poll("w", 3, t(2)).unwrap().is_empty());
    assert_eq!(book.capacities().get("p"), Some(&0));
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Step {
    Register(usize, u32),
    Submit(usize),
    Poll(usize, u32),
    Heartbeat(usize),
    /// Worker, index into the leases it was given (old ones included).
    Complete(usize, usize),
    Cancel(usize),
    Withdraw(usize),
    Drain(usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..3usize, 1..4u32).prop_map(|(w, s)| Step::Register(w, s)),
        3 => (0..2usize).prop_map(Step::Submit),
        3 => (0..3usize, 0..4u32).prop_map(|(w, f)| Step::Poll(w, f)),
        2 => (0..3usize).prop_map(Step::Heartbeat),
        3 => (0..3usize, 0..8usize).prop_map(|(w, i)| Step::Complete(w, i)),
        1 => (0..40usize).prop_map(Step::Cancel),
        1 => (0..40usize).prop_map(Step::Withdraw),
        1 => (0..3usize).prop_map(Step::Drain),
        2 => (1..8u64).prop_map(Step::Advance),
    ]
}

/// What the schedule has done, to check the book against.
#[derive(Default)]
struct Model {
    now: u64,
    submitted: u64,
    slots: HashMap<usize, u32>,
    /// Every lease each worker was given, in order.
    given: HashMap<usize, Vec<Lease>>,
    fences: HashSet<u64>,
    last_fence: u64,
    /// Attempts with a completion accepted.
    accepted: HashSet<Arc<str>>,
    /// Attempts that ended otherwise (lost, withdrawn, cancelled while waiting).
    ended: HashSet<Arc<str>>,
    /// `(attempt, fence)` whose lease was lost or withdrawn: never counted after.
    dead: HashSet<(Arc<str>, u64)>,
}

fn name(w: usize) -> Arc<str> {
    format!("w{w}").into()
}

/// Attempt `i`'s id: five nodes share the attempts, so a lost attempt's node comes back.
fn attempt_id(i: u64) -> Arc<str> {
    format!("run/n{}/{i}", i % 5).into()
}

impl Model {
    fn lose(&mut self, lost: Vec<Lost>) {
        for l in lost {
            assert!(
                !self.accepted.contains(&l.attempt),
                "lost after acceptance: {l:?}"
            );
            self.ended.insert(l.attempt.clone());
            self.kill(&l.attempt);
        }
    }

    fn kill(&mut self, attempt: &Arc<str>) {
        for lease in self.given.values().flatten() {
            if &lease.attempt == attempt {
                self.dead.insert((attempt.clone(), lease.fence));
            }
        }
    }

    fn apply(&mut self, book: &mut LeaseBook, step: Step) {
        let now = t(self.now);
        match step {
            Step::Register(w, slots) => {
                self.slots.insert(w, slots);
                let lost = book.register(name(w), spec(&["p", "q"], slots), now);
                self.lose(lost);
            }
            Step::Submit(pool) => {
                self.submitted += 1;
                book.submit(
                    attempt_id(self.submitted),
                    if pool == 0 { "p" } else { "q" }.into(),
                );
            }
            Step::Poll(w, free) => {
                let room = book.workers.get(&name(w)).map_or(0, |e| {
                    e.spec.slots.saturating_sub(e.held.len() as u32) * u32::from(!e.draining)
                });
                if let Ok(leases) = book.poll(&name(w), free, now) {
                    assert!(leases.len() as u32 <= free);
                    if (leases.len() as u32) < free.min(room) {
                        // Short of what it asked: every attempt left avoids it, for a
                        // worker with a free slot.
                        let (me, pools) = (name(w), [Arc::from("p"), Arc::from("q")]);
                        for pool in &pools {
                            for a in book.waiting.get(pool).into_iter().flatten() {
                                assert_eq!(book.attempts[a].avoid.as_ref(), Some(&me), "{a}");
                                assert!(book.others_free(pool, &me), "{a} left idle");
                            }
                        }
                    }
                    for lease in leases {
                        assert!(self.fences.insert(lease.fence), "fence given twice");
                        assert!(lease.fence > self.last_fence, "fences only grow");
                        self.last_fence = lease.fence;
                        self.given.entry(w).or_default().push(lease);
                    }
                }
            }
            Step::Heartbeat(w) => {
                let held: Vec<_> = self
                    .given
                    .get(&w)
                    .into_iter()
                    .flatten()
                    .map(|l| (l.attempt.clone(), l.fence))
                    .collect();
                if let Ok(beat) = book.heartbeat(&name(w), &held, now) {
                    for (a, f) in &held {
                        if self.dead.contains(&(a.clone(), *f)) || self.accepted.contains(a) {
                            assert!(beat.stale.contains(a), "{a} should be stale");
                        }
                    }
                }
            }
            Step::Complete(w, i) => {
                let Some(lease) = self.given.get(&w).and_then(|g| g.get(i)).cloned() else {
                    return;
                };
                let verdict = book.complete(&lease.attempt, lease.fence, Some(&name(w)));
                let dead = self.dead.contains(&(lease.attempt.clone(), lease.fence));
                match verdict {
                    Verdict::Accepted { worker } => {
                        assert_eq!(worker, name(w));
                        assert!(!dead, "a dead lease was counted: {lease:?}");
                        assert!(
                            self.accepted.insert(lease.attempt.clone()),
                            "two completions accepted for {}",
                            lease.attempt
                        );
                        assert!(!self.ended.contains(&lease.attempt));
                    }
                    Verdict::Repeated => assert!(self.accepted.contains(&lease.attempt)),
                    Verdict::Stale => {}
                }
            }
            Step::Cancel(i) => {
                let attempt = attempt_id(i as u64);
                if book.cancel(&attempt) == Cancelled::Waiting {
                    self.ended.insert(attempt);
                }
            }
            Step::Withdraw(i) => {
                let attempt = attempt_id(i as u64);
                if book.withdraw(&attempt) {
                    self.ended.insert(attempt.clone());
                    self.kill(&attempt);
                }
            }
            Step::Drain(w) => {
                let _ = book.drain(&name(w), now);
            }
            Step::Advance(secs) => {
                self.now += secs;
                let lost = book.expire(t(self.now));
                self.lose(lost);
            }
        }
        for (w, slots) in &self.slots {
            assert!(
                book.held(&name(*w)) as u32 <= *slots,
                "w{w} holds more than its slots"
            );
        }
        assert!(self.accepted.is_disjoint(&self.ended));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any schedule of registrations, polls, heartbeats, completions (old fences
    /// included), cancellations, drains and silences: no worker holds more than its
    /// slots, fences are never given twice, a lost or withdrawn lease is never counted,
    /// and no attempt has two accepted completions.
    #[test]
    fn leases_and_fences_hold_under_any_schedule(steps in proptest::collection::vec(step(), 1..80)) {
        let mut book = LeaseBook::new(LEASE, 1);
        let mut model = Model::default();
        for s in steps {
            model.apply(&mut book, s);
        }
        // Whatever is left: every attempt either ended once or is still in the book.
        let in_book = book.attempts.len() as u64;
        let done = (model.accepted.len() + model.ended.len()) as u64;
        prop_assert_eq!(in_book + done, model.submitted);
    }
}
