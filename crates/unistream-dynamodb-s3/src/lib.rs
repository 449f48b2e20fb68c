//! # unistream-dynamodb-s3
//!
//! A [`CheckpointStore`](unistream_core::checkpoint::CheckpointStore) in DynamoDB and S3: the seed's production setup.
//!
//! # Layout
//! One DynamoDB item per consumer, keyed by a configurable partition key
//! name and value:
//!
//! ```text
//! <pk name>    S  <pk value>
//! version      N  bumped by every write; every write is conditional on it
//! owner        S  the store instance that wrote last
//! meta         S  the checkpoint without its trackers (JSON)
//! trackers     M  "<index>|<record id>" -> the record's tracker (JSON)
//! records_key  S  the S3 key of the batch's records
//! ```
//!
//! and one S3 object per batch (`<prefix><pk value>/batch-<sequence>.json`,
//! a JSON array of `{"pointer", "data"}` with the data in base64).
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
//! - **The 400 KB item limit** is checked before each write, with a clear
//!   error naming the consumer and the size (lower `limit`).
//! - Tracker updates are buffered until `sync` (the engine syncs before it
//!   runs user code), so a record costs one `UpdateItem` in the common case.
//!
//! A consumer that finds a record `in_progress` after a restart cannot know
//! whether its previous owner is dead, so this store is not exclusive: such a
//! record is retried once its lock (`lock_expire` seconds) has expired.

#![warn(missing_docs)]

mod store;

mod error;

pub use error::StoreError;
pub use store::{
    DynamoDbS3CheckpointStore, DynamoDbS3CheckpointStoreBuilder, ITEM_LIMIT_BYTES, StoreCalls,
};
