//! The slot limiter: one per engine. It holds the [`SlotBook`] and turns its answers into
//! grants sent to node actors, and arms a timer when only a rate-limit token is missing.

use std::collections::HashMap;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::messages::limiter::{LimiterMsg, SlotGrant, SlotStats};
use crate::messages::node::NodeMsg;
use crate::runtime::guardrails::slots::{Needs, SlotBook};

/// The limiter's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct LimiterActor;

/// The limiter's state.
#[derive(Debug)]
pub struct LimiterState {
    book: SlotBook,
    waiting: HashMap<u64, (ActorRef<NodeMsg>, Needs)>,
    wake_at: Option<Instant>,
    idle_waiters: Vec<RpcReplyPort<()>>,
}

impl Actor for LimiterActor {
    type Msg = LimiterMsg;
    type State = LimiterState;
    type Arguments = Option<u32>;

    async fn pre_start(
        &self,
        _myself: ActorRef<LimiterMsg>,
        engine_cap: Option<u32>,
    ) -> Result<LimiterState, ActorProcessingErr> {
        Ok(LimiterState {
            book: SlotBook::new(engine_cap),
            waiting: HashMap::new(),
            wake_at: None,
            idle_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LimiterMsg>,
        message: LimiterMsg,
        state: &mut LimiterState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let granted = match message {
            LimiterMsg::Acquire {
                ticket,
                needs,
                node,
            } => {
                state.waiting.insert(ticket, (node, needs.clone()));
                state.book.request(ticket, needs, now)
            }
            LimiterMsg::Release(needs) => state.book.release(&needs, now),
            LimiterMsg::Cancel { ticket } => {
                state.waiting.remove(&ticket);
                state.book.cancel(ticket, now).1
            }
            LimiterMsg::Wake => {
                state.wake_at = None;
                state.book.grant_due(now)
            }
            LimiterMsg::Stats(reply) => {
                // The asker may have stopped waiting.
                let _ = reply.send(SlotStats {
                    queued: state.book.queued(),
                    active: state.book.active(),
                });
                Vec::new()
            }
            LimiterMsg::WhenIdle(reply) => {
                state.idle_waiters.push(reply);
                Vec::new()
            }
        };
        grant(&myself, state, granted);
        arm_timer(&myself, state);
        if state.book.active() == 0 && state.book.queued() == 0 {
            for waiter in state.idle_waiters.drain(..) {
                // A waiter that gave up needs no answer.
                let _ = waiter.send(());
            }
        }
        Ok(())
    }
}

fn grant(myself: &ActorRef<LimiterMsg>, state: &mut LimiterState, tickets: Vec<u64>) {
    for ticket in tickets {
        let Some((node, needs)) = state.waiting.remove(&ticket) else {
            continue;
        };
        let grant = SlotGrant::new(myself.clone(), needs);
        // A node that is gone drops the message, and with it the grant: its Drop
        // releases the slots.
        let _ = node.cast(NodeMsg::SlotGranted { ticket, grant });
    }
}

fn arm_timer(myself: &ActorRef<LimiterMsg>, state: &mut LimiterState) {
    let Some(at) = state.book.next_wakeup(Instant::now()) else {
        return;
    };
    if state.wake_at.is_some_and(|w| w <= at) {
        return;
    }
    state.wake_at = Some(at);
    let delay = at.saturating_duration_since(Instant::now());
    myself.send_after(delay, || LimiterMsg::Wake);
}
