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
//! journal := "USCKPT\0\x02" frame*           (frames: see crate::framing)
//! frame   := batch    kind 1: str checkpoint JSON (without trackers),
//!                     u32 records, u32 trackers, tracker*        first frame
//!          | record   kind 2: bytes pointer, data (the rest)      N of them
//!          | tracker  kind 3: u32 index, tracker                  a transition
//!          | commit   kind 4: (empty)                             batch committed
//! tracker := str id, u8 status code, u32 attempts, time created, time updated,
//!            u8 flags, then the fields the flags name: str lock, time lock,
//!            time lock expiry, time first attempt, bytes data (JSON),
//!            error (str message, u32 n, str cause × n); flag 64 = dead-lettered
//! time    := i64 seconds since the epoch, u32 nanoseconds
//! ```
//! `str`/`bytes` are a `u32` length and the bytes; integers little-endian.
//! Record bytes are stored as they are (no escaping) and transitions are a
//! few dozen bytes. Frames of kind 0 are padding (see [`FrameFile`]); a
//! frame header of eight zero bytes ends the journal. The format is binary
//! for speed; the checkpoint is inspected through [`CheckpointStore::load`].
//! `<consumer>` is the consumer id with every byte outside `[A-Za-z0-9._-]`
//! written as `%XX`.
//!
//! # Durability
//! [`Durability::Process`]: every `sync` hands its entries to the kernel —
//! a `write(2)`, or, for batches of 256 records or more on Linux, a copy
//! into the memory-mapped journal ([`FrameFile::mapped`]: no system call,
//! the same guarantee): what it saved survives the process being killed.
//! [`Durability::PowerLoss`]: every `sync` is a `write(2)` and an
//! `fdatasync`, and new journals are `fsync`ed with their directory before
//! and after the rename. Group commit: the engine saves a result and the
//! next attempt's start in one `sync`, so a record costs one append (and one
//! `fdatasync`) in the common case.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::Durability;
use crate::frame_file::{FrameFile, KIND_PADDING};
use crate::framing::{self, Cursor, put_bytes, put_str};
use unistream_core::checkpoint::{
    Checkpoint, CheckpointStore, ErrorInfo, Status, StoredCheckpoint, Tracker,
};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, Result};

const MAGIC: &[u8; 8] = b"USCKPT\0\x02";
const KIND_BATCH: u8 = 1;
const KIND_RECORD: u8 = 2;
const KIND_TRACKER: u8 = 3;
const KIND_COMMIT: u8 = 4;

/// Journals of smaller batches are written, not mapped: a mapping has a
/// fixed cost per journal (preallocation, map, page faults, freeing the
/// blocks when the journal is replaced); with the consumer bench, mapping
/// every journal made `limit` 100 about 20 % slower and `limit` 1000 about
/// twice as fast as writing.
const MAP_FROM_RECORDS: usize = 256;

