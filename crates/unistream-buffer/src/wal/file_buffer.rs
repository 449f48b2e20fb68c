//! [`FileBuffer`]: the public handle, opening the log and implementing
//! [`Buffer`] on top of the write and read paths.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{debug, info};
use unistream_core::buffer::{Batch, Buffer, BufferStats};
use unistream_core::sink::EncodedRecord;
use unistream_core::{Error, Result};

use super::options::FileBufferConfig;
use super::recover::recover;
use super::state::{Emitted, Inner, State, lock};
use super::sync::GroupSync;
use crate::frame::Frame;

/// The durable [`Buffer`]: a write-ahead log of segment files in one
/// directory. See the crate docs for the format and guarantees.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_buffer::{FileBuffer, FileBufferConfig};
/// use unistream_core::buffer::{Buffer, BufferLimits};
/// use unistream_core::sink::EncodedRecord;
/// use unistream_local::Durability;
///
/// let dir = tempfile::tempdir().unwrap();
/// let options = FileBufferConfig::new(BufferLimits::records(2), Durability::Process);
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

impl FileBuffer {
    /// Opens the log in `dir` (created if needed), takes its exclusive lock,
    /// and recovers every unsent record: see the crate docs.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`](unistream_core::Error::Locked) if another producer has
    /// the log open; [`Error::Corrupt`](unistream_core::Error::Corrupt) with
    /// the file and offset of damage recovery cannot repair (in
    /// `Recovery::Strict`); [`Error::Io`](unistream_core::Error::Io) if a file
    /// cannot be read, created or repaired.
    pub fn open(dir: impl Into<PathBuf>, options: FileBufferConfig) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let Some(lock_file) = unistream_local::lock_exclusive(&lock_path)? else {
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
    pub(super) fn target(inner: &Inner) -> Result<(File, PathBuf, u64)> {
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
        stats.segments = Some(st.files.len() as u64);
        stats
    }
}
