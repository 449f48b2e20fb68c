//! The file checkpoint store: one checksummed, append-only journal per batch.
//!
//! # Invariants
//! - The newest complete journal is the checkpoint. A journal appears under
//!   its final name only when its first part (checkpoint snapshot + every
//!   record of the batch) is fully written: it is written to `*.tmp` and
//!   renamed. So a crash at any instant leaves either the previous batch's
//!   journal or the new one, whole (SPEC §9 item 3).
//! - After that, tracker changes and the commit are *appended*: the cost of a
//!   transition is one small entry, whatever the batch size, and is never a
//!   rewrite in place.
//! - Every entry carries a CRC-32C of its bytes. A crash can only leave the
//!   last entry torn; it is detected and truncated on load. A bad entry
//!   anywhere else is reported as [`Error::Corrupt`] with the file and
//!   offset, never skipped and never a reset.
//! - Starting a new batch's journal is the compaction: the old journal is
//!   deleted once the new one is in place.
//! - An exclusive lock file (`flock`) makes this process the only owner while
//!   the store is open; the OS drops it when the process dies, even by
//!   `kill -9`, so a restarted consumer retries records left `in_progress`
//!   without waiting for their lock to expire.
//!
//! # On-disk format
//! ```text
//! <dir>/<consumer>.lock                        flock'ed while a consumer runs
//! <dir>/<consumer>.<batch sequence, 20 digits>.journal
//!
//! journal := entry*
//! entry   := crc32c(json) as 8 lowercase hex digits, ' ', json, '\n'
//! json    := {"t":"batch","checkpoint":{...},"records":N}     first entry
//!          | {"t":"rec","p":"<pointer>","d":"<utf-8 data>"}    N of them
//!          | {"t":"rec","p":"<pointer>","b":"<base64 data>"}   (non UTF-8)
//!          | {"t":"trk","i":<index>,"k":{...tracker...}}        a transition
//!          | {"t":"commit"}                                     batch committed
//! ```
//! `<consumer>` is the consumer id with every byte outside `[A-Za-z0-9._-]`
//! written as `%XX`.
//!
//! # Durability
//! [`Durability::Process`]: every `sync` is a `write(2)`: what it saved
//! survives the process being killed. [`Durability::PowerLoss`]: every `sync`
//! also waits for `fdatasync`, and new journals are `fsync`ed with their
//! directory before and after the rename. Group commit: the engine saves a
//! result and the next attempt's start in one `sync`, so a record costs one
//! write (and one `fdatasync`) in the common case.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::Durability;
use crate::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint, Tracker};
use crate::error::{Error, Result};
use crate::source::{Pointer, SourceRecord};

/// A [`CheckpointStore`] in local files; see the module docs for the format
/// and guarantees.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_core::checkpoint::CheckpointStore;
/// use unistream_core::local::FileCheckpointStore;
/// use unistream_core::Durability;
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut store = FileCheckpointStore::open(dir.path(), "consumer-1", Durability::Process)?;
/// assert!(store.load().await?.is_none());
/// // A second owner is refused while the first one is alive.
/// assert!(FileCheckpointStore::open(dir.path(), "consumer-1", Durability::Process).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FileCheckpointStore {
    dir: PathBuf,
    stem: String,
    durability: Durability,
    _lock: File,
    journal: Option<Journal>,
    pending: Vec<u8>,
    scratch: Vec<u8>,
    writes: u64,
}

/// The files of one consumer in the store's directory.
struct Listing {
    /// Journals by batch sequence, oldest first.
    journals: Vec<(u64, PathBuf)>,
    /// Leftovers of a crash during `save_batch`.
    temps: Vec<PathBuf>,
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
}

#[derive(Serialize)]
#[serde(tag = "t", rename = "batch")]
struct BatchRef<'a> {
    checkpoint: &'a Checkpoint,
    records: usize,
}

#[derive(Serialize)]
#[serde(tag = "t", rename = "rec")]
struct RecordRef<'a> {
    p: &'a Pointer,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<String>,
}

#[derive(Serialize)]
#[serde(tag = "t", rename = "trk")]
struct TrackerRef<'a> {
    i: usize,
    k: &'a Tracker,
}

#[derive(Serialize)]
#[serde(tag = "t", rename = "commit")]
struct CommitRef {}

#[derive(Deserialize)]
#[serde(tag = "t")]
enum Entry {
    #[serde(rename = "batch")]
    Batch {
        checkpoint: Box<Checkpoint>,
        records: usize,
    },
    #[serde(rename = "rec")]
    Record {
        p: Pointer,
        d: Option<String>,
        b: Option<String>,
    },
    #[serde(rename = "trk")]
    Tracker { i: usize, k: Box<Tracker> },
    #[serde(rename = "commit")]
    Commit {},
}

