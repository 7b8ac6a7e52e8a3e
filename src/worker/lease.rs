//! Leases and fences of remote attempts, as a pure state machine: no tokio, no clock.
//!
//! The coordinator's [`LeaseBook`] knows the registered workers (their pools and slots),
//! the attempts waiting for one, and the lease of each attempt a worker holds. Every
//! lease carries a fence, a number never given out twice (the book starts from a number
//! its owner chooses, above any earlier book's); a completion is counted only when it
//! carries the fence of the attempt's live lease, so **at most one completion per attempt
//! is accepted**. A worker heard from (register, poll, heartbeat) stays registered for one
//! lease; an attempt stays leased for one lease past its last heartbeat. Past either,
//! [`LeaseBook::expire`] ends the attempts as lost, and their fences are stale from then
//! on. A worker is never given more attempts than its free slots. The next attempt of a
//! node whose attempt was lost goes preferably to another worker: the worker that lost it
//! takes it only while no other worker of its pool has a free slot.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::semantics::attempt::AttemptId;
use crate::runtime::semantics::time::Time;

/// Completions remembered after their acceptance, so that a repeat is recognised.
const REMEMBERED_COMPLETIONS: usize = 100_000;

/// Losses remembered (a node's lost attempt and its worker) until the node's next attempt
/// is submitted; a node that is not retried is forgotten once this many came after it.
const REMEMBERED_LOSSES: usize = 10_000;

/// What a worker registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// The pools (`<componentId>@<queue>`) it serves.
    pub pools: Vec<Arc<str>>,
    /// Attempts it runs at once.
    pub slots: u32,
}

/// A lease given to a worker: run this attempt, complete it with this fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The attempt's id.
    pub attempt: Arc<str>,
    /// Its fence.
    pub fence: u64,
}

/// An attempt that ended without a completion: its worker was lost (or replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The attempt's id.
    pub attempt: Arc<str>,
    /// The worker that held it.
    pub worker: Arc<str>,
    /// Why it is lost, for the attempt's `CrashError`.
    pub reason: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Beat {
    /// Attempts to cancel.
    pub cancel: Vec<Arc<str>>,
    /// Attempts whose lease is gone (or whose fence is old): stop them, do not complete.
    pub stale: Vec<Arc<str>>,
    /// Leases renewed last until then.
    pub until: Time,
}

/// A completion's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: the attempt's outcome; its worker is named.
    Accepted {
        /// The worker that held the lease.
        worker: Arc<str>,
    },
    /// The completion accepted already, sent again.
    Repeated,
    /// Not counted: no live lease has this fence.
    Stale,
}

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The attempt had no worker yet: it is gone.
    Waiting,
    /// A worker holds it: it hears of the cancellation in its next heartbeat answer.
    Leased(Arc<str>),
    /// The book does not know it (ended, withdrawn or never submitted).
    Unknown,
}

/// A call from a worker the book does not know (never registered, or expired).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker `{0}` is not registered (or its registration expired): register again")]
pub struct UnknownWorker(pub Arc<str>);

#[derive(Debug)]
struct WorkerEntry {
    spec: WorkerSpec,
    held: BTreeSet<Arc<str>>,
    seen: Time,
    draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Leased {
        worker: Arc<str>,
        fence: u64,
        until: Time,
    },
}

#[derive(Debug)]
struct AttemptEntry {
    pool: Arc<str>,
    /// Submission order: the oldest waiting attempt goes out first.
    seq: u64,
    state: State,
    cancel: bool,
    /// The worker that lost the node's previous attempt: it takes this one only when no
    /// other can.
    avoid: Option<Arc<str>>,
}

/// The coordinator's book of workers, waiting attempts and leases.
#[derive(Debug)]
pub struct LeaseBook {
    lease: Duration,
    next_fence: u64,
    next_seq: u64,
    workers: HashMap<Arc<str>, WorkerEntry>,
    attempts: HashMap<Arc<str>, AttemptEntry>,
    waiting: HashMap<Arc<str>, VecDeque<Arc<str>>>,
    /// The fences of accepted completions, by attempt.
    accepted: Recent<u64>,
    /// The workers that lost nodes' (`<run>/<node ref>`) last attempts.
    lost_by: Recent<Arc<str>>,
}

/// Values by key, the newest `limit` insertions kept (a key set again counts from then).
#[derive(Debug)]
struct Recent<V> {
    limit: usize,
    next: u64,
    /// Keys in insertion order, each with its insertion's number.
    order: VecDeque<(Arc<str>, u64)>,
    values: HashMap<Arc<str>, (V, u64)>,
}

