//! # unistream
//!
//! Reliable stream producers and consumers. A producer never loses a record
//! it accepted: `put` appends it to a write-ahead log before returning, and
//! batches are sent with exponential-backoff retry and recovered after a
//! crash. A consumer tracks every record's status in a checkpoint, retries,
//! sends what keeps failing to a dead-letter queue, and resumes exactly where
//! it stopped.
//!
//! This crate is a facade: it re-exports [`unistream_core`] (the engines and
//! the embedded local-file backends) and, behind features, the backends:
//!
//! | feature | default | what |
//! |---|---|---|
//! | `file-buffer` | yes | [`wal`]: the durable file write-ahead log ([`FileBuffer`]) |
//! | `kinesis` | no | `kinesis`: AWS Kinesis sink and shard source (`unistream-kinesis`) |
//!
//! See the repository's `README.md` and `docs/` for the guarantees
//! (at-least-once; what a `kill -9` or a power loss can and cannot cause).

pub use unistream_core as core;
pub use unistream_core::*;

#[cfg(feature = "file-buffer")]
pub use unistream_buffer as wal;
#[cfg(feature = "file-buffer")]
pub use unistream_buffer::{FileBuffer, FileBufferOptions, Recovery};

#[cfg(feature = "kinesis")]
pub use unistream_kinesis as kinesis;
