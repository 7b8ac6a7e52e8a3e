//! Messages of the engine-wide slot limiter, where to find it, and the grant a node holds
//! while it runs.
//!
//! The link also keeps the ledger of the grants outstanding (given by a limiter, not yet
//! dropped), outside any limiter: a limiter that dies loses its book but not the ledger,
//! and its successor counts every grant still held before it takes any request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::messages::node::NodeMsg;
use crate::runtime::guardrails::slots::Needs;

/// Queue depth and active attempts, engine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotStats {
    /// Attempts waiting for a slot (QUEUED nodes).
    pub queued: usize,
    /// Attempts holding their slots.
    pub active: usize,
}

/// What the limiter receives.
#[derive(Debug)]
pub(crate) enum LimiterMsg {
    /// From a node: queue for `needs`; granted with [`NodeMsg::SlotGranted`].
    Acquire {
        /// Ticket, unique engine-wide.
        ticket: u64,
        /// What the attempt needs.
        needs: Needs,
        /// Who to grant it to.
        node: ActorRef<NodeMsg>,
    },
    /// From a dropped [`SlotGrant`]: the attempt ended; its slots are free.
    Release {
        /// What it held.
        needs: Needs,
    },
    /// From the orchestrator, first in a new limiter's mailbox: the grants still held,
    /// from the ledger; count them before anything else.
    Adopt {
        /// What each holds.
        grants: Vec<Needs>,
    },
    /// From a node that stopped waiting (cancelled, queue timeout).
    Cancel {
        /// The ticket.
        ticket: u64,
    },
    /// From the coordinator of remote workers (through the link): remote pool `pool` has
    /// `slots` worker slots now.
    Pool {
        /// `<componentId>@<queue>`.
        pool: Arc<str>,
        /// Its worker slots.
        slots: u32,
    },
    /// From the limiter's own timer: a rate-limit token may be there now.
    Wake,
    /// From the orchestrator: questions wait in the link (current numbers, or no attempt
    /// holding or waiting for a slot); answer those that can be.
    Questions,
}

/// Where the engine's limiter is, and the grants outstanding.
#[derive(Debug, Default)]
struct LinkState {
    limiter: Option<ActorRef<LimiterMsg>>,
    /// Grants given and not dropped yet, by ticket.
    held: HashMap<u64, Needs>,
    /// Questions to the limiter, kept here so that a limiter's death does not lose them
    /// (its successor answers them).
    questions: Vec<Question>,
    /// The engine is suspending: no new grant is given (by this limiter or a successor).
    paused: bool,
    /// Worker slots of each remote pool, given again to a limiter that takes over.
    pools: HashMap<Arc<str>, u32>,
}

/// A question to the limiter.
#[derive(Debug)]
pub(crate) enum Question {
    /// Its current numbers.
    Stats(RpcReplyPort<SlotStats>),
    /// Tell once no attempt holds or waits for a slot.
    Idle(RpcReplyPort<()>),
    /// Tell once no attempt holds a slot (with grants paused: every attempt in flight has
    /// ended).
    Quiet(RpcReplyPort<()>),
}

/// Where the engine's limiter is: one address, set when the limiter is spawned and
/// replaced when the orchestrator restarts a limiter that died, so grants and runs always
/// reach the live one; with the ledger of outstanding grants.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimiterLink(Arc<Mutex<LinkState>>);

