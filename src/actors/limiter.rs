//! The slot limiter: one per engine. It holds the [`SlotBook`] and turns its answers into
//! grants sent to node actors, and arms a timer when only a rate-limit token is missing.
//!
//! It is supervised by the orchestrator: if it dies, the orchestrator starts a new one
//! and points the engine's [`LimiterLink`] at it, which gives it first the link's ledger
//! of grants still held ([`LimiterMsg::Adopt`]): they are counted before any request, so
//! caps hold across the restart. Live nodes then ask again for the slots they wait for,
//! so no node waits forever. A grant dropped while no limiter lived is off the ledger the
//! successor adopts, and its release (sent to the dead limiter) is lost with it; any
//! later release reaches the successor behind its adoption, so every release this book
//! sees is of a grant it counts.

use std::collections::HashMap;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::limiter::{LimiterLink, LimiterMsg, SlotStats};
use crate::messages::node::NodeMsg;
use crate::runtime::guardrails::slots::{Needs, SlotBook};

/// The limiter's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimiterActor;

/// Start-up arguments.
#[derive(Debug)]
pub(crate) struct LimiterArgs {
    /// The engine-wide cap.
    pub(crate) engine_cap: Option<u32>,
    /// The engine's link to its limiter, which grants carry.
    pub(crate) link: LimiterLink,
}

/// The limiter's state.
#[derive(Debug)]
pub(crate) struct LimiterState {
    book: SlotBook,
    link: LimiterLink,
    waiting: HashMap<u64, (ActorRef<NodeMsg>, Needs)>,
    wake_at: Option<Instant>,
    /// Grants the book gave while the engine was suspending, never handed out (the
    /// engine stops before anyone could use them).
    withheld: usize,
}

impl Actor for LimiterActor {
    type Msg = LimiterMsg;
    type State = LimiterState;
    type Arguments = LimiterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<LimiterMsg>,
        args: LimiterArgs,
    ) -> Result<LimiterState, ActorProcessingErr> {
        Ok(LimiterState {
            book: SlotBook::new(args.engine_cap),
            link: args.link,
            waiting: HashMap::new(),
            wake_at: None,
            withheld: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LimiterMsg>,
        message: LimiterMsg,
        state: &mut LimiterState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let granted = state.apply(message, now);
        grant(state, granted);
        arm_timer(&myself, state, now);
        state.answer_questions();
        Ok(())
    }
}

impl LimiterState {
    /// Applies a message to the book; the tickets it grants.
    fn apply(&mut self, message: LimiterMsg, now: Instant) -> Vec<u64> {
        match message {
            LimiterMsg::Acquire {
                ticket,
                needs,
                node,
            } => {
                self.waiting.insert(ticket, (node, needs.clone()));
                self.book.request(ticket, needs, now)
            }
            LimiterMsg::Release { needs } => self.book.release(&needs, now),
            LimiterMsg::Adopt { grants } => {
                grants.iter().for_each(|needs| self.book.adopt(needs));
                Vec::new()
            }
            LimiterMsg::Cancel { ticket } => {
                self.waiting.remove(&ticket);
                self.book.cancel(ticket, now).1
            }
            LimiterMsg::Pool { pool, slots } => self.book.set_pool(pool, slots, now),
            LimiterMsg::Wake => {
                self.wake_at = None;
                self.book.grant_due(now)
            }
            LimiterMsg::Questions => Vec::new(),
        }
    }

    fn stats(&self) -> SlotStats {
        SlotStats {
            queued: self.book.queued(),
            active: self.book.active(),
        }
    }

    /// Answers the questions waiting in the link (idle ones only once nothing holds or
    /// waits for a slot).
    fn answer_questions(&self) {
        let stats = self.stats();
        self.link
            .answer(stats, stats.active.saturating_sub(self.withheld));
    }
}

fn grant(state: &mut LimiterState, tickets: Vec<u64>) {
    if state.link.paused() {
        // Suspending: the engine stops once the attempts holding slots have ended, and
        // what waits is asked again of the engine that resumes the runs.
        state.withheld += tickets.len();
        return;
    }
    for ticket in tickets {
        let Some((node, needs)) = state.waiting.remove(&ticket) else {
            continue;
        };
        let grant = state.link.grant(ticket, needs);
        // A node that is gone drops the message, and with it the grant: its Drop
        // releases the slots.
        let _ = node.cast(NodeMsg::SlotGranted { ticket, grant });
    }
}

fn arm_timer(myself: &ActorRef<LimiterMsg>, state: &mut LimiterState, now: Instant) {
    let Some(at) = state.book.next_wakeup(now) else {
        return;
    };
    if state.wake_at.is_some_and(|w| w <= at) {
        return;
    }
    state.wake_at = Some(at);
    let delay = at.saturating_duration_since(now);
    myself.send_after(delay, || LimiterMsg::Wake);
}
