//! # unistream-leases
//!
//! Scale-out for unistream: several worker processes consume every shard of
//! a Kinesis stream, coordinated by **leases** in a DynamoDB table with
//! conditional writes, the way the Kinesis Client Library does it.
//!
//! - [`Lease`], [`LeaseTable`]: one lease per shard (owner, a counter bumped
//!   by every change, parent shards, ended); [`DynamoDbLeaseTable`] keeps
//!   them in DynamoDB, [`MemoryLeaseTable`] in memory (tests).
//! - [`Coordinator`]: one worker's leases — renewal on a timer, takeover of
//!   leases whose counter stopped moving for the failover time, balancing
//!   (free and expired leases first, then one steal at a time from the
//!   busiest worker), parents before children.
//! - [`StreamConsumer`]: discovers the shards (paged `ListShards`), and runs
//!   the consumer engine (with its per-record checkpoint) for each shard it
//!   holds, as its own task.
//!
//! See `docs/scale-out.md` for failover, balancing, what a kill looks like,
//! and the DynamoDB cost per worker.

#![warn(missing_docs)]

mod builder;
mod coordinator;
mod dynamodb;
mod error;
mod lease;
mod stream;

pub use builder::StreamConsumerBuilder;
pub use coordinator::{Balanced, Coordinator, LeaseConfig};
pub use dynamodb::{DynamoDbLeaseTable, LEASE_KEY};
pub use error::LeaseError;
pub use lease::{
    Lease, LeaseTable, MemoryLeaseTable, checkpoint_key, ensure_not_held, shard_of_key,
};
pub use stream::{StreamConsumer, StreamSummary};
