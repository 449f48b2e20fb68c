//! The file write-ahead log.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::{debug, error, info, warn};
use unistream_core::Durability;
use unistream_core::buffer::{Batch, Buffer, BufferLimits, BufferStats};
use unistream_core::local::FrameFile;
use unistream_core::sink::EncodedRecord;
use unistream_core::{Error, Result};

use crate::frame::{self, Frame, MAGIC};
use crate::sync::GroupSync;

/// What to do with a damaged segment found on open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Refuse to open: [`Error::Corrupt`] names the file and offset (default).
    #[default]
    Strict,
    /// Move each damaged segment into `<dir>/damaged/` (untouched, for
    /// inspection) and open without its records; a missing segment is
    /// skipped. Each case is logged at error level. The way past a corrupt
    /// log once an operator has looked at it.
    SetAsideDamaged,
}

/// How to open a [`FileBuffer`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FileBufferOptions {
    /// Batch and total size limits (may differ from the last run).
    pub limits: BufferLimits,
    /// What a `put` survives once it returned.
    pub durability: Durability,
    /// What to do with damaged segments.
    pub recovery: Recovery,
    /// Start a new segment file once the active one holds this many bytes
    /// (checked when a batch is sealed; a file holds many batches).
    pub segment_bytes: u64,
}

impl Default for FileBufferOptions {
    fn default() -> Self {
        FileBufferOptions::new(BufferLimits::default(), Durability::Process)
    }
}

impl FileBufferOptions {
    /// Options with these limits and durability, strict recovery, segment
    /// files of 8 MiB (recovery reads one file at a time into memory).
    pub fn new(limits: BufferLimits, durability: Durability) -> Self {
        FileBufferOptions {
            limits,
            durability,
            recovery: Recovery::Strict,
            segment_bytes: 8 * 1024 * 1024,
        }
    }

    /// Sets the recovery mode.
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets the size at which a new segment file is started.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }
}

/// A sealed batch: where its frames are, and what is left of it.
#[derive(Debug, Clone)]
struct BatchMeta {
    id: u64,
    /// The segment file holding it.
    file: u64,
    /// Byte range from its first record frame to the end of its seal frame.
    start: u64,
    end: u64,
    /// Records it was sealed with.
    original: u64,
    /// Records and bytes still unsent.
    records: u64,
    bytes: u64,
    /// Indexes (among `original`) still unsent, if narrowed.
    keep: Option<Vec<u32>>,
}

/// The records put since the last seal.
#[derive(Debug, Clone, Copy, Default)]
struct OpenBatch {
    /// Offset of its first record frame in the active file.
    start: u64,
    records: u64,
    bytes: u64,
}

#[derive(Debug)]
struct ActiveFile {
    seq: u64,
    log: FrameFile,
}

impl ActiveFile {
    /// Bytes in the file.
    fn len(&self) -> u64 {
        self.log.len()
    }
}

#[derive(Debug)]
struct Emitted {
    batch: Batch,
    /// Original index of each record of `batch`.
    original: Vec<u32>,
}

#[derive(Debug)]
struct State {
    /// Every segment file on disk, oldest first; the last is the active one.
    files: VecDeque<u64>,
    sealed: VecDeque<BatchMeta>,
    active: ActiveFile,
    open: OpenBatch,
    next_id: u64,
    total_bytes: u64,
    total_records: u64,
    emitted: Option<Emitted>,
    /// Record frames written so far (for group commit).
    written: u64,
    scratch: Vec<u8>,
    /// Where each encoded frame of an append ends in `scratch`.
    ends: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    options: FileBufferOptions,
    state: Mutex<State>,
    _lock: File,
}

