//! The journal's one writer thread: it group-commits the appends of every run — all that
//! arrived while the previous batch was being written go into the next — so durability
//! costs one write (and, under `fsync`, one fdatasync) per batch, not per fact.
//!
//! Each append may carry an acknowledgement: a sink and a ticket (a run's fact number).
//! After a commit, every sink in the batch is told the highest ticket of its own that is
//! now stored, once. After a failed commit the store is poisoned (fjall refuses every
//! later write): every waiting sink, and every later one, is told the error; nothing is
//! acknowledged that was not written.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::runtime::journal::Durability;
use crate::runtime::journal::store::{Committed, JournalStore, Op, StoreError};

/// Most ops one batch takes (a backlog is written in batches of this size).
const MAX_BATCH: usize = 8_192;

/// Who waits for an append to be stored.
pub(crate) trait AckSink: Send + Sync + std::fmt::Debug {
    /// Every append of this sink up to ticket `upto` is stored.
    fn durable(&self, upto: u64);
    /// The journal cannot store it: the store failed.
    fn failed(&self, error: &StoreError);
}

/// One append.
pub(crate) struct Append {
    pub(crate) op: Op,
    pub(crate) ack: Option<(Arc<dyn AckSink>, u64)>,
}

enum Msg {
    Append(Append),
    /// Answered once every earlier append is committed (or failed).
    Flush(Sender<()>),
}

/// The writer's side shared with its callers.
pub(crate) struct Writer {
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer thread over `store`.
    pub(crate) fn start(store: Arc<dyn JournalStore>, durability: Durability) -> Writer {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("shipsec-journal".into())
            .spawn(move || write_loop(&*store, durability, &rx))
            .expect("the journal writer thread starts");
        Writer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues `append`. After a staged crash nothing is written any more (the "process"
    /// is gone) and the append is dropped unacknowledged.
    pub(crate) fn send(&self, append: Append) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref() {
            // A writer that stopped (a staged crash) takes nothing more.
            let _ = tx.send(Msg::Append(append));
        }
    }

    /// Waits (blocking) until every append queued before is committed or failed.
    pub(crate) fn flush(&self) {
        let (done_tx, done_rx) = channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = tx.as_ref() else { return };
            if tx.send(Msg::Flush(done_tx)).is_err() {
                return;
            }
        }
        // A writer gone (a staged crash) has nothing left to flush.
        let _ = done_rx.recv();
    }

    /// Flushes, stops the thread and waits for it.
    pub(crate) fn close(&self) {
        self.flush();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // A writer thread that panicked has stopped writing either way.
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The highest ticket of each sink in a batch.
#[derive(Default)]
struct Acks {
    by_sink: HashMap<usize, (Arc<dyn AckSink>, u64)>,
}

impl Acks {
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

fn write_loop(store: &dyn JournalStore, durability: Durability, rx: &Receiver<Msg>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut tickets: Vec<Option<(Arc<dyn AckSink>, u64)>> = Vec::new();
    let mut flushes: Vec<Sender<()>> = Vec::new();
    let mut failed: Option<StoreError> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Append(a) => {
                    ops.push(a.op);
                    tickets.push(a.ack);
                }
                Msg::Flush(done) => flushes.push(done),
            }
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let outcome = match &failed {
            Some(e) => Err(e.clone()),
            None if ops.is_empty() => Ok(Committed::All),
            None => store.commit(&ops, durability),
        };
        let mut acks = Acks::default();
        match outcome {
            Ok(Committed::All) => {
                for (sink, t) in tickets.iter().flatten() {
                    acks.add(sink, *t);
                }
                acks.durable();
            }
            Ok(Committed::Crashed { applied, acked }) => {
                if acked {
                    for (sink, t) in tickets[..applied].iter().flatten() {
                        acks.add(sink, *t);
                    }
                    acks.durable();
                }
                // The "process" died here: nothing more is written or acknowledged.
                return;
            }
            Err(error) => {
                tracing::error!(target: "shipsec::journal", %error, "journal write failed; the runs waiting on it fail");
                for (sink, t) in tickets.iter().flatten() {
                    acks.add(sink, *t);
                }
                acks.failed(&error);
                failed = Some(error);
            }
        }
        ops.clear();
        tickets.clear();
        for done in flushes.drain(..) {
            // A flusher that stopped waiting needs no answer.
            let _ = done.send(());
        }
    }
}
