//! The engine's slots: one [`SlotBook`] behind one lock, which node actors call directly
//! to queue for the slots an attempt needs, to stop waiting, and (through the
//! [`SlotGrant`] they hold) to give them back; one timer task grants what waited only
//! for a rate-limit token once the token is due.
//!
//! Why a lock and not an actor: every operation on the book is a few map updates, never
//! waits, and answers at once with the tickets it grants. An actor added a mailbox hop to
//! each of them, and an owner that could die and lose the book: its restart needed a
//! second ledger of the grants outstanding, kept outside it, and a choreography telling
//! every live node to ask again. The lock is held only while the pure book decides (no
//! `.await`, no send under it: grants and answers are delivered after it is released, so
//! a grant dropped by a node that is gone can take the lock again to give its slots
//! back), so it cannot die holding anything and there is nothing to restart. The order of
//! requests is the order the lock is taken in, first come, first served, as before.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::Notify;

use crate::messages::node::NodeMsg;
use crate::runtime::guardrails::slots::{Needs, SlotBook, SlotStats};

/// The engine's slots. Clones share one book.
#[derive(Debug, Clone)]
pub(crate) struct Slots(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    book: Mutex<Book>,
    /// Wakes the timer task: a rate-limit token is due sooner, or the engine closes.
    wake: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The timer task holds no strong reference: woken, it finds the slots gone.
        self.wake.notify_one();
    }
}

/// The book, and what waits on it.
#[derive(Debug)]
struct Book {
    book: SlotBook,
    /// Requests not granted yet: who asked, for what.
    waiting: HashMap<u64, (ActorRef<NodeMsg>, Needs)>,
    /// Questions waiting for the book to be idle (nothing held or waited for) or quiet
    /// (nothing held by an attempt).
    questions: Vec<(Wait, RpcReplyPort<()>)>,
    /// The engine is suspending: no grant is handed out any more.
    paused: bool,
    /// Grants the book gave while paused, never handed out (the engine stops before
    /// anyone could use them).
    withheld: usize,
    /// When the timer task is due to wake, when it sleeps until then.
    armed: Option<Instant>,
    /// The engine closed: the timer task stops.
    closed: bool,
}

/// What a question waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No attempt holds or waits for a slot.
    Idle,
    /// No attempt holds a slot (with grants paused: every attempt in flight has ended).
    Quiet,
}

/// What to send once the lock is released.
#[derive(Debug, Default)]
struct Deliveries {
    grants: Vec<(ActorRef<NodeMsg>, u64, SlotGrant)>,
    answers: Vec<RpcReplyPort<()>>,
    wake_timer: bool,
}

impl Slots {
    /// Slots under the engine-wide cap, with the timer task that grants what waits for a
    /// rate-limit token (spawned on the current tokio runtime).
    pub(crate) fn start(engine_cap: Option<NonZeroU32>) -> Slots {
        let wake = Arc::new(Notify::new());
        let book = Book {
            book: SlotBook::new(engine_cap),
            waiting: HashMap::new(),
            questions: Vec::new(),
            paused: false,
            withheld: 0,
            armed: None,
            closed: false,
        };
        let shared = Arc::new(Shared {
            book: Mutex::new(book),
            wake: wake.clone(),
        });
        tokio::spawn(timer(Arc::downgrade(&shared), wake));
        Slots(shared)
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Every update of the book completes before the lock is released: still whole.
        self.0.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `decide` on the book under the lock, then delivers what it granted and the
    /// answers it allows, with the lock released.
    fn with_book(&self, decide: impl FnOnce(&mut Book, Instant) -> Vec<u64>) {
        let deliveries = {
            let mut book = self.lock();
            let now = Instant::now();
            let granted = decide(&mut book, now);
            book.settle(granted, self, now)
        };
        self.deliver(deliveries);
    }

    fn deliver(&self, deliveries: Deliveries) {
        for (node, ticket, grant) in deliveries.grants {
            // A node that is gone drops the message, and with it the grant: its Drop
            // gives the slots back (the lock is free by now).
            let _ = node.cast(NodeMsg::SlotGranted { ticket, grant });
        }
        for reply in deliveries.answers {
            // An asker that gave up needs no answer.
            let _ = reply.send(());
        }
        if deliveries.wake_timer {
            self.0.wake.notify_one();
        }
    }

    /// Queues `node`'s request `ticket` for `needs`; granted with
    /// [`NodeMsg::SlotGranted`], at once or later.
    pub(crate) fn acquire(&self, ticket: u64, needs: Needs, node: ActorRef<NodeMsg>) {
        self.with_book(|book, now| {
            book.waiting.insert(ticket, (node, needs.clone()));
            book.book.request(ticket, needs, now)
        });
    }

    /// Request `ticket` stops waiting (cancelled, queue timeout).
    pub(crate) fn cancel(&self, ticket: u64) {
        self.with_book(|book, now| {
            book.waiting.remove(&ticket);
            book.book.cancel(ticket, now).1
        });
    }

    /// Remote pool `pool` has `slots` worker slots now.
    pub(crate) fn set_pool(&self, pool: Arc<str>, slots: u32) {
        self.with_book(|book, now| book.book.set_pool(pool, slots, now));
    }

    /// Queue depth and active attempts now.
    pub(crate) fn stats(&self) -> SlotStats {
        let book = self.lock();
        SlotStats {
            queued: book.book.queued(),
            active: book.book.active(),
        }
    }

    /// Answers `reply` once no attempt holds or waits for a slot.
    pub(crate) fn when_idle(&self, reply: RpcReplyPort<()>) {
        self.ask(Wait::Idle, reply);
    }

    /// Stops handing out grants (the engine is suspending), and answers `reply` once no
    /// attempt holds a slot.
    pub(crate) fn pause_until_quiet(&self, reply: RpcReplyPort<()>) {
        self.lock().paused = true;
        self.ask(Wait::Quiet, reply);
    }

    fn ask(&self, wait: Wait, reply: RpcReplyPort<()>) {
        self.with_book(|book, _| {
            book.questions.push((wait, reply));
            Vec::new()
        });
    }

    /// The engine closed: the timer task stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.0.wake.notify_one();
    }

