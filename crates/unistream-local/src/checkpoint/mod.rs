//! The file checkpoint store: one checksummed, append-only journal per batch.
//!
//! # Invariants
//! - The newest complete journal is the checkpoint. A journal appears under
//!   its final name only when its first part (checkpoint snapshot + every
//!   record of the batch) is fully written: it is written to `*.tmp` and
//!   renamed. So a crash at any instant leaves either the previous batch's
//!   journal or the new one, whole (the Python original's defect 3,
//!   `docs/decisions.md`).
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
//! journal := "USCKPT\0\x03" frame*           (frames: see crate::framing; codec: journal.rs)
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
//! few dozen bytes. Frames of kind 0 are padding (format 2 only; skipped).
//! A journal of format 2 (before issue 22) is read, and rewritten in format
//! 3 by `load` before anything is appended to it. What is a torn last entry
//! (truncated on load) and what is damage ([`Error::Corrupt`], with the
//! offset and how many records follow it): [`framing`]. The format is binary
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

use tracing::warn;

use crate::Durability;
use crate::frame_file::{FrameFile, KIND_PADDING};
use crate::framing::{self, Cursor, put_str};

mod journal;

use journal::{
    KIND_BATCH, KIND_COMMIT, KIND_RECORD, KIND_TRACKER, NAME, decode_batch, decode_tracker,
    encode_batch, encode_tracker, frame,
};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, Result};

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
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned) if
    /// another process holds this consumer's checkpoint;
    /// [`Error::Io`](unistream_core::Error::Io) if the directory or lock cannot
    /// be created.
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

    /// Changes the stored checkpoint with `change` (which gets the
    /// checkpoint and its batch's records, and returns what it did), and
    /// writes the result if `apply` (else a dry run). `None` if there is no
    /// checkpoint. No consumer can run meanwhile: this store holds the
    /// checkpoint's lock from [`open`](Self::open) on, so a running
    /// consumer was refused there. The same call as
    /// `DynamoDbS3CheckpointStore::repair`.
    ///
    /// # Errors
    ///
    /// `change`'s error; the store's errors.
    pub async fn repair<T>(
        &mut self,
        apply: bool,
        change: impl FnOnce(&mut Checkpoint, &mut Vec<SourceRecord>) -> Result<T>,
    ) -> Result<Option<unistream_core::checkpoint::Repaired<T>>> {
        let Some(StoredCheckpoint {
            mut checkpoint,
            mut records,
        }) = self.load().await?
        else {
            return Ok(None);
        };
        let before = checkpoint.clone();
        let outcome = change(&mut checkpoint, &mut records)?;
        if apply {
            self.save_batch(&checkpoint, &records).await?;
        }
        let after = StoredCheckpoint {
            checkpoint,
            records,
        };
        Ok(Some(unistream_core::checkpoint::Repaired::new(
            before, after, outcome, apply,
        )))
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

    /// Replays a journal: the checkpoint, the length of its good frames,
    /// and its format version.
    fn replay(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(StoredCheckpoint, u64, framing::Version)> {
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            path: path.to_owned(),
            offset,
            reason,
        };
        let mut state: Option<(Checkpoint, usize)> = None;
        let mut records: Vec<SourceRecord> = Vec::new();
        let mut frames = framing::raw_frames(bytes, NAME);
        // A damaged entry: say what it puts out of reach.
        let damaged = |frames: &framing::RawFrames<'_>, offset: u64, reason: String| {
            let after = frames.valid_after(offset);
            let records = after.iter().filter(|f| f.1 == KIND_RECORD).count();
            corrupt(
                offset,
                format!(
                    "{reason}; {records} records and {} other entries of the journal follow the damage \
                     (the consumer does not start on it: move the journal aside to start as a new \
                     consumer, see docs/checkpoint.md)",
                    after.len() - records
                ),
            )
        };
        while let Some(item) = frames.next() {
            let (offset, kind, payload) = match item {
                Ok(f) => f,
                Err(c) => return Err(damaged(&frames, c.offset, c.reason)),
            };
            let malformed = || {
                damaged(
                    &frames,
                    offset,
                    format!("malformed journal frame of kind {kind}"),
                )
            };
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
                frames.version(),
            )),
            Some((_, n)) => Err(self.unreadable(
                path,
                format!("the journal holds {} of its {n} records", records.len()),
            )),
            None => Err(self.unreadable(path, "the journal has no batch entry")),
        }
    }

    /// Makes `bytes` the content of `path`, whole or not at all: written to
    /// `*.journal.tmp` (synced in power-loss mode) and renamed over it (the
    /// directory synced). Returns the file, open for reading and writing.
    fn replace_with(&self, path: &Path, bytes: &[u8]) -> Result<File> {
        let tmp = path.with_extension("journal.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        if self.durability == Durability::PowerLoss {
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        self.sync_dir()?;
        Ok(file)
    }

    /// Rewrites a journal of an older format in the current one (its good
    /// frames, in order), through a temporary file renamed over it, so that
    /// new entries are never appended in another format. Returns the file,
    /// open, and its length.
    fn upgrade(&self, path: &Path, bytes: &[u8], good_len: u64) -> Result<(File, u64)> {
        let mut out = framing::magic(NAME).to_vec();
        let good = &bytes[..usize::try_from(good_len)
            .unwrap_or(usize::MAX)
            .min(bytes.len())];
        for (_, kind, payload) in framing::raw_frames(good, NAME).map_while(|f| f.ok()) {
            if kind != KIND_PADDING {
                frame(&mut out, kind, |o| o.extend_from_slice(payload))?;
            }
        }
        let file = self.replace_with(path, &out)?;
        tracing::info!(path = %path.display(), "rewrote a checkpoint journal of format 2 in format 3");
        Ok((file, out.len() as u64))
    }
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
        let (stored, mut good_len, version) = self.replay(&path, &bytes)?;
        if version != framing::Version::V3 {
            (file, good_len) = self.upgrade(&path, &bytes, good_len)?;
        }
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
        out.extend_from_slice(&framing::magic(NAME));
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
        let file = self.replace_with(&path, &out)?;
        self.writes += 1;
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
mod tests;
