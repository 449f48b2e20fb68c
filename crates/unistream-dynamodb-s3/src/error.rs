//! [`StoreError`]: what the DynamoDB + S3 store's calls can fail with, with
//! the table, key, bucket and object each one was about.

use unistream_core::BoxError;

/// A failed call of the DynamoDB + S3 checkpoint store. It reaches callers
/// as [`unistream_core::Error::Backend`], whose `source` downcasts to this
/// type (and, for a service error, its `source` to the SDK's error, e.g.
/// to tell throttling from a missing table).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A DynamoDB call failed.
    #[error("DynamoDB {operation} on table {table}, key {key:?} failed")]
    DynamoDb {
        /// `GetItem`, `PutItem` or `UpdateItem`.
        operation: &'static str,
        /// The table.
        table: String,
        /// The consumer's item.
        key: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },
    /// An S3 call failed, or its body could not be read.
    #[error("S3 {operation} of s3://{bucket}/{object} failed")]
    S3 {
        /// `PutObject`, `GetObject`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object's key.
        object: String,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// A write would make the checkpoint item larger than DynamoDB's 400 KB.
    /// Records done without data are kept compactly, so this takes many
    /// records that keep a full tracker at once: failing or exhausted ones
    /// (with their errors), ones in a retry, or ones the processor returned
    /// data for. Nothing was written; the checkpoint is as before the call.
    #[error(
        "the checkpoint item of table {table}, key {key:?} would be {bytes} bytes, over DynamoDB's {limit}: \
         {full_trackers} records keep a full tracker (failing or exhausted, in a retry, or with data from the processor); \
         lower the consumer's `limit`, or return less data from the processor"
    )]
    ItemTooLarge {
        /// The table.
        table: String,
        /// The consumer's item.
        key: String,
        /// The size the item would have.
        bytes: usize,
        /// DynamoDB's limit, 409,600 bytes.
        limit: usize,
        /// How many records of the batch keep a full tracker.
        full_trackers: usize,
    },
    /// A checkpoint, tracker or batch could not be encoded as JSON.
    #[error("cannot encode the {what} of table {table}, key {key:?}")]
    Encode {
        /// `checkpoint`, `tracker` or `records`.
        what: &'static str,
        /// The table.
        table: String,
        /// The consumer's item.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<StoreError> for unistream_core::Error {
    fn from(e: StoreError) -> Self {
        unistream_core::Error::backend("DynamoDB + S3 checkpoint store", e)
    }
}
