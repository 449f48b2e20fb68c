//! Checksummed frames: the on-disk layer shared by the producer's
//! write-ahead log (`unistream-buffer`) and the file checkpoint journal.
//!
//! ```text
//! file     := magic (7 bytes: the format's name) | version u8 | frame*
//! frame v3 := len u32 LE | crc32c(len) u32 LE | kind u8 | payload (len bytes)
//!             | crc32c(kind, payload) u32 LE | zeros to a multiple of 8 bytes
//! frame v2 := len u32 LE | crc32c(kind, payload) u32 LE | kind u8 | payload
//! ```
//!
//! Format 3 is written; format 2 (before issue 22) is still read. In
//! format 3 every frame starts on a multiple of 8 bytes and its **length
//! carries its own checksum**, so a damaged length is known to be damaged
//! instead of being read as "the frame runs past the end of the file".
//!
//! # Torn tail or damage
//! [`RawFrames`] drops the bytes after the last good frame as a crash's
//! *torn tail* only when they have a shape a crash can leave, and nothing
//! valid follows them; anything else is a [`Corruption`] with its offset.
//! The shapes a crash leaves (format 3):
//!
//! | at the first bad frame | a crash leaves it when | verdict |
//! |---|---|---|
//! | the file ends inside the 8-byte header word | a `write(2)` cut short by `kill -9` | torn |
//! | a checked length that runs past the end of the file, nothing valid after the frame's start | the same | torn |
//! | a header word of zeros, and no valid frame after it | a mapped frame not yet published (see [`FrameFile`](crate::FrameFile)), preallocated room, a lost sector | torn |
//! | a header word of zeros, valid frames after it | never: frames are published in order | corruption |
//! | a nonzero header word whose length checksum fails | never: a word is written whole (one aligned store, one sector) | corruption |
//! | a checked length, a body whose checksum fails, its checksum (the frame's last 4 bytes) zeros and zeros from a 512-byte boundary of the file to the frame's end, nothing valid after it | a power loss that kept the file's length but not its last sectors | torn |
//! | a checked length, a body whose checksum fails, otherwise | never | corruption |
//!
//! Format 2 has no length checksum: there, a bad frame is a torn tail only
//! when no valid frame follows it anywhere (and for a zero header, only the
//! frames of one unpublished append — at most one padding frame, then
//! zeros). A *complete* last frame whose checksum fails is damage in both
//! formats unless a power loss explains it (a zeroed sector).
//!
//! What no reader can tell: damage that makes a file exactly what a crash
//! leaves — the file cut short; the last frame's header word zeroed; the
//! last frame's checksum zeroed where a 512-byte boundary falls before it
//! and the bytes between are zeros (a power loss leaves the same). Those
//! are dropped as a torn tail, with a warning. The checksum is the frame's
//! *last* field so that a frame's content never ends it: a payload ending
//! with zeros cannot look like a lost sector.
//!
//! It never panics, whatever the bytes (it is fuzzed). [`Cursor`] and the
//! `put_*` functions encode and decode payload fields.
//!
//! ```
//! use unistream_local::framing::{self, Cursor};
//!
//! const NAME: &[u8; 7] = b"EXAMPLE";
//! let mut file = framing::magic(NAME).to_vec();
//! framing::encode(&mut file, 7, |p| framing::put_str(p, "hello")).unwrap();
//! let mut frames = framing::raw_frames(&file, NAME);
//! let (offset, kind, payload) = frames.next().unwrap().unwrap();
//! assert_eq!((offset, kind), (8, 7));
//! assert_eq!(Cursor::new(payload).str(), Some("hello"));
//! assert!(frames.next().is_none() && frames.torn().is_none());
//!
//! // A damaged length is damage, not a torn tail.
//! framing::encode(&mut file, 7, |p| framing::put_str(p, "world")).unwrap();
//! file[8] ^= 0x40;
//! let err = framing::raw_frames(&file, NAME).next().unwrap().unwrap_err();
//! assert_eq!(err.offset, 8);
//! ```

/// Bytes before a frame's payload (format 3): length (4), its checksum
/// (4), kind (1). The body's checksum (4) follows the payload.
pub const FRAME_HEADER: usize = 9;

/// Bytes after a frame's payload (format 3), before its padding: the
/// checksum of kind and payload.
const TRAILER: usize = 4;

/// Format 3 frames start and end on multiples of this many bytes.
pub const ALIGN: usize = 8;

/// Bytes before a frame's payload in format 2.
const V2_HEADER: usize = 9;

/// A power loss loses whole sectors: a torn body ends with zeros from a
/// multiple of this.
const SECTOR: usize = 512;

