//! The journal's writer: it group-commits the appends of every run — all that arrived
//! while the previous batch was being written go into the next — so durability costs one
//! write (and, under `fsync`, one fdatasync) per batch, not per fact.
//!
//! Appends wait in one queue, and one committer at a time takes everything queued as a
//! batch, so batches are stored in the order their appends were made. The committer is
//! the writer thread, or — under `process`, where a commit is a buffered write of a few
//! microseconds — the appending caller itself when nobody is committing: a run whose
//! every step waits on its last append (a chain) then pays no thread hand-off per step.
//! A caller commits one batch at most and leaves any backlog to the thread. Under `fsync`
//! only the thread commits, since an fdatasync must not block an async worker.
//!
//! Each append may carry an acknowledgement: a sink and a ticket (a run's fact number).
//! After a commit, every sink in the batch is told the highest ticket of its own that is
//! now stored, once. After a failed commit the store is poisoned (fjall refuses every
//! later write): every waiting sink, and every later one, is told the error; nothing is
//! acknowledged that was not written.

use std::collections::HashMap;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::runtime::journal::store::{JournalStore, Op, StoreError};
use crate::runtime::journal::{Durability, ProcessDeath, WriteFaults};

/// Most ops one batch takes (a backlog is written in batches of this size).
const MAX_BATCH: usize = 8_192;

/// Who waits for an append to be stored.
pub(crate) trait AckSink: Send + Sync + std::fmt::Debug {
    /// Every append of this sink up to ticket `upto` is stored.
    fn durable(&self, upto: u64);
    /// The journal cannot store it: the store failed.
    fn failed(&self, error: &StoreError);
}

/// One waiter told once whether its append is stored (a run's acceptance, for its
/// submitter).
#[derive(Debug)]
pub(crate) struct Acknowledgement(
    Mutex<Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>>,
);

impl Acknowledgement {
    /// The sink to append with, and the answer to wait for.
    pub(crate) fn pair() -> (
        Arc<dyn AckSink>,
        tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Arc::new(Acknowledgement(Mutex::new(Some(tx)))), rx)
    }

    fn answer(&self, outcome: Result<(), StoreError>) {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            // A submitter that stopped waiting needs no answer.
            let _ = tx.send(outcome);
        }
    }
}

impl AckSink for Acknowledgement {
    fn durable(&self, _upto: u64) {
        self.answer(Ok(()));
    }

    fn failed(&self, error: &StoreError) {
        self.answer(Err(error.clone()));
    }
}

/// One append.
pub(crate) struct Append {
    pub(crate) op: Op,
    pub(crate) ack: Ticket,
}

enum Msg {
    Append(Append),
    /// Answered once every earlier append is committed (or failed).
    Flush(Sender<()>),
}

/// The queue and who is committing it.
#[derive(Default)]
struct State {
    queue: Vec<Msg>,
    /// A committer (the thread or an inline caller) holds a batch.
    busy: bool,
    /// The error of the commit that failed; every later append fails with it.
    failed: Option<StoreError>,
    /// A staged crash: the "process" is gone, nothing more is written or answered.
    crashed: bool,
    /// Closed: the thread drains the queue and stops; later appends are dropped.
    closing: bool,
}

struct Shared {
    store: Arc<dyn JournalStore>,
    durability: Durability,
    /// Where a test stages the process's death; none in production.
    faults: Option<Arc<dyn WriteFaults>>,
    state: Mutex<State>,
    /// Wakes the thread: work queued with nobody committing, or closing.
    wake: Condvar,
}

