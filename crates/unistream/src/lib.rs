//! # unistream
//!
//! Reliable stream producers and consumers. A producer never loses a record
//! it accepted: `put` appends it to a write-ahead log before returning, and
//! batches are sent with exponential-backoff retry and recovered after a
//! crash. A consumer tracks every record's status in a checkpoint, retries,
//! sends what keeps failing to a dead-letter queue, and resumes exactly where
//! it stopped.
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
//! See the repository's `README.md` and `docs/` for the guarantees
//! (at-least-once; what a `kill -9` or a power loss can and cannot cause),
//! and `docs/architecture.md` for what each name means.

#![warn(missing_docs)]

pub use unistream_core::{
    BoxError, CancellationToken, Error, ErrorInfo, Result, checkpoint, clock, consumer, denial,
    dlq, memory, producer, record, retry, sink, source,
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
/// ([`FileSource`](local::FileSource), [`FileSink`](local::FileSink)), the
/// journaled checkpoint store, the dead-letter file, crash-safe line appends
/// and [`Durability`](local::Durability). The plumbing they share with the
/// file buffer (frames, memory-mapped appends, locks) is in the
/// `unistream-local` crate itself.
#[cfg(feature = "local")]
pub mod local {
    pub use unistream_local::{
        AppendFile, Durability, FileCheckpointStore, FileDeadLetterQueue, FilePosition, FileSink,
        FileSource,
    };
}

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
