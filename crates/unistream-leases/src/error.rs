//! [`LeaseError`]: what the lease table and the stream consumer's own calls
//! can fail with, with the table, stream or shard each one was about.

/// A failed call of the lease table or the stream consumer. It reaches
/// callers as [`unistream_core::Error::Backend`], whose `source` downcasts
/// to this type (and, for a service error, its `source` to the SDK's
/// error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A DynamoDB call on the lease table failed.
    #[error("DynamoDB {operation} on lease table {table} failed")]
    Table {
        /// The call (and which lease change, e.g. `renew`).
        operation: String,
        /// The lease table.
        table: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },
    /// An item of the lease table is not a lease this crate wrote.
    #[error("lease table {table}: not a lease item ({what}): {item}")]
    NotALease {
        /// The lease table.
        table: String,
        /// What is wrong with it.
        what: String,
        /// The item, as the SDK shows it.
        item: String,
    },
    /// The processor of a shard panicked; that shard's consumer stopped
    /// (and is started again while the lease is held).
    #[error("the processor of shard {shard} panicked")]
    ProcessorPanicked {
        /// The shard (its consumer's id).
        shard: String,
    },
}

impl From<LeaseError> for unistream_core::Error {
    fn from(e: LeaseError) -> Self {
        unistream_core::Error::backend("leases", e)
    }
}
