//! Frames and the segment reader.

use unistream_core::sink::EncodedRecord;

/// The first 8 bytes of every segment: magic and format version 1.
pub const MAGIC: &[u8; 8] = b"USWAL\0\0\x01";

/// Bytes before a frame's payload: length (4), checksum (4), kind (1).
pub const FRAME_HEADER: usize = 9;

/// A record.
pub const KIND_RECORD: u8 = 1;
/// The records of the segment still unsent.
pub const KIND_NARROW: u8 = 2;

/// Appends a record frame to `out`. Fails if the id or key is longer than
/// 65,535 bytes, or the record does not fit a 4 GiB frame.
pub fn encode_record(out: &mut Vec<u8>, r: &EncodedRecord) -> Result<(), String> {
    let id_len = u16::try_from(r.id.len())
        .map_err(|_| format!("the id is {} bytes; at most 65535 fit the WAL", r.id.len()))?;
    let key_len = u16::try_from(r.partition_key.len()).map_err(|_| {
        format!(
            "the partition key is {} bytes; at most 65535 fit the WAL",
            r.partition_key.len()
        )
    })?;
    let payload = 4 + r.id.len() + r.partition_key.len() + r.data.len();
    let payload_len = u32::try_from(payload)
        .map_err(|_| format!("the record is {payload} bytes; at most 4 GiB fit a WAL frame"))?;
    let start = out.len();
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_RECORD);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(r.id.as_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(r.partition_key.as_bytes());
    out.extend_from_slice(&r.data);
    seal_crc(out, start);
    Ok(())
}

/// Appends a narrow frame: the original indexes of the records still unsent.
pub fn encode_narrow(out: &mut Vec<u8>, keep: &[u32]) {
    let start = out.len();
    let payload = 4 + 4 * keep.len();
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_NARROW);
    out.extend_from_slice(&(keep.len() as u32).to_le_bytes());
    for i in keep {
        out.extend_from_slice(&i.to_le_bytes());
    }
    seal_crc(out, start);
}

fn seal_crc(out: &mut [u8], start: usize) {
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record as found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Byte offset of its frame.
    pub offset: u64,
    /// The record.
    pub record: EncodedRecord,
}

/// What a segment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every record frame, in order.
    pub records: Vec<ScannedRecord>,
    /// The original indexes still unsent, if the segment was narrowed.
    pub keep: Option<Vec<u32>>,
    /// Bytes of valid frames from the start of the file (header included).
    pub valid_len: u64,
    /// Why the bytes after `valid_len` are not frames, if there are any.
    pub torn: Option<String>,
}

impl Scan {
    /// The indexes (into `records`) of the records still unsent.
    pub fn unsent(&self) -> Vec<usize> {
        match &self.keep {
            Some(keep) => keep.iter().map(|&i| i as usize).collect(),
            None => (0..self.records.len()).collect(),
        }
    }
}

/// A frame in the middle of a segment is bad (not a crash's torn tail).
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

fn parse_record(p: &[u8]) -> Option<EncodedRecord> {
    let id_len = u16_at(p, 0)? as usize;
    let id = std::str::from_utf8(p.get(2..2 + id_len)?).ok()?;
    let key_at = 2 + id_len;
    let key_len = u16_at(p, key_at)? as usize;
    let key = std::str::from_utf8(p.get(key_at + 2..key_at + 2 + key_len)?).ok()?;
    let data = p.get(key_at + 2 + key_len..)?;
    Some(EncodedRecord::new(id, key, data.to_vec()))
}

fn parse_narrow(p: &[u8], records: usize) -> Option<Vec<u32>> {
    let n = u32_at(p, 0)? as usize;
    if p.len() != 4 + 4 * n {
        return None;
    }
    let keep: Vec<u32> = (0..n)
        .map(|i| u32_at(p, 4 + 4 * i))
        .collect::<Option<_>>()?;
    // Strictly ascending and within the segment's records.
    let ok = keep.windows(2).all(|w| w[0] < w[1]) && keep.iter().all(|&i| (i as usize) < records);
    ok.then_some(keep)
}

/// Reads a segment's bytes. A bad tail — the frames a crash can leave
/// half-written at the end — is reported in [`Scan::torn`] with the length of
/// the good prefix; a bad frame followed by more data is a [`Corruption`].
/// Never panics, whatever the bytes (it is fuzzed).
pub fn scan_segment(bytes: &[u8]) -> Result<Scan, Corruption> {
    let mut scan = Scan::default();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            scan.torn = Some("segment header cut short".into());
            return Ok(scan);
        }
        return Err(Corruption {
            offset: 0,
            reason: "not a unistream WAL segment (bad magic or version)".into(),
        });
    }
    let mut at = MAGIC.len();
    scan.valid_len = at as u64;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let bad = |reason: String| -> Result<Scan, Corruption> {
            Err(Corruption {
                offset: at as u64,
                reason,
            })
        };
        if rest.len() < FRAME_HEADER {
            scan.torn = Some("frame header cut short".into());
            return Ok(scan);
        }
        let (Some(len), Some(crc)) = (u32_at(rest, 0), u32_at(rest, 4)) else {
            scan.torn = Some("frame header cut short".into());
            return Ok(scan);
        };
        let len = len as usize;
        if rest.iter().all(|&b| b == 0) {
            scan.torn = Some("zero-filled tail".into());
            return Ok(scan);
        }
        let Some(body) = rest.get(8..FRAME_HEADER + len) else {
            scan.torn = Some(format!("frame of {len} bytes cut short"));
            return Ok(scan);
        };
        let is_last = at + FRAME_HEADER + len == bytes.len();
        let actual = crc32c::crc32c(body);
        if actual != crc {
            if is_last {
                scan.torn = Some(format!(
                    "checksum mismatch in the last frame (stored {crc:08x}, computed {actual:08x})"
                ));
                return Ok(scan);
            }
            return bad(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
            ));
        }
        let payload = &body[1..];
        match body[0] {
            KIND_RECORD => match parse_record(payload) {
                Some(record) => scan.records.push(ScannedRecord {
                    offset: at as u64,
                    record,
                }),
                None => return bad("malformed record frame".into()),
            },
            KIND_NARROW => match parse_narrow(payload, scan.records.len()) {
                Some(keep) => scan.keep = Some(keep),
                None => return bad("malformed narrow frame".into()),
            },
            k => return bad(format!("unknown frame kind {k}")),
        }
        at += FRAME_HEADER + len;
        scan.valid_len = at as u64;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[EncodedRecord]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            encode_record(&mut out, r).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_with_narrowing() {
        let rs: Vec<_> = (0..3)
            .map(|i| EncodedRecord::new(format!("id{i}"), "k", vec![i; i as usize * 10]))
            .collect();
        let mut bytes = segment(&rs);
        encode_narrow(&mut bytes, &[0, 2]);
        let scan = scan_segment(&bytes).unwrap();
        let got: Vec<_> = scan.records.iter().map(|s| s.record.clone()).collect();
        assert_eq!(got, rs);
        assert_eq!(scan.unsent(), vec![0, 2]);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.torn, None);
    }

    #[test]
    fn oversized_ids_are_refused() {
        let mut out = Vec::new();
        let r = EncodedRecord::new("x".repeat(70_000), "k", vec![]);
        assert!(encode_record(&mut out, &r).unwrap_err().contains("65535"));
    }
}
