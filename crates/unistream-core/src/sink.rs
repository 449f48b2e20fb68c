//! Where a producer sends its batches.

use std::future::Future;

use crate::checkpoint::ErrorInfo;
use crate::error::BoxError;

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
    fn validate(&self, record: &EncodedRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// Sends one batch.
    fn send(
        &self,
        batch: &[EncodedRecord],
    ) -> impl Future<Output = Result<Delivery, BoxError>> + Send;
}
