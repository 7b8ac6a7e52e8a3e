//! Concurrency slots and rate limits (docs/semantics.md §8), as a pure state machine.
//!
//! A node whose join is satisfied asks for every slot it needs at once: the engine-wide
//! cap, its run's `maxParallelism`, its component's `maxConcurrency`, its group's cap and
//! a token from its component's rate limit. [`SlotBook`] grants requests first come, first
//! served: a request that cannot be granted reserves the resources it lacks, so a later
//! request never takes a resource an earlier one is waiting for (no run starves another),
//! while requests for unrelated resources go ahead. Time is passed in; nothing here sleeps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use crate::runtime::guardrails::rate::Bucket;
pub use crate::runtime::guardrails::rate::Rate;

/// Queue depth and active attempts, engine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotStats {
    /// Attempts waiting for a slot (QUEUED nodes).
    pub queued: usize,
    /// Attempts holding their slots.
    pub active: usize,
}

/// Identifies a run inside the slot book.
pub type RunKey = u64;

/// Everything one attempt needs before it may start.
#[derive(Debug, Clone, PartialEq)]
pub struct Needs {
    /// The run, with its `maxParallelism`.
    pub run: (RunKey, Option<u32>),
    /// The component, with its cap.
    pub component: (Arc<str>, Option<u32>),
    /// The group (per run), with its cap.
    pub group: Option<(Arc<str>, u32)>,
    /// The component's rate limit.
    pub rate: Option<Rate>,
    /// The remote pool (`<componentId>@<queue>`) whose worker slots a remote attempt
    /// takes; its capacity is what the live workers registered for it offer
    /// ([`SlotBook::set_pool`]), none until one registers.
    pub pool: Option<Arc<str>>,
}

/// A slot resource; the unit of fairness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Resource {
    Engine,
    Run(RunKey),
    Component(Arc<str>),
    Group(RunKey, Arc<str>),
    Rate(Arc<str>),
    Pool(Arc<str>),
}

/// Requests with the same needs, consecutive in arrival order.
#[derive(Debug)]
struct Waiting {
    needs: Needs,
    tickets: VecDeque<u64>,
}

/// Granted and waiting attempts of the whole engine.
#[derive(Debug)]
pub struct SlotBook {
    engine_cap: Option<u32>,
    used: HashMap<Resource, u32>,
    buckets: HashMap<Arc<str>, Bucket>,
    /// Waiting requests in arrival order, alike neighbours (same needs) kept together:
    /// a fan-out of thousands of alike requests is one entry, so a grant costs a look at
    /// each distinct group waiting, not at every request.
    queue: VecDeque<Waiting>,
    active: usize,
    /// Worker slots of each remote pool.
    pools: HashMap<Arc<str>, u32>,
}

impl SlotBook {
    /// An empty book with the engine-wide cap.
    pub fn new(engine_cap: Option<NonZeroU32>) -> SlotBook {
        SlotBook {
            engine_cap: engine_cap.map(NonZeroU32::get),
            used: HashMap::new(),
            buckets: HashMap::new(),
            queue: VecDeque::new(),
            active: 0,
            pools: HashMap::new(),
        }
    }

    /// Sets the worker slots of remote pool `pool`; returns the tickets that grants.
    /// A smaller capacity takes nothing back: attempts holding its slots keep them.
    pub fn set_pool(&mut self, pool: Arc<str>, slots: u32, now: Instant) -> Vec<u64> {
        if slots == 0 {
            self.pools.remove(&pool);
        } else {
            self.pools.insert(pool, slots);
        }
        self.pump(now)
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queue.iter().map(|w| w.tickets.len()).sum()
    }

    /// Requests granted and not yet released.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Queues a request; returns the tickets granted now (this one or none).
    pub fn request(&mut self, ticket: u64, needs: Needs, now: Instant) -> Vec<u64> {
        match self.queue.back_mut() {
            Some(last) if last.needs == needs => last.tickets.push_back(ticket),
            _ => self.queue.push_back(Waiting {
                needs,
                tickets: VecDeque::from([ticket]),
            }),
        }
        self.pump(now)
    }

