//! Where journal records live: the [`JournalStore`] trait, free of any storage engine's
//! types, and its two implementations — [`FjallStore`] (embedded, on disk) and
//! [`MemoryStore`] (tests; it can be told to fail past a given append).
//!
//! A store holds two kinds of values: one header per run (keyed by run id) and the run's
//! facts (keyed by run id and a dense number from 1). [`JournalStore::commit`] applies a
//! batch atomically with the persistence asked for; the one writer thread
//! (`journal::writer`) is its only caller.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::runtime::guardrails::connections::JOURNAL_CACHED_FILES;
use crate::runtime::journal::Durability;
use crate::runtime::journal::wal;

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes the header of `run_id`.
    PutRun {
        /// The run.
        run_id: Arc<str>,
        /// The encoded [`crate::runtime::journal::record::RunHeader`].
        value: Vec<u8>,
    },
    /// Writes fact number `seq` of `run_id`.
    PutFact {
        /// The run.
        run_id: Arc<str>,
        /// Its number, from 1.
        seq: u64,
        /// The encoded [`crate::runtime::journal::record::Fact`].
        value: Vec<u8>,
    },
    /// Removes the run: its header and every fact.
    DeleteRun {
        /// The run.
        run_id: Arc<str>,
    },
}

/// Why a store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The journal's files cannot be opened or read.
    #[error("cannot open the journal at {path}: {reason}")]
    Open {
        /// Its directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another engine holds the journal.
    #[error("the journal at {0} is in use by another process")]
    Locked(PathBuf),
    /// The journal lost batches it had acknowledged, or its log is damaged before data
    /// that can still be read; opening it would drop them.
    #[error(
        "{0}; restore the directory from a backup, or start once with --accept-journal-loss to open it without what is lost (the loss is then listed and recorded in its `losses` file)"
    )]
    Loss(Box<Loss>),
    /// A write or a persist failed; the store takes no more writes.
    #[error("journal write failed: {0}")]
    Write(String),
    /// A read failed.
    #[error("journal read failed: {0}")]
    Read(String),
}

/// A run's stored values, as read back.
pub type StoredRun = (Arc<str>, Vec<u8>);

