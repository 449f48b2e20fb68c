//! Frames, and the reader of a segment's bytes.

use unistream_core::sink::EncodedRecord;
use unistream_local::KIND_PADDING;
use unistream_local::framing::{self, Cursor, RawFrames};

pub use unistream_local::framing::{Corruption, FRAME_HEADER, Version};

/// The name of the segment format: the first 7 bytes of every segment,
/// before the format version byte.
pub const NAME: &[u8; 7] = b"USWAL\0\0";

/// The first 8 bytes of every segment written: name and format version 3.
/// Segments of format 2 are read (and rewritten in format 3 on open).
pub const MAGIC: &[u8; 8] = b"USWAL\0\0\x03";

/// Whether a frame of `kind` holds a record.
pub fn is_record(kind: u8) -> bool {
    matches!(kind, KIND_RECORD | KIND_RECORD_HASHED)
}

const KIND_RECORD: u8 = 1;
const KIND_NARROW: u8 = 2;
const KIND_SEAL: u8 = 3;
const KIND_COMMIT: u8 = 4;
const KIND_RECORD_HASHED: u8 = 5;

/// A frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A record of the open batch.
    Record {
        /// Its id.
        id: &'a str,
        /// Its partition key.
        key: &'a str,
        /// Its explicit hash key, if any (kind 5 instead of 1).
        hash: Option<&'a str>,
        /// Its bytes.
        data: &'a [u8],
    },
    /// The records put since the previous seal form batch `id`.
    Seal {
        /// The batch id (ids grow by one, across files and restarts).
        id: u64,
    },
    /// Batch `id` keeps only these records (indexes among its record frames,
    /// ascending), of `bytes` bytes in all; the last such frame wins.
    Narrow {
        /// The batch.
        id: u64,
        /// Bytes of the records kept.
        bytes: u64,
        /// Their indexes.
        keep: Vec<u32>,
    },
    /// Every batch up to and including `id` is committed.
    Commit {
        /// The last committed batch.
        id: u64,
    },
    /// Padding that aligned a memory-mapped append in format 2 (kind 0,
    /// zeros); carries nothing. Format 3 writes none.
    Padding,
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A record's id, partition key or explicit hash key is longer than the
    /// format's 16-bit length.
    #[error("the {field} is {bytes} bytes; at most 65535 fit the write-ahead log")]
    FieldTooLong {
        /// `id`, `partition key` or `explicit hash key`.
        field: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// The frame does not fit 4 GiB.
    #[error("{0} in the write-ahead log")]
    TooLarge(#[from] framing::FrameTooLarge),
}

impl Frame<'_> {
    /// Appends this frame to `out`.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if an id or key is longer than 65,535 bytes or the
    /// frame does not fit 4 GiB.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Frame::Record { id, key, hash, .. } = self {
            let fields = [
                ("id", Some(*id)),
                ("partition key", Some(*key)),
                ("explicit hash key", *hash),
            ];
            for (field, value) in fields {
                if let Some(v) = value
                    && v.len() > usize::from(u16::MAX)
                {
                    return Err(EncodeError::FieldTooLong {
                        field,
                        bytes: v.len(),
                    });
                }
            }
        }
        let kind = match self {
            Frame::Padding => KIND_PADDING,
            Frame::Record { hash: None, .. } => KIND_RECORD,
            Frame::Record { .. } => KIND_RECORD_HASHED,
            Frame::Seal { .. } => KIND_SEAL,
            Frame::Commit { .. } => KIND_COMMIT,
            Frame::Narrow { .. } => KIND_NARROW,
        };
        framing::encode(out, kind, |out| match self {
            Frame::Record {
                id,
                key,
                hash,
                data,
            } => {
                for s in [Some(id), Some(key), hash.as_ref()].into_iter().flatten() {
                    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out.extend_from_slice(data);
            }
            Frame::Seal { id } | Frame::Commit { id } => out.extend_from_slice(&id.to_le_bytes()),
            Frame::Padding => {}
            Frame::Narrow { id, bytes, keep } => {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
                out.extend_from_slice(&(keep.len() as u32).to_le_bytes());
                for i in keep {
                    out.extend_from_slice(&i.to_le_bytes());
                }
            }
        })?;
        Ok(())
    }
}

/// Appends a record frame.
///
/// # Errors
///
/// As [`Frame::encode`].
pub fn encode_record(out: &mut Vec<u8>, r: &EncodedRecord) -> Result<(), EncodeError> {
    Frame::Record {
        id: &r.id,
        key: &r.partition_key,
        hash: r.explicit_hash_key.as_deref(),
        data: &r.data,
    }
    .encode(out)
}

fn short_str<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    let n = usize::from(c.u16()?);
    std::str::from_utf8(c.take(n)?).ok()
}