impl<V> Recent<V> {
    fn new(limit: usize) -> Recent<V> {
        Recent {
            limit,
            next: 0,
            order: VecDeque::new(),
            values: HashMap::new(),
        }
    }

    fn insert(&mut self, key: Arc<str>, value: V) {
        let stamp = self.next;
        self.next += 1;
        self.values.insert(key.clone(), (value, stamp));
        self.order.push_back((key, stamp));
        while self.order.len() > self.limit {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            // Only the insertion it records: the key may have been set again since.
            if self.values.get(&old).is_some_and(|(_, s)| *s == stamp) {
                self.values.remove(&old);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.values.get(key).map(|(v, _)| v)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.values.remove(key).map(|(v, _)| v)
    }
}

impl LeaseBook {
    /// An empty book whose leases last `lease` and whose fences start at `first_fence`
    /// (above every fence an earlier book gave out: the coordinator passes its start time
    /// in microseconds).
    pub fn new(lease: Duration, first_fence: u64) -> LeaseBook {
        LeaseBook {
            lease,
            next_fence: first_fence.max(1),
            next_seq: 0,
            workers: HashMap::new(),
            attempts: HashMap::new(),
            waiting: HashMap::new(),
            accepted: Recent::new(REMEMBERED_COMPLETIONS),
            lost_by: Recent::new(REMEMBERED_LOSSES),
        }
    }

    /// Registers `worker`. A worker registering again (restarted) holds nothing any more:
    /// the attempts of its earlier registration are lost.
    pub fn register(&mut self, worker: Arc<str>, spec: WorkerSpec, now: Time) -> Vec<Lost> {
        let lost = match self.workers.remove(&worker) {
            Some(old) => self.lose_all(&worker, old, "registered again (restarted)"),
            None => Vec::new(),
        };
        self.note_losses(&lost);
        let entry = WorkerEntry {
            spec,
            held: BTreeSet::new(),
            seen: now,
            draining: false,
        };
        self.workers.insert(worker, entry);
        lost
    }

    /// Queues an attempt for a worker of `pool`. Submitting it again changes nothing. An
    /// attempt id `<run>/<node ref>/<attempt>` whose node lost its previous attempt
    /// avoids the worker that lost it.
    pub fn submit(&mut self, attempt: Arc<str>, pool: Arc<str>) {
        if self.attempts.contains_key(&attempt) {
            return;
        }
        let avoid = AttemptId::parse(&attempt).and_then(|id| self.lost_by.remove(id.node_key()));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting
            .entry(pool.clone())
            .or_default()
            .push_back(attempt.clone());
        let entry = AttemptEntry {
            pool,
            seq,
            state: State::Waiting,
            cancel: false,
            avoid,
        };
        self.attempts.insert(attempt, entry);
    }

    /// Up to `free` attempts for `worker` (never past its slots), oldest first, each with
    /// a new fence; an attempt avoiding `worker` is left to another worker of its pool
    /// with a free slot, when there is one. A draining worker gets none.
    ///
    /// # Errors
    /// [`UnknownWorker`] when `worker` is not registered.
    pub fn poll(
        &mut self,
        worker: &str,
        free: u32,
        now: Time,
    ) -> Result<Vec<Lease>, UnknownWorker> {
        let until = now + self.lease;
        let entry = self.worker_mut(worker, now)?;
        if entry.draining {
            return Ok(Vec::new());
        }
        let room = entry.spec.slots.saturating_sub(entry.held.len() as u32);
        let pools = entry.spec.pools.clone();
        let name = self.worker_name(worker);
        let mut leases = Vec::new();
        while (leases.len() as u32) < free.min(room) {
            let Some(attempt) = self.oldest_waiting(&pools, &name) else {
                break;
            };
            let fence = self.next_fence;
            self.next_fence += 1;
            if let Some(a) = self.attempts.get_mut(&attempt) {
                a.state = State::Leased {
                    worker: name.clone(),
                    fence,
                    until,
                };
            }
            if let Some(w) = self.workers.get_mut(worker) {
                w.held.insert(attempt.clone());
            }
            leases.push(Lease { attempt, fence });
        }
        Ok(leases)
    }

    /// Renews the leases `worker` reports holding (`(attempt, fence)`); the answer names
    /// those to cancel and those that are stale (ended, reassigned, or of an old fence).
    ///
    /// # Errors
    /// [`UnknownWorker`] when `worker` is not registered: everything it holds is stale.
    pub fn heartbeat(
        &mut self,
        worker: &str,
        held: &[(Arc<str>, u64)],
        now: Time,
    ) -> Result<Beat, UnknownWorker> {
        let until = now + self.lease;
        self.worker_mut(worker, now)?;
        let mut beat = Beat {
            until,
            ..Beat::default()
        };
        for (attempt, fence) in held {
            match self.attempts.get_mut(attempt) {
                Some(AttemptEntry {
                    state:
                        State::Leased {
                            worker: w,
                            fence: f,
                            until: u,
                        },
                    cancel,
                    ..
                }) if &**w == worker && f == fence => {
                    *u = until;
                    if *cancel {
                        beat.cancel.push(attempt.clone());
                    }
                }
                _ => beat.stale.push(attempt.clone()),
            }
        }
        Ok(beat)
    }

    /// A completion of `attempt` with `fence` from `worker` (`None`: whoever holds it).
    pub fn complete(&mut self, attempt: &str, fence: u64, worker: Option<&str>) -> Verdict {
        if self.accepted.get(attempt) == Some(&fence) {
            return Verdict::Repeated;
        }
        let holder = match self.attempts.get(attempt).map(|a| &a.state) {
            Some(State::Leased {
                worker: w,
                fence: f,
                ..
            }) if *f == fence && worker.is_none_or(|c| c == &**w) => w.clone(),
            _ => return Verdict::Stale,
        };
        let (key, _) = self.attempts.remove_entry(attempt).expect("leased above");
        if let Some(w) = self.workers.get_mut(&holder) {
            w.held.remove(attempt);
        }
        self.accepted.insert(key, fence);
        Verdict::Accepted { worker: holder }
    }

    /// The engine cancels `attempt`.
    pub fn cancel(&mut self, attempt: &str) -> Cancelled {
        match self.attempts.get_mut(attempt) {
            None => Cancelled::Unknown,
            Some(a) => match &a.state {
                State::Waiting => {
                    self.withdraw(attempt);
                    Cancelled::Waiting
                }
                State::Leased { worker, .. } => {
                    a.cancel = true;
                    Cancelled::Leased(worker.clone())
                }
            },
        }
    }

    /// The engine no longer waits for `attempt` (its node ended): it leaves the book, and
    /// its fence is stale. The worker holding it learns so in its next heartbeat.
    pub fn withdraw(&mut self, attempt: &str) -> bool {
        let Some(entry) = self.attempts.remove(attempt) else {
            return false;
        };
        match entry.state {
            State::Waiting => {
                if let Some(queue) = self.waiting.get_mut(&entry.pool) {
                    queue.retain(|a| &**a != attempt);
                }
            }
            State::Leased { worker, .. } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.held.remove(attempt);
                }
            }
        }
        true
    }

