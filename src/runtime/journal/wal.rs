//! Reads fjall's write-ahead log before fjall does, to tell a torn tail from damage.
//!
//! fjall reads any entry of its log that fails to decode as the end of the log and cuts
//! the file there (`JournalReader`), which is right for a tail a crash tore and wrong
//! for a flipped bit in the middle: every batch after it would be dropped, silently. So
//! the store scans the log files itself first, read only, and reports where a batch
//! stops being readable and whether a readable batch follows it (damage, not a tail).
//!
//! The format read here is fjall 3's journal (`fjall/src/journal/entry.rs`, pinned with
//! `fjall = "=3.1.13"`), little-endian: a batch is `Start` (tag 1, item count u32,
//! seqno u64), that many `Item`s (tag 2, value type u8, compression u8, keyspace u64, key
//! length u16, value length u32, stored length u32, key, stored value) or `Clear`s (tag
//! 4, keyspace u64), then `End` (tag 3, the xxh3-64 of the items' bytes, the trailer
//! `FJL\x03`). A new log file is zero-filled ahead of its writes.
//!
//! This module only reads; it never decides what to do with what it finds
//! (`store::FjallStore::open` does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The trailer closing every batch.
const TRAILER: &[u8] = b"FJL\x03";

const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;

/// What a scan of the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The last batch number (the store's `#` key) among the whole batches before any
    /// damage.
    pub last_whole: Option<u64>,
    /// Where the log stops being readable, if it does before its end (zeros after the
    /// last batch are the file's unused room, not damage).
    pub damage: Option<Damage>,
}

/// Where the log stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// The log file.
    pub file: PathBuf,
    /// The byte where the unreadable batch begins.
    pub offset: u64,
    /// Why it cannot be read.
    pub why: &'static str,
    /// Where a readable batch follows it (the file and its byte): the log is damaged in
    /// its middle, not torn at its end.
    pub followed_at: Option<(PathBuf, u64)>,
    /// The highest batch number among the readable batches after the damage.
    pub later_batch: Option<u64>,
    /// Runs written by what fjall would drop (the batches after the damage, and what
    /// reads of the damaged one).
    pub runs: BTreeSet<String>,
}

/// One readable batch.
#[derive(Debug)]
struct Batch<'a> {
    /// Where it begins and ends.
    start: usize,
    end: usize,
    seqno: u64,
    items: Vec<Item<'a>>,
    /// [`number_in`] its items.
    number: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    keyspace: u64,
    key: &'a [u8],
    value: &'a [u8],
}