/// A journal's storage.
pub trait JournalStore: Send + Sync + 'static {
    /// Applies `batch` atomically, persisted as `durability` says.
    ///
    /// # Errors
    /// [`StoreError::Write`]; the store is then poisoned and fails every later commit.
    fn commit(&self, batch: &[Op], durability: Durability) -> Result<(), StoreError>;

    /// Every run's header, by run id.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn runs(&self) -> Result<Vec<StoredRun>, StoreError>;

    /// Every run's id (their headers left unread), in id order.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn run_ids(&self) -> Result<Vec<Arc<str>>, StoreError>;

    /// The header of `run_id`, if the journal holds the run.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn header(&self, run_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The facts of `run_id`, in order, with their numbers.
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn facts(&self, run_id: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Bytes the journal takes on disk (its values' size for the memory store).
    ///
    /// # Errors
    /// [`StoreError::Read`].
    fn disk_space(&self) -> Result<u64, StoreError>;

    /// Where it is, for messages.
    fn location(&self) -> String;
}

/// The key of fact `seq` of `run_id`: the id's length, the id, the number (big-endian,
/// so a run's facts sort in order and a run's keys share one prefix).
fn fact_key(run_id: &str, seq: u64) -> Vec<u8> {
    let mut key = fact_prefix(run_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn fact_prefix(run_id: &str) -> Vec<u8> {
    let id = run_id.as_bytes();
    let mut key = Vec::with_capacity(4 + id.len() + 8);
    key.extend_from_slice(&(id.len() as u32).to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let tail: [u8; 8] = key
        .get(key.len().saturating_sub(8)..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| StoreError::Read(format!("malformed fact key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(tail))
}

#[derive(Debug, Default)]
struct Memory {
    runs: BTreeMap<Arc<str>, Vec<u8>>,
    facts: BTreeMap<Vec<u8>, Vec<u8>>,
    ops: u64,
    /// Ops after which every commit fails (a full disk, a dead device).
    fail_after: Option<u64>,
}

/// A journal in memory, for tests: what it stored survives the engine that wrote it (an
/// `Arc` of it is handed to the next engine), and it can be told to fail past a chosen
/// op. (A crash of the process between two writes is staged by the journal's writer,
/// through [`crate::runtime::journal::WriteFaults`], over any store.)
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store whose commits fail, whole, once `after` ops are stored: the process lives
    /// on, but nothing more can be written.
    pub fn failing(after: u64) -> MemoryStore {
        let store = MemoryStore::default();
        store.lock().fail_after = Some(after);
        store
    }

    /// What survived: a new store holding what this one stored (a copy, so that a writer
    /// of the engine that "died" cannot touch it).
    pub fn recovered(&self) -> MemoryStore {
        let inner = self.lock();
        let store = MemoryStore::default();
        *store.lock() = Memory {
            runs: inner.runs.clone(),
            facts: inner.facts.clone(),
            ..Memory::default()
        };
        store
    }

    /// Ops stored so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock leaves plain maps, still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Memory {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutRun { run_id, value } => {
                self.runs.insert(run_id.clone(), value.clone());
            }
            Op::PutFact { run_id, seq, value } => {
                self.facts.insert(fact_key(run_id, *seq), value.clone());
            }
            Op::DeleteRun { run_id } => {
                self.runs.remove(run_id);
                let prefix = fact_prefix(run_id);
                let keys: Vec<Vec<u8>> = self
                    .facts
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.facts.remove(&k);
                }
            }
        }
    }
}

impl JournalStore for MemoryStore {
    fn commit(&self, batch: &[Op], _durability: Durability) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner
            .fail_after
            .is_some_and(|after| inner.ops + batch.len() as u64 > after)
        {
            return Err(StoreError::Write(
                "no space left on device (injected)".into(),
            ));
        }
        for op in batch {
            inner.apply(op);
            inner.ops += 1;
        }
        Ok(())
    }

    fn runs(&self) -> Result<Vec<StoredRun>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .runs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn run_ids(&self) -> Result<Vec<Arc<str>>, StoreError> {
        Ok(self.lock().runs.keys().cloned().collect())
    }

    fn header(&self, run_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().runs.get(run_id).cloned())
    }

    fn facts(&self, run_id: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        let prefix = fact_prefix(run_id);
        inner
            .facts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix) && k.len() == prefix.len() + 8)
            .map(|(k, v)| Ok((seq_of(k)?, v.clone())))
            .collect()
    }

    fn disk_space(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        let runs: usize = inner.runs.values().map(Vec::len).sum();
        let facts: usize = inner.facts.iter().map(|(k, v)| k.len() + v.len()).sum();
        Ok((runs + facts) as u64)
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

/// The journal in a directory, on fjall: keyspaces `runs` (headers) and `facts`.
pub struct FjallStore {
    path: PathBuf,
    db: fjall::Database,
    runs: fjall::Keyspace,
    facts: fjall::Keyspace,
    /// The number of the last batch committed (kept in the `facts` keyspace too, under
    /// [`BATCH_KEY`], and appended to the `batches` file after each commit, which is how a
    /// torn tail is noticed on open), and that file.
    batches: Mutex<(u64, std::fs::File)>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The key under which the last batch's number is kept (no fact key is this short:
/// fjall refuses empty keys).
pub(crate) const BATCH_KEY: &[u8] = b"#";

/// The side file recording the numbers of acknowledged batches.
const BATCHES_FILE: &str = "batches";

/// What opening a journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The last whole batch.
    pub batch: u64,
    /// Acknowledged batches it no longer holds, opened anyway because the caller accepted
    /// the loss ([`LossPolicy::Accept`]); recorded in the journal's `losses` file.
    pub loss: Option<Loss>,
}

/// What opening a journal does when it holds fewer batches than it acknowledged, or a
/// write-ahead log damaged before readable data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossPolicy {
    /// Refuse to open, with the numbers and the file ([`StoreError::Loss`]).
    #[default]
    Refuse,
    /// Open without what is lost: an operator's explicit decision (`--accept-journal-loss`),
    /// reported in [`Opened::loss`] and recorded.
    Accept,
}