/// The format versions this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Before issue 22: no length checksum, no alignment. Read only.
    V2,
    /// The current format: written and read.
    V3,
}

impl Version {
    /// The version byte of the magic.
    pub fn byte(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// The 8-byte magic of a file of format `name`, current version.
pub fn magic(name: &[u8; 7]) -> [u8; 8] {
    magic_of(name, Version::V3)
}

/// The 8-byte magic of a file of format `name` at `version`.
pub fn magic_of(name: &[u8; 7], version: Version) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..7].copy_from_slice(name);
    m[7] = version.byte();
    m
}

/// A frame's payload does not fit its 32-bit length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the frame is {bytes} bytes; at most 4 GiB fit")]
pub struct FrameTooLarge {
    /// The payload's size.
    pub bytes: usize,
}

/// The checksum of a length (format 3). Never zero for any length, so no
/// valid header word is zero.
fn len_crc(len: u32) -> u32 {
    crc32c::crc32c(&len.to_le_bytes())
}

/// Bytes a format 3 frame with a payload of `len` bytes takes.
pub fn frame_size(len: usize) -> usize {
    (FRAME_HEADER + len + TRAILER).next_multiple_of(ALIGN)
}

/// Appends a format 3 frame of `kind` whose payload `payload` writes,
/// padded to a multiple of 8 bytes.
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
    out.extend_from_slice(&[0; FRAME_HEADER - 1]);
    out.push(kind);
    payload(out);
    let len = out.len() - start - FRAME_HEADER;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(start);
        return Err(FrameTooLarge { bytes: len });
    };
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER - 1..]);
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len_crc(len32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.resize(start + frame_size(len), 0);
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

/// One frame read from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole<'a> {
    kind: u8,
    payload: &'a [u8],
    /// Offset of the next frame.
    next: usize,
}

/// Why the bytes at an offset are not a whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bad {
    /// The file ends inside the frame (its length, where there is one, is
    /// trusted).
    CutShort(String),
    /// A header word of zeros.
    ZeroHeader,
    /// A complete frame whose body checksum fails, ending before `next`;
    /// `sector_zeros`: it ends with zeros from a sector boundary (what a
    /// power loss leaves).
    Body {
        why: String,
        sector_zeros: bool,
        next: usize,
    },
    /// Anything else: damage whatever follows.
    Damage(String),
}

/// Reads the frame at `at` (an absolute offset into `bytes`; `base` is the
/// file offset of `bytes[0]`, for sector alignment).
fn read_at(bytes: &[u8], at: usize, version: Version, base: u64) -> Result<Whole<'_>, Bad> {
    let rest = bytes.get(at..).unwrap_or_default();
    let mut head = Cursor::new(rest);
    let (Some(len), Some(word2)) = (head.u32(), head.u32()) else {
        return Err(Bad::CutShort("frame header cut short".into()));
    };
    if len == 0 && word2 == 0 {
        return Err(Bad::ZeroHeader);
    }
    if version == Version::V3 && word2 != len_crc(len) {
        return Err(Bad::Damage(format!(
            "frame header checksum mismatch (length {len}, stored {word2:08x}, computed {:08x})",
            len_crc(len)
        )));
    }
    let len = len as usize;
    // Where the body (kind and payload) ends, where the frame ends, and
    // where the next one starts.
    let (body_end, end, next) = match version {
        Version::V3 => {
            let body_end = FRAME_HEADER.checked_add(len);
            let end = body_end.and_then(|e| e.checked_add(TRAILER));
            (body_end, end, end.map(|e| e.next_multiple_of(ALIGN)))
        }
        Version::V2 => {
            let end = V2_HEADER.checked_add(len);
            (end, end, end)
        }
    };
    let (Some(body_end), Some(end), Some(next)) = (body_end, end, next) else {
        return Err(Bad::CutShort(format!("frame of {len} bytes cut short")));
    };
    if next > rest.len() {
        return Err(Bad::CutShort(format!("frame of {len} bytes cut short")));
    }
    let (body, stored, sector_zeros) = match version {
        Version::V3 => {
            let body = &rest[FRAME_HEADER - 1..body_end];
            let stored = u32::from_le_bytes([
                rest[body_end],
                rest[body_end + 1],
                rest[body_end + 2],
                rest[body_end + 3],
            ]);
            // A lost last sector: the checksum is zeros, and so is
            // everything from a sector boundary to it.
            let lost = stored == 0 && has_zero_sector(&rest[..end], base + at as u64);
            (body, stored, lost)
        }
        Version::V2 => {
            let body = &rest[V2_HEADER - 1..end];
            (
                body,
                word2,
                has_zero_sector(body, base + (at + V2_HEADER - 1) as u64),
            )
        }
    };
    let actual = crc32c::crc32c(body);
    if actual != stored {
        return Err(Bad::Body {
            why: format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
            sector_zeros,
            next: at + next,
        });
    }
    Ok(Whole {
        kind: body[0],
        payload: &body[1..],
        next: at + next,
    })
}

