//! Dead-letter queues: where records that keep failing go.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::checkpoint::ErrorInfo;
use crate::error::Result;
use crate::source::Pointer;

/// An exhausted record with everything known about its failure.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The consumer that gave up on it.
    pub consumer_id: String,
    /// The record's id (`undecodable@<pointer>` if it could not be decoded).
    pub record_id: String,
    /// The record's partition key, if it could be decoded (FIFO queues
    /// group by it; a stream DLQ partitions by it).
    pub partition_key: Option<String>,
    /// The record's bytes, exactly as read from the stream.
    pub data: Vec<u8>,
    /// Where the record was in the stream.
    pub pointer: Pointer,
    /// Attempts made, across restarts (0 if it could not be decoded).
    pub attempts: u32,
    /// The last error.
    pub error: Option<ErrorInfo>,
    /// When the first attempt started.
    pub first_attempt_time: Option<DateTime<Utc>>,
    /// When the last change happened before it was given up.
    pub last_attempt_time: DateTime<Utc>,
    /// When it was handed to the queue.
    pub dead_letter_time: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter for `data` read at `pointer`.
    pub fn new(
        consumer_id: impl Into<String>,
        record_id: impl Into<String>,
        data: Vec<u8>,
        pointer: Pointer,
        now: DateTime<Utc>,
    ) -> Self {
        DeadLetter {
            consumer_id: consumer_id.into(),
            record_id: record_id.into(),
            partition_key: None,
            data,
            pointer,
            attempts: 0,
            error: None,
            first_attempt_time: None,
            last_attempt_time: now,
            dead_letter_time: now,
        }
    }
}

/// Receives records that failed every attempt (the seed's
/// `process_failed_record`).
///
/// Contract: when `send` returns `Ok`, the letter is stored (to the queue's
/// own durability); the engine then marks the record delivered. `send` may be
/// called again for the same letter after a crash (at-least-once), so a queue
/// that can deduplicate should key on `consumer_id` + `record_id` + `pointer`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::Utc;
/// use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
/// use unistream_core::memory::MemoryDeadLetterQueue;
///
/// let dlq = MemoryDeadLetterQueue::default();
/// dlq.send(&DeadLetter::new("c1", "17", b"{}".to_vec(), "17".into(), Utc::now())).await?;
/// assert_eq!(dlq.letters()[0].record_id, "17");
/// # Ok(()) }
/// ```
pub trait DeadLetterQueue: Send + Sync {
    /// Stores one letter.
    fn send(&self, letter: &DeadLetter) -> impl Future<Output = Result<()>> + Send;
}
