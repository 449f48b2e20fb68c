//! The file write-ahead log.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::{debug, error, info, warn};
use unistream_core::Durability;
use unistream_core::buffer::{Batch, Buffer, BufferLimits, BufferStats};
use unistream_core::sink::EncodedRecord;
use unistream_core::{Error, Result};

use crate::frame::{self, MAGIC};
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
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct FileBufferOptions {
    /// Batch and total size limits (may differ from the last run).
    pub limits: BufferLimits,
    /// What a `put` survives once it returned.
    pub durability: Durability,
    /// What to do with damaged segments.
    pub recovery: Recovery,
}

impl FileBufferOptions {
    /// Options with these limits and durability, strict recovery.
    pub fn new(limits: BufferLimits, durability: Durability) -> Self {
        FileBufferOptions {
            limits,
            durability,
            recovery: Recovery::Strict,
        }
    }

    /// Sets the recovery mode.
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct SealedMeta {
    seq: u64,
    records: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Active {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    records: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Emitted {
    batch: Batch,
    /// Original index (in the segment) of each record of `batch`.
    original: Vec<u32>,
}

#[derive(Debug)]
struct State {
    sealed: VecDeque<SealedMeta>,
    active: Active,
    total_bytes: u64,
    total_records: u64,
    emitted: Option<Emitted>,
    /// Frames written so far (for group commit).
    written: u64,
    scratch: Vec<u8>,
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

/// Creates segment `seq` holding only its header (synced with its directory
/// in power-loss mode).
fn create_segment(dir: &Path, seq: u64, durability: Durability) -> Result<Active> {
    let path = dir.join(segment_name(seq));
    let io = |e| Error::io(&path, e);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(MAGIC).map_err(io)?;
    if durability == Durability::PowerLoss {
        file.sync_all().map_err(io)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(Active {
        seq,
        path,
        file,
        len: MAGIC.len() as u64,
        records: 0,
        bytes: 0,
    })
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

impl Inner {
    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        let path = path.to_owned();
        move |e| Error::io(&path, e)
    }

    fn power_loss(&self) -> bool {
        self.options.durability == Durability::PowerLoss
    }

    fn sync_dir(&self) -> Result<()> {
        if self.power_loss() {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(())
    }

    /// Seals the active segment if it holds records: the next one becomes
    /// active. In power-loss mode the sealed file is synced first, so every
    /// sealed segment is on disk.
    fn seal(&self, st: &mut State, sync: &GroupSync) -> Result<()> {
        if st.active.records == 0 {
            return Ok(());
        }
        if self.power_loss() {
            st.active
                .file
                .sync_data()
                .map_err(self.io(&st.active.path))?;
            sync.mark_synced(st.written);
        }
        let next = create_segment(&self.dir, st.active.seq + 1, self.options.durability)?;
        let old = std::mem::replace(&mut st.active, next);
        debug!(
            segment = old.seq,
            records = old.records,
            bytes = old.bytes,
            "sealed segment"
        );
        st.sealed.push_back(SealedMeta {
            seq: old.seq,
            records: old.records,
            bytes: old.bytes,
        });
        Ok(())
    }

    /// Writes frames to the active segment; on failure, cuts the segment
    /// back so that the file never holds part of a frame it reports.
    fn write_active(&self, st: &mut State, chunk: &[u8]) -> Result<()> {
        let a = &mut st.active;
        if let Err(e) = a.file.write_all(chunk) {
            let _ = a.file.set_len(a.len);
            return Err(Error::io(&a.path, e));
        }
        a.len += chunk.len() as u64;
        Ok(())
    }

    /// Appends records, sealing segments as they fill. Returns the frame
    /// count after the last one (for group commit). On an I/O error, the
    /// records of segments sealed before it stay stored.
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
        buf.clear();
        // Encode everything first: a record the format cannot hold refuses
        // the whole call before anything is written.
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            if let Err(reason) = frame::encode_record(&mut buf, r) {
                st.scratch = buf;
                return Err(Error::InvalidRecord {
                    record_id: r.id.clone(),
                    reason,
                });
            }
            ends.push(buf.len());
        }
        let mut chunk_start = 0;
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut result = Ok(());
        for (i, (r, end)) in records.iter().zip(&ends).enumerate() {
            n += 1;
            bytes += r.data.len() as u64;
            let full = self
                .options
                .limits
                .is_full((st.active.records + n) as usize, st.active.bytes + bytes);
            if !full && i + 1 < records.len() {
                continue;
            }
            if let Err(e) = self.write_active(st, &buf[chunk_start..*end]) {
                result = Err(e);
                break;
            }
            st.active.records += n;
            st.active.bytes += bytes;
            st.total_records += n;
            st.total_bytes += bytes;
            st.written += n;
            chunk_start = *end;
            (n, bytes) = (0, 0);
            if full && let Err(e) = self.seal(st, sync) {
                result = Err(e);
                break;
            }
        }
        st.scratch = buf;
        result.map(|()| st.written)
    }

    fn read_segment(&self, seq: u64) -> Result<frame::Scan> {
        let path = self.dir.join(segment_name(seq));
        let bytes = std::fs::read(&path).map_err(self.io(&path))?;
        let scan = frame::scan_segment(&bytes).map_err(|c| Error::Corrupt {
            path: path.clone(),
            offset: c.offset,
            reason: c.reason,
        })?;
        Ok(scan)
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
        let (sealed, active) = recover(&dir, &options)?;
        let total_records = sealed.iter().map(|s| s.records).sum::<u64>() + active.records;
        let total_bytes = sealed.iter().map(|s| s.bytes).sum::<u64>() + active.bytes;
        let inner = Arc::new(Inner {
            dir,
            options,
            state: Mutex::new(State {
                sealed,
                active,
                total_bytes,
                total_records,
                emitted: None,
                written: 0,
                scratch: Vec::new(),
            }),
            _lock: lock_file,
        });
        {
            // Limits may have shrunk since the last run.
            let mut st = lock(&inner.state);
            if inner
                .options
                .limits
                .is_full(st.active.records as usize, st.active.bytes)
            {
                inner.seal(&mut st, &sync)?;
            }
        }
        if total_records > 0 {
            info!(dir = %inner.dir.display(), records = total_records, bytes = total_bytes, "recovered unsent records");
        }
        Ok(FileBuffer { inner, sync })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many group-commit syncs `put` and `put_many` ran so far (power-loss
    /// mode; sealing syncs are not counted).
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

    fn oldest<'a>(&self, st: &'a mut State, batch: &Batch) -> Result<&'a SealedMeta> {
        match st.sealed.front() {
            Some(m) if m.seq == batch.id => Ok(m),
            _ => Err(Error::InvalidTransition(format!(
                "batch {} is not the oldest sealed batch",
                batch.id
            ))),
        }
    }
}

impl GroupSync {
    /// Snapshot for a sync: a handle on the active segment and the number of
    /// frames written so far (all of which are in it or in synced sealed
    /// segments).
    pub(crate) fn target(inner: &Inner) -> Result<(File, PathBuf, u64)> {
        let st = lock(&inner.state);
        let file = st
            .active
            .file
            .try_clone()
            .map_err(|e| Error::io(&st.active.path, e))?;
        Ok((file, st.active.path.clone(), st.written))
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
        let Some(front) = st.sealed.front().copied() else {
            return Ok(None);
        };
        if let Some(e) = &st.emitted
            && e.batch.id == front.seq
        {
            return Ok(Some(e.batch.clone()));
        }
        let scan = self.inner.read_segment(front.seq)?;
        let unsent = scan.unsent();
        let mut records = Vec::with_capacity(unsent.len());
        let mut original = Vec::with_capacity(unsent.len());
        let mut all: Vec<Option<EncodedRecord>> =
            scan.records.into_iter().map(|s| Some(s.record)).collect();
        for i in unsent {
            if let Some(r) = all.get_mut(i).and_then(Option::take) {
                records.push(r);
                original.push(i as u32);
            }
        }
        let batch = Batch {
            id: front.seq,
            records: Arc::new(records),
        };
        st.emitted = Some(Emitted {
            batch: batch.clone(),
            original,
        });
        Ok(Some(batch))
    }

    fn commit(&self, batch: &Batch) -> Result<()> {
        let mut st = lock(&self.inner.state);
        let meta = *self.oldest(&mut st, batch)?;
        let path = self.inner.dir.join(segment_name(meta.seq));
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        self.inner.sync_dir()?;
        st.sealed.pop_front();
        st.total_records -= meta.records;
        st.total_bytes -= meta.bytes;
        st.emitted = None;
        debug!(
            segment = meta.seq,
            records = meta.records,
            "committed segment"
        );
        Ok(())
    }

    fn narrow(&self, batch: &Batch, keep: &[usize]) -> Result<()> {
        if keep.is_empty() {
            return self.commit(batch);
        }
        let mut st = lock(&self.inner.state);
        let meta = *self.oldest(&mut st, batch)?;
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
        let mut frame_bytes = Vec::with_capacity(9 + 4 + 4 * original.len());
        frame::encode_narrow(&mut frame_bytes, &original);
        let path = self.inner.dir.join(segment_name(meta.seq));
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(&frame_bytes)
            .map_err(|e| Error::io(&path, e))?;
        if self.inner.power_loss() {
            file.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        let kept_bytes: u64 = records.iter().map(|r| r.data.len() as u64).sum();
        let dropped_records = meta.records - records.len() as u64;
        let dropped_bytes = meta.bytes - kept_bytes;
        if let Some(front) = st.sealed.front_mut() {
            front.records = records.len() as u64;
            front.bytes = kept_bytes;
        }
        st.total_records -= dropped_records;
        st.total_bytes -= dropped_bytes;
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
        stats.active_records = st.active.records;
        stats
    }
}

/// Reads every segment of `dir`: the sealed ones (oldest first) and the
/// active one (the newest), repairing torn tails.
fn recover(dir: &Path, options: &FileBufferOptions) -> Result<(VecDeque<SealedMeta>, Active)> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    let set_aside = |path: &Path, why: &str| -> Result<()> {
        let damaged = dir.join("damaged");
        std::fs::create_dir_all(&damaged).map_err(|e| Error::io(&damaged, e))?;
        let name = path.file_name().unwrap_or_default();
        let to = damaged.join(name);
        std::fs::rename(path, &to).map_err(|e| Error::io(path, e))?;
        error!(from = %path.display(), to = %to.display(), why, "set a damaged WAL segment aside; its records are not in the buffer");
        Ok(())
    };
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = pair[0] + 1..pair[1];
            let what = format!(
                "segment(s) {}..={} are missing between {} and {}",
                missing.start,
                missing.end - 1,
                segment_name(pair[0]),
                segment_name(pair[1])
            );
            match options.recovery {
                Recovery::Strict => {
                    return Err(Error::Corrupt {
                        path: dir.join(segment_name(missing.start)),
                        offset: 0,
                        reason: format!(
                            "{what}; their records are lost. Open with Recovery::SetAsideDamaged to go on without them"
                        ),
                    });
                }
                Recovery::SetAsideDamaged => {
                    error!(dir = %dir.display(), "{what}; going on without them")
                }
            }
        }
    }
    let mut sealed = VecDeque::new();
    let last = seqs.last().copied();
    let mut active: Option<Active> = None;
    for seq in seqs {
        let path = dir.join(segment_name(seq));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let scan = match frame::scan_segment(&bytes) {
            Ok(scan) => scan,
            Err(c) => match options.recovery {
                Recovery::Strict => {
                    return Err(Error::Corrupt {
                        path,
                        offset: c.offset,
                        reason: format!(
                            "{}. Open with Recovery::SetAsideDamaged to move the segment aside",
                            c.reason
                        ),
                    });
                }
                Recovery::SetAsideDamaged => {
                    set_aside(&path, &c.reason)?;
                    continue;
                }
            },
        };
        let is_last = Some(seq) == last;
        if let Some(why) = &scan.torn {
            warn!(path = %path.display(), offset = scan.valid_len, dropped = bytes.len() as u64 - scan.valid_len, why, "truncating a torn WAL tail");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if scan.valid_len < MAGIC.len() as u64 {
                // The header itself was cut short: rewrite it.
                f.set_len(0).map_err(|e| Error::io(&path, e))?;
                (&f).write_all(MAGIC).map_err(|e| Error::io(&path, e))?;
            } else {
                f.set_len(scan.valid_len).map_err(|e| Error::io(&path, e))?;
            }
            if options.durability == Durability::PowerLoss {
                f.sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }
        let unsent = scan.unsent();
        let records = unsent.len() as u64;
        let bytes: u64 = unsent
            .iter()
            .filter_map(|&i| scan.records.get(i))
            .map(|s| s.record.data.len() as u64)
            .sum();
        if is_last {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if scan.keep.is_some() {
                // A narrowed segment was sealed; it cannot be the active one.
                sealed.push_back(SealedMeta {
                    seq,
                    records,
                    bytes,
                });
            } else {
                active = Some(Active {
                    seq,
                    path,
                    file,
                    len: scan.valid_len.max(MAGIC.len() as u64),
                    records,
                    bytes,
                });
            }
        } else if records == 0 {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        } else {
            sealed.push_back(SealedMeta {
                seq,
                records,
                bytes,
            });
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let next = last.map_or(1, |l| l + 1);
            create_segment(dir, next, options.durability)?
        }
    };
    Ok((sealed, active))
}