/// Whether `body` (a frame, or in format 2 its kind and payload; at file
/// offset `at`) ends with zeros that start at or
/// before a 512-byte boundary of the file inside it: what a power loss
/// leaves when the file's length was kept but its last sectors were not.
fn has_zero_sector(body: &[u8], at: u64) -> bool {
    let zeros_from = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let boundary = (at + zeros_from as u64).next_multiple_of(SECTOR as u64);
    boundary < at + body.len() as u64
}

/// The valid frames after a bad one at `from`: resynchronised at every
/// possible frame start (a multiple of 8 in format 3, any byte in format
/// 2), then followed frame by frame. `(offset, kind)`.
fn valid_after(bytes: &[u8], from: usize, version: Version, base: u64) -> Vec<(u64, u8)> {
    let step = match version {
        Version::V3 => ALIGN,
        Version::V2 => 1,
    };
    let mut found = Vec::new();
    let mut at = from + step;
    while at < bytes.len() {
        match read_at(bytes, at, version, base) {
            Ok(w) => {
                found.push((at as u64, w.kind));
                at = w.next;
            }
            Err(_) => at += step,
        }
    }
    found
}

/// Iterator over the frames of a file's bytes: `(offset, kind, payload)`.
/// See the module docs.
#[derive(Debug)]
pub struct RawFrames<'a> {
    bytes: &'a [u8],
    at: usize,
    name: Option<&'a [u8; 7]>,
    version: Version,
    base: u64,
    /// A whole file (magic included), not a range.
    file: bool,
    torn: Option<String>,
    done: bool,
}

/// The frames of a file's `bytes`, which start with the magic of format
/// `name` (version 2 or 3).
pub fn raw_frames<'a>(bytes: &'a [u8], name: &'a [u8; 7]) -> RawFrames<'a> {
    RawFrames {
        bytes,
        at: 0,
        name: Some(name),
        version: Version::V3,
        base: 0,
        file: true,
        torn: None,
        done: false,
    }
}

/// The frames of a range of a file of `version` that starts on a frame
/// boundary at file offset `base`; offsets are relative to the range.
pub fn raw_frames_in_range(bytes: &[u8], version: Version, base: u64) -> RawFrames<'_> {
    RawFrames {
        bytes,
        at: 0,
        name: None,
        version,
        base,
        file: false,
        torn: None,
        done: false,
    }
}

