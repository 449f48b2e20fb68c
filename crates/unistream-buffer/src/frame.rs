//! Frames, and the reader of a segment's bytes.

use unistream_core::sink::EncodedRecord;

/// The first 8 bytes of every segment: magic and format version 2.
pub const MAGIC: &[u8; 8] = b"USWAL\0\0\x02";

/// Bytes before a frame's payload: length (4), checksum (4), kind (1).
pub const FRAME_HEADER: usize = 9;

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
}

impl Frame<'_> {
    /// Appends this frame to `out`. Fails if an id or key is longer than
    /// 65,535 bytes or the frame does not fit 4 GiB.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        if let Frame::Record { id, key, hash, .. } = self {
            if hash.is_some_and(|h| h.len() > usize::from(u16::MAX)) {
                return Err("the explicit hash key is over 65535 bytes".into());
            }
            if id.len() > usize::from(u16::MAX) {
                return Err(format!(
                    "the id is {} bytes; at most 65535 fit the WAL",
                    id.len()
                ));
            }
            if key.len() > usize::from(u16::MAX) {
                return Err(format!(
                    "the partition key is {} bytes; at most 65535 fit the WAL",
                    key.len()
                ));
            }
        }
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Frame::Record {
                id,
                key,
                hash,
                data,
            } => {
                let (id_len, key_len) = (id.len() as u16, key.len() as u16);
                out.push(if hash.is_some() {
                    KIND_RECORD_HASHED
                } else {
                    KIND_RECORD
                });
                out.extend_from_slice(&id_len.to_le_bytes());
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&key_len.to_le_bytes());
                out.extend_from_slice(key.as_bytes());
                if let Some(h) = hash {
                    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
                    out.extend_from_slice(h.as_bytes());
                }
                out.extend_from_slice(data);
            }
            Frame::Seal { id } => {
                out.push(KIND_SEAL);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Frame::Commit { id } => {
                out.push(KIND_COMMIT);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Frame::Narrow { id, bytes, keep } => {
                out.push(KIND_NARROW);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
                out.extend_from_slice(&(keep.len() as u32).to_le_bytes());
                for i in keep {
                    out.extend_from_slice(&i.to_le_bytes());
                }
            }
        }
        let payload = out.len() - start - FRAME_HEADER;
        let Ok(len) = u32::try_from(payload) else {
            out.truncate(start);
            return Err(format!(
                "the frame is {payload} bytes; at most 4 GiB fit the WAL"
            ));
        };
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

/// Appends a record frame.
pub fn encode_record(out: &mut Vec<u8>, r: &EncodedRecord) -> Result<(), String> {
    Frame::Record {
        id: &r.id,
        key: &r.partition_key,
        hash: r.explicit_hash_key.as_deref(),
        data: &r.data,
    }
    .encode(out)
}

/// A bad frame that is not a crash's torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset of the bad frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn parse(kind: u8, p: &[u8]) -> Option<Frame<'_>> {
    match kind {
        KIND_RECORD | KIND_RECORD_HASHED => {
            let id_len = u16_at(p, 0)? as usize;
            let id = std::str::from_utf8(p.get(2..2 + id_len)?).ok()?;
            let key_at = 2 + id_len;
            let key_len = u16_at(p, key_at)? as usize;
            let key = std::str::from_utf8(p.get(key_at + 2..key_at + 2 + key_len)?).ok()?;
            let mut at = key_at + 2 + key_len;
            let hash = if kind == KIND_RECORD_HASHED {
                let hash_len = u16_at(p, at)? as usize;
                let h = std::str::from_utf8(p.get(at + 2..at + 2 + hash_len)?).ok()?;
                at += 2 + hash_len;
                Some(h)
            } else {
                None
            };
            let data = p.get(at..)?;
            Some(Frame::Record {
                id,
                key,
                hash,
                data,
            })
        }
        KIND_SEAL if p.len() == 8 => Some(Frame::Seal { id: u64_at(p, 0)? }),
        KIND_COMMIT if p.len() == 8 => Some(Frame::Commit { id: u64_at(p, 0)? }),
        KIND_NARROW => {
            let id = u64_at(p, 0)?;
            let bytes = u64_at(p, 8)?;
            let n = u32_at(p, 16)? as usize;
            if p.len() != 20 + 4 * n {
                return None;
            }
            let keep: Vec<u32> = (0..n)
                .map(|i| u32_at(p, 20 + 4 * i))
                .collect::<Option<_>>()?;
            keep.windows(2)
                .all(|w| w[0] < w[1])
                .then_some(Frame::Narrow { id, bytes, keep })
        }
        _ => None,
    }
}

