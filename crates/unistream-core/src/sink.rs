//! Where a producer sends its batches.

use std::future::Future;

use crate::error::BoxError;
use crate::error::ErrorInfo;

/// A record ready to send: its id, its partition key and its encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// The record's id.
    pub id: String,
    /// The key that picks the stream partition (shard).
    pub partition_key: String,
    /// The encoded record.
    pub data: Vec<u8>,
    /// A hash key that overrides the partition key's hash when the stream
    /// picks a shard (Kinesis `ExplicitHashKey`), if any.
    pub explicit_hash_key: Option<String>,
}

impl EncodedRecord {
    /// A record with these parts.
    pub fn new(id: impl Into<String>, partition_key: impl Into<String>, data: Vec<u8>) -> Self {
        EncodedRecord {
            id: id.into(),
            partition_key: partition_key.into(),
            data,
            explicit_hash_key: None,
        }
    }

    /// Sets the explicit hash key.
    pub fn with_explicit_hash_key(mut self, key: Option<String>) -> Self {
        self.explicit_hash_key = key;
        self
    }
}

/// Why a sink (or the buffer) refuses a record before the producer accepts
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The record (data and partition key) is larger than the sink takes.
    #[error("the record is {bytes} bytes (data and partition key); the sink takes at most {max}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// The most the sink takes.
        max: usize,
    },
    /// The partition key is not one the sink accepts.
    #[error("bad partition key: {0}")]
    PartitionKey(String),
    /// The record holds what the sink's (or the buffer's) format cannot
    /// carry, e.g. a newline in a JSON-lines file.
    #[error("{0}")]
    Unrepresentable(String),
}

/// What a sink accepted of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every record.
    All,
    /// Every record but these (indexes into the batch, ascending): they must
    /// be sent again, the others must not.
    Partial {
        /// Indexes of the records not accepted.
        rejected: Vec<usize>,
        /// Why they were not.
        error: ErrorInfo,
    },
}

/// A stream to send batches to (the seed's `send`).
///
/// Contract: `Ok(Delivery::All)` means every record is stored by the stream;
/// `Ok(Delivery::Partial { rejected, .. })` means every record *but* those is
/// stored; `Err` means none is (or the sink cannot tell: the producer then
/// sends the whole batch again — at-least-once). A sink MUST NOT report a
/// record accepted that is not.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use unistream_core::memory::MemorySink;
/// use unistream_core::sink::{Delivery, EncodedRecord, Sink};
///
/// let sink = MemorySink::default();
/// let batch = vec![EncodedRecord::new("1", "1", b"{}".to_vec())];
/// assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
/// assert_eq!(sink.records().len(), 1);
/// # }
/// ```
pub trait Sink: Send + Sync {
    /// Checks a record before the producer accepts it, so that a record this
    /// sink can never take (too large, a newline in a JSON-lines file, ...)
    /// is refused by `put` with a clear error instead of jamming the buffer.
    /// The default accepts everything.
    ///
    /// # Errors
    ///
    /// The [`Refusal`]: the producer returns it as
    /// [`Error::InvalidRecord`](crate::Error::InvalidRecord) and does not
    /// accept the record.
    fn validate(&self, record: &EncodedRecord) -> Result<(), Refusal> {
        let _ = record;
        Ok(())
    }

    /// Sends one batch.
    fn send(
        &self,
        batch: &[EncodedRecord],
    ) -> impl Future<Output = Result<Delivery, BoxError>> + Send;
}

/// Where a sink sets aside records it can never send (too large for the
/// stream, say): one JSON line each, so that nothing is dropped silently.
/// `unistream_local::AppendFile` is one; a team may set them aside anywhere
/// else (an object store, a table) by implementing this.
///
/// Contract: when [`set_aside`](Self::set_aside) returns `Ok`, the line is
/// stored (to the target's own durability) and the sink treats the record as
/// done; on `Err` the sink fails its `send`, and the record stays in the
/// producer's buffer. A line MAY be set aside twice after a crash
/// (at-least-once).
///
/// ```
/// use std::sync::Mutex;
/// use unistream_core::sink::SetAside;
///
/// #[derive(Debug, Default)]
/// struct InMemory(Mutex<Vec<Vec<u8>>>);
///
/// impl SetAside for InMemory {
///     fn set_aside(&self, line: &[u8]) -> unistream_core::Result<()> {
///         self.0.lock().unwrap().push(line.to_vec());
///         Ok(())
///     }
///     fn location(&self) -> String {
///         "memory".into()
///     }
/// }
///
/// let target = InMemory::default();
/// target.set_aside(b"{\"record_id\": \"big\"}\n").unwrap();
/// assert_eq!(target.0.lock().unwrap().len(), 1);
/// ```
pub trait SetAside: Send + Sync + std::fmt::Debug {
    /// Stores `line` (one JSON object and its newline).
    ///
    /// # Errors
    ///
    /// Whatever keeps the line from being stored; the sink's `send` then
    /// fails with it.
    fn set_aside(&self, line: &[u8]) -> crate::Result<()>;

    /// Where the lines go (a path, a URL), for logs and error messages.
    fn location(&self) -> String;
}