impl RawFrames<'_> {
    /// Bytes of good frames from the start (magic included).
    pub fn valid_len(&self) -> u64 {
        self.at as u64
    }

    /// The file's format version (known once the magic is read).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Why the bytes after [`valid_len`](Self::valid_len) are not frames,
    /// when there are such bytes and they are a crash's torn tail.
    pub fn torn(&self) -> Option<&str> {
        self.torn.as_deref()
    }

    /// Stops at the frame at `offset`, which the caller found malformed: it
    /// is not counted as valid and iteration ends.
    pub fn reject(&mut self, offset: u64) {
        self.at = offset as usize;
        self.done = true;
    }

    /// The valid frames after the bad frame at `offset` (a [`Corruption`]'s
    /// offset), `(offset, kind)`: what a salvage would keep, and how many
    /// records a corruption puts out of reach.
    pub fn valid_after(&self, offset: u64) -> Vec<(u64, u8)> {
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        valid_after(self.bytes, from, self.version, self.base)
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

    /// A file whose magic says format 2 but whose bytes hold format 3
    /// frames: its version byte is damaged (format 3 read as format 2
    /// would look torn at its first frame). Checked before a format 2 torn
    /// tail is accepted.
    fn format_3_behind_format_2(&self) -> Option<String> {
        if self.version != Version::V2 || !self.file {
            return None;
        }
        let found = valid_after(self.bytes, 0, Version::V3, self.base);
        if let Some(first) = found.first() {
            return Some(format!(
                "the magic says format 2, but {} frames of format 3 follow it (first at offset {}): a damaged version byte",
                found.len(),
                first.0
            ));
        }
        // The bad frame itself may be a format 3 frame whose length is
        // damaged too: its body checksum then matches the bytes it covers,
        // whatever its length.
        let at = self.at;
        let body = self.bytes.get(at + FRAME_HEADER - 1..)?;
        let mut crc = 0;
        for (i, b) in body.iter().enumerate() {
            crc = crc32c::crc32c_append(crc, std::slice::from_ref(b));
            if body.get(i + 1..i + 1 + TRAILER) == Some(&crc.to_le_bytes()[..]) {
                return Some(format!(
                    "the magic says format 2, but the frame at offset {at} is a format 3 frame of {i} payload bytes with a damaged length: a damaged version byte"
                ));
            }
        }
        None
    }

    /// `Some(why)` when the bad frame at `self.at` is a torn tail.
    fn torn_tail(&self, bad: &Bad) -> Result<String, String> {
        let after = || valid_after(self.bytes, self.at, self.version, self.base);
        let followed = |why: &str, after: &[(u64, u8)]| {
            format!(
                "{why}, and {} valid frames follow it (first at offset {})",
                after.len(),
                after.first().map_or(0, |f| f.0)
            )
        };
        match (bad, self.version) {
            (Bad::CutShort(why), version) => {
                // A write cut short has nothing after it; a damaged length
                // (format 2 has no length checksum; in format 3 it would
                // have to be forged) may have.
                let after = after();
                if after.is_empty() {
                    Ok(why.clone())
                } else if version == Version::V2 {
                    Err(followed(&format!("{why} (a damaged length)"), &after))
                } else {
                    Err(followed(why, &after))
                }
            }
            (Bad::ZeroHeader, Version::V3) => {
                let after = after();
                if after.is_empty() {
                    Ok("a frame never published (its header is zeros), then nothing".into())
                } else {
                    Err(followed("a frame header of zeros", &after))
                }
            }
            (Bad::ZeroHeader, Version::V2) => {
                // A format 2 mapped append was published by its first
                // header: behind an unpublished one are its own frames,
                // ending with one padding frame, then zeros.
                let after = after();
                let padding = after.iter().filter(|f| f.1 == 0).count();
                let last_end = after.last().and_then(|&(o, _)| {
                    read_at(self.bytes, o as usize, self.version, self.base)
                        .ok()
                        .map(|w| w.next)
                });
                let zeros_after = last_end.is_none_or(|e| {
                    self.bytes
                        .get(e..)
                        .is_none_or(|r| r.iter().all(|&b| b == 0))
                });
                let one_append =
                    padding == 0 || (padding == 1 && after.last().is_some_and(|f| f.1 == 0));
                if zeros_after && one_append {
                    Ok("a group of entries was never published (crash mid-append)".into())
                } else {
                    Err(followed("a frame header of zeros", &after))
                }
            }
            (
                Bad::Body {
                    why,
                    sector_zeros,
                    next,
                },
                _,
            ) => {
                // Format 3: the length is checked, so look after the frame,
                // not inside it. Format 2: the length may be the damage.
                let from = match self.version {
                    Version::V3 => next - ALIGN,
                    Version::V2 => self.at,
                };
                let after = valid_after(self.bytes, from, self.version, self.base);
                if *sector_zeros && after.is_empty() {
                    Ok(format!("{why}; a sector of it is zeros (a power loss)"))
                } else {
                    Err(followed(why, &after))
                }
            }
            (Bad::Damage(why), _) => Err(followed(why, &after())),
        }
    }
}

impl<'a> Iterator for RawFrames<'a> {
    type Item = Result<(u64, u8, &'a [u8]), Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let bytes = self.bytes;
        if let Some(name) = self.name.take() {
            let head = &bytes[..bytes.len().min(7)];
            if bytes.len() < 8 && name.starts_with(head) {
                return self.tear("file header cut short");
            }
            if head != &name[..] {
                return self.corrupt(format!(
                    "bad magic (expected {:?})",
                    String::from_utf8_lossy(name)
                ));
            }
            self.version = match bytes[7] {
                2 => Version::V2,
                3 => Version::V3,
                v => return self.corrupt(format!("unknown format version {v}")),
            };
            self.at = 8;
        }
        let rest = &bytes[self.at..];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        if rest.iter().all(|&b| b == 0) {
            return self.tear("zero-filled tail");
        }
        match read_at(bytes, self.at, self.version, self.base) {
            Ok(w) => {
                let offset = self.at as u64;
                self.at = w.next;
                Some(Ok((offset, w.kind, w.payload)))
            }
            Err(bad) => match self.torn_tail(&bad) {
                Ok(why) => match self.format_3_behind_format_2() {
                    Some(reason) => self.corrupt(reason),
                    None => self.tear(why),
                },
                Err(reason) => self.corrupt(reason),
            },
        }
    }
}

#[cfg(test)]
mod tests;