    /// `worker` takes no new attempt; the number it still holds.
    ///
    /// # Errors
    /// [`UnknownWorker`] when `worker` is not registered.
    pub fn drain(&mut self, worker: &str, now: Time) -> Result<u32, UnknownWorker> {
        let entry = self.worker_mut(worker, now)?;
        entry.draining = true;
        Ok(entry.held.len() as u32)
    }

    /// Ends what time has run out on: workers not heard from for a lease are forgotten
    /// with the attempts they held, and leases not renewed for a lease end. The attempts
    /// are lost; their fences are stale from now on.
    pub fn expire(&mut self, now: Time) -> Vec<Lost> {
        let gone: Vec<Arc<str>> = self
            .workers
            .iter()
            .filter(|(_, w)| w.seen + self.lease < now)
            .map(|(id, _)| id.clone())
            .collect();
        let secs = self.lease.as_secs_f64();
        let mut lost = Vec::new();
        for id in gone {
            if let Some(entry) = self.workers.remove(&id) {
                let why = format!("not heard from for {secs} s (its lease)");
                lost.extend(self.lose_all(&id, entry, &why));
            }
        }
        let expired: Vec<(Arc<str>, Arc<str>)> = self
            .attempts
            .iter()
            .filter_map(|(a, e)| match &e.state {
                State::Leased { worker, until, .. } if *until < now => {
                    Some((a.clone(), worker.clone()))
                }
                _ => None,
            })
            .collect();
        for (attempt, worker) in expired {
            self.withdraw(&attempt);
            let reason = format!(
                "lost worker `{worker}`: the attempt's lease of {secs} s expired without a heartbeat"
            );
            lost.push(Lost {
                attempt,
                worker,
                reason,
            });
        }
        self.note_losses(&lost);
        lost
    }