/// Acknowledged batches a journal no longer holds, or would not once fjall cut its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The journal's directory.
    pub path: PathBuf,
    /// The last batch acknowledged before the previous process ended (the `batches` side
    /// file), when that file says.
    pub acknowledged: Option<u64>,
    /// The last batch the journal holds (before the damage), when known.
    pub found: Option<u64>,
    /// What happened, with the file and the byte.
    pub cause: String,
    /// The runs written by the batches lost, when they can still be read.
    pub runs: Option<BTreeSet<String>>,
}

/// Runs a loss message names before it counts the rest.
const RUNS_NAMED: usize = 20;

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal at {} lost acknowledged data: {}",
            self.path.display(),
            self.cause
        )?;
        match (self.found, self.acknowledged) {
            (Some(found), Some(acked)) => {
                write!(
                    f,
                    "; it holds batches up to {found}, {acked} had been acknowledged"
                )?;
            }
            (None, Some(acked)) => write!(f, "; {acked} batches had been acknowledged")?,
            (Some(found), None) => write!(f, "; it holds batches up to {found}")?,
            (None, None) => {}
        }
        match &self.runs {
            Some(runs) if runs.is_empty() => write!(f, "; the lost batches wrote no run")?,
            Some(runs) => {
                let named: Vec<&str> = runs.iter().take(RUNS_NAMED).map(String::as_str).collect();
                write!(f, "; runs written in what is lost: {}", named.join(", "))?;
                if runs.len() > RUNS_NAMED {
                    write!(f, " and {} more", runs.len() - RUNS_NAMED)?;
                }
            }
            None => write!(f, "; the runs they wrote are unknown")?,
        }
        Ok(())
    }
}

impl Loss {
    /// One line of the `losses` file (JSON).
    fn record(&self) -> String {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serde_json::json!({
            "recordedAtUnixSeconds": at,
            "acknowledged": self.acknowledged,
            "found": self.found,
            "cause": self.cause,
            "runs": self.runs,
        })
        .to_string()
    }
}

/// The file where accepted losses are recorded, one JSON line each.
pub const LOSSES_FILE: &str = "losses";

impl FjallStore {
    /// Opens (or creates) the journal in `dir`, refusing one that lost acknowledged data.
    ///
    /// # Errors
    /// As [`FjallStore::open_with`].
    pub fn open(dir: &Path) -> Result<(FjallStore, Opened), StoreError> {
        FjallStore::open_with(dir, LossPolicy::Refuse)
    }