    /// Withdraws a waiting request. Returns whether it was waiting (false if it was
    /// granted already, in which case the grant must be released).
    pub fn cancel(&mut self, ticket: u64, now: Instant) -> (bool, Vec<u64>) {
        let Some(i) = self.queue.iter().position(|w| w.tickets.contains(&ticket)) else {
            return (false, Vec::new());
        };
        let group = &mut self.queue[i].tickets;
        group.retain(|t| *t != ticket);
        if group.is_empty() {
            self.queue.remove(i);
        }
        (true, self.pump(now))
    }

    /// Gives back the slots of a granted request; returns the tickets granted as a result.
    pub fn release(&mut self, needs: &Needs, now: Instant) -> Vec<u64> {
        for r in slot_resources(needs) {
            if let Some(n) = self.used.get_mut(&r) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.used.remove(&r);
                }
            }
        }
        self.active = self.active.saturating_sub(1);
        self.pump(now)
    }

    /// Grants what the passage of time alone made grantable (rate-limit tokens).
    pub fn grant_due(&mut self, now: Instant) -> Vec<u64> {
        self.pump(now)
    }

    /// When waiting requests may next be grantable through the passage of time alone
    /// (a rate-limit token); `None` when only a release can help. A rate with no bucket
    /// yet has a token `now`.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut blocked = HashSet::new();
        let mut earliest: Option<Instant> = None;
        for Waiting { needs, .. } in &self.queue {
            if let Some(rate) = needs.rate {
                let key = &needs.component.0;
                if blocked.insert(key.clone()) {
                    let at = self.buckets.get(key).map_or(now, |b| {
                        let mut b = b.clone();
                        b.set_rate(rate);
                        b.ready_at()
                    });
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
            }
        }
        earliest
    }

    fn cap(&self, r: &Resource, needs: &Needs) -> Option<u32> {
        match r {
            Resource::Engine => self.engine_cap,
            Resource::Run(_) => needs.run.1,
            Resource::Component(_) => needs.component.1,
            Resource::Group(_, _) => needs.group.as_ref().map(|g| g.1),
            Resource::Rate(_) => None,
            Resource::Pool(p) => Some(self.pools.get(p).copied().unwrap_or(0)),
        }
    }

    /// Grants every waiting request it can, in arrival order.
    ///
    /// Within a group of alike requests, the first one that lacks something stops the
    /// group: the others need the same, and what it lacks is reserved now.
    fn pump(&mut self, now: Instant) -> Vec<u64> {
        let mut granted = Vec::new();
        let mut reserved: HashSet<Resource> = HashSet::new();
        let mut i = 0;
        while i < self.queue.len() {
            let needs = self.queue[i].needs.clone();
            loop {
                let lacking = self.lacking(&needs, &reserved, now);
                if !lacking.is_empty() {
                    reserved.extend(lacking);
                    i += 1;
                    break;
                }
                self.take(&needs, now);
                let group = &mut self.queue[i].tickets;
                granted.extend(group.pop_front());
                if group.is_empty() {
                    self.queue.remove(i);
                    break;
                }
            }
        }
        granted
    }

    /// The resources `needs` cannot have now (full, rate-limited, or reserved by an
    /// earlier waiting request).
    fn lacking(
        &mut self,
        needs: &Needs,
        reserved: &HashSet<Resource>,
        now: Instant,
    ) -> Vec<Resource> {
        let mut lacking: Vec<Resource> = slot_resources(needs)
            .into_iter()
            .filter(|r| {
                reserved.contains(r)
                    || self
                        .cap(r, needs)
                        .is_some_and(|cap| self.used.get(r).copied().unwrap_or(0) >= cap)
            })
            .collect();
        if let Some(rate) = needs.rate {
            let key = needs.component.0.clone();
            let rate_res = Resource::Rate(key.clone());
            let bucket = self
                .buckets
                .entry(key)
                .or_insert_with(|| Bucket::new(rate, now));
            bucket.set_rate(rate);
            bucket.refill(now);
            if reserved.contains(&rate_res) || !bucket.has_token() {
                lacking.push(rate_res);
            }
        }
        lacking
    }

    fn count(&mut self, needs: &Needs) {
        for r in slot_resources(needs) {
            if self.cap(&r, needs).is_some() || matches!(r, Resource::Engine) {
                *self.used.entry(r).or_insert(0) += 1;
            }
        }
        self.active += 1;
    }

    fn take(&mut self, needs: &Needs, now: Instant) {
        self.count(needs);
        if needs.rate.is_some()
            && let Some(bucket) = self.buckets.get_mut(&needs.component.0)
        {
            bucket.refill(now);
            bucket.take_token();
        }
    }
}

