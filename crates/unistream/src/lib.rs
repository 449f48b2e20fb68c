//! # unistream
//!
//! Reliable stream producers and consumers. A producer never loses a record
//! it accepted: `put` appends it to a write-ahead log before returning, and
//! batches are sent with exponential-backoff retry and recovered after a
//! crash. A consumer tracks every record's status in a checkpoint, retries,
//! sends what keeps failing to a dead-letter queue, and resumes exactly where
//! it stopped.
//!
//! # A first program
//!
//! The embedded pipeline: a producer puts records through its write-ahead
//! log into a local stream file; a consumer processes the stream, retries
//! what fails and sends what keeps failing to a dead-letter file.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use unistream::{
//!     Attempt, BoxError, Consumer, ConsumerConfig, Durability, FileBuffer, FileBufferConfig,
//!     FileCheckpointStore, FileDeadLetterQueue, FileSink, FileSource, Outcome, Processor,
//!     Producer, ProducerConfig, Record, RetryPolicy,
//! };
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: String, create_at: chrono::DateTime<chrono::Utc>, amount: u32 }
//!
//! impl Record for Order {
//!     fn id(&self) -> &str { &self.id }
//!     fn create_at(&self) -> chrono::DateTime<chrono::Utc> { self.create_at }
//! }
//!
//! struct Bill;
//! impl Processor for Bill {
//!     type Record = Order;
//!     async fn process(&self, order: &Order, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
//!         if order.amount == 0 { return Err("nothing to bill".into()); } // retried, then DLQ
//!         Ok(Outcome::Succeeded)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap(); let dir = tmp.path();
//! let (wal, stream) = (dir.join("wal"), dir.join("orders.jsonl"));
//! let buffer = FileBuffer::open(&wal, FileBufferConfig::default())?;
//! let sink = FileSink::open(&stream, Durability::Process)?;
//! let producer = Producer::new(ProducerConfig::default(), buffer, sink);
//! for (i, amount) in [5, 0, 7].into_iter().enumerate() {
//!     let order = Order { id: i.to_string(), create_at: chrono::Utc::now(), amount };
//!     producer.put(&order).await?; // durable once `put` returns
//! }
//! producer.flush().await?;
//!
//! let mut config = ConsumerConfig::new("billing");
//! config.retry = RetryPolicy::waits([std::time::Duration::ZERO]).with_max_attempts(3);
//! config.stop_at_end = true;
//! let store = FileCheckpointStore::open(dir.join("checkpoints"), "billing", Durability::Process)?;
//! let dlq = FileDeadLetterQueue::open(dir.join("dlq.jsonl"), Durability::Process)?;
//! let mut consumer = Consumer::new(config, FileSource::new(&stream), Bill, store, dlq)?;
//! let summary = consumer.run().await?;
//! assert_eq!((summary.succeeded, summary.dead_lettered), (2, 1));
//! # Ok(()) }
//! ```
//!
//! The types a first program uses are at the root; every other one is in
//! its module.
//!
//! This crate is a facade: one path to each type. The modules of
//! [`unistream_core`] (the engines, their traits and the in-memory backends)
//! are re-exported as they are, [`buffer`] adds the file buffer to the
//! buffer trait, and the backends come behind features:
//!
//! | feature | default | what |
//! |---|---|---|
//! | `local` | yes | [`local`]: the local-file stream, checkpoint store and dead-letter file (`unistream-local`) |
//! | `file-buffer` | yes | `buffer::FileBuffer`: the producer's durable buffer, a write-ahead log (`unistream-buffer`) |
//! | `kinesis` | no | `kinesis`: AWS Kinesis sink and shard source (`unistream-kinesis`) |
//! | `dynamodb-s3` | no | `dynamodb_s3`: checkpoints in DynamoDB + S3 (`unistream-dynamodb-s3`) |
//! | `sqs-dlq` | no | `sqs_dlq`: SQS dead-letter queues and redrive (`unistream-sqs-dlq`) |
//! | `leases` | no | `leases`: every shard of a stream, shared by workers through DynamoDB leases (`unistream-leases`) |
//! | `testing` | no | `testing`: the contract suite to check your own checkpoint store with (`unistream-core`'s `testing`) |
//!
//! Any AWS feature adds `aws` (`unistream-aws`): the SDK configuration
//! for AWS or emulators (`aws::AwsSetup`, per-service endpoints) and the
//! clients of the services that feature uses, and `aws::denial`.
//!
//! See the repository's `README.md` and `docs/` for the guarantees
//! (at-least-once; what a `kill -9` or a power loss can and cannot cause),
//! and `docs/architecture.md` for what each name means.

#![warn(missing_docs)]

pub use unistream_core::{
    BoxError, CancellationToken, Error, ErrorInfo, Result, checkpoint, clock, consumer, dlq,
    filter, idempotency, memory, producer, raw, record, retry, sink, source,
};

/// The `chrono` a [`Record`]'s time is of (so a program needs no
/// dependency of its own for it).
pub use chrono;
/// The `serde` (with `derive`) [`JsonCodec`] works with; derive with
/// `#[serde(crate = "unistream::serde")]` when it is not a dependency of
/// your own.
pub use serde;

pub use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, OnExhausted, Outcome, Processor, RunSummary,
};
pub use unistream_core::dlq::DeadLetter;
pub use unistream_core::producer::{Producer, ProducerConfig};
pub use unistream_core::raw::{RawCodec, RawRecord};
pub use unistream_core::record::{Codec, JsonCodec, Record};
pub use unistream_core::retry::RetryPolicy;

#[cfg(feature = "file-buffer")]
pub use unistream_buffer::{FileBuffer, FileBufferConfig};
#[cfg(feature = "local")]
pub use unistream_local::{
    Durability, FileCheckpointStore, FileDeadLetterQueue, FileSink, FileSource,
};

/// The producer's buffer: where accepted records wait until a sink takes
/// them. The [`Buffer`](buffer::Buffer) trait and its types, and (feature
/// `file-buffer`) `FileBuffer`, the durable one: a write-ahead log of
/// segment files.
pub mod buffer {
    #[cfg(feature = "file-buffer")]
    pub use unistream_buffer::{FileBuffer, FileBufferConfig, Recovery};
    pub use unistream_core::buffer::*;
}

/// The local-file backends, the embedded default: a JSON-lines stream
/// ([`FileSource`], [`FileSink`]), the
/// journaled checkpoint store, the dead-letter file, the idempotency keys' directory, crash-safe line appends
/// and [`Durability`]. The plumbing they share with the
/// file buffer (frames, memory-mapped appends, locks) is in the
/// `unistream-local` crate itself.
#[cfg(feature = "local")]
pub mod local {
    pub use unistream_local::{
        AppendFile, Durability, FileCheckpointStore, FileDeadLetterQueue, FileIdempotencyStore,
        FilePosition, FileSink, FileSource,
    };
}

#[cfg(any(feature = "kinesis", feature = "dynamodb-s3", feature = "sqs-dlq"))]
pub use unistream_aws as aws;

/// Check your own [`CheckpointStore`](checkpoint::CheckpointStore) against
/// the contract every store passes (feature `testing`; see
/// [`unistream_core::testing`]).
#[cfg(feature = "testing")]
pub use unistream_core::testing;

#[cfg(feature = "kinesis")]
pub use unistream_kinesis as kinesis;

#[cfg(feature = "dynamodb-s3")]
pub use unistream_dynamodb_s3 as dynamodb_s3;

#[cfg(feature = "sqs-dlq")]
pub use unistream_sqs_dlq as sqs_dlq;

#[cfg(feature = "leases")]
pub use unistream_leases as leases;
