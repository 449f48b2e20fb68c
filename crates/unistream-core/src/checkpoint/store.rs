//! [`CheckpointStore`]: the trait every checkpoint store implements, and
//! [`StoredCheckpoint`], what it loads.

use std::future::Future;

use super::Checkpoint;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::source::SourceRecord;

/// A checkpoint as loaded from a store, with the records of its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The records of its current batch, in tracker order.
    pub records: Vec<SourceRecord>,
}

/// Persists a [`Checkpoint`] and its batch's records.
///
/// Contract:
/// - `save_batch` is durable (to the store's own durability)
///   when it returns, records included, and atomic: after a crash, `load`
///   returns either the previous batch or the new one, whole.
/// - `save_tracker` MAY buffer; everything saved is durable once `sync` or
///   `save_commit` returns. The engine calls `sync` before it runs user code,
///   so an attempt is always on record before it starts.
/// - `load` never returns a silently reset checkpoint: unreadable data is
///   [`Error::CheckpointUnreadable`] or [`Error::Corrupt`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::Utc;
/// use std::time::Duration;
/// use unistream_core::checkpoint::{Checkpoint, CheckpointStore};
/// use unistream_core::memory::MemoryCheckpointStore;
/// use unistream_core::source::{Pointer, SourceRecord};
///
/// let mut store = MemoryCheckpointStore::default();
/// assert!(store.load().await?.is_none());
/// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 3, Duration::from_secs(60));
/// cp.start_batch(["a".to_string()], Some(Pointer::from("1")), Utc::now())?;
/// let records = vec![SourceRecord::new(Pointer::from("0"), b"{}".to_vec())];
/// store.save_batch(&cp, &records).await?;
/// let loaded = store.load().await?.expect("saved");
/// assert_eq!(loaded.checkpoint, cp);
/// assert_eq!(loaded.records, records);
/// # Ok(()) }
/// ```
pub trait CheckpointStore: Send {
    /// Whether a successful `load` makes this process the only live owner of
    /// the checkpoint (e.g. an exclusive file lock), so that records found
    /// `in_progress` were left by a dead consumer and can be retried at once.
    fn is_exclusive(&self) -> bool {
        false
    }

    /// Loads the checkpoint, or `None` if there is none yet.
    fn load(&mut self) -> impl Future<Output = Result<Option<StoredCheckpoint>>> + Send;

    /// Saves a newly started batch: the whole checkpoint and its records.
    fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Saves the change of one tracker (may be buffered until `sync`).
    fn save_tracker(
        &mut self,
        checkpoint: &Checkpoint,
        index: usize,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Makes every saved change durable.
    fn sync(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Saves a commit (durably).
    fn save_commit(&mut self, checkpoint: &Checkpoint) -> impl Future<Output = Result<()>> + Send;
}