/// The store's batch number in `items` (its `#` key, 8 bytes big-endian) with the
/// keyspace holding it, when the batch is one of the store's own.
fn number_in(items: &[Item<'_>]) -> Option<(u64, u64)> {
    items.iter().find_map(|i| {
        let value: [u8; 8] = i.value.try_into().ok()?;
        (i.key == super::store::BATCH_KEY).then(|| (i.keyspace, u64::from_be_bytes(value)))
    })
}

/// The log files of the database in `db_dir`, oldest first.
///
/// # Errors
/// When the directory cannot be read.
fn log_files(db_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(db_dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            files.push((id, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Scans every log file of the database in `db_dir`.
///
/// # Errors
/// When a file cannot be read.
pub(crate) fn scan(db_dir: &Path) -> std::io::Result<Scan> {
    let mut found = Scan::default();
    // The store's batches: their keyspaces and the seqno of the last one.
    let mut ours = Ours::default();
    let mut damaged: Option<Damage> = None;
    // What fjall would drop: the keyspace and key of each item read after the damage.
    let mut dropped: Vec<(u64, Vec<u8>)> = Vec::new();
    for file in log_files(db_dir)? {
        let bytes = std::fs::read(&file)?;
        let mut at = 0;
        while damaged.is_none() && at < bytes.len() {
            if bytes[at..].iter().all(|b| *b == 0) {
                break;
            }
            let why = match read_batch(&bytes, at) {
                Ok(batch) if ours.in_order(&batch) => {
                    if let Some((_, n)) = batch.number {
                        found.last_whole = Some(n);
                    }
                    at = batch.end;
                    continue;
                }
                Ok(_) => "its sequence number is below an earlier batch's",
                Err(why) => why,
            };
            dropped.extend(partial_items(&bytes, at).map(|i| (i.keyspace, i.key.to_vec())));
            damaged = Some(Damage {
                file: file.clone(),
                offset: at as u64,
                why,
                followed_at: None,
                later_batch: None,
                runs: BTreeSet::new(),
            });
            at += 1;
        }
        if let Some(damage) = damaged.as_mut() {
            // Everything after the damage is dropped too: note what it held.
            while at < bytes.len() {
                let Some(batch) = next_readable(&bytes, &mut at) else {
                    break;
                };
                if damage.followed_at.is_none() {
                    damage.followed_at = Some((file.clone(), batch.start as u64));
                }
                if let Some((_, n)) = batch.number {
                    damage.later_batch = damage.later_batch.max(Some(n));
                }
                ours.learn(&batch);
                dropped.extend(batch.items.iter().map(|i| (i.keyspace, i.key.to_vec())));
            }
        }
    }
    if let Some(damage) = damaged.as_mut() {
        damage.runs = ours.runs_in(&dropped);
    }
    found.damage = damaged;
    Ok(found)
}

/// The next readable batch from `*at` on, with `*at` moved past it (to the end of
/// `bytes` when there is none).
fn next_readable<'a>(bytes: &'a [u8], at: &mut usize) -> Option<Batch<'a>> {
    while *at < bytes.len() {
        if bytes[*at] == TAG_START
            && let Ok(batch) = read_batch(bytes, *at)
        {
            *at = batch.end;
            return Some(batch);
        }
        *at += 1;
    }
    None
}

/// What the scan learns of the store's own batches (those holding its `#` key).
#[derive(Debug, Default)]
struct Ours {
    /// The keyspace of the `#` key (the facts).
    facts: Option<u64>,
    /// Every keyspace the store's batches wrote.
    keyspaces: BTreeSet<u64>,
    last_seqno: Option<u64>,
}

impl Ours {
    /// Takes in `batch`; false when it is one of the store's and its seqno is not above
    /// the last one's (a flipped bit in its start, which no checksum covers).
    fn in_order(&mut self, batch: &Batch<'_>) -> bool {
        if batch.number.is_none() {
            return true;
        }
        if self.last_seqno.is_some_and(|s| batch.seqno <= s) {
            return false;
        }
        self.last_seqno = Some(batch.seqno);
        self.learn(batch);
        true
    }

    /// Learns the keyspaces of `batch`, when it is one of the store's.
    fn learn(&mut self, batch: &Batch<'_>) {
        if let Some((facts, _)) = batch.number {
            self.facts = Some(facts);
            self.keyspaces
                .extend(batch.items.iter().map(|i| i.keyspace));
        }
    }

    /// The runs `items` wrote: a fact key is the id's length (u32, big endian), the id
    /// and the fact's number; a header's key is the id.
    fn runs_in(&self, items: &[(u64, Vec<u8>)]) -> BTreeSet<String> {
        let mut runs = BTreeSet::new();
        for (keyspace, key) in items {
            if key == super::store::BATCH_KEY || !self.keyspaces.contains(keyspace) {
                continue;
            }
            let id = if Some(*keyspace) == self.facts {
                key.get(..4)
                    .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
                    .filter(|n| 4 + n + 8 == key.len())
                    .map(|n| &key[4..4 + n])
            } else {
                Some(key.as_slice())
            };
            if let Some(id) = id.and_then(|id| std::str::from_utf8(id).ok()) {
                runs.insert(id.to_owned());
            }
        }
        runs
    }
}

/// A little-endian reader over a byte slice that fails past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("it runs past the end of the file")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Reads one entry of a batch after its start: an item, a clear (`None`), or an error.
fn read_entry<'a>(c: &mut Cursor<'a>) -> Result<Option<Item<'a>>, &'static str> {
    match c.u8()? {
        TAG_ITEM => {
            let value_type = c.u8()?;
            if !matches!(value_type, 0 | 1 | 2 | 4) {
                return Err("an item has an unknown value type");
            }
            let compression = c.u8()?;
            if compression > 1 {
                return Err("an item has an unknown compression");
            }
            let keyspace = c.u64()?;
            let key_len = c.u16()?;
            let value_len = c.u32()?;
            let stored_len = c.u32()?;
            if compression == 0 && value_len != stored_len {
                return Err("an uncompressed item's two lengths differ");
            }
            let key = c.take(usize::from(key_len))?;
            let value = c.take(stored_len as usize)?;
            Ok(Some(Item {
                keyspace,
                key,
                value,
            }))
        }
        TAG_CLEAR => {
            c.u64()?;
            Ok(None)
        }
        TAG_START => Err("a batch starts inside another"),
        TAG_END => Err("a batch ends before its item count"),
        _ => Err("an entry has an unknown tag"),
    }
}

/// Reads the whole batch starting at `at`, checking its count, checksum and trailer.
fn read_batch(bytes: &[u8], at: usize) -> Result<Batch<'_>, &'static str> {
    let mut c = Cursor { bytes, at };
    if c.u8()? != TAG_START {
        return Err("a batch does not begin with its start entry");
    }
    let count = c.u32()?;
    let seqno = c.u64()?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut items = Vec::new();
    for _ in 0..count {
        let from = c.at;
        if let Some(item) = read_entry(&mut c)? {
            items.push(item);
        }
        hasher.update(&bytes[from..c.at]);
    }
    if c.u8()? != TAG_END {
        return Err("a batch holds more entries than its count");
    }
    if c.u64()? != hasher.digest() {
        return Err("a batch's checksum does not match its contents");
    }
    if c.take(TRAILER.len())? != TRAILER {
        return Err("a batch's trailer is damaged");
    }
    Ok(Batch {
        start: at,
        end: c.at,
        seqno,
        number: number_in(&items),
        items,
    })
}

/// The items a damaged batch at `at` yields before it stops reading.
fn partial_items(bytes: &[u8], at: usize) -> impl Iterator<Item = Item<'_>> {
    let mut c = Cursor { bytes, at };
    let started = c.u8() == Ok(TAG_START) && c.u32().is_ok() && c.u64().is_ok();
    std::iter::from_fn(move || {
        if started {
            read_entry(&mut c).ok()
        } else {
            None
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a batch as fjall writes it.
    fn batch(seqno: u64, items: &[(u64, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = vec![TAG_START];
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        out.extend_from_slice(&seqno.to_le_bytes());
        let mut body = Vec::new();
        for (ks, key, value) in items {
            body.extend_from_slice(&[TAG_ITEM, 0, 0]);
            body.extend_from_slice(&ks.to_le_bytes());
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(value);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&body);
        out.extend_from_slice(&body);
        out.push(TAG_END);
        out.extend_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(TRAILER);
        out
    }

    fn ours(n: u64, run: &str) -> Vec<u8> {
        let mut fact = (run.len() as u32).to_be_bytes().to_vec();
        fact.extend_from_slice(run.as_bytes());
        fact.extend_from_slice(&1u64.to_be_bytes());
        batch(
            n * 10,
            &[
                (2, run.as_bytes(), b"header"),
                (3, &fact, b"fact"),
                (3, b"#", &n.to_be_bytes()),
            ],
        )
    }

    fn scan_of(bytes: &[u8]) -> Scan {
        let dir = std::env::temp_dir().join(format!(
            "shipsec-wal-{}-{:x}",
            std::process::id(),
            xxhash_rust::xxh3::xxh3_64(bytes)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.jnl"), bytes).unwrap();
        let found = scan(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        found
    }

    fn log() -> Vec<u8> {
        let mut log = Vec::new();
        for (n, run) in [(1, "a"), (2, "b"), (3, "c")] {
            log.extend(ours(n, run));
        }
        log
    }

    #[test]
    fn a_whole_log_with_room_after_it_is_read_to_its_last_batch() {
        let mut log = log();
        log.extend([0; 64]);
        assert_eq!(
            scan_of(&log),
            Scan {
                last_whole: Some(3),
                damage: None
            }
        );
    }

    #[test]
    fn a_torn_last_batch_is_damage_nothing_readable_follows() {
        let log = log();
        let cut = &log[..log.len() - 5];
        let found = scan_of(cut);
        assert_eq!(found.last_whole, Some(2));
        let damage = found.damage.unwrap();
        assert_eq!(damage.followed_at, None);
        assert_eq!(damage.runs, BTreeSet::from(["c".to_owned()]));
    }

    #[test]
    fn a_flip_in_the_middle_is_followed_by_readable_batches_and_names_their_runs() {
        let mut log = log();
        let second = ours(1, "a").len();
        // In the value of its fact: its checksum fails, its items still read.
        log[second + 76] ^= 0x10;
        let found = scan_of(&log);
        assert_eq!(found.last_whole, Some(1));
        let damage = found.damage.unwrap();
        assert_eq!(damage.offset, second as u64);
        assert!(damage.followed_at.is_some(), "{damage:?}");
        assert_eq!(damage.later_batch, Some(3));
        assert_eq!(
            damage.runs,
            BTreeSet::from(["b".to_owned(), "c".to_owned()])
        );
    }

    #[test]
    fn a_seqno_that_goes_back_is_damage() {
        let mut log = ours(1, "a");
        log.extend(batch(5, &[(3, b"#", &2u64.to_be_bytes())]));
        let found = scan_of(&log);
        assert_eq!(found.last_whole, Some(1));
        assert_eq!(
            found.damage.unwrap().why,
            "its sequence number is below an earlier batch's"
        );
    }
}
