//! Checksummed frames: the on-disk layer shared by the producer's
//! write-ahead log (`unistream-buffer`) and the file checkpoint journal.
//!
//! ```text
//! file  := magic (8 bytes: name and format version) frame*
//! frame := length u32 LE | crc32c(kind, payload) u32 LE | kind u8 | payload
//! ```
//!
//! [`RawFrames`] reads a file's bytes and tells a crash's torn tail (a frame
//! cut short, a *last* frame whose checksum fails, a zero-filled tail: the
//! bytes after [`RawFrames::valid_len`] can be truncated) from corruption (a
//! bad frame followed by more data: a [`Corruption`] with its offset, never
//! skipped). It never panics, whatever the bytes. [`Cursor`] and the `put_*`
//! functions encode and decode payload fields.
//!
//! ```
//! use unistream_local::framing::{self, Cursor};
//!
//! const MAGIC: &[u8; 8] = b"EXAMPLE\x01";
//! let mut file = MAGIC.to_vec();
//! framing::encode(&mut file, 7, |p| framing::put_str(p, "hello")).unwrap();
//! let mut frames = framing::raw_frames(&file, Some(MAGIC));
//! let (offset, kind, payload) = frames.next().unwrap().unwrap();
//! assert_eq!((offset, kind), (8, 7));
//! assert_eq!(Cursor::new(payload).str(), Some("hello"));
//! assert!(frames.next().is_none() && frames.torn().is_none());
//! ```

/// Bytes before a frame's payload: length (4), checksum (4), kind (1).
pub const FRAME_HEADER: usize = 9;

/// A frame's payload does not fit its 32-bit length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the frame is {bytes} bytes; at most 4 GiB fit")]
pub struct FrameTooLarge {
    /// The payload's size.
    pub bytes: usize,
}

/// Appends a frame of `kind` whose payload `payload` writes.
///
/// # Errors
///
/// [`FrameTooLarge`] (and nothing appended) if the payload does not fit
/// 4 GiB.
pub fn encode(
    out: &mut Vec<u8>,
    kind: u8,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<(), FrameTooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(kind);
    payload(out);
    let len = out.len() - start - FRAME_HEADER;
    let Ok(len) = u32::try_from(len) else {
        out.truncate(start);
        return Err(FrameTooLarge { bytes: len });
    };
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends `s` with a `u32` length.
pub fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// Appends `s` with a `u32` length.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Reads the fields of a payload; every getter returns `None` past the end
/// (or on invalid UTF-8), so a malformed payload is an error, not a panic.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A byte.
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// A little-endian `i64`.
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }

    /// Bytes written by [`put_bytes`].
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A string written by [`put_str`].
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A bad frame that is not a crash's torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset of the bad frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Iterator over the frames of a file's bytes: `(offset, kind, payload)`.
/// See the module docs.
#[derive(Debug)]
pub struct RawFrames<'a> {
    bytes: &'a [u8],
    at: usize,
    magic: Option<&'a [u8]>,
    zero_header_ends: bool,
    torn: Option<String>,
    done: bool,
}

/// The frames of `bytes`, which start with `magic` (or, with `None`, are a
/// range that starts on a frame boundary; offsets are then relative to it).
pub fn raw_frames<'a>(bytes: &'a [u8], magic: Option<&'a [u8]>) -> RawFrames<'a> {
    RawFrames {
        bytes,
        at: 0,
        magic,
        zero_header_ends: false,
        torn: None,
        done: false,
    }
}

impl RawFrames<'_> {
    /// Makes a frame header of eight zero bytes the end of the frames, as a
    /// torn tail, whatever follows it. For files whose writer publishes a
    /// group of frames by storing its first header last, in one aligned
    /// 8-byte store (the memory-mapped checkpoint journal): bytes after such
    /// a header are a group a crash left unpublished. No valid frame has a
    /// zero header (the checksum of any one-byte body is not zero).
    pub fn ending_at_zero_header(mut self) -> Self {
        self.zero_header_ends = true;
        self
    }

    /// Bytes of good frames from the start (magic included).
    pub fn valid_len(&self) -> u64 {
        self.at as u64
    }

    /// Why the bytes after [`valid_len`](Self::valid_len) are not frames,
    /// when there are such bytes and they look like a crash's torn tail.
    pub fn torn(&self) -> Option<&str> {
        self.torn.as_deref()
    }

    /// Stops at the frame at `offset`, which the caller found malformed: it
    /// is not counted as valid and iteration ends.
    pub fn reject(&mut self, offset: u64) {
        self.at = offset as usize;
        self.done = true;
    }

    fn tear<T>(&mut self, why: impl Into<String>) -> Option<T> {
        self.torn = Some(why.into());
        self.done = true;
        None
    }

    fn corrupt<T>(&mut self, reason: String) -> Option<Result<T, Corruption>> {
        self.done = true;
        Some(Err(Corruption {
            offset: self.at as u64,
            reason,
        }))
    }
}

