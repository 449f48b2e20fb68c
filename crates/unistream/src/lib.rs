//! # unistream
//!
//! Reliable stream producers and consumers. A producer never loses a record
//! it accepted: `put` appends it to a write-ahead log before returning, and
//! batches are sent with exponential-backoff retry and recovered after a
//! crash. A consumer tracks every record's status in a checkpoint, retries,
//! sends what keeps failing to a dead-letter queue, and resumes exactly where
//! it stopped.
//!
//! This crate is a facade: it re-exports [`unistream_core`] (the engines,
//! their traits and the in-memory backends) and, behind features, the
//! backends:
//!
//! | feature | default | what |
//! |---|---|---|
//! | `local` | yes | [`local`]: the local-file stream, checkpoint store and dead-letter file, and [`Durability`] (`unistream-local`) |
//! | `file-buffer` | yes | [`wal`]: the durable file write-ahead log ([`FileBuffer`]) |
//! | `kinesis` | no | `kinesis`: AWS Kinesis sink and shard source (`unistream-kinesis`) |
//! | `dynamodb-s3` | no | `dynamodb_s3`: checkpoints in DynamoDB + S3 (`unistream-dynamodb-s3`) |
//! | `sqs-dlq` | no | `sqs_dlq`: SQS dead-letter queues and redrive (`unistream-sqs-dlq`) |
//! | `leases` | no | `leases`: every shard of a stream, shared by workers through DynamoDB leases (`unistream-leases`) |
//!
//! See the repository's `README.md` and `docs/` for the guarantees
//! (at-least-once; what a `kill -9` or a power loss can and cannot cause).

pub use unistream_core as core;
pub use unistream_core::*;

#[cfg(feature = "local")]
pub use unistream_local as local;
#[cfg(feature = "local")]
pub use unistream_local::Durability;

#[cfg(feature = "file-buffer")]
pub use unistream_buffer as wal;
#[cfg(feature = "file-buffer")]
pub use unistream_buffer::{FileBuffer, FileBufferOptions, Recovery};

#[cfg(feature = "kinesis")]
pub use unistream_kinesis as kinesis;

#[cfg(feature = "dynamodb-s3")]
pub use unistream_dynamodb_s3 as dynamodb_s3;

#[cfg(feature = "sqs-dlq")]
pub use unistream_sqs_dlq as sqs_dlq;

#[cfg(feature = "leases")]
pub use unistream_leases as leases;
