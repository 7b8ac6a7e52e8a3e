//! Messages of the engine-wide slot limiter, and the grant a node holds while it runs.

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
pub enum LimiterMsg {
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
    Release(Needs),
    /// From a node that stopped waiting (cancelled, queue timeout).
    Cancel {
        /// The ticket.
        ticket: u64,
    },
    /// From the limiter's own timer: a rate-limit token may be there now.
    Wake,
    /// From the orchestrator: current numbers.
    Stats(RpcReplyPort<SlotStats>),
    /// From the orchestrator: answer once no attempt holds or waits for a slot.
    WhenIdle(RpcReplyPort<()>),
}

/// Slots held by a running attempt. Dropping it, however the attempt ends (completion,
/// failure, cancel, timeout, the node actor killed), gives the slots back.
#[derive(Debug)]
pub struct SlotGrant {
    limiter: ActorRef<LimiterMsg>,
    needs: Option<Needs>,
}

impl SlotGrant {
    /// A grant of `needs` from `limiter`.
    pub fn new(limiter: ActorRef<LimiterMsg>, needs: Needs) -> SlotGrant {
        SlotGrant {
            limiter,
            needs: Some(needs),
        }
    }
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        if let Some(needs) = self.needs.take() {
            // A limiter that is gone has no slots left to free.
            let _ = self.limiter.cast(LimiterMsg::Release(needs));
        }
    }
}