/// The durable [`Buffer`]: a write-ahead log of segment files in one
/// directory. See the crate docs for the format and guarantees.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_buffer::{FileBuffer, FileBufferOptions};
/// use unistream_core::buffer::{Buffer, BufferLimits};
/// use unistream_core::sink::EncodedRecord;
/// use unistream_core::Durability;
///
/// let dir = tempfile::tempdir().unwrap();
/// let options = FileBufferOptions::new(BufferLimits::records(2), Durability::Process);
/// let wal = FileBuffer::open(dir.path(), options)?;
/// for id in ["1", "2", "3"] {
///     wal.put(&EncodedRecord::new(id, id, id.as_bytes().to_vec())).await?;
/// }
/// drop(wal); // a crash would do the same: everything put is on file
/// let wal = FileBuffer::open(dir.path(), options)?;
/// assert_eq!(wal.stats().records, 3);
/// let batch = wal.emit()?.expect("sealed");
/// assert_eq!(batch.records.len(), 2);
/// wal.commit(&batch)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileBuffer {
    inner: Arc<Inner>,
    sync: Arc<GroupSync>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates segment `seq` holding only its header (synced with its directory
/// in power-loss mode). If that fails, the file is removed again: the
/// previous segment stays the newest, so that a restart does not take it for
/// a finished segment that has records after its last seal.
fn create_segment(dir: &Path, seq: u64, options: &FileBufferOptions) -> Result<ActiveFile> {
    let path = dir.join(segment_name(seq));
    let io = |e| Error::io(&path, e);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let header = file.write_all(MAGIC).map_err(io).and_then(|()| {
        if options.durability == Durability::PowerLoss {
            file.sync_all().map_err(io)?;
            sync_dir(dir)?;
        }
        Ok(())
    });
    let created =
        header.and_then(|()| active_file(seq, path.clone(), file, MAGIC.len() as u64, options));
    if created.is_err()
        && let Err(rm) = std::fs::remove_file(&path)
    {
        warn!(path = %path.display(), error = %rm, "cannot remove a segment whose creation failed");
    }
    created
}

/// The active segment's append path: memory-mapped in process-crash mode
/// (no system call per put; see [`FrameFile`]).
fn active_file(
    seq: u64,
    path: PathBuf,
    file: File,
    len: u64,
    options: &FileBufferOptions,
) -> Result<ActiveFile> {
    let log = FrameFile::new(path, file, len)?;
    let log = match options.durability {
        Durability::Process => log.mapped(MAP_GROWTH),
        Durability::PowerLoss => log,
    };
    Ok(ActiveFile { seq, log })
}

/// The mapped active segment grows by at least this much at a time.
const MAP_GROWTH: u64 = 1 << 20;

impl Inner {
    fn power_loss(&self) -> bool {
        self.options.durability == Durability::PowerLoss
    }

    /// Writes a bookkeeping frame (commit, narrow) durably.
    fn write_meta(&self, st: &mut State, frame: &Frame<'_>) -> Result<()> {
        let mut buf = Vec::with_capacity(32);
        frame.encode(&mut buf).map_err(Error::InvalidTransition)?;
        st.active.log.append(&buf)?;
        if self.power_loss() {
            st.active.log.sync_data()?;
        }
        Ok(())
    }

    /// Seals the open batch if it holds records; starts a new segment file
    /// when the active one is big enough.
    fn seal(&self, st: &mut State, sync: &GroupSync) -> Result<()> {
        if st.open.records == 0 {
            return Ok(());
        }
        let id = st.next_id;
        let mut buf = Vec::with_capacity(24);
        Frame::Seal { id }
            .encode(&mut buf)
            .map_err(Error::InvalidTransition)?;
        st.active.log.append(&buf)?;
        let open = std::mem::take(&mut st.open);
        st.sealed.push_back(BatchMeta {
            id,
            file: st.active.seq,
            start: open.start,
            end: st.active.len(),
            original: open.records,
            records: open.records,
            bytes: open.bytes,
            keep: None,
        });
        st.next_id += 1;
        st.open.start = st.active.len();
        debug!(
            batch = id,
            records = open.records,
            bytes = open.bytes,
            "sealed batch"
        );
        if st.active.len() >= self.options.segment_bytes {
            self.roll(st, sync)?;
        }
        Ok(())
    }

    /// Starts the next segment file. The finished file is cut to its frames
    /// first (a mapped one is longer), and in power-loss mode synced, so
    /// every file but the active one is whole and on disk.
    fn roll(&self, st: &mut State, sync: &GroupSync) -> Result<()> {
        st.active.log.finish()?;
        if self.power_loss() {
            st.active.log.sync_data()?;
            sync.mark_synced(st.written);
        }
        st.active = create_segment(&self.dir, st.active.seq + 1, &self.options)?;
        st.files.push_back(st.active.seq);
        st.open = OpenBatch {
            start: st.active.len(),
            ..OpenBatch::default()
        };
        Ok(())
    }

    /// Deletes the files that hold no unsent batch (never the active one).
    fn delete_unneeded(&self, st: &mut State) -> Result<()> {
        let needed = st.sealed.front().map_or(st.active.seq, |b| b.file);
        let mut deleted = false;
        while let Some(&seq) = st.files.front() {
            if seq >= needed {
                break;
            }
            let path = self.dir.join(segment_name(seq));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            st.files.pop_front();
            deleted = true;
        }
        if deleted && self.power_loss() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Appends records, sealing batches as they fill. Returns the record
    /// frame count after the last one (for group commit). On an I/O error,
    /// the records of batches sealed before it stay stored.
    fn append(&self, records: &[EncodedRecord], sync: &GroupSync) -> Result<u64> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let incoming: u64 = records.iter().map(|r| r.data.len() as u64).sum();
        let cap = self.options.limits.max_total_bytes;
        if st.total_bytes + incoming > cap {
            return Err(Error::BufferFull {
                buffered: st.total_bytes,
                incoming,
                cap,
            });
        }
        let mut buf = std::mem::take(&mut st.scratch);
        let mut ends = std::mem::take(&mut st.ends);
        buf.clear();
        ends.clear();
        let result = self.append_with(st, records, sync, &mut buf, &mut ends);
        st.scratch = buf;
        st.ends = ends;
        result.map(|()| st.written)
    }

    fn append_with(
        &self,
        st: &mut State,
        records: &[EncodedRecord],
        sync: &GroupSync,
        buf: &mut Vec<u8>,
        ends: &mut Vec<usize>,
    ) -> Result<()> {
        // Encode everything first: a record the format cannot hold refuses
        // the whole call before anything is written.
        for r in records {
            frame::encode_record(buf, r).map_err(|reason| Error::InvalidRecord {
                record_id: r.id.clone(),
                reason,
            })?;
            ends.push(buf.len());
        }
        let mut chunk_start = 0usize;
        let (mut n, mut bytes) = (0u64, 0u64);
        for (i, (r, &at)) in records.iter().zip(ends.iter()).enumerate() {
            n += 1;
            bytes += r.data.len() as u64;
            let limits = &self.options.limits;
            let full = limits.is_full((st.open.records + n) as usize, st.open.bytes + bytes);
            if !full && i + 1 < records.len() {
                continue;
            }
            if st.open.records == 0 {
                st.open.start = st.active.len();
            }
            // A failed append is cut back: the file never holds part of a frame.
            st.active.log.append(&buf[chunk_start..at])?;
            st.open.records += n;
            st.open.bytes += bytes;
            st.total_records += n;
            st.total_bytes += bytes;
            st.written += n;
            chunk_start = at;
            (n, bytes) = (0, 0);
            if full {
                self.seal(st, sync)?;
            }
        }
        Ok(())
    }

    /// Reads a sealed batch's records back from its file.
    fn read_batch(&self, meta: &BatchMeta) -> Result<Emitted> {
        let path = self.dir.join(segment_name(meta.file));
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut bytes = vec![0u8; (meta.end - meta.start) as usize];
        file.read_exact_at(&mut bytes, meta.start)
            .map_err(|e| Error::io(&path, e))?;
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            path: path.clone(),
            offset: meta.start + offset,
            reason,
        };
        let mut all = Vec::with_capacity(meta.original as usize);
        let mut sealed = false;
        for item in frame::frames_in_range(&bytes) {
            let (offset, f) = item.map_err(|c| corrupt(c.offset, c.reason))?;
            match f {
                Frame::Record {
                    id,
                    key,
                    hash,
                    data,
                } => {
                    let mut r = EncodedRecord::new(id, key, data.to_vec());
                    r.explicit_hash_key = hash.map(str::to_owned);
                    all.push(Some(r));
                }
                Frame::Seal { id } if id == meta.id => sealed = true,
                Frame::Seal { id } => {
                    return Err(corrupt(
                        offset,
                        format!("batch {} ends with the seal of batch {id}", meta.id),
                    ));
                }
                Frame::Narrow { .. } | Frame::Commit { .. } | Frame::Padding => {}
            }
        }
        if !sealed || all.len() as u64 != meta.original {
            return Err(corrupt(
                0,
                format!("batch {} does not read back as written", meta.id),
            ));
        }
        let keep: Vec<u32> = match &meta.keep {
            Some(k) => k.clone(),
            None => (0..meta.original as u32).collect(),
        };
        let mut records = Vec::with_capacity(keep.len());
        for &i in &keep {
            if let Some(r) = all.get_mut(i as usize).and_then(Option::take) {
                records.push(r);
            }
        }
        Ok(Emitted {
            batch: Batch {
                id: meta.id,
                records: Arc::new(records),
            },
            original: keep,
        })
    }
}

