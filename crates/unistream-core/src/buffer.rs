//! The producer's buffer: where `put` stores records until they are sent.
//!
//! Records are appended to an *active* batch; when it holds `max_records`
//! records or `max_bytes` bytes of encoded records it is *sealed* and
//! becomes ready to send. Sealed batches leave in FIFO order: [`Buffer::emit`]
//! gives the oldest (the same one again until it is committed),
//! [`Buffer::commit`] removes it for good, [`Buffer::narrow`] keeps only the
//! records a sink did not accept.
//!
//! The durable implementation is the file write-ahead log of the
//! `unistream-buffer` crate; [`MemoryBuffer`](crate::memory::MemoryBuffer)
//! has the same behaviour without durability.

use std::future::Future;
use std::sync::Arc;

use crate::error::Result;
use crate::sink::EncodedRecord;

/// A sealed batch as emitted by a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Identifies the batch to `commit` and `narrow` (a segment number).
    pub id: u64,
    /// Its records, in put order.
    pub records: Arc<Vec<EncodedRecord>>,
}

/// Sizes of what a buffer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// Records not yet committed (sealed and active).
    pub records: u64,
    /// Encoded bytes of those records.
    pub bytes: u64,
    /// Sealed batches ready to send.
    pub sealed_batches: u64,
    /// Records in the active (not yet sealed) batch.
    pub active_records: u64,
    /// Segment files a buffer made of files keeps on disk — those holding
    /// unsent records, and the one being written (so at least 1) — or
    /// `None` for a buffer that is not (e.g.
    /// [`MemoryBuffer`](crate::memory::MemoryBuffer)). From the buffer's own
    /// bookkeeping: asking never reads a file.
    pub segments: Option<u64>,
}

/// Limits of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferLimits {
    /// Seal the active batch when it holds this many records.
    pub max_records: usize,
    /// Seal the active batch when its records' encoded bytes reach this.
    pub max_bytes: u64,
    /// Refuse `put` with [`Error::BufferFull`](crate::Error::BufferFull)
    /// when the records held would exceed this many bytes.
    pub max_total_bytes: u64,
}

impl Default for BufferLimits {
    /// 500 records or 4 MiB per batch (within one Kinesis `PutRecords`),
    /// 1 GiB in all.
    fn default() -> Self {
        BufferLimits {
            max_records: 500,
            max_bytes: 4 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl BufferLimits {
    /// Limits with this `max_records` and the other defaults.
    pub fn records(max_records: usize) -> Self {
        BufferLimits {
            max_records: max_records.max(1),
            ..Default::default()
        }
    }

    /// Sets `max_bytes` per batch.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Sets the cap on all buffered bytes.
    pub fn with_max_total_bytes(mut self, max_total_bytes: u64) -> Self {
        self.max_total_bytes = max_total_bytes;
        self
    }

    /// Whether a batch of `records` records and `bytes` bytes is full.
    pub fn is_full(&self, records: usize, bytes: u64) -> bool {
        records >= self.max_records || bytes >= self.max_bytes
    }
}

/// A producer buffer. Methods take `&self`: a buffer is shared by every task
/// that puts, and synchronizes inside.
///
/// Contract: when `put` returns `Ok`, the record is stored to the buffer's
/// durability and will be emitted, in put order, until committed; `emit`
/// returns the oldest sealed batch, the same one until `commit` or `narrow`;
/// nothing is ever dropped except by `commit` and `narrow`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_core::buffer::{Buffer, BufferLimits};
/// use unistream_core::memory::MemoryBuffer;
/// use unistream_core::sink::EncodedRecord;
///
/// let buffer = MemoryBuffer::new(BufferLimits::records(2));
/// for id in ["1", "2", "3"] {
///     buffer.put(&EncodedRecord::new(id, id, id.as_bytes().to_vec())).await?;
/// }
/// assert!(buffer.should_emit());
/// let batch = buffer.emit()?.expect("a sealed batch");
/// assert_eq!(batch.records.len(), 2); // "1" and "2"; "3" is in the active batch
/// buffer.narrow(&batch, &[1])?;       // the sink took "1" but not "2"
/// assert_eq!(buffer.emit()?.unwrap().records[0].id, "2");
/// buffer.commit(&buffer.emit()?.unwrap())?;
/// assert!(!buffer.should_emit());
/// buffer.seal()?;                     // flush: seal the active batch
/// assert_eq!(buffer.emit()?.unwrap().records[0].id, "3");
/// # Ok(()) }
/// ```
pub trait Buffer: Send + Sync {
    /// Appends one record; returns once it is stored.
    fn put(&self, record: &EncodedRecord) -> impl Future<Output = Result<()>> + Send;

    /// Appends records in order; returns once all are stored. Cheaper than
    /// one `put` each (one write, one sync).
    fn put_many(&self, records: &[EncodedRecord]) -> impl Future<Output = Result<()>> + Send;

    /// Seals the active batch now if it holds any record.
    fn seal(&self) -> Result<()>;

    /// Whether a sealed batch is ready.
    fn should_emit(&self) -> bool;

    /// The oldest sealed batch, if any.
    fn emit(&self) -> Result<Option<Batch>>;

    /// Removes an emitted batch for good.
    fn commit(&self, batch: &Batch) -> Result<()>;

    /// Keeps only the records of `batch` at these indexes (ascending), for
    /// good; the batch stays the oldest. Keeping none commits it.
    fn narrow(&self, batch: &Batch, keep: &[usize]) -> Result<()>;

    /// What the buffer holds. Cheap (the producer asks after every put and
    /// send for its backlog gauges): from counters the buffer keeps, never by
    /// reading its records or files.
    fn stats(&self) -> BufferStats;
}
