//! Records and codecs.
//!
//! A [`Record`] is what the user's code produces and processes: a unique
//! string id, a timezone-aware creation time and a partition key (the id by
//! default). A [`Codec`] turns it into bytes and back; decoding is fallible and
//! returns a value, never panics. The default [`JsonCodec`] writes the seed's
//! shape: `{"id": "1", "create_at": "2024-01-09T06:24:06.759449+00:00", "value": 72}`.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

// The codec error lives with the crate's other errors (`error.rs`), so that
// `error` depends on nothing here; it stays public at this path.
pub use crate::error::{CodecDirection, CodecError};

/// A record of a stream.
///
/// # Example
/// ```
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// use unistream_core::record::{iso8601, Codec, JsonCodec, Record};
///
/// #[derive(Debug, Serialize, Deserialize, PartialEq)]
/// struct MyRecord {
///     id: String,
///     #[serde(with = "iso8601")]
///     create_at: DateTime<Utc>,
///     value: i64,
/// }
///
/// impl Record for MyRecord {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
///
/// let bytes = br#"{"id": "1", "create_at": "2024-01-09T06:24:06.759449+00:00", "value": 72}"#;
/// let record: MyRecord = JsonCodec::default().decode(bytes)?;
/// assert_eq!(record.partition_key(), "1");
/// assert_eq!(JsonCodec::default().encode(&record)?, bytes.to_vec());
/// # Ok::<(), unistream_core::record::CodecError>(())
/// ```
pub trait Record: Send + Sync + 'static {
    /// The record's unique id.
    fn id(&self) -> &str;
    /// When the record was created.
    fn create_at(&self) -> DateTime<Utc>;
    /// The key that decides the stream partition (shard). Defaults to the id.
    fn partition_key(&self) -> &str {
        self.id()
    }
    /// A hash key that picks the shard instead of the partition key's hash
    /// (Kinesis `ExplicitHashKey`, a decimal 128-bit number). None by default.
    fn explicit_hash_key(&self) -> Option<&str> {
        None
    }
}

/// Turns records into bytes and back. Plug another one (e.g. a binary format)
/// without touching the engines.
pub trait Codec<R>: Send + Sync + 'static {
    /// Encodes a record.
    fn encode(&self, record: &R) -> Result<Vec<u8>, CodecError>;
    /// Decodes a record. Bad bytes are an error value, never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<R, CodecError>;
    /// Decodes a record as a source read it, seeing what the source knows
    /// of it (its pointer, keys and arrival time): what the consumer calls.
    /// By default, [`decode`](Self::decode) of its bytes; a codec whose
    /// records take metadata from the stream overrides it (as
    /// [`RawCodec`](crate::raw::RawCodec) does).
    fn decode_record(&self, record: &crate::source::SourceRecord) -> Result<R, CodecError> {
        self.decode(&record.data)
    }
}

/// How [`JsonCodec`] lays out its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonStyle {
    /// Python's `json.dumps` default separators (`", "` and `": "`): byte for
    /// byte the seed's output.
    #[default]
    Seed,
    /// No whitespace at all.
    Compact,
}

/// The default codec: JSON through serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec {
    style: JsonStyle,
}

impl JsonCodec {
    /// A codec with the given layout.
    pub fn new(style: JsonStyle) -> Self {
        JsonCodec { style }
    }

    /// Encodes any serializable value with this codec's layout.
    ///
    /// # Errors
    ///
    /// [`CodecError`] if the record cannot be serialized.
    pub fn to_vec<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(128);
        let result = match self.style {
            JsonStyle::Compact => serde_json::to_writer(&mut out, value),
            JsonStyle::Seed => {
                let mut ser = serde_json::Serializer::with_formatter(&mut out, SeedFormatter);
                value.serialize(&mut ser)
            }
        };
        result.map_err(CodecError::encode)?;
        Ok(out)
    }
}

impl<R: Serialize + DeserializeOwned + Send + Sync + 'static> Codec<R> for JsonCodec {
    fn encode(&self, record: &R) -> Result<Vec<u8>, CodecError> {
        self.to_vec(record)
    }

    fn decode(&self, bytes: &[u8]) -> Result<R, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::decode)
    }
}

/// A `serde_json` formatter with Python's default separators.
struct SeedFormatter;

/// `", "` before every element but the first (of an array or an object).
fn separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for SeedFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Serde helpers for the seed's timestamp shape
/// (`2024-01-09T06:24:06.759449+00:00`, microseconds, numeric offset).
///
/// Deserialization accepts any RFC 3339 time with an offset (with or without
/// fractional seconds, `Z` or `+hh:mm`) and converts it to UTC.
pub mod iso8601 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    const SHAPE: &str = "%Y-%m-%dT%H:%M:%S%.6f+00:00";

    /// Formats a time in the seed's shape.
    pub fn format(time: &DateTime<Utc>) -> String {
        let mut buf = [0u8; 32];
        match crate::timefmt::format_seed(time, &mut buf) {
            Some(s) => s.to_owned(),
            None => time.format(SHAPE).to_string(),
        }
    }

    /// Serializes a time in the seed's shape.
    ///
    /// # Errors
    ///
    /// The serializer's error.
    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        match crate::timefmt::format_seed(time, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(&time.format(SHAPE)),
        }
    }

    /// Parses an RFC 3339 time with an offset.
    ///
    /// # Errors
    ///
    /// The deserializer's error, or an invalid time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid timestamp {s:?}: {e} (need RFC 3339 with an offset)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct R {
        id: String,
        #[serde(with = "iso8601")]
        create_at: DateTime<Utc>,
        value: i64,
    }

    const SEED: &[u8] =
        br#"{"id": "1", "create_at": "2024-01-09T06:24:06.759449+00:00", "value": 72}"#;

    #[test]
    fn seed_shape_round_trips_byte_for_byte() {
        let r: R = JsonCodec::default().decode(SEED).unwrap();
        assert_eq!(r.value, 72);
        assert_eq!(JsonCodec::default().encode(&r).unwrap(), SEED);
    }

    #[test]
    fn compact_style_has_no_spaces() {
        let r: R = JsonCodec::default().decode(SEED).unwrap();
        let out = JsonCodec::new(JsonStyle::Compact).encode(&r).unwrap();
        assert_eq!(
            out,
            br#"{"id":"1","create_at":"2024-01-09T06:24:06.759449+00:00","value":72}"#
        );
    }

    #[test]
    fn other_offsets_and_no_fraction_are_accepted() {
        let r: R = JsonCodec::default()
            .decode(br#"{"id":"x","create_at":"2024-01-09T08:24:06+02:00","value":1}"#)
            .unwrap();
        assert_eq!(
            iso8601::format(&r.create_at),
            "2024-01-09T06:24:06.000000+00:00"
        );
    }

    #[test]
    fn bad_bytes_are_an_error_value() {
        for bad in [&b"not json"[..], b"{\"id\": 1}", b"\xff\xfe", b""] {
            let err = <JsonCodec as Codec<R>>::decode(&JsonCodec::default(), bad).unwrap_err();
            assert_eq!(err.direction, CodecDirection::Decode);
            assert!(err.to_string().starts_with("cannot decode record"));
        }
    }
}