    /// Gives back the slots of a dropped grant.
    fn release(&self, needs: &Needs) {
        self.with_book(|book, now| book.book.release(needs, now));
    }
}

impl Book {
    /// After the book decided: the grants to hand out (none while paused), the questions
    /// now answered, and whether the timer must wake sooner.
    fn settle(&mut self, granted: Vec<u64>, slots: &Slots, now: Instant) -> Deliveries {
        let mut deliveries = Deliveries::default();
        if self.paused {
            // Suspending: the engine stops once the attempts holding slots have ended,
            // and what waits is asked again of the engine that resumes the runs.
            self.withheld += granted.len();
        } else {
            for ticket in granted {
                if let Some((node, needs)) = self.waiting.remove(&ticket) {
                    let grant = SlotGrant {
                        slots: slots.clone(),
                        needs,
                    };
                    deliveries.grants.push((node, ticket, grant));
                }
            }
        }
        let active = self.book.active();
        let idle = active == 0 && self.book.queued() == 0;
        let quiet = active.saturating_sub(self.withheld) == 0;
        let (answered, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.questions)
            .into_iter()
            .partition(|(wait, _)| match wait {
                Wait::Idle => idle,
                Wait::Quiet => quiet,
            });
        self.questions = kept;
        deliveries.answers = answered.into_iter().map(|(_, reply)| reply).collect();
        if let Some(due) = self.book.next_wakeup(now)
            && self.armed.is_none_or(|armed| due < armed)
        {
            self.armed = Some(due);
            deliveries.wake_timer = true;
        }
        deliveries
    }
}

/// The one timer of the slots: sleeps until the next rate-limit token is due (or until
/// woken because one is due sooner), then grants what it allows.
async fn timer(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        let due = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let slots = Slots(shared);
            let (deliveries, due) = {
                let mut book = slots.lock();
                if book.closed {
                    return;
                }
                let now = Instant::now();
                book.armed = None;
                let granted = book.book.grant_due(now);
                let mut deliveries = book.settle(granted, &slots, now);
                // This task is the one to wake: it sleeps until `armed` next.
                deliveries.wake_timer = false;
                (deliveries, book.armed)
            };
            slots.deliver(deliveries);
            due
        };
        match due {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Where the coordinator of remote workers tells the engine how many worker slots each
/// remote pool has: remote attempts wait QUEUED for them like any slot.
#[derive(Debug, Clone)]
pub struct RemotePools(pub(crate) Slots);

impl RemotePools {
    /// Remote pool `pool` (`<componentId>@<queue>`) has `slots` worker slots now.
    pub fn set(&self, pool: Arc<str>, slots: u32) {
        self.0.set_pool(pool, slots);
    }
}

/// Slots held by a running attempt. Dropping it, however the attempt ends (completion,
/// failure, cancel, timeout, the node actor killed), gives the slots back.
#[derive(Debug)]
pub(crate) struct SlotGrant {
    slots: Slots,
    needs: Needs,
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        self.slots.release(&self.needs);
    }
}