impl FileBuffer {
    /// Opens the log in `dir` (created if needed), takes its exclusive lock,
    /// and recovers every unsent record: see the crate docs.
    pub fn open(dir: impl Into<PathBuf>, options: FileBufferOptions) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let Some(lock_file) = unistream_core::local::lock_exclusive(&lock_path)? else {
            return Err(Error::Locked {
                path: lock_path,
                what: format!(
                    "a producer is using the write-ahead log in {}",
                    dir.display()
                ),
            });
        };
        let sync = Arc::new(GroupSync::default());
        let state = recover(&dir, &options)?;
        let inner = Arc::new(Inner {
            dir,
            options,
            state: Mutex::new(state),
            _lock: lock_file,
        });
        {
            let mut st = lock(&inner.state);
            // Limits may have shrunk since the last run.
            if options
                .limits
                .is_full(st.open.records as usize, st.open.bytes)
            {
                inner.seal(&mut st, &sync)?;
            }
            inner.delete_unneeded(&mut st)?;
            if st.total_records > 0 {
                info!(dir = %inner.dir.display(), records = st.total_records, bytes = st.total_bytes, batches = st.sealed.len(), "recovered unsent records");
            }
        }
        Ok(FileBuffer { inner, sync })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many group-commit syncs `put` and `put_many` ran so far (power-loss
    /// mode; syncs when a segment file is finished are not counted).
    pub fn group_syncs(&self) -> u64 {
        self.sync.syncs()
    }

    async fn append_durably(&self, records: &[EncodedRecord]) -> Result<()> {
        let written = self.inner.append(records, &self.sync)?;
        if self.inner.power_loss() {
            self.sync.wait(written, &self.inner).await?;
        }
        Ok(())
    }

    fn check_oldest(st: &State, batch: &Batch) -> Result<()> {
        match st.sealed.front() {
            Some(m) if m.id == batch.id => Ok(()),
            _ => Err(Error::InvalidTransition(format!(
                "batch {} is not the oldest sealed batch",
                batch.id
            ))),
        }
    }
}

impl GroupSync {
    /// Snapshot for a sync: a handle on the active file and the number of
    /// record frames written so far (all of which are in it, or in finished
    /// files that were synced when they were finished).
    pub(crate) fn target(inner: &Inner) -> Result<(File, PathBuf, u64)> {
        let st = lock(&inner.state);
        let path = st.active.log.path();
        let file = st
            .active
            .log
            .file()
            .try_clone()
            .map_err(|e| Error::io(path, e))?;
        Ok((file, path.to_owned(), st.written))
    }
}

impl Buffer for FileBuffer {
    async fn put(&self, record: &EncodedRecord) -> Result<()> {
        self.append_durably(std::slice::from_ref(record)).await
    }

