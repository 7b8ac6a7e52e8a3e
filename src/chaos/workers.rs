//! A fleet of in-process remote workers for chaos tests, each behind a
//! [`FaultyLink`] of its own to the coordinator, that strikes the worker faults armed
//! with [`Chaos::arm_worker_fault`] as a worker takes the attempt they are armed for:
//!
//! - **kill**: the worker's link is cut for good and the worker ends at once
//!   ([`Registered::kill_switch`]); a fresh worker under a new id takes its place, so the
//!   fleet keeps its size while the coordinator finds out through the lease;
//! - **hang**: the worker's link stalls for the outage (longer than a lease), then opens:
//!   what it sent meanwhile arrives late;
//! - **partition**: the worker's link is cut for the outage, then heals.
//!
//! Each strike is recorded ([`WorkerFleet::strikes_of`]) with the worker it struck.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::link::{FaultyLink, LinkMode};
use super::{Chaos, WorkerFault};
use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::semantics::attempt::AttemptId;
use crate::worker::client::{OnStart, Worker, WorkerError, WorkerOptions};

/// A fault that struck a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strike {
    /// The run.
    pub run_id: String,
    /// The node.
    pub node_ref: String,
    /// The attempt it was armed for.
    pub attempt: u32,
    /// The worker that took the attempt, and was struck.
    pub worker: String,
    /// What struck it.
    pub fault: WorkerFault,
}

/// In-process workers behind faulty links; dropped (or [`WorkerFleet::stop`]ped), they
/// all end.
#[derive(Debug, Clone)]
pub struct WorkerFleet(Arc<Fleet>);

#[derive(Debug)]
struct Fleet {
    coordinator: SocketAddr,
    /// Where the worker faults are armed.
    chaos: Arc<Chaos>,
    patterns: String,
    slots: u32,
    outage: Duration,
    members: Mutex<HashMap<String, Member>>,
    strikes: Mutex<Vec<Strike>>,
    generation: AtomicU64,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Member {
    link: Arc<FaultyLink>,
    kill: CancellationToken,
}

impl WorkerFleet {
    /// `size` workers of `slots` slots, hosting the built-ins matching `patterns`, each
    /// registered through its own link to the coordinator at `coordinator`, struck by the
    /// worker faults armed in `chaos`; a hang or a partition lasts `outage` (make it
    /// longer than the coordinator's lease).
    ///
    /// # Errors
    /// A worker could not be made or registered.
    pub async fn start(
        coordinator: SocketAddr,
        chaos: Arc<Chaos>,
        size: usize,
        slots: u32,
        patterns: &str,
        outage: Duration,
    ) -> Result<WorkerFleet, WorkerError> {
        let fleet = Arc::new(Fleet {
            coordinator,
            chaos,
            patterns: patterns.to_owned(),
            slots,
            outage,
            members: Mutex::new(HashMap::new()),
            strikes: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        for _ in 0..size {
            fleet.clone().spawn_member().await?;
        }
        Ok(WorkerFleet(fleet))
    }

    /// The faults that struck attempts of `run_id`.
    pub fn strikes_of(&self, run_id: &str) -> Vec<Strike> {
        lock(&self.0.strikes)
            .iter()
            .filter(|s| s.run_id == run_id)
            .cloned()
            .collect()
    }

    /// Workers in the fleet now (a killed one is replaced).
    pub fn size(&self) -> usize {
        lock(&self.0.members).len()
    }

    /// Ends every worker.
    pub fn stop(&self) {
        self.0.stop.cancel();
        for (_, member) in lock(&self.0.members).drain() {
            member.kill.cancel();
        }
    }
}

impl Fleet {
    /// Registers one more worker, under a new id, behind a new link.
    async fn spawn_member(self: Arc<Fleet>) -> Result<(), WorkerError> {
        let id = format!("fleet-{}", self.generation.fetch_add(1, Ordering::Relaxed));
        let link = FaultyLink::start(self.coordinator)
            .await
            .map_err(|e| WorkerError::Options(format!("a link for `{id}`: {e}")))?;
        let mut options = WorkerOptions::new(format!("http://{}", link.addr()), &id, self.slots);
        let hook = Arc::downgrade(&self);
        let worker_id = id.clone();
        options.on_start = Some(OnStart(Arc::new(move |attempt_id: &str| {
            if let Some(fleet) = hook.upgrade() {
                fleet.started(&worker_id, attempt_id);
            }
        })));
        let builtins = ComponentRegistry::with_builtins();
        let registered = Worker::new(options, &builtins, &self.patterns)?
            .register()
            .await?;
        let member = Member {
            link: Arc::new(link),
            kill: registered.kill_switch(),
        };
        lock(&self.members).insert(id, member);
        // The fleet's stop drains what is left; a kill ends the worker at once.
        tokio::spawn(registered.serve(self.stop.child_token()));
        Ok(())
    }

    /// Worker `worker` starts attempt `attempt_id`: strikes it when a fault is armed.
    fn started(self: &Arc<Fleet>, worker: &str, attempt_id: &str) {
        let Some((run_id, node_ref, attempt)) = run_node_attempt(attempt_id) else {
            return;
        };
        let Some(fault) = self.chaos.take_worker_fault(run_id, node_ref, attempt) else {
            return;
        };
        lock(&self.strikes).push(Strike {
            run_id: run_id.to_owned(),
            node_ref: node_ref.to_owned(),
            attempt,
            worker: worker.to_owned(),
            fault,
        });
        match fault {
            WorkerFault::Kill => self.kill(worker),
            WorkerFault::Hang => self.outage(worker, LinkMode::Stalled),
            WorkerFault::Partition => self.outage(worker, LinkMode::Cut),
        }
    }

    fn kill(self: &Arc<Fleet>, worker: &str) {
        let Some(member) = lock(&self.members).remove(worker) else {
            return;
        };
        // Cut first: nothing the dying worker still has on the wire gets through.
        member.link.set(LinkMode::Cut);
        member.kill.cancel();
        let fleet = self.clone();
        tokio::spawn(async move {
            if fleet.stop.is_cancelled() {
                return;
            }
            if let Err(e) = fleet.spawn_member().await {
                tracing::error!(target: "shipsec::chaos", error = %e, "the fleet could not replace a killed worker");
            }
        });
    }

    /// Puts `worker`'s link in `mode` for the outage, then opens it again.
    fn outage(&self, worker: &str, mode: LinkMode) {
        let Some(link) = lock(&self.members).get(worker).map(|m| m.link.clone()) else {
            return;
        };
        link.set(mode);
        let (outage, stop) = (self.outage, self.stop.clone());
        tokio::spawn(async move {
            // The outage is the fault itself: how long the worker is unreachable.
            tokio::select! {
                () = tokio::time::sleep(outage) => {}
                () = stop.cancelled() => {}
            }
            link.set(LinkMode::Open);
        });
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `(run, node ref, attempt)` of an attempt id `<run>/<node ref>/<attempt>`.
fn run_node_attempt(id: &str) -> Option<(&str, &str, u32)> {
    let attempt = AttemptId::parse(id)?;
    let (run, node) = id[..attempt.node_key().len()].split_once('/')?;
    Some((run, node, attempt.attempt()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::run_node_attempt;

    #[test]
    fn an_attempt_id_splits_into_run_node_and_attempt() {
        assert_eq!(run_node_attempt("r-1/n3/2"), Some(("r-1", "n3", 2)));
        assert_eq!(run_node_attempt("r/a/b/1"), Some(("r", "a/b", 1)));
        assert_eq!(run_node_attempt("r/n/x"), None);
        assert_eq!(run_node_attempt("r1"), None);
    }
}
