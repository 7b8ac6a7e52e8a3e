//! The ledger of the `core.process` attempts running in this process, so that what a
//! kill -9 leaves behind is killed before anything is retried.
//!
//! `PR_SET_PDEATHSIG` takes a `core.process` child along when its parent dies, but not
//! what the child started in the background: those are reparented and keep running,
//! beside the retry of their attempt once the engine or worker is back. So every attempt
//! is written down (one small file holding its attempt id, in a directory only one
//! process uses at a time: an exclusive lock is held on it while the ledger is open)
//! before its child is started, and crossed out once its process group is killed. The
//! next process to open the directory sweeps it first: every process whose environment
//! carries `SHIPSEC_ATTEMPT_ID=<a recorded id>` (every child and descendant has it, in
//! whatever process group or session it moved to) is killed, and the sweep waits until
//! each has exited.
//!
//! A pid is pinned with a pidfd before its environment is read, so a pid reused in
//! between is never signalled. The lock is an `flock` on a close-on-exec descriptor: a
//! child this process forks shares it only until it executes its program. A descendant that both clears its environment and leaves
//! the process group escapes; nothing else does.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a ledger cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The directory or a file in it cannot be made, read or written.
    #[error("the ledger of running processes in {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error(
        "{path} is in use: another server or worker records its running processes there (one directory per server's data directory, per worker)"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
    },
    /// The directory belongs to another user (or is a link), so it is not trusted.
    #[error("{path} is not a directory owned by this user; refusing to use it")]
    NotOwned {
        /// The directory.
        path: PathBuf,
    },
}

/// What opening a ledger found and killed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The ledger's directory.
    pub dir: PathBuf,
    /// The attempts the previous owner of the directory left recorded.
    pub attempts: Vec<String>,
    /// The processes killed: pid and the attempt each belonged to.
    pub killed: Vec<(u32, String)>,
    /// Killed processes still not gone when the sweep stopped waiting (ten seconds).
    pub lingering: Vec<u32>,
}

/// The open ledger: the directory, its lock held until this is dropped.
#[derive(Debug)]
pub struct ProcessLedger {
    dir: PathBuf,
    /// The exclusive `flock` on `<dir>/lock` (close-on-exec: no child inherits it).
    _lock: File,
    next: AtomicU64,
}

/// The mark of one attempt in the ledger; crossed out (its file removed) when dropped.
#[derive(Debug)]
pub struct Entry {
    path: PathBuf,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a sweep waits for the processes it killed to exit.
const SWEEP_WAIT: Duration = Duration::from_secs(10);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    }
}

impl ProcessLedger {
    /// Opens (creating it, mode 0700) the ledger in `dir`, takes its lock, and sweeps what
    /// the previous owner left: kills every process of a recorded attempt and waits for
    /// them to exit, then clears the records.
    ///
    /// # Errors
    /// [`LedgerError::Busy`] while another process holds the directory,
    /// [`LedgerError::NotOwned`] for a directory of another user or a symbolic link, and
    /// [`LedgerError::Io`] when it cannot be made or read.
    pub fn open(dir: &Path) -> Result<(Arc<ProcessLedger>, Sweep), LedgerError> {
        let lock = lock(dir, false)?;
        let (attempts, records) = recorded(dir)?;
        let sweep = Sweep {
            dir: dir.to_owned(),
            ..sweep(attempts)
        };
        for record in records {
            std::fs::remove_file(&record).map_err(io(&record))?;
        }
        let ledger = ProcessLedger {
            dir: dir.to_owned(),
            _lock: lock,
            next: AtomicU64::new(0),
        };
        Ok((Arc::new(ledger), sweep))
    }