    /// When [`LeaseBook::expire`] next has something to do, if ever.
    pub fn next_expiry(&self) -> Option<Time> {
        let workers = self.workers.values().map(|w| w.seen + self.lease);
        let leases = self.attempts.values().filter_map(|a| match a.state {
            State::Leased { until, .. } => Some(until),
            State::Waiting => None,
        });
        workers.chain(leases).min()
    }

    /// The worker slots of every pool a worker registered (draining workers offer none).
    pub fn capacities(&self) -> BTreeMap<Arc<str>, u32> {
        let mut caps = BTreeMap::new();
        for w in self.workers.values() {
            for pool in &w.spec.pools {
                let cap = caps.entry(pool.clone()).or_insert(0u32);
                if !w.draining {
                    *cap = cap.saturating_add(w.spec.slots);
                }
            }
        }
        caps
    }

    /// The attempts `worker` holds.
    pub fn held(&self, worker: &str) -> usize {
        self.workers.get(worker).map_or(0, |w| w.held.len())
    }

    /// Whether `worker` is registered.
    pub fn is_registered(&self, worker: &str) -> bool {
        self.workers.contains_key(worker)
    }

    /// Whether `worker` is registered and draining.
    pub fn is_draining(&self, worker: &str) -> bool {
        self.workers.get(worker).is_some_and(|w| w.draining)
    }

    /// Attempts waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    fn worker_mut(&mut self, worker: &str, now: Time) -> Result<&mut WorkerEntry, UnknownWorker> {
        let entry = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| UnknownWorker(worker.into()))?;
        entry.seen = entry.seen.max(now);
        Ok(entry)
    }

    fn worker_name(&self, worker: &str) -> Arc<str> {
        self.workers
            .get_key_value(worker)
            .map_or_else(|| worker.into(), |(k, _)| k.clone())
    }

    /// Takes the oldest attempt waiting in any of `pools` that `worker` may take off its
    /// queue: one avoiding `worker` only when no other worker of its pool has a free slot.
    fn oldest_waiting(&mut self, pools: &[Arc<str>], worker: &Arc<str>) -> Option<Arc<str>> {
        let (pool, at) = pools
            .iter()
            .filter_map(|p| {
                let (at, seq) = self.first_for(p, worker)?;
                Some((p, at, seq))
            })
            .min_by_key(|(_, _, seq)| *seq)
            .map(|(p, at, _)| (p.clone(), at))?;
        self.waiting.get_mut(&pool)?.remove(at)
    }

    /// The place in `pool`'s queue of the first attempt `worker` may take, and its
    /// submission number.
    fn first_for(&self, pool: &Arc<str>, worker: &Arc<str>) -> Option<(usize, u64)> {
        let queue = self.waiting.get(pool)?;
        let mut others_free = None;
        for (at, attempt) in queue.iter().enumerate() {
            let Some(entry) = self.attempts.get(attempt) else {
                continue;
            };
            if entry.avoid.as_ref() != Some(worker)
                || !*others_free.get_or_insert_with(|| self.others_free(pool, worker))
            {
                return Some((at, entry.seq));
            }
        }
        None
    }

    /// Whether a worker of `pool` other than `worker` has a free slot.
    fn others_free(&self, pool: &Arc<str>, worker: &Arc<str>) -> bool {
        self.workers.iter().any(|(id, w)| {
            id != worker
                && !w.draining
                && (w.held.len() as u32) < w.spec.slots
                && w.spec.pools.contains(pool)
        })
    }

    /// Remembers which worker lost each node's attempt, for the node's next attempt.
    fn note_losses(&mut self, lost: &[Lost]) {
        for l in lost {
            if let Some(id) = AttemptId::parse(&l.attempt) {
                self.lost_by.insert(id.node_key().into(), l.worker.clone());
            }
        }
    }

    fn lose_all(&mut self, worker: &Arc<str>, entry: WorkerEntry, why: &str) -> Vec<Lost> {
        entry
            .held
            .into_iter()
            .filter(|a| self.attempts.remove(a).is_some())
            .map(|attempt| Lost {
                attempt,
                worker: worker.clone(),
                reason: format!("lost worker `{worker}`: {why}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