    /// Opens (or creates) the journal in `dir`.
    ///
    /// Before fjall reads its write-ahead log (which cuts it at the first entry it cannot
    /// decode), the log is scanned: a batch that cannot be read followed by one that can
    /// is damage, not a torn tail. After it opens, the last batch it holds is compared
    /// with the last one the `batches` side file says was acknowledged. Either loss is
    /// refused unless `policy` accepts it.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds it, [`StoreError::Loss`] when it
    /// lost acknowledged data (and `policy` refuses), [`StoreError::Open`] with the reason
    /// when its files cannot be read.
    pub fn open_with(dir: &Path, policy: LossPolicy) -> Result<(FjallStore, Opened), StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let acknowledged = last_acknowledged(&dir.join(BATCHES_FILE)).filter(|a| *a > 0);
        let live = dir.join(DB_DIR);
        let loss_of = |found, cause, runs| Loss {
            path: dir.to_path_buf(),
            acknowledged,
            found,
            cause,
            runs,
        };
        let mut loss = None;
        if acknowledged.is_some() && !live.exists() {
            let cause = format!("its database directory {} is missing", live.display());
            loss = Some(loss_of(None, cause, None));
            refuse_unless(policy, loss.as_ref())?;
        }
        create_if_missing(dir).map_err(|e| open_err(format!("creating it: {e}")))?;
        let scan =
            wal::scan(&live).map_err(|e| open_err(format!("reading its write-ahead log: {e}")))?;
        // A copy of a damaged log whose loss only the open can tell.
        let mut kept = None;
        if let Some(damage) = &scan.damage {
            let before_acked =
                matches!((scan.last_whole, acknowledged), (Some(w), Some(a)) if a > w);
            if damage.followed_at.is_some() || before_acked {
                let runs = Some(damage.runs.clone());
                loss = loss.or(Some(loss_of(
                    scan.last_whole,
                    describe_damage(damage),
                    runs,
                )));
                refuse_unless(policy, loss.as_ref())?;
            } else if acknowledged.is_some() && scan.last_whole.is_none() {
                kept = Some(keep_copy(dir, &damage.file).map_err(|e| open_err(e.to_string()))?);
            }
        }
        let (db, runs, facts) = match open_db(&live) {
            Ok(opened) => opened,
            Err(fjall::Error::Locked) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(e) => return Err(open_err(describe(&e))),
        };
        let batch = match facts.get(BATCH_KEY).map_err(|e| open_err(describe(&e)))? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| open_err("the batch counter is malformed".into()))?,
            ),
            None => 0,
        };
        match (&mut loss, acknowledged) {
            (Some(loss), _) => loss.found = Some(batch),
            (None, Some(acked)) if acked > batch => {
                let cause = match (&scan.damage, &kept) {
                    (Some(damage), Some(copy)) => format!(
                        "{} (a copy of the log as it was is kept at {})",
                        describe_damage(damage),
                        copy.display()
                    ),
                    _ => "its write-ahead log no longer holds them (deleted, truncated or zeroed)"
                        .to_owned(),
                };
                let runs = scan.damage.as_ref().map(|d| d.runs.clone());
                loss = Some(loss_of(Some(batch), cause, runs));
                refuse_unless(policy, loss.as_ref())?;
            }
            (None, _) => {
                if let Some(copy) = kept {
                    // The damage was a torn tail that held nothing acknowledged.
                    let _ = std::fs::remove_file(copy);
                }
            }
        }
        if let Some(loss) = &loss {
            record_loss(dir, loss)
                .map_err(|e| open_err(format!("recording the accepted loss: {e}")))?;
        }
        let file = rewrite_witness(dir, batch).map_err(|e| open_err(e.to_string()))?;
        let store = FjallStore {
            path: dir.to_path_buf(),
            db,
            runs,
            facts,
            batches: Mutex::new((batch, file)),
        };
        Ok((store, Opened { batch, loss }))
    }

    fn note_batch(&self, batch: u64) {
        use std::io::Write as _;
        let mut guard = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 = batch;
        // Only a witness for the next open: losing it loses no record.
        let _ = guard.1.write_all(&batch.to_be_bytes());
    }
}

/// `Err` with `loss` unless `policy` accepts it.
fn refuse_unless(policy: LossPolicy, loss: Option<&Loss>) -> Result<(), StoreError> {
    match (policy, loss) {
        (LossPolicy::Refuse, Some(loss)) => Err(StoreError::Loss(Box::new(loss.clone()))),
        _ => Ok(()),
    }
}

fn describe_damage(damage: &wal::Damage) -> String {
    let mut out = format!(
        "its write-ahead log {} cannot be read from byte {} ({})",
        damage.file.display(),
        damage.offset,
        damage.why
    );
    if let Some((file, at)) = &damage.followed_at {
        out.push_str(&format!(
            " and readable batches follow from byte {at} of {} (damage, not a torn tail)",
            file.display()
        ));
    }
    if let Some(later) = damage.later_batch {
        out.push_str(&format!(", up to batch {later}"));
    }
    out
}

/// Copies the log `file` into the journal's directory (as `damaged-<name>`).
fn keep_copy(dir: &Path, file: &Path) -> std::io::Result<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let copy = dir.join(format!("damaged-{name}"));
    std::fs::copy(file, &copy)?;
    Ok(copy)
}

/// Appends `loss` to the journal's `losses` file, synced.
fn record_loss(dir: &Path, loss: &Loss) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOSSES_FILE))?;
    writeln!(file, "{}", loss.record())?;
    file.sync_all()
}

