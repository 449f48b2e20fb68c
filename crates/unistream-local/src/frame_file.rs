//! [`FrameFile`]: the append path of the files made of frames (the
//! checkpoint journal, the producer's WAL segments).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::framing;
use unistream_core::{Error, Result};

/// Frame kind of padding: its payload is zeros and readers skip it. Format
/// 2 padded mapped appends with it; format 3 frames are aligned and need
/// none. No format built on [`framing`] uses kind 0 for anything else.
pub const KIND_PADDING: u8 = 0;

/// An append-only file of [`framing`] frames.
///
/// By default an append is one positioned `write(2)`. [`FrameFile::mapped`]
/// (Linux) makes appends copies into a **shared memory mapping** of the
/// file instead: the file is extended with `fallocate` (so the disk space
/// exists before it is used: a full disk is an error at growth, never a
/// fault at a store), and the pages of a shared file mapping belong to the
/// kernel's page cache, so what is copied survives the process being killed
/// exactly like what a `write(2)` handed over — without a system call per
/// append. That is process-crash durability; for power-loss durability,
/// [`sync_data`](FrameFile::sync_data) after appending (it covers mapped
/// pages too), or do not map.
///
/// A kill mid-copy must not leave a torn frame that reads as corruption.
/// Frames of format 3 start on multiples of 8 bytes, and a mapped append
/// copies its frames **in order, each published by storing its first 8
/// bytes (length and length checksum) last**, as one aligned atomic store,
/// after its body; the next frame is copied only after that store. A
/// process is killed between instructions, so a kill leaves the frames
/// before one published whole, that one with a header word of zeros (its
/// body copied in part or whole), and nothing after it but the zeros of
/// the preallocated room: exactly the shape readers take for a torn tail
/// ([`framing`]: a zero header word with no valid frame after it).
///
/// ```
/// # fn main() -> unistream_core::Result<()> {
/// use unistream_local::{FrameFile, framing};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("log");
/// let file = std::fs::File::options().create(true).read(true).write(true).open(&path).unwrap();
/// std::fs::write(&path, framing::magic(b"EXAMPLE")).unwrap();
/// let mut log = FrameFile::new(path.clone(), file, 8)?.mapped(1 << 16);
/// let mut frames = Vec::new();
/// framing::encode(&mut frames, 1, |p| p.extend_from_slice(b"hello")).unwrap();
/// framing::encode(&mut frames, 2, |p| p.extend_from_slice(b"world")).unwrap();
/// log.append(&frames)?;
/// drop(log); // gives back the preallocated tail
/// let bytes = std::fs::read(&path).unwrap();
/// let kinds: Vec<u8> = framing::raw_frames(&bytes, b"EXAMPLE")
///     .map(|f| f.unwrap().1)
///     .collect();
/// assert_eq!(kinds, [1, 2]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FrameFile {
    path: PathBuf,
    file: File,
    len: u64,
    trim_on_close: bool,
    #[cfg(target_os = "linux")]
    map: Option<memmap2::MmapMut>,
    /// Mapped files grow by at least this much; 0: not mapped.
    #[cfg(target_os = "linux")]
    growth: u64,
}

impl FrameFile {
    /// `file` (open for reading and writing) holds `len` bytes of frames;
    /// a longer file is cut to `len`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](unistream_core::Error::Io) if the file cannot be cut to
    /// `len`.
    pub fn new(path: PathBuf, file: File, len: u64) -> Result<Self> {
        if file.metadata().map_err(|e| Error::io(&path, e))?.len() != len {
            file.set_len(len).map_err(|e| Error::io(&path, e))?;
        }
        Ok(FrameFile {
            path,
            file,
            len,
            trim_on_close: true,
            #[cfg(target_os = "linux")]
            map: None,
            #[cfg(target_os = "linux")]
            growth: 0,
        })
    }

