//! # unistream-core
//!
//! The engine room of [unistream](https://crates.io/crates/unistream):
//! records and codecs, the retry policy, the checkpoint state machine, the
//! consumer engine and its traits, and the embedded local-file backends. It
//! knows nothing of AWS; backend crates implement its traits.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`Record`](record::Record), [`Codec`](record::Codec), the JSON codec in the seed's shape |
//! | [`retry`] | [`RetryPolicy`](retry::RetryPolicy): waits list or exponential, `max_attempts`, backed by `backon` |
//! | [`clock`] | [`Clock`](clock::Clock), real and virtual time |
//! | [`checkpoint`] | the per-record status state machine and [`CheckpointStore`](checkpoint::CheckpointStore) |
//! | [`source`] | [`Source`](source::Source): read records from a pointer |
//! | [`dlq`] | [`DeadLetterQueue`](dlq::DeadLetterQueue) |
//! | [`consumer`] | the [`Consumer`](consumer::Consumer) engine and the [`Processor`](consumer::Processor) trait |
//! | [`local`] | local-file stream, checkpoint store and dead-letter queue |
//! | [`memory`] | in-memory variants for tests |

#![warn(missing_docs)]

pub mod buffer;
pub mod checkpoint;
pub mod clock;
pub mod consumer;
pub mod dlq;
mod error;
pub mod framing;
pub mod local;
pub mod memory;
pub mod producer;
pub mod record;
pub mod retry;
pub mod sink;
pub mod source;
mod timefmt;

pub use error::{BoxError, Error, Result};
pub use tokio_util::sync::CancellationToken;

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