fn file_stem(consumer_id: &str) -> String {
    let mut s = String::with_capacity(consumer_id.len());
    for b in consumer_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl FileCheckpointStore {
    /// Opens the store of `consumer_id` in `dir` (created if needed) and
    /// takes its exclusive lock; fails with [`Error::CheckpointOwned`] if a
    /// live process holds it.
    pub fn open(
        dir: impl Into<PathBuf>,
        consumer_id: &str,
        durability: Durability,
    ) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let stem = file_stem(consumer_id);
        let lock_path = dir.join(format!("{stem}.lock"));
        let Some(lock) = super::lock_exclusive(&lock_path)? else {
            return Err(Error::CheckpointOwned {
                store: dir.display().to_string(),
                key: consumer_id.to_owned(),
                detail: format!("{} is locked by a running process", lock_path.display()),
            });
        };
        Ok(FileCheckpointStore {
            dir,
            stem,
            durability,
            _lock: lock,
            journal: None,
            pending: Vec::new(),
            scratch: Vec::new(),
            writes: 0,
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many file writes (`write(2)` of a journal or of entries) the
    /// store made so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn journal_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{}.{seq:020}.journal", self.stem))
    }

    /// Journals and leftover temporary files of this consumer, by sequence.
    fn list(&self) -> Result<Listing> {
        let mut journals = Vec::new();
        let mut temps = Vec::new();
        let prefix = format!("{}.", self.stem);
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if let Some(seq) = rest.strip_suffix(".journal") {
                if let Ok(seq) = seq.parse::<u64>() {
                    journals.push((seq, entry.path()));
                }
            } else if rest.ends_with(".journal.tmp") {
                temps.push(entry.path());
            }
        }
        journals.sort();
        Ok(Listing { journals, temps })
    }

    fn encode_entry(scratch: &mut Vec<u8>, out: &mut Vec<u8>, entry: &impl Serialize) {
        scratch.clear();
        // Serializing our own entry types cannot fail (no maps with non-string
        // keys, no failing Serialize impls).
        if serde_json::to_writer(&mut *scratch, entry).is_err() {
            scratch.clear();
        }
        let crc = crc32c::crc32c(scratch);
        let _ = write!(out, "{crc:08x} ");
        out.extend_from_slice(scratch);
        out.push(b'\n');
    }

    fn sync_dir(&self) -> Result<()> {
        if self.durability == Durability::PowerLoss {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(())
    }

    fn unreadable(&self, path: &Path, reason: impl Into<String>) -> Error {
        Error::CheckpointUnreadable {
            store: self.dir.display().to_string(),
            key: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reason: reason.into(),
        }
    }

    fn replay(&self, path: &Path, bytes: &[u8]) -> Result<(StoredCheckpoint, u64)> {
        let corrupt = |offset: usize, reason: String| Error::Corrupt {
            path: path.to_owned(),
            offset: offset as u64,
            reason,
        };
        let mut offset = 0usize;
        let mut state: Option<(Checkpoint, usize)> = None;
        let mut records: Vec<SourceRecord> = Vec::new();
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                warn!(path = %path.display(), offset, "truncating a torn last journal entry");
                break;
            };
            let line = &rest[..nl];
            let is_last = offset + nl + 1 == bytes.len();
            let parsed = parse_entry(line);
            let entry = match parsed {
                Ok(e) => e,
                Err(reason)
                    if is_last && state.as_ref().is_some_and(|(_, n)| records.len() == *n) =>
                {
                    warn!(path = %path.display(), offset, %reason, "truncating a torn last journal entry");
                    break;
                }
                Err(reason) => return Err(corrupt(offset, reason)),
            };
            match (entry, &mut state) {
                (
                    Entry::Batch {
                        checkpoint,
                        records: n,
                    },
                    None,
                ) => state = Some((*checkpoint, n)),
                (Entry::Record { p, d, b }, Some((_, n))) if records.len() < *n => {
                    let data = match (d, b) {
                        (Some(d), None) => d.into_bytes(),
                        (None, Some(b)) => base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .map_err(|e| corrupt(offset, format!("bad base64 record: {e}")))?,
                        _ => return Err(corrupt(offset, "record entry without data".into())),
                    };
                    records.push(SourceRecord::new(p, data));
                }
                (Entry::Tracker { i, k }, Some((cp, n))) if records.len() == *n => {
                    cp.restore_tracker(i, *k)
                        .map_err(|e| corrupt(offset, e.to_string()))?;
                }
                (Entry::Commit {}, Some((cp, n))) if records.len() == *n => {
                    cp.commit().map_err(|e| corrupt(offset, e.to_string()))?;
                }
                _ => return Err(corrupt(offset, "entry out of order".into())),
            }
            offset += nl + 1;
        }
        match state {
            Some((checkpoint, n)) if records.len() == n => Ok((
                StoredCheckpoint {
                    checkpoint,
                    records,
                },
                offset as u64,
            )),
            Some((_, n)) => Err(self.unreadable(
                path,
                format!("the journal holds {} of its {n} records", records.len()),
            )),
            None => Err(self.unreadable(path, "the journal has no batch entry")),
        }
    }
}

