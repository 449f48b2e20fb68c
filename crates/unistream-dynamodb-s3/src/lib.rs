//! # unistream-dynamodb-s3
//!
//! A [`CheckpointStore`](unistream_core::checkpoint::CheckpointStore) in DynamoDB and S3: the seed's production setup.
//!
//! # Layout (2)
//! One DynamoDB item per consumer, keyed by a configurable partition key
//! name and value, whose size does not grow with the batch:
//!
//! ```text
//! <pk name>    S  <pk value>
//! version      N  bumped by every write; every write is conditional on it
//! owner        S  the store instance that wrote last
//! layout       N  2 (absent: layout 1, read and converted on load)
//! meta         S  the checkpoint without its trackers (JSON)
//! state        S  every record's status and attempts as runs (JSON), e.g. "S1*480 R1.0*16 P*4"
//! trackers     M  "<index>" -> full tracker (JSON), only for records that
//!                 are failing, exhausted and not yet dead-lettered, in a
//!                 retry, or carry data from the processor
//! records_key  S  the S3 key of the batch's records
//! ```
//!
//! and one S3 object per batch (`<prefix><pk value>/records-<writer>-<sequence mod 2>.json`,
//! a JSON array of `{"pointer", "data", "id"}` with the data in base64).
//! The `state` codec is in `layout.rs`; a done record (succeeded or ignored
//! without data, or dead-lettered) is kept as its
//! [`Tracker::summary`](unistream_core::checkpoint::Tracker::summary).
//! Without failures the item is a few hundred bytes at any `limit`: each
//! write costs one DynamoDB write unit ([`StoreCalls::write_units`] counts
//! them as AWS bills them).
//!
//! # Invariants
//! - **No silent overwrite.** Every write carries `version = <what this
//!   store last saw>`. A second consumer that loads the checkpoint bumps the
//!   version, so the first one's next write fails with
//!   [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned); it never clobbers.
//! - **Any record id works.** Per-record updates are `UpdateItem`s with
//!   `SET #t.#k0 = :v0, ...`: ids only ever appear as expression attribute
//!   *name placeholder values*, never in the expression text.
//! - **A crash between S3 and DynamoDB** leaves the item on the previous
//!   batch: the records object of a new batch is written first, the item
//!   after; a restart reads the previous batch (or fetches the new one
//!   again) — never an item that points at records that are not there.
//! - **The 400 KB item limit** is checked before each write: only records
//!   that keep a full tracker can approach it, and a write that would pass
//!   it is refused before the call with [`StoreError::ItemTooLarge`] (how
//!   many full trackers, what to lower), the checkpoint left as it was.
//! - **Group commit.** Tracker updates are buffered until `sync` (the
//!   engine syncs before it runs user code, and one write carries every
//!   change since the last); a write that fails forgets nothing: the next
//!   one carries it all again.
//!
//! A consumer that finds a record `in_progress` after a restart cannot know
//! whether its previous owner is dead, so this store is not exclusive: such a
//! record is retried once its lock (`lock_expire` seconds) has expired.

#![warn(missing_docs)]

mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod idempotency;
mod item;
mod layout;
mod load;
mod repair;
mod store;
mod write;

pub use error::StoreError;
pub use idempotency::{DynamoDbIdempotencyStore, IdempotencyCalls};
pub use load::Peeked;
pub use store::{
    DynamoDbS3CheckpointStore, DynamoDbS3CheckpointStoreBuilder, ITEM_LIMIT_BYTES, StoreCalls,
};
