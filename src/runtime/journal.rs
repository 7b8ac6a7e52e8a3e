//! The run journal: what makes runs survive the engine's death.
//!
//! A run's supervisor records each fact it applies to its [`RunCore`] — in the form
//! `journal::replay` defines, keeping only what the cores cannot recompute — and holds
//! back the effects of that fact (telling children, spawning them, publishing events and
//! the result) until the journal says it is stored. One writer thread
//! (`journal::writer`) group-commits the appends of every run. On start, an engine with
//! a journal folds every unfinished run's facts through fresh cores and resumes it
//! ([`RunFact::Resumed`]): completed nodes never run again, an attempt that had started
//! and has no end is lost and fails with `CrashError` (retried per its policy), backoff
//! timers and the run deadline keep their due times.
//!
//! Storage is behind [`JournalStore`]: fjall on disk ([`FjallStore`]), or memory for
//! tests ([`MemoryStore`]). See docs/durability.md for what survives what.
//!
//! [`RunCore`]: crate::runtime::semantics::run_core::RunCore
//! [`RunFact::Resumed`]: crate::runtime::semantics::run_core::RunFact::Resumed

pub mod readback;
pub mod record;
pub mod replay;
pub mod store;
mod wal;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use store::{FjallStore, JournalStore, Loss, LossPolicy, MemoryStore, StoreError};

use crate::runtime::journal::record::{Fact, RecordError, RunHeader};
use crate::runtime::journal::store::Op;
use crate::runtime::journal::writer::{AckSink, Append, Writer};

/// How hard the journal tries to keep what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Each batch is written and fdatasync'ed before it is acknowledged: survives a power
    /// loss.
    #[default]
    Fsync,
    /// Each batch is written to the OS before it is acknowledged: survives kill -9 and
    /// panics, not a power loss or an OS crash.
    Process,
    /// No journal: runs die with the process.
    Off,
}

impl Durability {
    /// Its name in configuration and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Process => "process",
            Durability::Off => "off",
        }
    }
}

/// A durability name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability `{0}` (expected fsync, process or off)")]
pub struct UnknownDurability(pub String);

impl std::str::FromStr for Durability {
    type Err = UnknownDurability;

    fn from_str(s: &str) -> Result<Durability, UnknownDurability> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "process" => Ok(Durability::Process),
            "off" => Ok(Durability::Off),
            other => Err(UnknownDurability(other.to_owned())),
        }
    }
}

/// The journal's settings, in [`crate::EngineConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Its directory; no journal without one.
    pub data_dir: Option<PathBuf>,
    /// How hard it keeps what it is given.
    pub durability: Durability,
    /// Finished runs kept in the journal; the oldest are purged past it.
    pub retained_runs: usize,
    /// How long a finished run is kept in the journal, in seconds.
    #[serde(rename = "retentionSeconds")]
    pub retention_secs: u64,
    /// Whether a journal that lost acknowledged data opens anyway: an operator's decision
    /// for one start (`--accept-journal-loss`), never read from a configuration file.
    #[serde(skip)]
    pub loss: LossPolicy,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            data_dir: None,
            durability: Durability::Fsync,
            retained_runs: 10_000,
            retention_secs: 7 * 86_400,
            loss: LossPolicy::Refuse,
        }
    }
}

impl JournalConfig {
    /// How long a finished run is kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

/// Why a journal cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record cannot be read.
    #[error("{location}: run `{run_id}`, {what}: {error}")]
    Record {
        /// The journal.
        location: String,
        /// The run.
        run_id: String,
        /// Which record (`header`, `fact 12`).
        what: String,
        /// Why.
        error: RecordError,
    },
}

/// A run read back from the journal.
#[derive(Debug, Clone)]
pub struct StoredRunLog {
    /// Its header.
    pub header: RunHeader,
    /// Its facts, in order.
    pub facts: Vec<Fact>,
    /// Bytes its values take.
    pub bytes: u64,
}

/// A seam for tests that stage the death of the process between two of the journal's
/// writes (the chaos feature's `chaos::journal::CrashAt`): the writer asks it before each batch.
/// A production journal has none, and no store knows of it.
pub trait WriteFaults: Send + Sync + std::fmt::Debug {
    /// Before a batch of `ops` ops is stored: `None` stores it whole; a death stores the
    /// batch's first [`ProcessDeath::stored`] ops, and after that nothing more is written
    /// or answered.
    fn before_commit(&self, ops: usize) -> Option<ProcessDeath>;

