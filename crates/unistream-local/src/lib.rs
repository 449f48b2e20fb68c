//! # unistream-local
//!
//! The local-file backends of [unistream](https://crates.io/crates/unistream),
//! the embedded default: no server needed. Everything here implements a
//! trait of [`unistream_core`].
//!
//! - [`FileSource`]: a JSON-lines stream file, read from a line/byte pointer
//!   without rescanning the file.
//! - [`FileSink`]: the producer's side of the stream file: whole lines, one
//!   write per batch.
//! - [`FileCheckpointStore`]: a checksummed, append-only journal per batch;
//!   a `kill -9` at any instant leaves it readable and correct.
//! - [`FileDeadLetterQueue`]: a JSON-lines file of failed records with their
//!   failure metadata; [`redrive_file`] puts them back into a stream.
//! - [`FileIdempotencyStore`]: idempotency keys, one small file each,
//!   replaced atomically.
//!
//! And their plumbing, which the write-ahead log (`unistream-buffer`) shares:
//!
//! - [`AppendFile`]: what every JSON-lines file above (and the examples'
//!   output files) is written through: one writing process (`flock`), whole
//!   lines per write, and a torn last line dropped on open, before anything
//!   is appended after it.
//! - [`framing`]: checksummed frames (`len | crc32c | kind | payload`), and
//!   [`FrameFile`], which appends them with `write(2)` or, in process-crash
//!   mode, through a shared memory mapping.
//! - [`lock_exclusive`]: the advisory lock that proves a previous owner dead.
//! - [`Durability`]: what a local file survives.
//!
//! These backends do small blocking writes on the calling task (a `write(2)`
//! of a few hundred bytes); in [`Durability::PowerLoss`] mode they also wait
//! for `fdatasync`. They are meant for a runtime where that is acceptable
//! (one consumer per task, as the engines run). See `docs/guarantees.md` for
//! what survives a `kill -9` and a power loss, and `docs/checkpoint.md` for
//! the journal's format.
//!
//! This is the only crate of the workspace with `unsafe` code: the memory
//! mapping of [`FrameFile`], each block with its `SAFETY:` comment.

#![warn(missing_docs)]

mod append;
mod checkpoint;
mod dlq;
mod frame_file;
pub mod framing;
mod idempotency;
mod sink;
mod stream;

pub use append::{AppendFile, lock_exclusive};
pub use checkpoint::FileCheckpointStore;
pub use dlq::{FileDeadLetterQueue, redrive_file};
pub use frame_file::{FrameFile, KIND_PADDING};
pub use idempotency::FileIdempotencyStore;
pub use sink::FileSink;
pub use stream::{FilePosition, FileSource};

/// How much of a crash the local files survive. Explicit in every local
/// backend's constructor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Data is handed to the OS (`write(2)`) before the call returns: it
    /// survives the process crashing or being killed (`kill -9`), not a power
    /// loss or kernel crash.
    #[default]
    Process,
    /// Data is on stable storage (`fdatasync`, and `fsync` of directories for
    /// new files) before the call returns: it survives a power loss too.
    PowerLoss,
}
