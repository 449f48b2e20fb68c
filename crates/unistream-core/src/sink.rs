//! Where a producer sends its batches.

use std::future::Future;

use crate::clock::Clock;
use crate::error::BoxError;
use crate::error::ErrorInfo;
// The refusal lives with the crate's other errors (`error.rs`), so that
// `error` depends on nothing here; it stays public at this path.
pub use crate::error::Refusal;
use crate::retry::RetryPolicy;

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

/// Sends `batch` to `sink` directly (no producer, no buffer), sending the
/// records it rejects, or the whole batch when `send` fails, again after the
/// waits of `policy`, until every record is accepted or `policy` allows no
/// more attempts: how a redrive puts a batch of dead letters back, deleting
/// a letter only once this says its record is accepted.
///
/// A record [`Sink::validate`] refuses is not sent. Returns, for each record
/// of `batch`, `None` if the sink accepted it, or why it did not (the
/// refusal, or the last error).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use unistream_core::clock::SystemClock;
/// use unistream_core::memory::MemorySink;
/// use unistream_core::retry::RetryPolicy;
/// use unistream_core::sink::{EncodedRecord, send_until_accepted};
///
/// let sink = MemorySink::default();
/// sink.reject_next(vec![1]);
/// let batch: Vec<_> = (0..3).map(|i| EncodedRecord::new(i.to_string(), "k", b"{}".to_vec())).collect();
/// let policy = RetryPolicy::waits([Duration::from_millis(1)]);
/// let outcome = send_until_accepted(&sink, &batch, &policy, &SystemClock).await;
/// assert!(outcome.iter().all(Option::is_none));
/// assert_eq!(sink.records().len(), 3);
/// # }
/// ```
pub async fn send_until_accepted<S: Sink>(
    sink: &S,
    batch: &[EncodedRecord],
    policy: &RetryPolicy,
    clock: &dyn Clock,
) -> Vec<Option<ErrorInfo>> {
    let mut outcome: Vec<Option<ErrorInfo>> = vec![None; batch.len()];
    // Indexes into `batch` still to send.
    let mut todo: Vec<usize> = Vec::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        match sink.validate(r) {
            Ok(()) => todo.push(i),
            Err(refusal) => outcome[i] = Some(ErrorInfo::from_error(&refusal)),
        }
    }
    let mut attempt = 1;
    while !todo.is_empty() {
        if attempt > 1 {
            clock.sleep(policy.delay_before(attempt)).await;
        }
        let records: Vec<EncodedRecord> = todo.iter().map(|&i| batch[i].clone()).collect();
        let still: Vec<usize> = match sink.send(&records).await {
            Ok(Delivery::All) => Vec::new(),
            Ok(Delivery::Partial { rejected, error }) => rejected
                .into_iter()
                .filter_map(|j| todo.get(j).copied())
                .inspect(|&i| outcome[i] = Some(error.clone()))
                .collect(),
            Err(e) => {
                let error = ErrorInfo::from_error(&*e);
                for &i in &todo {
                    outcome[i] = Some(error.clone());
                }
                todo.clone()
            }
        };
        for &i in &todo {
            if !still.contains(&i) {
                outcome[i] = None;
            }
        }
        todo = still;
        attempt += 1;
        if !policy.allows(attempt) {
            break;
        }
    }
    outcome
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::VirtualClock;
    use crate::memory::MemorySink;

    /// A sink that refuses records with an empty key, and always rejects
    /// the record with id "never".
    struct Picky(MemorySink);

    impl Sink for Picky {
        fn validate(&self, r: &EncodedRecord) -> Result<(), Refusal> {
            if r.partition_key.is_empty() {
                return Err(Refusal::PartitionKey("empty".into()));
            }
            Ok(())
        }
        async fn send(&self, batch: &[EncodedRecord]) -> Result<Delivery, BoxError> {
            let rejected: Vec<usize> = (0..batch.len())
                .filter(|&i| batch[i].id == "never")
                .collect();
            let ok: Vec<EncodedRecord> =
                batch.iter().filter(|r| r.id != "never").cloned().collect();
            let delivery = self.0.send(&ok).await?;
            assert_eq!(delivery, Delivery::All);
            if rejected.is_empty() {
                return Ok(Delivery::All);
            }
            Ok(Delivery::Partial {
                rejected,
                error: ErrorInfo::new("throttled"),
            })
        }
    }

    #[tokio::test]
    async fn send_until_accepted_retries_failures_and_reports_what_never_went() {
        let sink = Picky(MemorySink::default());
        sink.0.fail_next(1);
        let batch = [
            EncodedRecord::new("a", "k", b"1".to_vec()),
            EncodedRecord::new("never", "k", b"2".to_vec()),
            EncodedRecord::new("empty-key", "", b"3".to_vec()),
            EncodedRecord::new("b", "k", b"4".to_vec()),
        ];
        let clock = VirtualClock::new(chrono::Utc::now());
        let policy = RetryPolicy::waits([10, 20].map(Duration::from_millis));
        let outcome = send_until_accepted(&sink, &batch, &policy, &clock).await;
        assert!(outcome[0].is_none() && outcome[3].is_none(), "{outcome:?}");
        assert_eq!(outcome[1].as_ref().unwrap().message, "throttled");
        assert!(
            outcome[2]
                .as_ref()
                .unwrap()
                .message
                .contains("partition key")
        );
        assert_eq!(sink.0.ids(), ["a", "b"], "each accepted record once");
        // One failed call, then two more attempts for the rejected record.
        assert_eq!(clock.sleeps(), [10, 20].map(Duration::from_millis));
    }
}
