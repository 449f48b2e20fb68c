//! The Kinesis Producer Library's aggregated record format: many user records
//! in one Kinesis record.
//!
//! ```text
//! 0               4                  N          N+15
//! +---+---+---+---+==================+---+...+---+
//! |  MAGIC NUMBER | PROTOBUF MESSAGE |    MD5    |
//! +---+---+---+---+==================+---+...+---+
//! ```
//!
//! The magic number is `F3 89 9A C2`; the protobuf message (proto2) is
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Tag {
//!   required string key   = 1;
//!   optional string value = 2;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! and the trailer is the 16-byte MD5 digest of the protobuf bytes (as
//! described in `aggregation-format.md` of `awslabs/amazon-kinesis-producer`,
//! what the KCL de-aggregates). Tags are read and ignored (the KPL never
//! writes them); this module writes none.
//!
//! [`decode`] reads one Kinesis record's data: `Ok(None)` for a plain record
//! (no magic), the user records of an aggregate, or an [`AggregationError`]
//! saying what is wrong. [`AggregateBuilder`] packs user records into one
//! aggregate, sharing the key tables, and tells the aggregate's size before a
//! record is added.
//!
//! ```
//! use unistream_kinesis::aggregation::{self, AggregateBuilder, UserRecord};
//!
//! let mut builder = AggregateBuilder::new();
//! builder.push("user-1", None, b"first".to_vec());
//! let size = builder.encoded_len_with("user-1", None, 6);
//! builder.push("user-1", None, b"second".to_vec());
//! let bytes = builder.to_bytes();
//! assert_eq!(bytes.len(), size);
//!
//! let records = aggregation::decode(&bytes)?.expect("an aggregate");
//! assert_eq!(records[1], UserRecord::new("user-1", None, b"second".to_vec()));
//! assert_eq!(aggregation::decode(b"plain")?, None);
//! # Ok::<(), aggregation::AggregationError>(())
//! ```

use std::collections::HashMap;

use md5::{Digest, Md5};
use prost::Message;

/// The 4 bytes an aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest at the end of an aggregate.
pub const DIGEST_LEN: usize = 16;

/// The bytes an aggregate has around its protobuf message: the magic and the
/// digest.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key (a decimal 128-bit number), if it has one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

impl UserRecord {
    /// A user record.
    pub fn new(
        partition_key: impl Into<String>,
        explicit_hash_key: Option<String>,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        UserRecord {
            partition_key: partition_key.into(),
            explicit_hash_key,
            data: data.into(),
        }
    }
}

/// Why the data of a Kinesis record that starts with the [`MAGIC`] is not a
/// readable aggregate. Every case is about the whole Kinesis record: none of
/// its user records can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregationError {
    /// The record starts with the magic but is too short to hold the MD5
    /// digest that ends every aggregate.
    #[error(
        "truncated KPL aggregate: {len} bytes, fewer than the {FRAMING_LEN} of the magic number and the MD5 digest"
    )]
    Truncated {
        /// The length of the record's data.
        len: usize,
    },
    /// The MD5 digest at the end does not match the protobuf bytes: the
    /// record was corrupted or truncated.
    #[error(
        "corrupted or truncated KPL aggregate: bad MD5 digest (the record ends with {found}, the MD5 of its {protobuf_len} protobuf bytes is {computed})"
    )]
    BadDigest {
        /// The digest the record ends with, in hex.
        found: String,
        /// The digest of the protobuf bytes, in hex.
        computed: String,
        /// How many protobuf bytes there are between the magic and the
        /// digest.
        protobuf_len: usize,
    },
    /// The digest matches but the bytes are not an `AggregatedRecord`
    /// protobuf message.
    #[error("undecodable KPL aggregate: the protobuf message is invalid: {reason}")]
    Protobuf {
        /// The protobuf decoder's explanation.
        reason: String,
    },
    /// A user record's partition key index is past the end of the
    /// partition key table.
    #[error(
        "invalid KPL aggregate: user record {record} has partition key index {index}, but the partition key table has {table_len} entries"
    )]
    PartitionKeyIndexOutOfRange {
        /// The user record's position in the aggregate (from 0).
        record: usize,
        /// Its partition key index.
        index: u64,
        /// The length of the partition key table.
        table_len: usize,
    },
    /// A user record's explicit hash key index is past the end of the
    /// explicit hash key table.
    #[error(
        "invalid KPL aggregate: user record {record} has explicit hash key index {index}, but the explicit hash key table has {table_len} entries"
    )]
    ExplicitHashKeyIndexOutOfRange {
        /// The user record's position in the aggregate (from 0).
        record: usize,
        /// Its explicit hash key index.
        index: u64,
        /// The length of the explicit hash key table.
        table_len: usize,
    },
}