/// Reads the frames of a segment, in order. Iteration stops at the end of
/// the good frames: [`Frames::torn`] then says why the bytes after
/// [`Frames::valid_len`] are not frames — what a crash leaves (a frame cut
/// short, a last frame whose checksum fails, zeros). A bad frame followed by
/// more data is a [`Corruption`] item. Never panics, whatever the bytes (it
/// is fuzzed).
#[derive(Debug)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
    header: bool,
    torn: Option<String>,
    done: bool,
}

/// The frames of a segment's bytes (header included).
pub fn frames(bytes: &[u8]) -> Frames<'_> {
    Frames {
        bytes,
        at: 0,
        header: true,
        torn: None,
        done: false,
    }
}

/// The frames of a range of a segment that starts on a frame boundary after
/// the header; offsets are relative to the range.
pub fn frames_in_range(bytes: &[u8]) -> Frames<'_> {
    Frames {
        bytes,
        at: 0,
        header: false,
        torn: None,
        done: false,
    }
}

impl<'a> Frames<'a> {
    /// Bytes of good frames from the start (header included).
    pub fn valid_len(&self) -> u64 {
        self.at as u64
    }

    /// Why the bytes after `valid_len` are not frames, if there are any.
    pub fn torn(&self) -> Option<&str> {
        self.torn.as_deref()
    }

    fn tear(&mut self, why: impl Into<String>) -> Option<Result<(u64, Frame<'a>), Corruption>> {
        self.torn = Some(why.into());
        self.done = true;
        None
    }

    fn corrupt(&mut self, reason: String) -> Option<Result<(u64, Frame<'a>), Corruption>> {
        self.done = true;
        Some(Err(Corruption {
            offset: self.at as u64,
            reason,
        }))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(u64, Frame<'a>), Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let bytes = self.bytes;
        if self.header {
            self.header = false;
            if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
                return self.tear("segment header cut short");
            }
            if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
                return self.corrupt("not a unistream WAL segment (bad magic or version)".into());
            }
            self.at = MAGIC.len();
        }
        let rest = &bytes[self.at..];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        if rest.iter().all(|&b| b == 0) {
            return self.tear("zero-filled tail");
        }
        let (Some(len), Some(crc)) = (u32_at(rest, 0), u32_at(rest, 4)) else {
            return self.tear("frame header cut short");
        };
        let len = len as usize;
        let Some(body) = rest.get(8..FRAME_HEADER + len) else {
            return self.tear(format!("frame of {len} bytes cut short"));
        };
        let is_last = FRAME_HEADER + len == rest.len();
        let actual = crc32c::crc32c(body);
        if actual != crc {
            let why = format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})");
            return if is_last {
                self.tear(why)
            } else {
                self.corrupt(why)
            };
        }
        match parse(body[0], &body[1..]) {
            Some(frame) => {
                let offset = self.at as u64;
                self.at += FRAME_HEADER + len;
                Some(Ok((offset, frame)))
            }
            None => self.corrupt(format!("malformed frame of kind {}", body[0])),
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
        assert!(encode_record(&mut out, &r).unwrap_err().contains("65535"));
        assert!(out.is_empty());
    }
}
