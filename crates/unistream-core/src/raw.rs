//! [`RawRecord`] and [`RawCodec`]: any stream consumed (or produced) as it
//! is, without a [`Record`] type of one's own.
//!
//! The records of a stream written by anyone else — logs, Avro, protobuf,
//! JSON without an `id` and a `create_at` — have no id of their own. A raw
//! record takes what the source knows instead: its position as its id (a
//! Kinesis sequence number, `<sequence>:<sub-sequence>` for a user record
//! of a KPL aggregate, `line@byte` in a file), the stream's partition key
//! and explicit hash key, and its arrival time. Its bytes are untouched:
//! decode them in the processor however the stream's writer encoded them.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
//! use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
//! use unistream_core::raw::{RawCodec, RawRecord};
//! use unistream_core::BoxError;
//!
//! struct Count;
//! impl Processor for Count {
//!     type Record = RawRecord;
//!     async fn process(&self, r: &RawRecord, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
//!         assert_eq!(r.data, [0xff, 0x00, 0x17]); // not JSON, not even UTF-8
//!         Ok(Outcome::Succeeded)
//!     }
//! }
//!
//! let source = MemorySource::new(vec![vec![0xff, 0x00, 0x17]]);
//! let mut config = ConsumerConfig::new("raw");
//! config.stop_at_end = true;
//! let store = MemoryCheckpointStore::default();
//! let mut consumer = Consumer::new(config, source, Count, store, MemoryDeadLetterQueue::default())?
//!     .with_codec(RawCodec);
//! let summary = consumer.run().await?;
//! assert_eq!(summary.succeeded, 1);
//! # Ok::<(), unistream_core::Error>(())
//! # }).unwrap();
//! ```

use chrono::{DateTime, Utc};

use crate::record::{Codec, CodecError, Record};
use crate::source::SourceRecord;

/// A record as the stream holds it: its bytes, and what the source knows of
/// it. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawRecord {
    /// Its position in the stream, as text: its id.
    pub id: String,
    /// Its bytes, as written.
    pub data: Vec<u8>,
    /// The partition key the stream filed it under, if the source knows it
    /// (Kinesis does; a file stream does not; a batch resumed from a
    /// checkpoint after a restart does not keep it).
    pub partition_key: Option<String>,
    /// Its explicit hash key, if the source knows it.
    pub explicit_hash_key: Option<String>,
    /// When the stream received it, if the source knows it (Kinesis
    /// `ApproximateArrivalTimestamp`; not kept across a restart).
    pub arrival_time: Option<DateTime<Utc>>,
}

impl RawRecord {
    /// A record of `data` to produce, under `partition_key` (its id too).
    pub fn new(partition_key: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        let key = partition_key.into();
        RawRecord {
            id: key.clone(),
            data: data.into(),
            partition_key: Some(key),
            explicit_hash_key: None,
            arrival_time: None,
        }
    }

    /// The record a source read, with what it knows of it.
    pub fn from_source(record: &SourceRecord) -> Self {
        RawRecord {
            id: record.pointer.as_str().to_owned(),
            data: record.data.clone(),
            partition_key: record.partition_key.clone(),
            explicit_hash_key: record.explicit_hash_key.clone(),
            arrival_time: record.arrival_time,
        }
    }
}

impl Record for RawRecord {
    fn id(&self) -> &str {
        &self.id
    }

    /// The arrival time; the Unix epoch when the source does not know it.
    /// (The engines never read it: it is the record's own business.)
    fn create_at(&self) -> DateTime<Utc> {
        self.arrival_time.unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The stream's partition key; when the source does not know it, one
    /// key for all (so that a concurrent consumer never reorders records
    /// whose keys it cannot tell apart).
    fn partition_key(&self) -> &str {
        self.partition_key.as_deref().unwrap_or("")
    }

    fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }
}

/// The codec of [`RawRecord`]: the bytes as they are, both ways; decoding
/// takes the id and metadata from the source's record
/// ([`Codec::decode_record`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCodec;

impl Codec<RawRecord> for RawCodec {
    fn encode(&self, record: &RawRecord) -> Result<Vec<u8>, CodecError> {
        Ok(record.data.clone())
    }

    /// Bytes alone have no id: refused (the consumer calls
    /// [`decode_record`](Codec::decode_record)).
    fn decode(&self, _bytes: &[u8]) -> Result<RawRecord, CodecError> {
        Err(CodecError::decode(
            "a raw record takes its id from its position: decode it with Codec::decode_record",
        ))
    }

    fn decode_record(&self, record: &SourceRecord) -> Result<RawRecord, CodecError> {
        Ok(RawRecord::from_source(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Pointer;

    #[test]
    fn a_source_record_becomes_a_raw_record_with_its_metadata() {
        let t = DateTime::from_timestamp_millis(1_704_781_446_123).unwrap_or_default();
        let sr = SourceRecord::new(Pointer::from("4959:2"), vec![1, 2, 3])
            .with_keys(Some("k".into()), Some("42".into()))
            .with_arrival_time(Some(t));
        let r = RawCodec
            .decode_record(&sr)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.id(), "4959:2");
        assert_eq!(r.partition_key(), "k");
        assert_eq!(r.explicit_hash_key(), Some("42"));
        assert_eq!(r.create_at(), t);
        assert_eq!(RawCodec.encode(&r).unwrap_or_default(), vec![1, 2, 3]);
        assert!(RawCodec.decode(&[1]).is_err());
        // Unknown metadata: one key for all, the epoch as time.
        let bare = RawCodec
            .decode_record(&SourceRecord::new(Pointer::from("3@9"), vec![]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (bare.partition_key(), bare.create_at()),
            ("", DateTime::UNIX_EPOCH)
        );
    }
}