    /// Opens the ledger `<parent>/<name>` among others kept side by side (workers, which
    /// cannot know which directory a dead predecessor used), after sweeping and removing
    /// every directory under `parent` that no live process holds. A lock on
    /// `<parent>/lock` orders those who start at once, so that none sweeps a directory
    /// another has made and not yet locked. Returns the ledger and the sweeps (the
    /// ledger's own first).
    ///
    /// # Errors
    /// As [`ProcessLedger::open`], for `parent` or a directory in it.
    pub fn open_among(
        parent: &Path,
        name: &str,
    ) -> Result<(Arc<ProcessLedger>, Vec<Sweep>), LedgerError> {
        let _parent = lock(parent, true)?;
        let mut swept = Vec::new();
        for entry in std::fs::read_dir(parent).map_err(io(parent))? {
            let dir = entry.map_err(io(parent))?.path();
            if !dir.is_dir() || dir.file_name() == Some(name.as_ref()) {
                continue;
            }
            match ProcessLedger::open(&dir) {
                Ok((ledger, sweep)) => {
                    // Removed while its lock is held: nobody can be writing in it.
                    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                    drop(ledger);
                    swept.push(sweep);
                }
                Err(LedgerError::Busy { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (ledger, sweep) = ProcessLedger::open(&parent.join(name))?;
        swept.insert(0, sweep);
        Ok((ledger, swept))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `attempt_id` as running here, before its child starts.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the record cannot be written.
    pub fn enter(&self, attempt_id: &str) -> Result<Entry, LedgerError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("attempt-{n}"));
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let entry = Entry { path };
        file.write_all(attempt_id.as_bytes())
            .map_err(io(&entry.path))?;
        Ok(entry)
    }
}

/// Makes `dir` (mode 0700) when missing, checks that it is this user's directory, and
/// takes the exclusive lock on `<dir>/lock`: waiting for it when `wait`, else refusing
/// with [`LedgerError::Busy`].
fn lock(dir: &Path, wait: bool) -> Result<File, LedgerError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(LedgerError::NotOwned {
            path: dir.to_owned(),
        });
    }
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    let how = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => {
                return Err(LedgerError::Busy {
                    path: dir.to_owned(),
                });
            }
            _ => return Err(io(&path)(e)),
        }
    }
}

/// The attempt ids recorded in `dir`, and their files.
fn recorded(dir: &Path) -> Result<(Vec<String>, Vec<PathBuf>), LedgerError> {
    let mut attempts = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let is_record = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("attempt-"));
        if !is_record {
            continue;
        }
        // An empty record is one whose write a kill cut short: it names nothing.
        let id = std::fs::read_to_string(&path).map_err(io(&path))?;
        if !id.is_empty() {
            attempts.push(id);
        }
        files.push(path);
    }
    attempts.sort();
    Ok((attempts, files))
}

/// Kills every process whose environment names one of `attempts`, and waits for them.
fn sweep(attempts: Vec<String>) -> Sweep {
    let mut sweep = Sweep {
        attempts,
        ..Sweep::default()
    };
    if sweep.attempts.is_empty() {
        return sweep;
    }
    let marks: Vec<Vec<u8>> = sweep
        .attempts
        .iter()
        .map(|id| format!("SHIPSEC_ATTEMPT_ID={id}").into_bytes())
        .collect();
    let me = std::process::id();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return sweep;
    };
    let mut pinned = Vec::new();
    for entry in proc.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Pinned first: if `pid` names another process by the time its environment is
        // read, the pinned one has exited and the signal below reaches nobody.
        let pin = Pin::new(pid);
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(mark) = environ
            .split(|&b| b == 0)
            .find_map(|var| marks.iter().position(|m| m.as_slice() == var))
        else {
            continue;
        };
        if pin.kill() {
            sweep.killed.push((pid, sweep.attempts[mark].clone()));
            pinned.push((pid, pin));
        }
    }
    let deadline = Instant::now() + SWEEP_WAIT;
    for (pid, pin) in pinned {
        if !pin.wait_until(deadline) {
            sweep.lingering.push(pid);
        }
    }
    sweep
}

/// A process held by a pidfd (Linux 5.3 on), or by its pid where pidfds are missing.
struct Pin {
    pid: u32,
    fd: Option<OwnedFd>,
}

impl Pin {
    fn new(pid: u32) -> Pin {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = (fd >= 0).then(|| {
            // SAFETY: the descriptor was just returned to this process and is owned here.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        Pin { pid, fd }
    }

    /// Sends SIGKILL; whether it was delivered.
    fn kill(&self) -> bool {
        // SAFETY: both calls only send a signal; the pidfd is a live descriptor.
        let sent = match &self.fd {
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            None => unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) }.into(),
        };
        sent == 0
    }

    /// Waits until the process has exited, or `deadline`; whether it exited.
    fn wait_until(&self, deadline: Instant) -> bool {
        let Some(fd) = &self.fd else {
            // No pidfd: /proc is all there is to watch.
            while Instant::now() < deadline {
                if !running(self.pid) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return !running(self.pid);
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one pollfd, valid for the call.
            match unsafe { libc::poll(&mut poll, 1, ms) } {
                1 => return true,
                0 => return false,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}