impl LimiterLink {
    /// A link to no limiter yet.
    pub(crate) fn new() -> LimiterLink {
        LimiterLink::default()
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // The state is a map and an address, each updated in one step: still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live limiter; `None` only before the first one is spawned.
    pub(crate) fn get(&self) -> Option<ActorRef<LimiterMsg>> {
        self.lock().limiter.clone()
    }

    /// Sends to the live limiter. A limiter that is gone is being restarted, and the
    /// restart asks waiting nodes again.
    pub(crate) fn cast(&self, msg: LimiterMsg) {
        if let Some(limiter) = self.get() {
            let _ = limiter.cast(msg);
        }
    }

    /// Points the link at a new limiter and gives it the ledger, in one step: every
    /// request and release sent through the link from then on reaches it after the
    /// grants they may concern.
    pub(crate) fn replace(&self, limiter: ActorRef<LimiterMsg>) {
        let mut state = self.lock();
        let grants = state.held.values().cloned().collect();
        // A limiter that died already is restarted again by its supervisor.
        let _ = limiter.cast(LimiterMsg::Adopt { grants });
        for (pool, &slots) in &state.pools {
            let pool = pool.clone();
            let _ = limiter.cast(LimiterMsg::Pool { pool, slots });
        }
        state.limiter = Some(limiter);
    }

    /// Remote pool `pool` has `slots` worker slots now (kept for a limiter that takes
    /// over, and told to the live one).
    pub(crate) fn set_pool(&self, pool: Arc<str>, slots: u32) {
        let limiter = {
            let mut state = self.lock();
            if slots == 0 {
                state.pools.remove(&pool);
            } else {
                state.pools.insert(pool.clone(), slots);
            }
            state.limiter.clone()
        };
        if let Some(limiter) = limiter {
            // A limiter that is gone is being restarted; `replace` gives its successor
            // the pools.
            let _ = limiter.cast(LimiterMsg::Pool { pool, slots });
        }
    }

    /// A grant of `needs` under `ticket`, recorded in the ledger (the limiter, as it
    /// grants).
    pub(crate) fn grant(&self, ticket: u64, needs: Needs) -> SlotGrant {
        self.lock().held.insert(ticket, needs);
        SlotGrant {
            link: self.clone(),
            ticket,
        }
    }

    /// Asks the live limiter `question`; it is answered even if that limiter dies first
    /// (by the one that takes over).
    pub(crate) fn ask(&self, question: Question) {
        let limiter = {
            let mut state = self.lock();
            state.questions.push(question);
            state.limiter.clone()
        };
        if let Some(limiter) = limiter {
            // A limiter that is gone is being restarted; its successor answers.
            let _ = limiter.cast(LimiterMsg::Questions);
        }
    }

    /// Stops every grant from now on: the engine is suspending (the requests wait, and
    /// are asked again of the engine that resumes the runs).
    pub(crate) fn pause(&self) {
        self.lock().paused = true;
    }

    /// Whether grants are paused.
    pub(crate) fn paused(&self) -> bool {
        self.lock().paused
    }

    /// Answers the questions waiting: every `Stats` with `stats`, every `Idle` when
    /// nothing holds or waits for a slot, every `Quiet` when `holding` (grants held by
    /// attempts) is 0.
    pub(crate) fn answer(&self, stats: SlotStats, holding: usize) {
        let mut state = self.lock();
        if state.questions.is_empty() {
            return;
        }
        let idle = stats.active == 0 && stats.queued == 0;
        let (answered, kept) = std::mem::take(&mut state.questions)
            .into_iter()
            .partition(|q| match q {
                Question::Stats(_) => true,
                Question::Idle(_) => idle,
                Question::Quiet(_) => holding == 0,
            });
        state.questions = kept;
        drop(state);
        for question in answered {
            // An asker that gave up needs no answer.
            match question {
                Question::Stats(reply) => drop(reply.send(stats)),
                Question::Idle(reply) | Question::Quiet(reply) => drop(reply.send(())),
            }
        }
    }

    /// Takes a dropped grant off the ledger and tells the live limiter its slots are free.
    /// A limiter that is gone is being restarted, from a ledger without this grant.
    fn release(&self, ticket: u64) {
        let (needs, limiter) = {
            let mut state = self.lock();
            (state.held.remove(&ticket), state.limiter.clone())
        };
        if let (Some(needs), Some(limiter)) = (needs, limiter) {
            let _ = limiter.cast(LimiterMsg::Release { needs });
        }
    }
}

/// Where the coordinator of remote workers tells the engine how many worker slots each
/// remote pool has: remote attempts wait QUEUED for them like any slot.
#[derive(Debug, Clone)]
pub struct RemotePools(pub(crate) LimiterLink);

impl RemotePools {
    /// Remote pool `pool` (`<componentId>@<queue>`) has `slots` worker slots now.
    pub fn set(&self, pool: Arc<str>, slots: u32) {
        self.0.set_pool(pool, slots);
    }
}

/// Slots held by a running attempt. Dropping it, however the attempt ends (completion,
/// failure, cancel, timeout, the node actor killed), gives the slots back to the live
/// limiter.
#[derive(Debug)]
pub(crate) struct SlotGrant {
    link: LimiterLink,
    ticket: u64,
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        self.link.release(self.ticket);
    }
}