    /// The death [`WriteFaults::before_commit`] staged has happened: what it let store is
    /// stored, and nothing else will be (its acknowledgements, if any, go out after).
    fn died(&self);
}

/// Where a staged death of the process strikes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessDeath {
    /// Ops of the batch stored before it.
    pub stored: usize,
    /// Whether their acknowledgements go out (after [`WriteFaults::died`], as a process
    /// could answer and then die).
    pub acked: bool,
}

/// An open journal: the store and its writer thread. Clones share both.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JournalStore>,
    durability: Durability,
    writer: Writer,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("location", &self.inner.store.location())
            .field("durability", &self.inner.durability)
            .finish()
    }
}

impl Journal {
    /// A journal over `store`, written with `durability` (not `Off`).
    pub fn new(store: Arc<dyn JournalStore>, durability: Durability) -> Journal {
        Journal::start(store, durability, None)
    }

    /// A journal whose writer asks `faults`, before each batch, whether the process dies
    /// there (tests of what survives a crash; see [`WriteFaults`]).
    pub fn with_faults(
        store: Arc<dyn JournalStore>,
        durability: Durability,
        faults: Arc<dyn WriteFaults>,
    ) -> Journal {
        Journal::start(store, durability, Some(faults))
    }

    fn start(
        store: Arc<dyn JournalStore>,
        durability: Durability,
        faults: Option<Arc<dyn WriteFaults>>,
    ) -> Journal {
        let writer = Writer::start(store.clone(), durability, faults);
        Journal {
            inner: Arc::new(Inner {
                store,
                durability,
                writer,
            }),
        }
    }

    /// Opens the fjall journal in `dir`, refusing one that lost acknowledged data unless
    /// `policy` accepts the loss (then logged with the runs it names, and recorded).
    ///
    /// # Errors
    /// When the directory is locked, its files cannot be read, or it lost acknowledged
    /// data ([`StoreError::Loss`]) and `policy` refuses.
    pub fn open(
        dir: &std::path::Path,
        durability: Durability,
        policy: LossPolicy,
    ) -> Result<Journal, JournalError> {
        let (store, opened) = FjallStore::open_with(dir, policy)?;
        if let Some(loss) = &opened.loss {
            tracing::warn!(
                target: "shipsec::journal",
                journal = %dir.display(),
                "opened with an accepted loss ({loss}); recorded in {}",
                dir.join(store::LOSSES_FILE).display()
            );
        }
        Ok(Journal::new(Arc::new(store), durability))
    }

    /// Queues a write and has it committed; `ack` is told when it is stored (or failed).
    pub(crate) fn append(&self, op: Op, ack: Option<(Arc<dyn AckSink>, u64)>) {
        self.inner.writer.send(Append { op, ack });
    }

    /// Queues a write that [`Journal::commit`] (by this caller, or any other) commits.
    pub(crate) fn append_deferred(&self, op: Op, ack: Option<(Arc<dyn AckSink>, u64)>) {
        self.inner.writer.queue(Append { op, ack });
    }

    /// Has every queued write committed (see the writer: under `process` this caller
    /// may commit it itself).
    pub(crate) fn commit(&self) {
        self.inner.writer.commit();
    }

    /// Why the journal takes no more writes, once a write failed (a full disk, a dead
    /// device): every later append fails with it until the engine restarts.
    pub fn failure(&self) -> Option<StoreError> {
        self.inner.writer.failure()
    }

    /// Flushes and stops the writer thread.
    pub fn close(&self) {
        self.inner.writer.close();
    }

    /// Every run in the journal, read back whole (headers and facts).
    ///
    /// # Errors
    /// When a record cannot be read: the journal is refused, never half read.
    pub fn load(&self) -> Result<Vec<StoredRunLog>, JournalError> {
        load(&*self.inner.store)
    }

    /// Every run in the journal, finished ones without their payloads ([`scan`]).
    ///
    /// # Errors
    /// When a record cannot be read.
    pub fn scan(&self) -> Result<Vec<Scanned>, JournalError> {
        scan(&*self.inner.store)
    }