/// The counted (slot) resources of a request; the rate token is handled apart.
fn slot_resources(needs: &Needs) -> Vec<Resource> {
    let mut out = vec![Resource::Engine];
    if needs.run.1.is_some() {
        out.push(Resource::Run(needs.run.0));
    }
    if needs.component.1.is_some() {
        out.push(Resource::Component(needs.component.0.clone()));
    }
    if let Some((g, _)) = &needs.group {
        out.push(Resource::Group(needs.run.0, g.clone()));
    }
    if let Some(pool) = &needs.pool {
        out.push(Resource::Pool(pool.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The book's fairness rule stated as plainly as it reads: every waiting request in
    /// arrival order, one at a time, each taking what it can unless an earlier waiting
    /// one reserved it (no groups, no shortcuts; caps and pools, no rates).
    struct Reference {
        engine_cap: Option<u32>,
        pools: HashMap<Arc<str>, u32>,
        used: HashMap<Resource, u32>,
        queue: Vec<(u64, Needs)>,
    }

    impl Reference {
        fn cap(&self, r: &Resource, needs: &Needs) -> Option<u32> {
            match r {
                Resource::Engine => self.engine_cap,
                Resource::Pool(p) => Some(self.pools.get(p).copied().unwrap_or(0)),
                Resource::Run(_) => needs.run.1,
                Resource::Component(_) => needs.component.1,
                Resource::Group(_, _) => needs.group.as_ref().map(|g| g.1),
                Resource::Rate(_) => None,
            }
        }

        fn pump(&mut self) -> Vec<u64> {
            let mut granted = Vec::new();
            let mut reserved = HashSet::new();
            let mut waiting = Vec::new();
            for (ticket, needs) in std::mem::take(&mut self.queue) {
                let lacking: Vec<Resource> = slot_resources(&needs)
                    .into_iter()
                    .filter(|r| {
                        reserved.contains(r)
                            || self
                                .cap(r, &needs)
                                .is_some_and(|cap| self.used.get(r).copied().unwrap_or(0) >= cap)
                    })
                    .collect();
                if lacking.is_empty() {
                    for r in slot_resources(&needs) {
                        *self.used.entry(r).or_insert(0) += 1;
                    }
                    granted.push(ticket);
                } else {
                    reserved.extend(lacking);
                    waiting.push((ticket, needs));
                }
            }
            self.queue = waiting;
            granted
        }

        fn release(&mut self, needs: &Needs) -> Vec<u64> {
            for r in slot_resources(needs) {
                if let Some(n) = self.used.get_mut(&r) {
                    *n -= 1;
                }
            }
            self.pump()
        }
    }

    /// What a random schedule does.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Request(usize),
        Release(usize),
        Cancel(usize),
        SetPool(u32),
    }

    use proptest::strategy::Strategy as _;

    fn kinds() -> Vec<Needs> {
        let pool: Arc<str> = "scan@default".into();
        vec![
            needs(1, Some(2), "a", None),
            needs(1, Some(2), "b", Some(1)),
            needs(2, None, "a", None),
            Needs {
                pool: Some(pool.clone()),
                ..needs(2, None, "remote", Some(3))
            },
            Needs {
                pool: Some(pool),
                group: Some(("g".into(), 1)),
                ..needs(3, None, "remote", None)
            },
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Alike neighbours grouped, the book grants exactly what the plain rule grants,
        /// step by step.
        #[test]
        fn grouped_requests_are_granted_as_the_plain_rule_grants_them(
            engine_cap in proptest::option::of(1u32..5),
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => (0usize..5).prop_map(Step::Request),
                    3 => (0usize..8).prop_map(Step::Release),
                    1 => (0usize..8).prop_map(Step::Cancel),
                    1 => (0u32..4).prop_map(Step::SetPool),
                ],
                1..80,
            ),
        ) {
            let now = Instant::now();
            let kinds = kinds();
            let mut book = SlotBook::new(engine_cap.and_then(NonZeroU32::new));
            let mut plain = Reference { engine_cap, pools: HashMap::new(), used: HashMap::new(), queue: Vec::new() };
            let mut active: Vec<(u64, Needs)> = Vec::new();
            let mut waiting: Vec<(u64, Needs)> = Vec::new();
            for (ticket, step) in (1u64..).zip(steps) {
                let (got, expected) = match step {
                    Step::Request(k) => {
                        let needs = kinds[k].clone();
                        waiting.push((ticket, needs.clone()));
                        plain.queue.push((ticket, needs.clone()));
                        (book.request(ticket, needs, now), plain.pump())
                    }
                    Step::Release(i) if !active.is_empty() => {
                        let (_, needs) = active.remove(i % active.len());
                        (book.release(&needs, now), plain.release(&needs))
                    }
                    Step::Cancel(i) if !waiting.is_empty() => {
                        let (t, _) = waiting.remove(i % waiting.len());
                        plain.queue.retain(|(q, _)| *q != t);
                        let (was, granted) = book.cancel(t, now);
                        proptest::prop_assert!(was);
                        (granted, plain.pump())
                    }
                    Step::SetPool(slots) => {
                        if slots == 0 {
                            plain.pools.remove("scan@default");
                        } else {
                            plain.pools.insert("scan@default".into(), slots);
                        }
                        (book.set_pool("scan@default".into(), slots, now), plain.pump())
                    }
                    _ => continue,
                };
                proptest::prop_assert_eq!(&got, &expected);
                for t in got {
                    let at = waiting.iter().position(|(w, _)| *w == t).unwrap();
                    active.push(waiting.remove(at));
                }
                proptest::prop_assert_eq!(book.queued(), waiting.len());
                proptest::prop_assert_eq!(book.active(), active.len());
            }
        }
    }

    fn needs(run: RunKey, run_cap: Option<u32>, comp: &str, comp_cap: Option<u32>) -> Needs {
        Needs {
            run: (run, run_cap),
            component: (comp.into(), comp_cap),
            group: None,
            rate: None,
            pool: None,
        }
    }

    #[test]
    fn the_engine_cap_holds_and_a_release_grants_the_next_in_line() {
        let now = Instant::now();
        let mut b = SlotBook::new(NonZeroU32::new(2));
        assert_eq!(b.request(1, needs(1, None, "c", None), now), vec![1]);
        assert_eq!(b.request(2, needs(1, None, "c", None), now), vec![2]);
        assert!(b.request(3, needs(2, None, "c", None), now).is_empty());
        assert!(b.request(4, needs(3, None, "c", None), now).is_empty());
        assert_eq!(b.queued(), 2);
        assert_eq!(b.release(&needs(1, None, "c", None), now), vec![3]);
        assert_eq!(b.release(&needs(1, None, "c", None), now), vec![4]);
        assert_eq!(b.active(), 2);
    }

    #[test]
    fn a_run_cap_does_not_hold_back_other_runs() {
        let now = Instant::now();
        let mut b = SlotBook::new(None);
        assert_eq!(b.request(1, needs(1, Some(1), "c", None), now), vec![1]);
        assert!(b.request(2, needs(1, Some(1), "c", None), now).is_empty());
        assert_eq!(b.request(3, needs(2, Some(1), "c", None), now), vec![3]);
    }

    #[test]
    fn a_waiting_request_reserves_what_it_lacks_so_later_ones_cannot_overtake() {
        let now = Instant::now();
        let mut b = SlotBook::new(NonZeroU32::new(2));
        assert_eq!(b.request(1, needs(1, None, "x", Some(1)), now), vec![1]);
        // 2 waits for component x; it reserves x, not the engine.
        assert!(b.request(2, needs(2, None, "x", Some(1)), now).is_empty());
        // 3 needs only the engine: it goes ahead.
        assert_eq!(b.request(3, needs(3, None, "y", None), now), vec![3]);
        // Engine now full: 4 waits and reserves the engine.
        assert!(b.request(4, needs(4, None, "y", None), now).is_empty());
        // x frees, but the engine is full; 2 now waits on the engine and keeps x.
        assert!(b.release(&needs(1, None, "x", Some(1)), now).contains(&2));
    }

    #[test]
    fn group_caps_are_per_run() {
        let now = Instant::now();
        let mut b = SlotBook::new(None);
        let g = |run| Needs {
            group: Some(("scanners".into(), 1)),
            ..needs(run, None, "c", None)
        };
        assert_eq!(b.request(1, g(1), now), vec![1]);
        assert!(b.request(2, g(1), now).is_empty());
        assert_eq!(b.request(3, g(2), now), vec![3]);
    }

    #[test]
    fn a_rate_limit_spends_the_burst_then_one_token_per_interval() {
        let t0 = Instant::now();
        let mut b = SlotBook::new(None);
        let r = |_: u64| Needs {
            rate: Some(Rate {
                per_second: 10.0,
                burst: 2,
            }),
            ..needs(1, None, "api", None)
        };
        assert_eq!(b.request(1, r(1), t0), vec![1]);
        assert_eq!(b.request(2, r(2), t0), vec![2]);
        assert!(b.request(3, r(3), t0).is_empty());
        let wake = b.next_wakeup(t0).expect("a token comes with time");
        assert!(
            wake > t0 && wake <= t0 + Duration::from_millis(101),
            "{:?}",
            wake - t0
        );
        assert!(b.cancel(99, t0).1.is_empty());
        let (_, granted) = b.cancel(99, t0 + Duration::from_millis(50));
        assert!(granted.is_empty());
        assert_eq!(b.release(&r(1), t0 + Duration::from_millis(100)), vec![3]);
    }

    #[test]
    fn a_remote_pool_grants_nothing_until_workers_offer_slots() {
        let now = Instant::now();
        let mut b = SlotBook::new(None);
        let remote = |run| Needs {
            pool: Some("scan@default".into()),
            ..needs(run, None, "scan", None)
        };
        assert!(b.request(1, remote(1), now).is_empty());
        assert!(b.request(2, remote(2), now).is_empty());
        // A local attempt is not held back by the remote ones waiting.
        assert_eq!(b.request(3, needs(3, None, "echo", None), now), vec![3]);
        assert_eq!(b.set_pool("scan@default".into(), 1, now), vec![1]);
        assert_eq!(b.release(&remote(1), now), vec![2]);
        // The workers leave: the attempt holding a slot keeps it, the next waits.
        assert!(b.set_pool("scan@default".into(), 0, now).is_empty());
        assert!(b.request(4, remote(4), now).is_empty());
        assert!(b.release(&remote(2), now).is_empty());
        assert_eq!(b.set_pool("scan@default".into(), 2, now), vec![4]);
    }

    #[test]
    fn a_cancelled_waiting_request_leaves_the_queue() {
        let now = Instant::now();
        let mut b = SlotBook::new(NonZeroU32::new(1));
        b.request(1, needs(1, None, "c", None), now);
        b.request(2, needs(1, None, "c", None), now);
        assert_eq!(b.cancel(2, now), (true, vec![]));
        assert_eq!(b.queued(), 0);
        assert_eq!(
            b.cancel(1, now),
            (false, vec![]),
            "granted requests are released, not cancelled"
        );
    }
}