    async fn put_many(&self, records: &[EncodedRecord]) -> Result<()> {
        self.append_durably(records).await
    }

    fn seal(&self) -> Result<()> {
        let mut st = lock(&self.inner.state);
        self.inner.seal(&mut st, &self.sync)
    }

    fn should_emit(&self) -> bool {
        !lock(&self.inner.state).sealed.is_empty()
    }

    fn emit(&self) -> Result<Option<Batch>> {
        let mut st = lock(&self.inner.state);
        let Some(front) = st.sealed.front() else {
            return Ok(None);
        };
        if let Some(e) = &st.emitted
            && e.batch.id == front.id
        {
            return Ok(Some(e.batch.clone()));
        }
        let emitted = self.inner.read_batch(front)?;
        let batch = emitted.batch.clone();
        st.emitted = Some(emitted);
        Ok(Some(batch))
    }

    fn commit(&self, batch: &Batch) -> Result<()> {
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        Self::check_oldest(st, batch)?;
        self.inner.write_meta(st, &Frame::Commit { id: batch.id })?;
        if let Some(meta) = st.sealed.pop_front() {
            st.total_records -= meta.records;
            st.total_bytes -= meta.bytes;
        }
        st.emitted = None;
        self.inner.delete_unneeded(st)?;
        debug!(batch = batch.id, "committed batch");
        Ok(())
    }