    /// One run, read back whole; `None` once the journal no longer holds it.
    ///
    /// # Errors
    /// When a record cannot be read.
    pub fn read_run(&self, run_id: &str) -> Result<Option<StoredRunLog>, JournalError> {
        read_run(&*self.inner.store, run_id)
    }
}

/// Every run in `store`, read back whole.
///
/// # Errors
/// When a record cannot be read.
pub fn load(store: &dyn JournalStore) -> Result<Vec<StoredRunLog>, JournalError> {
    let mut runs = Vec::new();
    for run_id in store.run_ids()? {
        runs.extend(read_run(store, &run_id)?);
    }
    Ok(runs)
}

/// One run of `store`, read back whole; `None` when the store does not hold it.
///
/// # Errors
/// When a record cannot be read.
pub fn read_run(
    store: &dyn JournalStore,
    run_id: &str,
) -> Result<Option<StoredRunLog>, JournalError> {
    let bad = |what: String, error: RecordError| JournalError::Record {
        location: store.location(),
        run_id: run_id.to_owned(),
        what,
        error,
    };
    let Some(value) = store.header(run_id)? else {
        return Ok(None);
    };
    let header = record::decode_header(&value).map_err(|e| bad("header".into(), e))?;
    let mut bytes = value.len() as u64;
    let mut facts = Vec::new();
    for (i, (seq, value)) in store.facts(run_id)?.into_iter().enumerate() {
        if seq != i as u64 + 1 {
            return Err(bad(
                format!("fact {}", i + 1),
                RecordError::Corrupt(format!("missing (the next stored is fact {seq})")),
            ));
        }
        bytes += value.len() as u64;
        facts.push(record::decode(&value).map_err(|e| bad(format!("fact {seq}"), e))?);
    }
    Ok(Some(StoredRunLog {
        header,
        facts,
        bytes,
    }))
}

/// A run as an engine's start reads it: an unfinished run whole, to resume; a finished
/// one as what listings and lookups need without its payloads (its records are all read
/// and checked, then let go), to be read whole again when someone asks for it.
#[derive(Debug, Clone)]
pub enum Scanned {
    /// A run to resume.
    Unfinished(StoredRunLog),
    /// A run that ended.
    Finished(FinishedRun),
}

/// A finished run without its definition, inputs and facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    /// Its id.
    pub run_id: String,
    /// Its definition's title.
    pub title: String,
    /// How it ended.
    pub finished: record::FinishedRecord,
    /// When it was accepted, µs since the epoch.
    pub accepted_at: u64,
    /// The caller's `traceparent`.
    pub traceparent: Option<String>,
    /// Its idempotency key, and the fingerprint of its submission.
    pub idempotency: Option<(String, u64)>,
    /// Its metadata.
    pub metadata: crate::runtime::semantics::metadata::Metadata,
    /// Its input requests as they ended, as JSON text (empty: none).
    pub requests: String,
    /// The ids of the signals it took, as JSON text (empty: none).
    pub signals: String,
}

impl FinishedRun {
    /// What `log`'s header says of a finished run; `None` for one still running.
    pub fn of(log: &StoredRunLog) -> Option<FinishedRun> {
        /// The one field wanted of a definition.
        #[derive(Deserialize)]
        struct Titled {
            #[serde(default)]
            title: String,
        }
        let accepted = &log.header.accepted;
        Some(FinishedRun {
            run_id: accepted.run_id.clone(),
            title: serde_json::from_str::<Titled>(&accepted.definition)
                .map(|t| t.title)
                .unwrap_or_default(),
            finished: log.header.finished.clone()?,
            accepted_at: accepted.accepted_at,
            traceparent: accepted.traceparent.clone(),
            idempotency: accepted.idempotency(),
            metadata: accepted.metadata(),
            requests: log.header.requests.clone(),
            signals: log.header.signals.clone(),
        })
    }
}

/// Every run in `store`, one at a time (never more than one finished run whole in memory).
///
/// # Errors
/// When a record cannot be read: the journal is refused, never half read.
pub fn scan(store: &dyn JournalStore) -> Result<Vec<Scanned>, JournalError> {
    let mut runs = Vec::new();
    for run_id in store.run_ids()? {
        let Some(log) = read_run(store, &run_id)? else {
            continue;
        };
        runs.push(match FinishedRun::of(&log) {
            Some(finished) => Scanned::Finished(finished),
            None => Scanned::Unfinished(log),
        });
    }
    Ok(runs)
}