/// `message AggregatedRecord`.
#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

/// `message Record`.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// `message Tag` (read, never written).
#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// Whether `data` starts with the aggregate [`MAGIC`] (it is an aggregate, or
/// a damaged one).
pub fn is_aggregate(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads the data of one Kinesis record.
///
/// # Errors
///
/// An [`AggregationError`] if the data starts with the magic but is not a
/// valid aggregate: too short, a bad digest, an undecodable protobuf message
/// or a key index out of its table.
///
/// Returns `Ok(None)` for data without the magic (a plain record), the user
/// records in order otherwise (none for an aggregate of no records).
pub fn decode(data: &[u8]) -> Result<Option<Vec<UserRecord>>, AggregationError> {
    if !is_aggregate(data) {
        return Ok(None);
    }
    if data.len() < FRAMING_LEN {
        return Err(AggregationError::Truncated { len: data.len() });
    }
    let (protobuf, digest) = data[MAGIC.len()..].split_at(data.len() - FRAMING_LEN);
    let computed = Md5::digest(protobuf);
    if computed.as_slice() != digest {
        return Err(AggregationError::BadDigest {
            found: hex(digest),
            computed: hex(&computed),
            protobuf_len: protobuf.len(),
        });
    }
    let message = AggregatedRecord::decode(protobuf).map_err(|e| AggregationError::Protobuf {
        reason: e.to_string(),
    })?;
    let AggregatedRecord {
        partition_key_table,
        explicit_hash_key_table,
        records,
    } = message;
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let partition_key = usize::try_from(record.partition_key_index)
            .ok()
            .and_then(|index| partition_key_table.get(index))
            .ok_or(AggregationError::PartitionKeyIndexOutOfRange {
                record: i,
                index: record.partition_key_index,
                table_len: partition_key_table.len(),
            })?;
        let explicit_hash_key = match record.explicit_hash_key_index {
            None => None,
            Some(index) => Some(
                usize::try_from(index)
                    .ok()
                    .and_then(|index| explicit_hash_key_table.get(index))
                    .ok_or(AggregationError::ExplicitHashKeyIndexOutOfRange {
                        record: i,
                        index,
                        table_len: explicit_hash_key_table.len(),
                    })?
                    .clone(),
            ),
        };
        out.push(UserRecord {
            partition_key: partition_key.clone(),
            explicit_hash_key,
            data: record.data,
        });
    }
    Ok(Some(out))
}

/// Packs `records` into one aggregate (see [`AggregateBuilder`]).
pub fn encode(records: &[UserRecord]) -> Vec<u8> {
    let mut builder = AggregateBuilder::new();
    for r in records {
        builder.push(
            &r.partition_key,
            r.explicit_hash_key.as_deref(),
            r.data.clone(),
        );
    }
    builder.to_bytes()
}

/// The protobuf bytes of a length-delimited field (`string`, `bytes` or a
/// message) of field number below 16 (a 1-byte key) whose content is `len`
/// bytes long.
fn delimited_field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// The protobuf bytes of a `uint64` field of field number below 16.
fn uint64_field_len(value: u64) -> usize {
    // A varint's length is the same whether it delimits a length or is a
    // value; prost exposes it for lengths.
    1 + prost::length_delimiter_len(usize::try_from(value).unwrap_or(usize::MAX))
}

/// Builds one aggregate from user records, in the order they are pushed.
///
/// A partition key (or explicit hash key) used by several records is stored
/// once in its table. [`encoded_len`](Self::encoded_len) is the size of the
/// aggregate as it stands and [`encoded_len_with`](Self::encoded_len_with)
/// its size if a record were added, both without encoding anything, so a
/// producer can keep an aggregate under a size limit.
///
/// ```
/// use unistream_kinesis::aggregation::{AggregateBuilder, FRAMING_LEN};
///
/// let mut builder = AggregateBuilder::new();
/// assert_eq!(builder.encoded_len(), FRAMING_LEN);
/// let limit = 100;
/// for i in 0..20 {
///     let data = format!("record {i}");
///     if builder.encoded_len_with("key", None, data.len()) > limit {
///         break;
///     }
///     builder.push("key", None, data);
/// }
/// assert!(builder.to_bytes().len() <= limit);
/// assert_eq!(builder.to_bytes().len(), builder.encoded_len());
/// ```
#[derive(Debug, Clone, Default)]
pub struct AggregateBuilder {
    message: AggregatedRecord,
    partition_keys: HashMap<String, u64>,
    explicit_hash_keys: HashMap<String, u64>,
    /// The length of `message` encoded.
    protobuf_len: usize,
}