/// A [`CheckpointStore`] in local files; see the module docs for the format
/// and guarantees.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_core::checkpoint::CheckpointStore;
/// use unistream_local::FileCheckpointStore;
/// use unistream_local::Durability;
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
    journal: Option<FrameFile>,
    pending: Vec<u8>,
    writes: u64,
    /// Deletes the previous journal in the background.
    reaper: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Drop for FileCheckpointStore {
    fn drop(&mut self) {
        self.join_reaper();
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// The files of one consumer in the store's directory.
struct Listing {
    /// Journals by batch sequence, oldest first.
    journals: Vec<(u64, PathBuf)>,
    /// Leftovers of a crash during `save_batch`.
    temps: Vec<PathBuf>,
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
        let Some(lock) = crate::lock_exclusive(&lock_path)? else {
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
            writes: 0,
            reaper: None,
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many durable writes the store made so far: a new journal, or a
    /// group of entries appended (a `write(2)`, or a copy into the mapped
    /// journal; see the module docs).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Waits for the previous journal's deletion; a failure is logged (the
    /// next `load` deletes the journal again).
    fn join_reaper(&mut self) {
        if let Some(Ok(Err(e))) = self.reaper.take().map(std::thread::JoinHandle::join) {
            warn!(error = %e, "could not delete an old checkpoint journal");
        }
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

    /// The journal's append path: memory-mapped in process-crash mode for
    /// batches big enough to pay for the mapping (see [`FrameFile`]).
    fn journal_file(
        &self,
        path: PathBuf,
        file: File,
        len: u64,
        records: usize,
    ) -> Result<FrameFile> {
        let journal = FrameFile::new(path, file, len)?;
        Ok(
            if self.durability == Durability::Process && records >= MAP_FROM_RECORDS {
                // Room for each record's transitions from the start.
                journal.mapped((records as u64 * 256).max(64 << 10))
            } else {
                journal
            },
        )
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
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            path: path.to_owned(),
            offset,
            reason,
        };
        let mut state: Option<(Checkpoint, usize)> = None;
        let mut records: Vec<SourceRecord> = Vec::new();
        let mut frames = framing::raw_frames(bytes, Some(MAGIC)).ending_at_zero_header();
        for item in frames.by_ref() {
            let (offset, kind, payload) = item.map_err(|c| corrupt(c.offset, c.reason))?;
            let malformed = || corrupt(offset, format!("malformed journal frame of kind {kind}"));
            let mut c = Cursor::new(payload);
            match (kind, &mut state) {
                (KIND_PADDING, _) => {
                    c.rest();
                }
                (KIND_BATCH, None) => {
                    let (cp, n) = decode_batch(&mut c).ok_or_else(malformed)?;
                    records.reserve(n);
                    state = Some((cp, n));
                }
                (KIND_RECORD, Some((_, n))) if records.len() < *n => {
                    let pointer = c.str().ok_or_else(malformed)?;
                    records.push(SourceRecord::new(Pointer::new(pointer), c.rest().to_vec()));
                }
                (KIND_TRACKER, Some((cp, n))) if records.len() == *n => {
                    let index = c.u32().ok_or_else(malformed)? as usize;
                    let tracker = decode_tracker(&mut c).ok_or_else(malformed)?;
                    cp.restore_tracker(index, tracker)
                        .map_err(|e| corrupt(offset, e.to_string()))?;
                }
                (KIND_COMMIT, Some((cp, n))) if records.len() == *n => {
                    cp.commit().map_err(|e| corrupt(offset, e.to_string()))?;
                }
                _ => {
                    return Err(corrupt(
                        offset,
                        format!("journal frame of kind {kind} out of order"),
                    ));
                }
            }
            if !c.is_empty() {
                return Err(malformed());
            }
        }
        let good_len = frames.valid_len();
        if let Some(why) = frames.torn() {
            warn!(path = %path.display(), offset = good_len, why, "truncating a torn last journal entry");
        }
        match state {
            Some((checkpoint, n)) if records.len() == n => Ok((
                StoredCheckpoint {
                    checkpoint,
                    records,
                },
                good_len,
            )),
            Some((_, n)) => Err(self.unreadable(
                path,
                format!("the journal holds {} of its {n} records", records.len()),
            )),
            None => Err(self.unreadable(path, "the journal has no batch entry")),
        }
    }
}

fn put_time(out: &mut Vec<u8>, t: DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

fn time(c: &mut Cursor<'_>) -> Option<DateTime<Utc>> {
    let secs = c.i64()?;
    DateTime::from_timestamp(secs, c.u32()?)
}

const HAS_LOCK: u8 = 1;
const HAS_LOCK_TIME: u8 = 2;
const HAS_LOCK_EXPIRE: u8 = 4;
const HAS_FIRST_ATTEMPT: u8 = 8;
const HAS_DATA: u8 = 16;
const HAS_ERRORS: u8 = 32;
const DEAD_LETTERED: u8 = 64;

fn encode_tracker(out: &mut Vec<u8>, t: &Tracker) {
    put_str(out, &t.record_id);
    out.push(t.status.code());
    out.extend_from_slice(&t.attempts.to_le_bytes());
    put_time(out, t.create_time);
    put_time(out, t.update_time);
    // `data` is the processor's JSON value: serializing a Value cannot fail.
    let data = t
        .data
        .as_ref()
        .map(|d| serde_json::to_vec(d).unwrap_or_default());
    let flags = [
        (t.lock.is_some(), HAS_LOCK),
        (t.lock_time.is_some(), HAS_LOCK_TIME),
        (t.lock_expire_time.is_some(), HAS_LOCK_EXPIRE),
        (t.first_attempt_time.is_some(), HAS_FIRST_ATTEMPT),
        (data.is_some(), HAS_DATA),
        (t.errors.is_some(), HAS_ERRORS),
        (t.dead_lettered, DEAD_LETTERED),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    out.push(flags);
    if let Some(lock) = &t.lock {
        put_str(out, lock);
    }
    for time in [t.lock_time, t.lock_expire_time, t.first_attempt_time]
        .into_iter()
        .flatten()
    {
        put_time(out, time);
    }
    if let Some(data) = &data {
        put_bytes(out, data);
    }
    if let Some(e) = &t.errors {
        put_str(out, &e.message);
        out.extend_from_slice(&(e.causes.len() as u32).to_le_bytes());
        for cause in &e.causes {
            put_str(out, cause);
        }
    }
}

fn decode_tracker(c: &mut Cursor<'_>) -> Option<Tracker> {
    let record_id = c.str()?.to_owned();
    let status = Status::from_code(c.u8()?)?;
    let attempts = c.u32()?;
    let create_time = time(c)?;
    let update_time = time(c)?;
    let flags = c.u8()?;
    let has = |bit: u8| flags & bit != 0;
    let lock = if has(HAS_LOCK) {
        Some(c.str()?.to_owned())
    } else {
        None
    };
    let mut opt_time = |bit: u8| {
        if has(bit) {
            time(c).map(Some)
        } else {
            Some(None)
        }
    };
    let lock_time = opt_time(HAS_LOCK_TIME)?;
    let lock_expire_time = opt_time(HAS_LOCK_EXPIRE)?;
    let first_attempt_time = opt_time(HAS_FIRST_ATTEMPT)?;
    let data = if has(HAS_DATA) {
        Some(serde_json::from_slice(c.bytes()?).ok()?)
    } else {
        None
    };
    let errors = if has(HAS_ERRORS) {
        let message = c.str()?.to_owned();
        let n = c.u32()?;
        let causes = (0..n)
            .map(|_| c.str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(ErrorInfo { message, causes })
    } else {
        None
    };
    let mut t = Tracker::new(record_id, create_time);
    t.status = status;
    t.attempts = attempts;
    t.update_time = update_time;
    t.lock = lock;
    t.lock_time = lock_time;
    t.lock_expire_time = lock_expire_time;
    t.first_attempt_time = first_attempt_time;
    t.data = data;
    t.errors = errors;
    t.dead_lettered = has(DEAD_LETTERED);
    Some(t)
}

fn encode_batch(out: &mut Vec<u8>, checkpoint: &Checkpoint, records: usize) {
    // Our own Checkpoint (without trackers) always serializes.
    let head = serde_json::to_vec(&checkpoint.without_trackers()).unwrap_or_default();
    put_bytes(out, &head);
    out.extend_from_slice(&(records as u32).to_le_bytes());
    out.extend_from_slice(&(checkpoint.trackers().len() as u32).to_le_bytes());
    for t in checkpoint.trackers() {
        encode_tracker(out, t);
    }
}

fn decode_batch(c: &mut Cursor<'_>) -> Option<(Checkpoint, usize)> {
    let head: Checkpoint = serde_json::from_slice(c.bytes()?).ok()?;
    let records = c.u32()? as usize;
    let n = c.u32()?;
    let trackers = (0..n)
        .map(|_| decode_tracker(c))
        .collect::<Option<Vec<_>>>()?;
    Some((head.with_trackers(trackers), records))
}

/// Appends one journal frame. Frames hold one record or one tracker, so
/// only a record of 4 GiB could fail to fit; such a record is refused.
fn frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
    framing::encode(out, kind, payload)
        .map_err(|e| Error::InvalidTransition(format!("checkpoint journal: {e}")))
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
        drop(bytes);
        let journal = self.journal_file(path, file, good_len, stored.records.len())?;
        self.join_reaper();
        for (_, old) in &journals[..journals.len() - 1] {
            remove_if_present(old)?;
        }
        self.journal = Some(journal);
        Ok(Some(stored))
    }

    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        self.pending.clear();
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        let mut out = Vec::with_capacity(512 + records.len() * 120 + bytes);
        out.extend_from_slice(MAGIC);
        frame(&mut out, KIND_BATCH, |o| {
            encode_batch(o, checkpoint, records.len())
        })?;
        for r in records {
            frame(&mut out, KIND_RECORD, |o| {
                put_str(o, r.pointer.as_str());
                o.extend_from_slice(&r.data);
            })?;
        }
        let path = self.journal_path(checkpoint.batch_sequence());
        let tmp = path.with_extension("journal.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
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
        let journal = self.journal_file(path.clone(), file, out.len() as u64, records.len())?;
        if let Some(old) = self.journal.replace(journal)
            && old.path() != path
        {
            let old_path = old.path().to_owned();
            old.discard();
            // Deleting a journal costs as much as hundreds of appends (the
            // kernel frees its blocks), and nothing waits for it: `load`
            // deletes any journal older than the newest. So it runs on
            // another thread, one at a time.
            self.join_reaper();
            self.reaper = std::thread::Builder::new()
                .name("unistream-journal-reaper".into())
                .spawn(move || remove_if_present(&old_path))
                .ok();
        }
        Ok(())
    }

    async fn save_tracker(&mut self, checkpoint: &Checkpoint, index: usize) -> Result<()> {
        let k = checkpoint.tracker(index)?;
        frame(&mut self.pending, KIND_TRACKER, |o| {
            o.extend_from_slice(&(index as u32).to_le_bytes());
            encode_tracker(o, k);
        })
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
        j.append(&self.pending)?;
        if self.durability == Durability::PowerLoss {
            j.sync_data()?;
        }
        self.writes += 1;
        self.pending.clear();
        Ok(())
    }

    async fn save_commit(&mut self, _checkpoint: &Checkpoint) -> Result<()> {
        frame(&mut self.pending, KIND_COMMIT, |_| {})?;
        self.sync().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use unistream_core::checkpoint::{ErrorInfo, Status};

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

    /// The test consumer's store in `dir`, in process-crash mode.
    fn open_store(dir: &Path) -> FileCheckpointStore {
        FileCheckpointStore::open(dir, "c/1 ü", Durability::Process).unwrap()
    }

    async fn store_with_batch(dir: &Path, n: usize) -> (FileCheckpointStore, Checkpoint) {
        let mut store = open_store(dir);
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

    /// Offsets of the journal's frames, padding left out.
    fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
        framing::raw_frames(bytes, Some(MAGIC))
            .map(|f| f.unwrap())
            .filter(|f| f.1 != KIND_PADDING)
            .map(|f| f.0 as usize)
            .collect()
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
        let mut store = open_store(dir.path());
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
        let last_start = *frame_offsets(&bytes).last().unwrap();
        let cut = last_start + (bytes.len() - last_start) / 2;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let mut store = open_store(dir.path());
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
        let mut store = open_store(dir.path());
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
        // Frame 3 (first tracker) comes after the batch and the 2 records.
        let offset = frame_offsets(&bytes)[3];
        bytes[offset + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let mut store = open_store(dir.path());
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
        // Keep the batch frame and the first record only.
        std::fs::write(&path, &bytes[..frame_offsets(&bytes)[2]]).unwrap();
        let mut store = open_store(dir.path());
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
        let mut store = open_store(dir.path());
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
        // The old journal is deleted in the background; closing waits.
        drop(store);
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

    #[test]
    fn every_tracker_field_round_trips() {
        let t0 = now();
        let mut full = Tracker::new("id \u{1F600} \"x\"".into(), t0);
        full.status = Status::Exhausted;
        full.attempts = 7;
        full.update_time = t0 + chrono::Duration::nanoseconds(123_456_789);
        full.lock = Some("lock-1".into());
        full.lock_time = Some(t0 + chrono::Duration::seconds(1));
        full.lock_expire_time = Some(t0 + chrono::Duration::seconds(61));
        full.first_attempt_time = Some(t0 - chrono::Duration::seconds(5));
        full.data = Some(serde_json::json!({"k": [1, "two", null]}));
        full.errors = Some(ErrorInfo {
            message: "outer".into(),
            causes: vec!["inner".into(), "root\n".into()],
        });
        full.dead_lettered = true;
        let mut bare = full.clone();
        (bare.lock, bare.lock_time, bare.data, bare.errors) = (None, None, None, None);
        bare.dead_lettered = false;
        for t in [full, bare] {
            let mut out = Vec::new();
            encode_tracker(&mut out, &t);
            let mut c = Cursor::new(&out);
            assert_eq!(decode_tracker(&mut c), Some(t));
            assert!(c.is_empty());
            // Every strict prefix is malformed, never a panic or a wrong value.
            for cut in 0..out.len() {
                let mut c = Cursor::new(&out[..cut]);
                assert_eq!(decode_tracker(&mut c), None, "cut at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn a_cut_at_every_byte_of_the_last_entry_loses_only_that_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        let expected = cp.clone();
        cp.fail(0, "L", ErrorInfo::new("boom"), now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let path = journal_of(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let last = *frame_offsets(&bytes).last().unwrap();
        // Where the entry ends (padding may follow it).
        let all: Vec<_> = framing::raw_frames(&bytes, Some(MAGIC))
            .map(|f| f.unwrap().0 as usize)
            .collect();
        let end = all
            .iter()
            .copied()
            .find(|&o| o > last)
            .unwrap_or(bytes.len());
        for cut in last..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut store = open_store(dir.path());
            let loaded = store.load().await.unwrap().unwrap();
            if cut < end {
                assert_eq!(loaded.checkpoint, expected, "cut at {cut}");
                assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
            } else {
                assert_eq!(loaded.checkpoint, cp, "cut at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn a_file_in_another_format_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_batch(dir.path(), 1).await;
        drop(store);
        let path = journal_of(dir.path());
        // What the development version's text journal looked like.
        std::fs::write(&path, b"0badc0de {\"t\":\"commit\"}\n").unwrap();
        let mut store = open_store(dir.path());
        match store.load().await {
            Err(Error::Corrupt {
                path: p,
                offset,
                reason,
            }) => {
                assert_eq!((p, offset), (path, 0));
                assert!(reason.contains("magic"), "{reason}");
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }

    /// What `kill -9` leaves of a memory-mapped journal: the file as it is
    /// while the store is open (preallocated zeros after the entries), and
    /// the same with a last group copied but not published.
    #[tokio::test]
    async fn a_mapped_journal_as_a_kill_leaves_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut cp) = store_with_batch(dir.path(), 300).await;
        cp.begin_attempt(0, "L", now()).unwrap();
        store.save_tracker(&cp, 0).await.unwrap();
        store.sync().await.unwrap();
        let published = cp.clone();
        let path = journal_of(dir.path());
        let live = std::fs::read(&path).unwrap();
        let entries = framing::raw_frames(&live, Some(MAGIC))
            .ending_at_zero_header()
            .by_ref()
            .fold(0, |_, f| {
                let (o, _, p) = f.unwrap();
                o as usize + framing::FRAME_HEADER + p.len()
            });
        if cfg!(target_os = "linux") {
            assert!(live.len() > entries, "preallocated: {}", live.len());
            assert!(live[entries..].iter().all(|&b| b == 0));
        }
        // The next group, copied but for its first 8 bytes.
        cp.succeed(0, "L", None, now()).unwrap();
        let mut group = Vec::new();
        frame(&mut group, KIND_TRACKER, |o| {
            o.extend_from_slice(&0u32.to_le_bytes());
            encode_tracker(o, &cp.trackers()[0]);
        })
        .unwrap();
        let mut killed = live.clone();
        killed.resize(killed.len().max(entries + group.len() + 4096), 0);
        killed[entries + 8..entries + group.len()].copy_from_slice(&group[8..]);
        for (name, bytes) in [("preallocated", &live), ("unpublished", &killed)] {
            let other = tempfile::tempdir().unwrap();
            std::fs::write(other.path().join(path.file_name().unwrap()), bytes).unwrap();
            let mut s2 = open_store(other.path());
            let loaded = s2.load().await.unwrap().unwrap();
            assert_eq!(loaded.checkpoint, published, "{name}");
            // It goes on from there.
            s2.save_tracker(&cp, 0).await.unwrap();
            s2.sync().await.unwrap();
            drop(s2);
            let mut s3 = open_store(other.path());
            assert_eq!(s3.load().await.unwrap().unwrap().checkpoint, cp, "{name}");
        }
        // A clean close gives the preallocated space back.
        drop(store);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, entries);
    }
}
