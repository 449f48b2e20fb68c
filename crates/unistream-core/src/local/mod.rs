//! Local-file backends, the embedded default: no server needed.
//!
//! - [`FileSource`]: a JSON-lines stream file, read from a line/byte pointer
//!   without rescanning the file.
//! - [`FileCheckpointStore`]: a checksummed, append-only journal per batch;
//!   a `kill -9` at any instant leaves it readable and correct.
//! - [`FileDeadLetterQueue`]: a JSON-lines file of failed records with their
//!   failure metadata.
//! - [`FileSink`]: the producer's side of the stream file: whole lines, one
//!   write per batch.
//! - [`AppendFile`]: what every JSON-lines file above (and the examples'
//!   output files) is written through: one writing process (`flock`), whole
//!   lines per write, and a torn last line dropped on open, before anything
//!   is appended after it.
//!
//! These backends do small blocking writes on the calling task (a `write(2)`
//! of a few hundred bytes); in [`Durability::PowerLoss`] mode they also wait
//! for `fdatasync`. They are meant for a runtime where that is acceptable
//! (one consumer per task, as the engines run).

mod append;
mod checkpoint;
mod dlq;
mod frame_file;
mod sink;
mod stream;

pub use append::{AppendFile, lock_exclusive};
pub use checkpoint::FileCheckpointStore;
pub use dlq::{FileDeadLetterQueue, dead_letter_line};
pub use frame_file::{FrameFile, KIND_PADDING};
pub use sink::FileSink;
pub use stream::{FilePosition, FileSource};

use crate::Durability;