fn parse(kind: u8, p: &[u8]) -> Option<Frame<'_>> {
    let mut c = Cursor::new(p);
    let frame = match kind {
        KIND_RECORD | KIND_RECORD_HASHED => Frame::Record {
            id: short_str(&mut c)?,
            key: short_str(&mut c)?,
            hash: if kind == KIND_RECORD_HASHED {
                Some(short_str(&mut c)?)
            } else {
                None
            },
            data: c.rest(),
        },
        KIND_PADDING => {
            return c.rest().iter().all(|&b| b == 0).then_some(Frame::Padding);
        }
        KIND_SEAL => Frame::Seal { id: c.u64()? },
        KIND_COMMIT => Frame::Commit { id: c.u64()? },
        KIND_NARROW => {
            let id = c.u64()?;
            let bytes = c.u64()?;
            let n = c.u32()? as usize;
            let keep: Vec<u32> = (0..n).map(|_| c.u32()).collect::<Option<_>>()?;
            if !keep.windows(2).all(|w| w[0] < w[1]) {
                return None;
            }
            Frame::Narrow { id, bytes, keep }
        }
        _ => return None,
    };
    c.is_empty().then_some(frame)
}

/// Reads the frames of a segment, in order. Iteration stops at the end of
/// the good frames: [`Frames::torn`] then says why the bytes after
/// [`Frames::valid_len`] are a crash's torn tail (the shapes are in
/// [`unistream_local::framing`]: a frame cut short, an unpublished frame,
/// zeros, a power loss's zeroed sector — each with nothing valid after
/// it). Anything else is a [`Corruption`] item. Never panics, whatever the
/// bytes (it is fuzzed).
#[derive(Debug)]
pub struct Frames<'a> {
    raw: RawFrames<'a>,
}

/// The frames of a segment's bytes (header included; format 2 or 3).
pub fn frames(bytes: &[u8]) -> Frames<'_> {
    Frames {
        raw: framing::raw_frames(bytes, NAME),
    }
}

/// The frames of a range of a segment of format `version` that starts on
/// a frame boundary at offset `base`; offsets are relative to the range.
pub fn frames_in_range(bytes: &[u8], version: Version, base: u64) -> Frames<'_> {
    Frames {
        raw: framing::raw_frames_in_range(bytes, version, base),
    }
}

impl Frames<'_> {
    /// Bytes of good frames from the start (header included): after an
    /// item, where that frame ends.
    pub fn valid_len(&self) -> u64 {
        self.raw.valid_len()
    }

    /// Why the bytes after `valid_len` are not frames, if there are any.
    pub fn torn(&self) -> Option<&str> {
        self.raw.torn()
    }

    /// The segment's format version (known after the first item).
    pub fn version(&self) -> Version {
        self.raw.version()
    }

    /// The valid frames after a damaged one at `offset`, `(offset, kind)`
    /// (see [`RawFrames::valid_after`]).
    pub fn valid_after(&self, offset: u64) -> Vec<(u64, u8)> {
        self.raw.valid_after(offset)
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(u64, Frame<'a>), Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        let (offset, kind, payload) = match self.raw.next()? {
            Ok(f) => f,
            Err(c) => return Some(Err(c)),
        };
        match parse(kind, payload) {
            Some(frame) => Some(Ok((offset, frame))),
            None => {
                self.raw.reject(offset);
                Some(Err(Corruption {
                    offset,
                    reason: format!("malformed frame of kind {kind}"),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let mut out = MAGIC.to_vec();
        let all = vec![
            Frame::Record {
                id: "a",
                key: "k",
                hash: None,
                data: b"xyz",
            },
            Frame::Record {
                id: "b",
                key: "k",
                hash: Some("340282366920938463463374607431768211455"),
                data: b"xyz",
            },
            Frame::Seal { id: 7 },
            Frame::Narrow {
                id: 7,
                bytes: 3,
                keep: vec![0, 2],
            },
            Frame::Commit { id: 7 },
        ];
        for f in &all {
            f.encode(&mut out).unwrap();
        }
        let mut it = frames(&out);
        let got: Vec<Frame> = it.by_ref().map(|r| r.unwrap().1).collect();
        assert_eq!(got, all);
        assert_eq!(it.valid_len(), out.len() as u64);
        assert_eq!(it.torn(), None);
    }

    #[test]
    fn oversized_ids_are_refused() {
        let mut out = Vec::new();
        let r = EncodedRecord::new("x".repeat(70_000), "k", vec![]);
        assert!(
            encode_record(&mut out, &r)
                .unwrap_err()
                .to_string()
                .contains("65535")
        );
        assert!(out.is_empty());
    }
}