impl AggregateBuilder {
    /// An empty aggregate.
    pub fn new() -> Self {
        AggregateBuilder::default()
    }

    /// How many user records it holds.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// Whether it holds no user record.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// The partition key of its first user record (the KPL puts an aggregate
    /// with that key).
    pub fn first_partition_key(&self) -> Option<&str> {
        let index = self.message.records.first()?.partition_key_index;
        self.message
            .partition_key_table
            .get(usize::try_from(index).ok()?)
            .map(String::as_str)
    }

    /// The explicit hash key of its first user record, if it has one.
    pub fn first_explicit_hash_key(&self) -> Option<&str> {
        let index = self.message.records.first()?.explicit_hash_key_index?;
        self.message
            .explicit_hash_key_table
            .get(usize::try_from(index).ok()?)
            .map(String::as_str)
    }

    /// The size in bytes of the aggregate [`to_bytes`](Self::to_bytes) would
    /// write now: magic, protobuf message and digest.
    pub fn encoded_len(&self) -> usize {
        FRAMING_LEN + self.protobuf_len
    }

    /// The size the aggregate would have with one more user record of these
    /// keys and `data_len` bytes of data (what [`encoded_len`](Self::encoded_len)
    /// returns after that [`push`](Self::push)).
    pub fn encoded_len_with(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        self.encoded_len() + self.growth(partition_key, explicit_hash_key, data_len)
    }

    /// The index a key would have in a table (its own, or the next one).
    fn index_of(table: &HashMap<String, u64>, key: &str) -> (u64, bool) {
        match table.get(key) {
            Some(&i) => (i, false),
            None => (table.len() as u64, true),
        }
    }

    /// How many protobuf bytes a record adds.
    fn growth(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let mut added = 0;
        let (pk_index, new_pk) = Self::index_of(&self.partition_keys, partition_key);
        if new_pk {
            added += delimited_field_len(partition_key.len());
        }
        let mut record = uint64_field_len(pk_index) + delimited_field_len(data_len);
        if let Some(ehk) = explicit_hash_key {
            let (ehk_index, new_ehk) = Self::index_of(&self.explicit_hash_keys, ehk);
            if new_ehk {
                added += delimited_field_len(ehk.len());
            }
            record += uint64_field_len(ehk_index);
        }
        added + delimited_field_len(record)
    }

    /// Adds a user record at the end.
    pub fn push(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: impl Into<Vec<u8>>,
    ) {
        let data = data.into();
        self.protobuf_len += self.growth(partition_key, explicit_hash_key, data.len());
        let partition_key_index = Self::intern(
            &mut self.partition_keys,
            &mut self.message.partition_key_table,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.map(|k| {
            Self::intern(
                &mut self.explicit_hash_keys,
                &mut self.message.explicit_hash_key_table,
                k,
            )
        });
        self.message.records.push(Record {
            partition_key_index,
            explicit_hash_key_index,
            data,
            tags: Vec::new(),
        });
    }

    fn intern(index: &mut HashMap<String, u64>, table: &mut Vec<String>, key: &str) -> u64 {
        if let Some(&i) = index.get(key) {
            return i;
        }
        let i = table.len() as u64;
        table.push(key.to_owned());
        index.insert(key.to_owned(), i);
        i
    }

    /// The aggregate's bytes: magic, protobuf message, MD5 digest.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        self.message.encode_raw(&mut out);
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        out
    }

    /// Empties the builder, keeping its memory.
    pub fn clear(&mut self) {
        self.message.partition_key_table.clear();
        self.message.explicit_hash_key_table.clear();
        self.message.records.clear();
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.protobuf_len = 0;
    }

    /// The aggregate's bytes, emptying the builder.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let bytes = self.to_bytes();
        self.clear();
        bytes
    }
}

#[cfg(test)]
mod tests;