    fn narrow(&self, batch: &Batch, keep: &[usize]) -> Result<()> {
        if keep.is_empty() {
            return self.commit(batch);
        }
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        Self::check_oldest(st, batch)?;
        let Some(emitted) = st.emitted.as_ref().filter(|e| e.batch.id == batch.id) else {
            return Err(Error::InvalidTransition(format!(
                "batch {} must be emitted before it is narrowed",
                batch.id
            )));
        };
        let mut original = Vec::with_capacity(keep.len());
        let mut records = Vec::with_capacity(keep.len());
        for &i in keep {
            match (emitted.original.get(i), emitted.batch.records.get(i)) {
                (Some(&o), Some(r)) if original.last().is_none_or(|&l| l < o) => {
                    original.push(o);
                    records.push(r.clone());
                }
                _ => {
                    return Err(Error::InvalidTransition(format!(
                        "cannot keep record {i} of batch {} ({} records; indexes must ascend)",
                        batch.id,
                        emitted.batch.records.len()
                    )));
                }
            }
        }
        let kept_bytes: u64 = records.iter().map(|r| r.data.len() as u64).sum();
        self.inner.write_meta(
            st,
            &Frame::Narrow {
                id: batch.id,
                bytes: kept_bytes,
                keep: original.clone(),
            },
        )?;
        if let Some(front) = st.sealed.front_mut() {
            st.total_records -= front.records - records.len() as u64;
            st.total_bytes -= front.bytes - kept_bytes;
            front.records = records.len() as u64;
            front.bytes = kept_bytes;
            front.keep = Some(original.clone());
        }
        st.emitted = Some(Emitted {
            batch: Batch {
                id: batch.id,
                records: Arc::new(records),
            },
            original,
        });
        Ok(())
    }