    /// Appends through a shared memory mapping that grows by at least
    /// `min_growth` bytes at a time (see the type docs). Only on Linux;
    /// elsewhere appends stay `write(2)`s.
    pub fn mapped(mut self, min_growth: u64) -> Self {
        #[cfg(target_os = "linux")]
        {
            self.growth = min_growth.max(1);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = min_growth;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of frames (padding included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file (for a sync on another thread: `try_clone` it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `fdatasync` of the file: what was appended, mapped or written, is
    /// then on stable storage.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](unistream_core::Error::Io) if `fdatasync` fails.
    pub fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Appends `frames` (whole frames). A failed write is cut back, so the
    /// file never holds part of an append.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](unistream_core::Error::Io) if the write, the preallocation
    /// or the mapping fails; a failed write is cut back first.
    pub fn append(&mut self, frames: &[u8]) -> Result<()> {
        #[cfg(target_os = "linux")]
        if self.growth > 0 && self.append_mapped(frames)? {
            return Ok(());
        }
        self.write(frames)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all_at(bytes, self.len) {
            let _ = self.file.set_len(self.len);
            return Err(Error::io(&self.path, e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Closes the file without giving back its preallocated tail (for a
    /// file about to be deleted).
    pub fn discard(mut self) {
        self.trim_on_close = false;
    }

    /// Stops mapping the file and cuts it to its frames (a mapped file is
    /// longer); later appends are written. For a file that is complete:
    /// unlike dropping it, this reports a failure.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](unistream_core::Error::Io) if the file cannot be cut to
    /// its frames.
    pub fn finish(&mut self) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.growth = 0;
            if self.map.take().is_some() {
                self.file
                    .set_len(self.len)
                    .map_err(|e| Error::io(&self.path, e))?;
            }
        }
        Ok(())
    }

    /// Copies `frames` into the mapping, publishing each (see the type
    /// docs); `false` when the file system cannot preallocate or the file
    /// is not 8-byte aligned (the caller writes). The crate's only `unsafe`
    /// code: mapping the file, and the atomic stores that publish frames.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn append_mapped(&mut self, frames: &[u8]) -> Result<bool> {
        if !self.len.is_multiple_of(8) || !frames.len().is_multiple_of(8) {
            // Not format 3 frames: written instead.
            return Ok(false);
        }
        let n = frames.len() as u64;
        let end = self.len + n;
        if self.map.as_ref().is_none_or(|m| (m.len() as u64) < end) {
            let cap = self.map.as_ref().map_or(0, |m| m.len() as u64);
            let new_cap = end
                .max(cap * 2)
                .max(self.len + self.growth)
                .next_multiple_of(1 << 12);
            self.map = None;
            match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, new_cap)
            {
                Ok(()) => {}
                // A file system without preallocation (some network and
                // FUSE file systems): this file is written instead.
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS,
                ) => {
                    tracing::debug!(path = %self.path.display(), "no fallocate here: appends are written");
                    self.growth = 0;
                    return Ok(false);
                }
                Err(e) => return Err(Error::io(&self.path, e.into())),
            }
            // SAFETY: a shared mapping is unsound only if the file changes
            // size or content behind our back. The files mapped here belong
            // to one owner, which holds an exclusive lock (the consumer's or
            // the producer's) while they are open, and only grow while
            // mapped. A user truncating such a file by hand while it is open
            // would make a later store fault.
            let map = unsafe { memmap2::MmapMut::map_mut(&self.file) }
                .map_err(|e| Error::io(&self.path, e))?;
            self.map = Some(map);
        }
        let Some(map) = self.map.as_mut() else {
            return Ok(false);
        };
        let at = self.len as usize;
        let dst = &mut map[at..at + frames.len()];
        let mut i = 0;
        while i < frames.len() {
            // The frame's extent from its length; anything malformed (not
            // whole format 3 frames) is published as one piece.
            let size = frames
                .get(i..i + 4)
                .and_then(|w| w.try_into().ok())
                .map(|w| framing::frame_size(u32::from_le_bytes(w) as usize))
                .filter(|&s| s <= frames.len() - i)
                .unwrap_or(frames.len() - i);
            dst[i + 8..i + size].copy_from_slice(&frames[i + 8..i + size]);
            let mut head = [0u8; 8];
            head.copy_from_slice(&frames[i..i + 8]);
            // SAFETY: the map starts on a page boundary and `at + i` is a
            // multiple of 8 (frames are multiples of 8), so the pointer is
            // aligned for a u64; the 8 bytes are inside `dst`, which is
            // exclusively borrowed, and only accessed atomically here.
            let word = unsafe {
                std::sync::atomic::AtomicU64::from_ptr(dst[i..].as_mut_ptr().cast::<u64>())
            };
            // Release: the body is in place before the header that
            // publishes it; the fence keeps the next frame's copy after it.
            word.store(
                u64::from_ne_bytes(head),
                std::sync::atomic::Ordering::Release,
            );
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            i += size;
        }
        self.len = end;
        Ok(true)
    }
}

impl Drop for FrameFile {
    fn drop(&mut self) {
        // Give back the preallocated tail. A crash leaves it, and the next
        // open cuts it (it reads as zeros), so a failure here loses nothing.
        #[cfg(target_os = "linux")]
        if self.map.take().is_some() && self.trim_on_close {
            let _ = self.file.set_len(self.len);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn mapped_appends_read_back_and_a_kill_between_frames_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, framing::magic(b"TESTING")).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let mut log = FrameFile::new(path.clone(), file, 8).unwrap().mapped(4096);
        let mut frames = Vec::new();
        for i in 0..3u8 {
            framing::encode(&mut frames, i + 1, |p| p.extend_from_slice(&[i; 21])).unwrap();
        }
        log.append(&frames).unwrap();
        let live = std::fs::read(&path).unwrap();
        assert!(live.len() > 8 + frames.len(), "preallocated");
        let kinds = |bytes: &[u8]| {
            let mut it = framing::raw_frames(bytes, b"TESTING");
            let k: Vec<u8> = it.by_ref().map(|f| f.unwrap().1).collect();
            (k, it.torn().is_some())
        };
        assert_eq!(kinds(&live), (vec![1, 2, 3], true));
        // A kill between the second frame's body and its header word.
        let second = 8 + framing::frame_size(21);
        let mut killed = live.clone();
        killed[second..second + 8].fill(0);
        killed[second + framing::frame_size(21)..].fill(0);
        assert_eq!(kinds(&killed), (vec![1], true));
        drop(log);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            8 + frames.len() as u64
        );
    }
}