/// Replaces the `batches` side file with one holding `batch` (written aside and renamed,
/// so no crash leaves it empty) and opens it to append to.
fn rewrite_witness(dir: &Path, batch: u64) -> std::io::Result<std::fs::File> {
    use std::io::Write as _;
    let aside = dir.join(format!("{BATCHES_FILE}.new"));
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(&batch.to_be_bytes())?;
    file.sync_all()?;
    std::fs::rename(&aside, dir.join(BATCHES_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(BATCHES_FILE))
}

/// The database's directory inside the journal's.
const DB_DIR: &str = "fjall";

/// Where a new database is made before it is moved to [`DB_DIR`].
const NEW_DB_DIR: &str = "fjall.new";

/// Opens the database at `path` with its two keyspaces.
fn open_db(path: &Path) -> fjall::Result<(fjall::Database, fjall::Keyspace, fjall::Keyspace)> {
    let db = fjall::Database::builder(path)
        .max_journaling_size(64 << 20)
        .worker_threads(1)
        .manual_journal_persist(true)
        .max_cached_files(Some(JOURNAL_CACHED_FILES))
        .open()?;
    let options = || fjall::KeyspaceCreateOptions::default().manual_journal_persist(true);
    let runs = db.keyspace("runs", options)?;
    let facts = db.keyspace("facts", options)?;
    Ok((db, runs, facts))
}

/// Makes the database of a new journal whole before it is used: created in
/// [`NEW_DB_DIR`], persisted, then renamed to [`DB_DIR`]. fjall writes a new database's
/// files one by one, and a process killed in between leaves one that no longer opens
/// (a version marker without a version); made aside, such a leftover is only ever a
/// `fjall.new`, removed by the next creation.
fn create_if_missing(dir: &Path) -> Result<(), CreateError> {
    let live = dir.join(DB_DIR);
    if live.exists() {
        return Ok(());
    }
    let fresh = dir.join(NEW_DB_DIR);
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    {
        let (db, _, _) = open_db(&fresh).map_err(|e| CreateError::Database(describe(&e)))?;
        db.persist(fjall::PersistMode::SyncAll)
            .map_err(|e| CreateError::Database(describe(&e)))?;
    }
    std::fs::rename(&fresh, &live)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}

/// Why a new journal's database could not be made.
#[derive(Debug, thiserror::Error)]
enum CreateError {
    /// A file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database failed, as fjall describes it.
    #[error("{0}")]
    Database(String),
}

/// The last batch number in the `batches` file (whole 8-byte entries only).
fn last_acknowledged(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let whole = bytes.len() / 8 * 8;
    let last = bytes.get(whole.checked_sub(8)?..whole)?;
    Some(u64::from_be_bytes(last.try_into().ok()?))
}

/// An operator's sentence for a fjall error (its own `Display` is its `Debug`).
fn describe(e: &fjall::Error) -> String {
    use fjall::Error as E;
    match e {
        E::Io(io) | E::Storage(fjall::LsmError::Io(io)) => io.to_string(),
        E::Poisoned => {
            "the store takes no more writes since an earlier write or flush failed (the log names its cause: a full disk, a failing device); restart once it is fixed".to_owned()
        }
        E::Locked => "it is in use by another process".to_owned(),
        E::JournalRecovery(_) | E::InvalidTrailer | E::InvalidTag(_) | E::Decompress(_) => {
            "its write-ahead log is corrupt; restore the directory from a backup".to_owned()
        }
        E::InvalidVersion(_) => {
            "its files were written by an unknown version of the storage engine".to_owned()
        }
        E::KeyspaceDeleted => "one of its keyspaces was deleted".to_owned(),
        E::Storage(_) | E::Unrecoverable => {
            "its data files are damaged (a checksum or format check failed); restore the directory from a backup".to_owned()
        }
        _ => "the storage engine failed".to_owned(),
    }
}

impl JournalStore for FjallStore {
    fn commit(&self, batch: &[Op], durability: Durability) -> Result<(), StoreError> {
        let persist = match durability {
            Durability::Fsync => Some(fjall::PersistMode::SyncData),
            Durability::Process => Some(fjall::PersistMode::Buffer),
            Durability::Off => None,
        };
        let number = self.batches.lock().unwrap_or_else(|e| e.into_inner()).0 + 1;
        let mut write = self.db.batch().durability(persist);
        for op in batch {
            match op {
                Op::PutRun { run_id, value } => {
                    write.insert(&self.runs, run_id.as_bytes(), value.as_slice());
                }
                Op::PutFact { run_id, seq, value } => {
                    write.insert(&self.facts, fact_key(run_id, *seq), value.as_slice());
                }
                Op::DeleteRun { run_id } => {
                    write.remove(&self.runs, run_id.as_bytes());
                    for guard in self.facts.prefix(fact_prefix(run_id)) {
                        let key = guard.key().map_err(|e| StoreError::Write(describe(&e)))?;
                        write.remove(&self.facts, key);
                    }
                }
            }
        }
        write.insert(&self.facts, BATCH_KEY, number.to_be_bytes().as_slice());
        write
            .commit()
            .map_err(|e| StoreError::Write(describe(&e)))?;
        self.note_batch(number);
        Ok(())
    }

    fn runs(&self) -> Result<Vec<StoredRun>, StoreError> {
        self.runs
            .iter()
            .map(|g| {
                let (k, v) = g.into_inner().map_err(|e| StoreError::Read(describe(&e)))?;
                let id = std::str::from_utf8(&k)
                    .map_err(|_| StoreError::Read("a run id is not UTF-8".into()))?;
                Ok((Arc::from(id), v.to_vec()))
            })
            .collect()
    }

    fn run_ids(&self) -> Result<Vec<Arc<str>>, StoreError> {
        self.runs
            .iter()
            .map(|g| {
                let k = g.key().map_err(|e| StoreError::Read(describe(&e)))?;
                let id = std::str::from_utf8(&k)
                    .map_err(|_| StoreError::Read("a run id is not UTF-8".into()))?;
                Ok(Arc::from(id))
            })
            .collect()
    }

    fn header(&self, run_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.runs
            .get(run_id.as_bytes())
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StoreError::Read(describe(&e)))
    }

    fn facts(&self, run_id: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = fact_prefix(run_id);
        self.facts
            .prefix(&prefix)
            .filter_map(|g| {
                let kv = g.into_inner().map_err(|e| StoreError::Read(describe(&e)));
                match kv {
                    Ok((k, _)) if k.len() != prefix.len() + 8 => None,
                    Ok((k, v)) => Some(seq_of(&k).map(|s| (s, v.to_vec()))),
                    Err(e) => Some(Err(e)),
                }
            })
            .collect()
    }

    fn disk_space(&self) -> Result<u64, StoreError> {
        self.db
            .disk_space()
            .map_err(|e| StoreError::Read(describe(&e)))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(run: &str, seq: u64) -> Op {
        Op::PutFact {
            run_id: run.into(),
            seq,
            value: vec![seq as u8],
        }
    }

    #[test]
    fn a_run_s_facts_come_back_in_order_and_apart_from_other_runs() {
        let store = MemoryStore::new();
        let batch = [put("a", 2), put("ab", 1), put("a", 1), put("a", 10)];
        store.commit(&batch, Durability::Fsync).unwrap();
        let seqs: Vec<u64> = store.facts("a").unwrap().iter().map(|f| f.0).collect();
        assert_eq!(seqs, [1, 2, 10]);
        assert_eq!(store.facts("ab").unwrap().len(), 1);
        store
            .commit(&[Op::DeleteRun { run_id: "a".into() }], Durability::Fsync)
            .unwrap();
        assert!(store.facts("a").unwrap().is_empty());
        assert_eq!(store.facts("ab").unwrap().len(), 1);
    }

    #[test]
    fn the_fjall_store_keeps_facts_across_a_reopen() {
        let dir = std::env::temp_dir().join(format!("shipsec-store-{}", uuid::Uuid::new_v4()));
        {
            let (store, opened) = FjallStore::open(&dir).unwrap();
            assert_eq!(opened.batch, 0);
            store
                .commit(&[put("r", 1), put("r", 2)], Durability::Fsync)
                .unwrap();
            store.commit(&[put("r", 3)], Durability::Process).unwrap();
        }
        let (store, opened) = FjallStore::open(&dir).unwrap();
        assert_eq!(
            opened,
            Opened {
                batch: 2,
                loss: None
            }
        );
        assert_eq!(store.facts("r").unwrap().len(), 3);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
