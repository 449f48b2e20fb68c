//! [`KinesisError`]: what the Kinesis source and dead-letter queue's calls
//! can fail with, with the stream and shard each one was about.

use unistream_core::BoxError;

/// A failed Kinesis call. It reaches callers as
/// [`unistream_core::Error::Backend`], whose `source` downcasts to this
/// type (and, for a service error, its `source` to the SDK's error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KinesisError {
    /// A Kinesis API call failed.
    #[error("Kinesis {operation} on stream {stream}{} failed", shard.as_deref().map(|s| format!(", shard {s}")).unwrap_or_default())]
    Api {
        /// `GetShardIterator`, `GetRecords`, `ListShards`, ...
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The shard, for a shard's call.
        shard: Option<String>,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_kinesis::Error>,
    },
    /// A call succeeded but its answer lacks what the API promises.
    #[error("Kinesis {operation} on stream {stream}, shard {shard}: {what}")]
    Malformed {
        /// The call.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// What is missing.
        what: &'static str,
    },
    /// The dead-letter stream did not take a letter.
    #[error("the dead-letter stream did not take the letter of record {record_id:?}")]
    DeadLetter {
        /// The record.
        record_id: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl From<KinesisError> for unistream_core::Error {
    fn from(e: KinesisError) -> Self {
        unistream_core::Error::backend("Kinesis", e)
    }
}