/// The writer's side shared with its callers.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Callers may commit themselves when nobody is (under `process`).
    inline: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one batch from the queue (the caller is the committer), commits it and
    /// answers its sinks and flushers. Returns whether more is queued.
    fn commit_one(&self) -> bool {
        let (batch, failed) = {
            let mut st = self.lock();
            let batch = if st.queue.len() <= MAX_BATCH {
                std::mem::take(&mut st.queue)
            } else {
                st.queue.drain(..MAX_BATCH).collect()
            };
            (batch, st.failed.clone())
        };
        let mut ops = Vec::with_capacity(batch.len());
        let mut tickets = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for msg in batch {
            match msg {
                Msg::Append(a) => {
                    ops.push(a.op);
                    tickets.push(a.ack);
                }
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if failed.is_none()
            && !ops.is_empty()
            && let Some(faults) = &self.faults
            && let Some(death) = faults.before_commit(ops.len())
        {
            self.die(&ops, &tickets, death, &**faults);
            return false;
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None if ops.is_empty() => Ok(()),
            None => self.store.commit(&ops, self.durability),
        };
        let mut acks = Acks::of(&tickets);
        match outcome {
            Ok(()) => acks.durable(),
            Err(error) => {
                let mut st = self.lock();
                if st.failed.is_none() {
                    tracing::error!(target: "shipsec::journal", %error, "journal write failed; the runs waiting on it fail");
                    st.failed = Some(error.clone());
                }
                drop(st);
                acks.failed(&error);
            }
        }
        for done in flushes {
            // A flusher that stopped waiting needs no answer.
            let _ = done.send(());
        }
        !self.lock().queue.is_empty()
    }

    /// A staged death of the process: the batch's first `death.stored` ops are stored
    /// (and acknowledged when `death.acked`), the rest are lost, and nothing more is
    /// written or answered (dropped flushers stop waiting).
    fn die(&self, ops: &[Op], tickets: &[Ticket], death: ProcessDeath, faults: &dyn WriteFaults) {
        let stored = death.stored.min(ops.len());
        let committed = stored == 0 || self.store.commit(&ops[..stored], self.durability).is_ok();
        faults.died();
        if committed && death.acked {
            Acks::of(&tickets[..stored]).durable();
        }
        let mut st = self.lock();
        st.crashed = true;
        st.queue.clear();
        drop(st);
        self.wake.notify_one();
    }
}

impl Writer {
    /// Starts the writer over `store` (`faults`: a test's staged death of the process).
    pub(crate) fn start(
        store: Arc<dyn JournalStore>,
        durability: Durability,
        faults: Option<Arc<dyn WriteFaults>>,
    ) -> Writer {
        let shared = Arc::new(Shared {
            store,
            durability,
            faults,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shipsec-journal".into())
            .spawn(move || write_loop(&for_thread))
            .expect("the journal writer thread starts");
        Writer {
            shared,
            inline: durability == Durability::Process,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues `append` and has the queue committed ([`Writer::commit`]).
    pub(crate) fn send(&self, append: Append) {
        self.queue(append);
        self.commit();
    }

    /// Queues `append` without committing it: the caller calls [`Writer::commit`] later
    /// (an actor, once it has handled what is in its mailbox, so that a burst of appends
    /// becomes one batch). Until then the append goes with whatever batch comes next.
    /// After a staged crash, or once closed, it is dropped unacknowledged.
    pub(crate) fn queue(&self, append: Append) {
        let mut st = self.shared.lock();
        if !st.crashed && !st.closing {
            st.queue.push(Msg::Append(append));
        }
    }

    /// Has what is queued committed: here and now when this writer lets callers commit
    /// and nobody is committing, else by the thread (or the committer at work, which
    /// takes it with its next batch).
    pub(crate) fn commit(&self) {
        let mut st = self.shared.lock();
        if st.busy || st.queue.is_empty() {
            return;
        }
        if !self.inline {
            drop(st);
            self.shared.wake.notify_one();
            return;
        }
        st.busy = true;
        drop(st);
        self.shared.commit_one();
        let mut st = self.shared.lock();
        st.busy = false;
        // What was queued meanwhile (its senders saw a committer) goes to the thread.
        let more = !st.queue.is_empty();
        drop(st);
        if more {
            self.shared.wake.notify_one();
        }
    }

    /// Waits (blocking) until every append queued before is committed or failed.
    pub(crate) fn flush(&self) {
        let (done_tx, done_rx) = channel();
        {
            let mut st = self.shared.lock();
            if st.crashed || st.closing {
                // Gone (a staged crash) or closed (already drained): nothing to wait for.
                return;
            }
            st.queue.push(Msg::Flush(done_tx));
        }
        self.shared.wake.notify_one();
        // A writer that crashed drops the flusher: nothing is left to flush.
        let _ = done_rx.recv();
    }

    /// Flushes, stops the thread and waits for it.
    /// The error of the commit that failed, once one has: the store takes no more writes.
    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.shared.lock().failed.clone()
    }

    pub(crate) fn close(&self) {
        self.flush();
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // A writer thread that panicked has stopped writing either way.
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread commits what is queued, then stops.
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

/// An append's acknowledgement: its sink and its ticket.
type Ticket = Option<(Arc<dyn AckSink>, u64)>;

/// The highest ticket of each sink in a batch.
#[derive(Default)]
struct Acks {
    by_sink: HashMap<usize, (Arc<dyn AckSink>, u64)>,
}

impl Acks {
    /// The acknowledgements `tickets` owe.
    fn of(tickets: &[Ticket]) -> Acks {
        let mut acks = Acks::default();
        for (sink, t) in tickets.iter().flatten() {
            acks.add(sink, *t);
        }
        acks
    }

    fn add(&mut self, sink: &Arc<dyn AckSink>, ticket: u64) {
        let key = Arc::as_ptr(sink).cast::<()>() as usize;
        let entry = self.by_sink.entry(key).or_insert_with(|| (sink.clone(), 0));
        entry.1 = entry.1.max(ticket);
    }

    fn durable(&mut self) {
        for (_, (sink, upto)) in self.by_sink.drain() {
            sink.durable(upto);
        }
    }

    fn failed(&mut self, error: &StoreError) {
        for (_, (sink, _)) in self.by_sink.drain() {
            sink.failed(error);
        }
    }
}

/// The thread: whenever work is queued and nobody commits it, commits until the queue is
/// empty; stops after a staged crash, or once closed and drained.
fn write_loop(shared: &Shared) {
    loop {
        let mut st = shared.lock();
        loop {
            if st.crashed {
                return;
            }
            if !st.busy && !st.queue.is_empty() {
                break;
            }
            if st.closing && !st.busy {
                return;
            }
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.busy = true;
        drop(st);
        while shared.commit_one() {}
        shared.lock().busy = false;
    }
}
