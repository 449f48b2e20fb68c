//! # unistream-core
//!
//! The engine room of [unistream](https://crates.io/crates/unistream):
//! records and codecs, the retry policy, the checkpoint state machine, the
//! producer and consumer engines and their traits, and in-memory backends.
//! It does no file I/O and knows nothing of AWS: backend crates
//! (`unistream-local`, `unistream-buffer`, the AWS crates) implement its
//! traits.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`Record`](record::Record), [`Codec`](record::Codec), the JSON codec in the seed's shape |
//! | [`retry`] | [`RetryPolicy`](retry::RetryPolicy): waits list or exponential, `max_attempts`, backed by `backon` |
//! | [`clock`] | [`Clock`](clock::Clock), real and virtual time |
//! | [`checkpoint`] | the per-record status state machine and [`CheckpointStore`](checkpoint::CheckpointStore) |
//! | [`source`] | [`Source`](source::Source): read records from a pointer |
//! | [`dlq`] | [`DeadLetterQueue`](dlq::DeadLetterQueue) |
//! | [`filter`] | [`FilterCriteria`](filter::FilterCriteria): Lambda's filter patterns |
//! | [`idempotency`] | [`Idempotent`](idempotency::Idempotent): effects at most once per key, over an [`IdempotencyStore`](idempotency::IdempotencyStore) |
//! | [`consumer`] | the [`Consumer`](consumer::Consumer) engine and the [`Processor`](consumer::Processor) trait |
//! | [`raw`] | [`RawRecord`](raw::RawRecord): any stream's records as they are, with the source's metadata |
//! | [`memory`] | in-memory variants for tests |
//! | `testing` | (feature `testing`) the contract suites to check your own [`CheckpointStore`](checkpoint::CheckpointStore) and [`IdempotencyStore`](idempotency::IdempotencyStore) with |

#![warn(missing_docs)]

pub mod buffer;
pub mod checkpoint;
pub mod clock;
pub mod consumer;
pub mod dlq;
mod error;
pub mod filter;
pub mod idempotency;
pub mod memory;
pub mod producer;
pub mod raw;
pub mod record;
pub mod retry;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod timefmt;

pub use error::{BoxError, Error, ErrorInfo, Result};
pub use tokio_util::sync::CancellationToken;
