//! # unistream-kinesis
//!
//! AWS Kinesis Data Streams for unistream.
//!
//! - [`KinesisSink`]: a producer [`Sink`](unistream_core::sink::Sink) over
//!   `PutRecords`. A batch is split to at most 500 records and 5 MiB per
//!   call; each record keeps its own partition key and raw bytes (no extra
//!   base64 layer); records over the stream's record size are refused by
//!   `validate` before the producer accepts them. On a partial failure only
//!   the failed records are reported, so the producer narrows its batch and
//!   never re-sends accepted ones; with [`Ordering::PerKey`] (the default) a
//!   later record of a partition key is never accepted before an earlier,
//!   failed one of the same key. Opt-in: [`KinesisSink::with_aggregation`]
//!   packs user records per predicted shard into KPL aggregates, and
//!   [`KinesisSink::with_rate_limit`] paces sends per predicted shard
//!   ([`RateLimit`], the service quota by default); both predict shards
//!   from `ListShards`, listed again after a misroute.
//! - [`KinesisSource`]: a consumer [`Source`](unistream_core::source::Source)
//!   for one shard. The pointer stored in the checkpoint is a sequence number
//!   (or a starting position for a fresh consumer), never a shard iterator;
//!   iterators are derived with `AFTER_SEQUENCE_NUMBER`, cached, and derived
//!   again when they expire. At most 5 `GetRecords` per second; throttling
//!   backs off; the end of a closed shard closes the source and reports its
//!   child shards. Records in the KPL aggregated format are split into their
//!   user records by default, each with its own keys and pointer
//!   (`<sequence number>:<sub-sequence number>`); a corrupted aggregate is
//!   handed out whole, marked with the error, for the dead-letter queue.
//! - [`KinesisDeadLetterQueue`]: another stream as the dead-letter queue.
//! - [`Position`]: a place in a shard, the checkpoint pointer typed;
//!   [`list_shards`] (paged, by name or ARN) and [`shard_lag`] (records
//!   between a position and the shard's tip), for programs and tools.
//! - [`aggregation`]: the Kinesis Producer Library's aggregated record
//!   format (many user records in one Kinesis record), read and written.
//! - [`PythonCompatCodec`]: reads records the Python library wrote (its data
//!   was base64 text of the JSON record).

#![warn(missing_docs)]

pub mod aggregation;
mod dlq;
mod error;
mod fanout;
mod lag;
mod position;
mod python;
mod rate;
mod reader;
pub(crate) mod shards;
mod sink;
mod source;

pub use dlq::KinesisDeadLetterQueue;
pub use error::KinesisError;
pub use fanout::{StreamConsumerInfo, deregister_consumer, list_consumers, register_consumer};
pub use lag::{ShardLag, shard_lag};
pub use position::{Position, PositionError};
pub use python::PythonCompatCodec;
pub use rate::{
    RateLimit, SHARD_BYTES_PER_SECOND, SHARD_READ_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND,
};
pub use shards::list_shards;
pub use sink::{
    Aggregation, DEFAULT_MAX_AGGREGATE_BYTES, KinesisSink, MAX_RECORD_BYTES, MAX_RECORDS_PER_CALL,
    MAX_REQUEST_BYTES, Ordering,
};
pub use source::{DEFAULT_READ_LIMIT, KinesisSource, ShardStats, StartingPosition};