    fn stats(&self) -> BufferStats {
        let st = lock(&self.inner.state);
        let mut stats = BufferStats::default();
        stats.records = st.total_records;
        stats.bytes = st.total_bytes;
        stats.sealed_batches = st.sealed.len() as u64;
        stats.active_records = st.open.records;
        stats
    }
}

/// What the scan of the segment files found.
struct Scanned {
    files: VecDeque<u64>,
    sealed: VecDeque<BatchMeta>,
    open: OpenBatch,
    max_id: u64,
}

/// Applies one segment file's frames to `s`. Returns the length of its good
/// frames and why the rest is torn, or the corruption.
fn apply_file(
    s: &mut Scanned,
    seq: u64,
    bytes: &[u8],
) -> std::result::Result<(u64, Option<String>), frame::Corruption> {
    let mut frames = frame::frames(bytes);
    s.open = OpenBatch {
        start: MAGIC.len() as u64,
        ..OpenBatch::default()
    };
    for item in frames.by_ref() {
        let (offset, f) = item?;
        let bad = |reason: String| frame::Corruption { offset, reason };
        match f {
            Frame::Record { data, .. } => {
                if s.open.records == 0 {
                    s.open.start = offset;
                }
                s.open.records += 1;
                s.open.bytes += data.len() as u64;
            }
            Frame::Seal { id } => {
                if s.open.records == 0 {
                    return Err(bad(format!("seal of batch {id} without records")));
                }
                if id <= s.max_id {
                    return Err(bad(format!("batch id {id} after batch id {}", s.max_id)));
                }
                let end = offset + (frame::FRAME_HEADER + 8) as u64;
                s.sealed.push_back(BatchMeta {
                    id,
                    file: seq,
                    start: s.open.start,
                    end,
                    original: s.open.records,
                    records: s.open.records,
                    bytes: s.open.bytes,
                    keep: None,
                });
                s.max_id = id;
                s.open = OpenBatch {
                    start: end,
                    ..OpenBatch::default()
                };
            }
            Frame::Narrow { id, bytes, keep } => {
                if let Some(b) = s.sealed.iter_mut().find(|b| b.id == id) {
                    if keep.iter().any(|&i| u64::from(i) >= b.original) {
                        return Err(bad(format!("narrowing of batch {id} past its records")));
                    }
                    b.records = keep.len() as u64;
                    b.bytes = bytes;
                    b.keep = Some(keep);
                }
                s.max_id = s.max_id.max(id);
            }
            Frame::Padding => {}
            Frame::Commit { id } => {
                while s.sealed.front().is_some_and(|b| b.id <= id) {
                    s.sealed.pop_front();
                }
                s.max_id = s.max_id.max(id);
            }
        }
    }
    Ok((frames.valid_len(), frames.torn().map(str::to_owned)))
}

/// Reads every segment file of `dir`, oldest first, repairing a torn tail of
/// the newest one.
fn recover(dir: &Path, options: &FileBufferOptions) -> Result<State> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    let strict = options.recovery == Recovery::Strict;
    let hint = "open with Recovery::SetAsideDamaged to go on without it";
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = segment_name(pair[0] + 1);
            let what = format!(
                "segment {missing} (and any up to {}) is missing: its records are lost",
                segment_name(pair[1] - 1)
            );
            if strict {
                return Err(Error::Corrupt {
                    path: dir.join(missing),
                    offset: 0,
                    reason: format!("{what}; {hint}"),
                });
            }
            error!(dir = %dir.display(), "{what}; going on without it");
        }
    }
    let set_aside = |path: &Path, why: &str| -> Result<()> {
        let damaged = dir.join("damaged");
        std::fs::create_dir_all(&damaged).map_err(|e| Error::io(&damaged, e))?;
        let to = damaged.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to).map_err(|e| Error::io(path, e))?;
        error!(from = %path.display(), to = %to.display(), why, "set a damaged WAL segment aside; its records are not in the buffer");
        Ok(())
    };
    let mut s = Scanned {
        files: VecDeque::new(),
        sealed: VecDeque::new(),
        open: OpenBatch::default(),
        max_id: 0,
    };
    let last = seqs.last().copied();
    let mut active: Option<ActiveFile> = None;
    for seq in seqs {
        let path = dir.join(segment_name(seq));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let is_last = Some(seq) == last;
        let damage = match apply_file(&mut s, seq, &bytes) {
            Err(c) => Some((c.offset, c.reason)),
            Ok((valid, Some(why))) if !is_last => {
                Some((valid, format!("torn frames in a finished segment: {why}")))
            }
            Ok((_, None)) if !is_last && s.open.records > 0 => Some((
                s.open.start,
                "records after the last seal of a finished segment".to_owned(),
            )),
            Ok((valid, torn)) => {
                if let Some(why) = torn {
                    warn!(path = %path.display(), offset = valid, dropped = bytes.len() as u64 - valid, why, "truncating a torn WAL tail");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io(&path, e))?;
                    if valid < MAGIC.len() as u64 {
                        f.set_len(0).map_err(|e| Error::io(&path, e))?;
                        (&f).write_all(MAGIC).map_err(|e| Error::io(&path, e))?;
                    } else {
                        f.set_len(valid).map_err(|e| Error::io(&path, e))?;
                    }
                    if options.durability == Durability::PowerLoss {
                        f.sync_all().map_err(|e| Error::io(&path, e))?;
                    }
                }
                None
            }
        };
        if let Some((offset, reason)) = damage {
            if strict {
                return Err(Error::Corrupt {
                    path,
                    offset,
                    reason: format!("{reason}; {hint}"),
                });
            }
            // Forget what this file added, and move it aside.
            s.sealed.retain(|b| b.file != seq);
            s.open = OpenBatch::default();
            set_aside(&path, &reason)?;
            continue;
        }
        s.files.push_back(seq);
        if is_last {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            active = Some(active_file(seq, path, file, len, options)?);
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let a = create_segment(dir, last.map_or(1, |l| l + 1), options)?;
            s.files.push_back(a.seq);
            s.open = OpenBatch {
                start: a.len(),
                ..OpenBatch::default()
            };
            a
        }
    };
    let total_records = s.sealed.iter().map(|b| b.records).sum::<u64>() + s.open.records;
    let total_bytes = s.sealed.iter().map(|b| b.bytes).sum::<u64>() + s.open.bytes;
    Ok(State {
        files: s.files,
        sealed: s.sealed,
        active,
        open: s.open,
        next_id: s.max_id + 1,
        total_bytes,
        total_records,
        emitted: None,
        written: 0,
        scratch: Vec::new(),
        ends: Vec::new(),
    })
}
