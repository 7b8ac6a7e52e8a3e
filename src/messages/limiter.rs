//! Messages of the engine-wide slot limiter, where to find it, and the grant a node holds
//! while it runs.

use std::sync::{Arc, RwLock};

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
        /// The grant's ticket.
        ticket: u64,
        /// What it held.
        needs: Needs,
    },
    /// From a node holding slots granted by a limiter that died: count them here.
    Adopt {
        /// The grant's ticket.
        ticket: u64,
        /// What it holds.
        needs: Needs,
    },
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

/// Where the engine's limiter is: one address, set when the limiter is spawned and
/// replaced when the orchestrator restarts a limiter that died, so grants and runs always
/// reach the live one.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimiterLink(Arc<RwLock<Option<ActorRef<LimiterMsg>>>>);

impl LimiterLink {
    /// A link to no limiter yet.
    pub(crate) fn new() -> LimiterLink {
        LimiterLink::default()
    }

    /// The live limiter; `None` only before the first one is spawned.
    pub(crate) fn get(&self) -> Option<ActorRef<LimiterMsg>> {
        match self.0.read() {
            Ok(limiter) => limiter.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sends to the live limiter. A limiter that is gone is being restarted, and the
    /// restart asks the nodes again for what they hold and wait for.
    pub(crate) fn cast(&self, msg: LimiterMsg) {
        if let Some(limiter) = self.get() {
            let _ = limiter.cast(msg);
        }
    }

    /// Points the link at a new limiter.
    pub(crate) fn replace(&self, limiter: ActorRef<LimiterMsg>) {
        match self.0.write() {
            Ok(mut current) => *current = Some(limiter),
            Err(poisoned) => *poisoned.into_inner() = Some(limiter),
        }
    }
}

/// Slots held by a running attempt. Dropping it, however the attempt ends (completion,
/// failure, cancel, timeout, the node actor killed), gives the slots back to the live
/// limiter.
#[derive(Debug)]
pub(crate) struct SlotGrant {
    link: LimiterLink,
    ticket: u64,
    needs: Needs,
}

impl SlotGrant {
    /// A grant of `needs` under `ticket`.
    pub(crate) fn new(link: LimiterLink, ticket: u64, needs: Needs) -> SlotGrant {
        SlotGrant {
            link,
            ticket,
            needs,
        }
    }

    /// What it holds.
    pub(crate) fn needs(&self) -> &Needs {
        &self.needs
    }
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        self.link.cast(LimiterMsg::Release {
            ticket: self.ticket,
            needs: self.needs.clone(),
        });
    }
}