impl<'a> Iterator for RawFrames<'a> {
    type Item = Result<(u64, u8, &'a [u8]), Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let bytes = self.bytes;
        if let Some(magic) = self.magic.take() {
            if bytes.len() < magic.len() && magic.starts_with(bytes) {
                return self.tear("file header cut short");
            }
            if bytes.get(..magic.len()) != Some(magic) {
                return self.corrupt(format!(
                    "bad magic or format version (expected {:?})",
                    String::from_utf8_lossy(magic)
                ));
            }
            self.at = magic.len();
        }
        let rest = &bytes[self.at..];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        if rest.iter().all(|&b| b == 0) {
            return self.tear("zero-filled tail");
        }
        if self.zero_header_ends && rest.get(..8).is_some_and(|h| h == [0; 8]) {
            return self.tear("a group of entries was never published (crash mid-append)");
        }
        let mut head = Cursor::new(rest);
        let (Some(len), Some(crc)) = (head.u32(), head.u32()) else {
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
        let offset = self.at as u64;
        self.at += FRAME_HEADER + len;
        Some(Ok((offset, body[0], &body[1..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"TEST\0\0\0\x01";

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode(&mut out, i as u8, |o| o.extend_from_slice(p)).unwrap();
        }
        out
    }

    #[test]
    fn frames_round_trip_with_offsets() {
        let out = file(&[b"a", b"", b"xyz"]);
        let got: Vec<_> = raw_frames(&out, Some(MAGIC)).map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![(8, 0, &b"a"[..]), (18, 1, &b""[..]), (27, 2, &b"xyz"[..])]
        );
    }

    #[test]
    fn a_cut_at_every_offset_of_the_last_frame_is_a_torn_tail() {
        let out = file(&[b"first", b"second frame"]);
        let last = 8 + FRAME_HEADER + 5;
        for cut in last + 1..out.len() {
            let mut it = raw_frames(&out[..cut], Some(MAGIC));
            assert_eq!(it.by_ref().count(), 1, "cut at {cut}");
            assert_eq!(it.valid_len(), last as u64);
            assert!(it.torn().is_some());
        }
    }

    #[test]
    fn a_bad_frame_before_others_is_corruption_with_its_offset() {
        let mut out = file(&[b"first", b"second", b"third"]);
        out[8 + FRAME_HEADER + 2] ^= 1;
        let got: Vec<_> = raw_frames(&out, Some(MAGIC)).collect();
        assert_eq!(got.len(), 1);
        let err = got[0].clone().unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(err.reason.contains("checksum"), "{}", err.reason);
    }

    #[test]
    fn a_wrong_magic_is_corruption_at_zero() {
        let out = file(&[b"x"]);
        let mut it = raw_frames(&out, Some(b"OTHER\0\0\x01"));
        let err = it.next().unwrap().unwrap_err();
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn no_one_byte_body_has_a_zero_checksum() {
        for b in 0..=255u8 {
            assert_ne!(crc32c::crc32c(&[b]), 0, "byte {b}");
        }
    }

    #[test]
    fn a_zero_header_ends_the_frames_when_asked() {
        let mut out = file(&[b"first"]);
        let good = out.len() as u64;
        out.extend_from_slice(&[0; 8]);
        encode(&mut out, 1, |o| o.extend_from_slice(b"unpublished")).unwrap();
        let mut it = raw_frames(&out, Some(MAGIC)).ending_at_zero_header();
        assert_eq!(it.by_ref().count(), 1);
        assert_eq!(it.valid_len(), good);
        assert!(it.torn().is_some());
        // Without the option, the same bytes are corruption.
        assert!(raw_frames(&out, Some(MAGIC)).any(|f| f.is_err()));
    }

    #[test]
    fn cursor_stops_at_the_end() {
        let mut out = Vec::new();
        put_str(&mut out, "ab");
        out.push(9);
        let mut c = Cursor::new(&out);
        assert_eq!(c.str(), Some("ab"));
        assert_eq!(c.u8(), Some(9));
        assert_eq!(c.u32(), None);
        assert!(c.is_empty());
        assert_eq!(Cursor::new(&[255, 255, 255, 255, 1]).bytes(), None);
    }
}
