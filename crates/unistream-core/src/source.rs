//! Where a consumer reads records from.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A position in a stream, opaque to the engine: a line and byte offset for a
/// local file, a sequence number for Kinesis. Never a short-lived handle such
/// as a shard iterator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pointer(String);

impl Pointer {
    /// A pointer from its text.
    pub fn new(s: impl Into<String>) -> Self {
        Pointer(s.into())
    }
    /// The text of the pointer.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Pointer {
    fn from(s: &str) -> Self {
        Pointer(s.to_owned())
    }
}

impl From<String> for Pointer {
    fn from(s: String) -> Self {
        Pointer(s)
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record as read from a stream: its position and its bytes, not yet
/// decoded, and what the stream says about it.
///
/// The stream's keys and the source's error are what the source saw when it
/// read the record; a checkpoint store keeps only the pointer and the data,
/// so in a batch resumed from a checkpoint after a restart the keys are
/// `None`, and the error is what [`Source::restore`] tells again (see
/// `docs/kinesis.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceRecord {
    /// Where this record is in the stream.
    pub pointer: Pointer,
    /// The encoded record.
    pub data: Vec<u8>,
    /// The partition key the stream filed the record under, if the source
    /// knows it (Kinesis does: a plain record's key, or a de-aggregated user
    /// record's own key). The consumer orders records by the decoded
    /// record's [`Record::partition_key`](crate::record::Record::partition_key);
    /// this one is passed to the processor in
    /// [`Attempt::partition_key`](crate::consumer::Attempt::partition_key)
    /// and kept in a dead letter of a record that cannot be decoded.
    pub partition_key: Option<String>,
    /// The explicit hash key of the record, if the source knows it (a
    /// de-aggregated Kinesis user record that had one).
    pub explicit_hash_key: Option<String>,
    /// When the stream received the record, if the source knows it (Kinesis
    /// `ApproximateArrivalTimestamp`); like the keys, not kept by a
    /// checkpoint store.
    pub arrival_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the source cannot hand out these bytes as a record (e.g. a
    /// corrupted KPL aggregate). The consumer does not decode such a record:
    /// it goes to the dead-letter queue at once, with its raw bytes and this
    /// text as the error.
    pub error: Option<String>,
}

impl SourceRecord {
    /// A record read at `pointer`.
    pub fn new(pointer: Pointer, data: Vec<u8>) -> Self {
        SourceRecord {
            pointer,
            data,
            partition_key: None,
            explicit_hash_key: None,
            arrival_time: None,
            error: None,
        }
    }

    /// With the time the stream received the record.
    pub fn with_arrival_time(
        mut self,
        arrival_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        self.arrival_time = arrival_time;
        self
    }

    /// With the stream's keys of the record.
    pub fn with_keys(
        mut self,
        partition_key: Option<String>,
        explicit_hash_key: Option<String>,
    ) -> Self {
        self.partition_key = partition_key;
        self.explicit_hash_key = explicit_hash_key;
        self
    }

    /// Marks the record as unreadable by the source, for `reason`: the
    /// consumer sends it to the dead-letter queue without decoding it.
    pub fn with_error(mut self, reason: impl Into<String>) -> Self {
        self.error = Some(reason.into());
        self
    }
}

/// The answer of [`Source::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fetched {
    /// The records, in stream order (at most the `limit` asked for).
    pub records: Vec<SourceRecord>,
    /// Where the next fetch starts; `None` if the stream (or shard) is closed
    /// and these are its last records.
    pub next_pointer: Option<Pointer>,
    /// How far behind the tip of the stream the reader is, if the source
    /// knows (Kinesis `MillisBehindLatest`).
    pub millis_behind: Option<u64>,
    /// After an empty answer, how long the consumer waits before it fetches
    /// again; `None`: its own idle delay (`ConsumerConfig::delay`). A source
    /// that already waited for records before answering (e.g. a Kinesis
    /// source reading ahead) says zero.
    pub idle_delay: Option<std::time::Duration>,
}

impl Fetched {
    /// Records followed by `next_pointer`.
    pub fn new(records: Vec<SourceRecord>, next_pointer: Option<Pointer>) -> Self {
        Fetched {
            records,
            next_pointer,
            millis_behind: None,
            idle_delay: None,
        }
    }
}

/// A stream to read from.
///
/// Contract: `fetch(p, n)` returns at most `n` records starting at `p`, in
/// order, and the pointer right after them. Calling it again with the same
/// pointer returns the same records (that is how a consumer resumes). An empty
/// answer whose `next_pointer` is `p` means "nothing new yet"; a `None`
/// `next_pointer` means the stream is closed after these records.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_core::memory::MemorySource;
/// use unistream_core::source::Source;
///
/// let mut source = MemorySource::new(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
/// let start = source.initial_pointer();
/// let first = source.fetch(&start, 2).await?;
/// assert_eq!(first.records.len(), 2);
/// let rest = source.fetch(first.next_pointer.as_ref().unwrap(), 2).await?;
/// assert_eq!(rest.records[0].data, b"c");
/// # Ok(()) }
/// ```
pub trait Source: Send {
    /// Where a consumer without a checkpoint starts.
    fn initial_pointer(&self) -> Pointer;

    /// Reads up to `limit` records starting at `from`.
    fn fetch(
        &mut self,
        from: &Pointer,
        limit: usize,
    ) -> impl Future<Output = Result<Fetched>> + Send;

    /// A record of an unfinished batch as the checkpoint store gave it back
    /// after a restart (pointer and data only), with what the source can
    /// tell again from them — e.g. [`SourceRecord::error`] for data it
    /// cannot hand out as a record. The default returns it unchanged.
    fn restore(&self, record: SourceRecord) -> SourceRecord {
        record
    }
}