fn parse_entry(line: &[u8]) -> std::result::Result<Entry, String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("not a journal entry".into());
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("bad checksum field")?;
    let json = &line[9..];
    let actual = crc32c::crc32c(json);
    if crc != actual {
        return Err(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    serde_json::from_slice(json).map_err(|e| format!("bad entry: {e}"))
}

impl CheckpointStore for FileCheckpointStore {
    fn is_exclusive(&self) -> bool {
        true
    }

    async fn load(&mut self) -> Result<Option<StoredCheckpoint>> {
        self.pending.clear();
        self.journal = None;
        let Listing { journals, temps } = self.list()?;
        for t in temps {
            std::fs::remove_file(&t).map_err(|e| Error::io(&t, e))?;
        }
        let Some((_, path)) = journals.last().cloned() else {
            return Ok(None);
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let (stored, good_len) = self.replay(&path, &bytes)?;
        if good_len < bytes.len() as u64 {
            file.set_len(good_len).map_err(|e| Error::io(&path, e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        for (_, old) in &journals[..journals.len() - 1] {
            std::fs::remove_file(old).map_err(|e| Error::io(old, e))?;
        }
        self.journal = Some(Journal { path, file });
        Ok(Some(stored))
    }

    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        self.pending.clear();
        let mut out = Vec::with_capacity(512 + records.len() * 160);
        let batch = BatchRef {
            checkpoint,
            records: records.len(),
        };
        Self::encode_entry(&mut self.scratch, &mut out, &batch);
        for r in records {
            let entry = match std::str::from_utf8(&r.data) {
                Ok(text) => RecordRef {
                    p: &r.pointer,
                    d: Some(text),
                    b: None,
                },
                Err(_) => RecordRef {
                    p: &r.pointer,
                    d: None,
                    b: Some(base64::engine::general_purpose::STANDARD.encode(&r.data)),
                },
            };
            Self::encode_entry(&mut self.scratch, &mut out, &entry);
        }
        let path = self.journal_path(checkpoint.batch_sequence());
        let tmp = path.with_extension("journal.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&out).map_err(|e| Error::io(&tmp, e))?;
        self.writes += 1;
        if self.durability == Durability::PowerLoss {
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        self.sync_dir()?;
        if let Some(old) = self.journal.replace(Journal {
            path: path.clone(),
            file,
        }) && old.path != path
        {
            std::fs::remove_file(&old.path).map_err(|e| Error::io(&old.path, e))?;
        }
        Ok(())
    }

    async fn save_tracker(&mut self, checkpoint: &Checkpoint, index: usize) -> Result<()> {
        let Some(k) = checkpoint.trackers().get(index) else {
            return Err(Error::InvalidTransition(format!(
                "no tracker at index {index}"
            )));
        };
        Self::encode_entry(
            &mut self.scratch,
            &mut self.pending,
            &TrackerRef { i: index, k },
        );
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(j) = &mut self.journal else {
            return Err(Error::InvalidTransition(
                "checkpoint change saved before its batch".into(),
            ));
        };
        j.file
            .write_all(&self.pending)
            .map_err(|e| Error::io(&j.path, e))?;
        self.writes += 1;
        if self.durability == Durability::PowerLoss {
            j.file.sync_data().map_err(|e| Error::io(&j.path, e))?;
        }
        self.pending.clear();
        Ok(())
    }

    async fn save_commit(&mut self, _checkpoint: &Checkpoint) -> Result<()> {
        Self::encode_entry(&mut self.scratch, &mut self.pending, &CommitRef {});
        self.sync().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{ErrorInfo, Status};
    use std::time::Duration;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap()
    }

    fn records(n: usize) -> Vec<SourceRecord> {
        (0..n)
            .map(|i| {
                SourceRecord::new(
                    Pointer::new(i.to_string()),
                    format!("{{\"id\": \"{i}\"}}").into_bytes(),
                )
            })
            .collect()
    }

    async fn store_with_batch(dir: &Path, n: usize) -> (FileCheckpointStore, Checkpoint) {
        let mut store = FileCheckpointStore::open(dir, "c/1 ü", Durability::Process).unwrap();
        assert!(store.load().await.unwrap().is_none());
        let mut cp = Checkpoint::new("c/1 ü", Pointer::from("0"), 3, Duration::from_secs(60));
        cp.start_batch(
            (0..n).map(|i| i.to_string()),
            Some(Pointer::new(n.to_string())),
            now(),
        )
        .unwrap();
        store.save_batch(&cp, &records(n)).await.unwrap();
        (store, cp)
    }

    fn journal_of(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "journal"))
            .unwrap()
    }

    #[tokio::test]
    async fn round_trip_of_batch_transitions_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 3).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        cp.succeed(0, "L", None, now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        cp.begin_attempt(1, "M", now()).unwrap();
        store.save_tracker(&cp, 1).await.unwrap();
        cp.fail(1, "M", ErrorInfo::new("x"), now()).unwrap();
        store.save_tracker(&cp, 1).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.checkpoint, cp);
        assert_eq!(loaded.records, records(3));
        assert!(
            journal_of(dir.path())
                .to_string_lossy()
                .contains("c%2F1%20%C3%BC.")
        );
    }

    #[tokio::test]
    async fn unsynced_changes_are_not_on_disk_and_synced_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        let len_before = std::fs::metadata(journal_of(dir.path())).unwrap().len();
        store.sync().await.unwrap();
        assert!(std::fs::metadata(journal_of(dir.path())).unwrap().len() > len_before);
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        let expected = cp.clone();
        cp.succeed(0, "L", None, now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let path = journal_of(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        // Cut the last entry in half, as a crash mid-write would.
        let last_start = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let cut = last_start + (bytes.len() - last_start) / 2;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.checkpoint, expected);
        assert_eq!(loaded.checkpoint.trackers()[0].status, Status::InProgress);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
        // The store keeps working after the repair.
        let mut cp = loaded.checkpoint;
        cp.recover(now(), true);
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().checkpoint, cp);
    }

    #[tokio::test]
    async fn a_corrupt_entry_in_the_middle_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
        for (i, l) in [(0, "A"), (1, "B")] {
            cp.begin_attempt(i, l, now()).unwrap();
            store.save_tracker(&cp, i).await.unwrap();
        }
        store.sync().await.unwrap();
        drop(store);
        let path = journal_of(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let lines: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        // Entry 3 (first tracker) starts after the header and the 2 records.
        let offset = lines[2] + 1;
        bytes[offset + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        match store.load().await {
            Err(Error::Corrupt {
                path: p,
                offset: o,
                reason,
            }) => {
                assert_eq!(p, path);
                assert_eq!(o, offset as u64);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_journal_missing_records_is_unreadable_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_batch(dir.path(), 3).await;
        drop(store);
        let path = journal_of(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let second_nl = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .unwrap()
            .0;
        std::fs::write(&path, &bytes[..=second_nl]).unwrap();
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(matches!(err, Error::CheckpointUnreadable { .. }), "{err}");
        assert!(err.to_string().contains("1 of its 3 records"), "{err}");
    }

    #[tokio::test]
    async fn a_crash_before_the_rename_keeps_the_previous_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        cp.succeed(0, "L", None, now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        cp.commit().unwrap();
        store.save_commit(&cp).await.unwrap();
        drop(store);
        // A half-written next journal, as a crash during save_batch leaves it.
        let tmp = dir
            .path()
            .join(format!("{}.{:020}.journal.tmp", file_stem("c/1 ü"), 2));
        std::fs::write(&tmp, b"0000").unwrap();
        let mut store =
            FileCheckpointStore::open(dir.path(), "c/1 ü", Durability::Process).unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.checkpoint, cp);
        assert!(loaded.checkpoint.is_committed());
        assert!(!tmp.exists(), "leftover temp file removed");
    }

    #[tokio::test]
    async fn a_new_batch_replaces_the_old_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        cp.succeed(0, "L", None, now()).unwrap();
        cp.start_batch(["x".into()], Some(Pointer::from("2")), now())
            .unwrap();
        store.save_batch(&cp, &records(1)).await.unwrap();
        let journals: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".journal"))
            .collect();
        assert_eq!(
            journals,
            vec![format!("{}.{:020}.journal", file_stem("c/1 ü"), 2)]
        );
    }

    #[tokio::test]
    async fn binary_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileCheckpointStore::open(dir.path(), "b", Durability::PowerLoss).unwrap();
        let mut cp = Checkpoint::new("b", Pointer::from("0"), 3, Duration::from_secs(60));
        cp.start_batch(["x".into()], Some(Pointer::from("1")), now())
            .unwrap();
        let recs = vec![SourceRecord::new(
            Pointer::from("0"),
            vec![0xff, 0x00, b'\n', 0x80],
        )];
        store.save_batch(&cp, &recs).await.unwrap();
        drop(store);
        let mut store = FileCheckpointStore::open(dir.path(), "b", Durability::Process).unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().records, recs);
    }
}
