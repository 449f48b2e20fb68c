//! Append-only line files: the one mechanism every JSON-lines file of the
//! project is written through (dead-letter files, stream files, the examples'
//! target files, `KinesisSink`'s rejected-records file).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tracing::{error, warn};

use crate::Durability;
use unistream_core::{Error, Result};

/// A file of lines, appended whole: each [`append`](Self::append) is one
/// `write(2)` of whole lines, and nothing is ever written after a torn line.
///
/// - **A torn tail is repaired on open.** A `kill -9` can cut a write short
///   (Linux stops a write that spans pages when a fatal signal is pending),
///   leaving an unterminated last line. [`open`](Self::open) truncates the
///   bytes after the last newline, with a `warn!` naming the file and the
///   number of bytes dropped, before anything else is appended: the line is a
///   write that never completed, so its caller never saw it succeed, and the
///   at-least-once machinery (the producer's write-ahead log, the consumer's
///   checkpoint) sends its record again. Without the repair the next line
///   would be glued onto the fragment, and both would be unreadable.
/// - **One writer.** The repair is only safe if nobody else is appending, so
///   `open` takes an exclusive `flock` on the file: a second *process*
///   opening it gets [`Error::Locked`]. Within one process, every `open` of
///   the same file shares one descriptor and lock (the first `open` repairs),
///   so several tasks (say, one consumer per shard) may each open it.
/// - **A failed write leaves no fragment.** If a write fails part-way (disk
///   full, I/O error), the bytes it did write are truncated away before the
///   error is returned; should that fail too, the next `open` repairs it.
/// - Readers of this crate never consume an unterminated last line, so a
///   concurrent reader only ever sees whole lines.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use unistream_local::{AppendFile, Durability};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.jsonl");
/// std::fs::write(&path, "{\"id\": 1}\n{\"id\": 2")?; // as a kill mid-write leaves it
/// let file = AppendFile::open(&path, Durability::Process)?;
/// file.append(b"{\"id\": 3}\n")?;
/// assert_eq!(std::fs::read_to_string(&path)?, "{\"id\": 1}\n{\"id\": 3}\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    durability: Durability,
    shared: Arc<Shared>,
}

/// The one descriptor (holding the `flock`) of a file open in this process.
#[derive(Debug)]
struct Shared {
    key: FileKey,
    // Serializes this process's appends, so that a failed write's fragment is
    // the file's last bytes when it is truncated away.
    file: Mutex<File>,
    // Opened by `open_exclusive`: no other handle in this process.
    exclusive: bool,
}

/// Device and inode: the identity of an open file, whatever path named it.
type FileKey = (u64, u64);

/// The files this process has open for appending.
static OPEN: Mutex<BTreeMap<FileKey, Weak<Shared>>> = Mutex::new(BTreeMap::new());

impl AppendFile {
    /// Opens (creating it and its directory if needed) `path` for appending,
    /// takes its writer lock and repairs a torn last line.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process has it open through `AppendFile`;
    /// [`Error::Io`] if it cannot be created, read, locked or truncated.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        Self::open_as(path.into(), durability, false, 0)
    }

    /// Opens `path` as [`open`](Self::open) does, for this handle alone, to
    /// [`replace`](Self::replace) the file: refused while another handle of
    /// this process has it open, and while this handle lives, every other
    /// `open` of it in this process is refused too (as another process's
    /// is).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process, or another handle of this one,
    /// has it open; as [`open`](Self::open) otherwise.
    pub fn open_exclusive(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        Self::open_as(path.into(), durability, true, 0)
    }

    fn open_as(
        path: PathBuf,
        durability: Durability,
        exclusive: bool,
        attempt: u32,
    ) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        let key = (meta.dev(), meta.ino());
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = open.get(&key).and_then(Weak::upgrade) {
            if exclusive || shared.exclusive {
                return Err(Error::Locked {
                    path,
                    what: if shared.exclusive {
                        "this process rewrites it".into()
                    } else {
                        "this process appends to it".into()
                    },
                });
            }
            return Ok(AppendFile {
                path,
                durability,
                shared,
            });
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path,
                    what: "another process appends to it".into(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // A redrive may have renamed a new file over the path between our
        // open and our lock (`replace`): we would hold the lock of an
        // unlinked file and every line appended to it would be lost. Open
        // the path again until the file locked is the one it names.
        let now_at_path = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if (now_at_path.dev(), now_at_path.ino()) != key {
            drop(open);
            drop(file);
            if attempt >= 10 {
                return Err(Error::Locked {
                    path,
                    what: "it keeps being replaced while it is opened".into(),
                });
            }
            return Self::open_as(path, durability, exclusive, attempt + 1);
        }
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        repair_torn_tail(&file, &path, meta.len())?;
        let shared = Arc::new(Shared {
            key,
            file: Mutex::new(file),
            exclusive,
        });
        open.insert(key, Arc::downgrade(&shared));
        Ok(AppendFile {
            path,
            durability,
            shared,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `chunk` (whole lines: it should end with a newline) with one
    /// `write(2)` and, in power-loss mode, waits until it is on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the write or the sync fails; the bytes of a failed
    /// write are truncated away first.
    pub fn append(&self, chunk: &[u8]) -> Result<()> {
        let file = self
            .shared
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut written = 0;
        while written < chunk.len() {
            match (&*file).write(&chunk[written..]) {
                Ok(0) => {
                    return Err(self.undo(&file, written, std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.undo(&file, written, e)),
            }
        }
        if self.durability == Durability::PowerLoss {
            file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Replaces the whole file with `contents` (whole lines), atomically: a
    /// crash leaves either the old file or the new one, never a mix. For a
    /// handle of [`open_exclusive`](Self::open_exclusive), which it consumes.
    ///
    /// The new contents are written to a temporary file next to it
    /// (`.NAME.replace-tmp`), `fsync`ed, locked, and renamed over the file;
    /// then the directory is `fsync`ed. The old file stays locked until the
    /// new one is (a process opening the path meanwhile finds one or the
    /// other locked), and both are unlocked when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if the handle is not exclusive, or a left-over
    /// temporary file is locked by another process; [`Error::Io`] if the
    /// temporary file cannot be written or renamed (the file is then
    /// unchanged).
    pub fn replace(self, contents: &[u8]) -> Result<()> {
        if !self.shared.exclusive {
            return Err(Error::Locked {
                path: self.path.clone(),
                what: "replaced only through AppendFile::open_exclusive".into(),
            });
        }
        let file = self
            .shared
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp_path = dir.join(format!(".{name}.replace-tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(&p, e)
        };
        let mut tmp = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp_path)
            .map_err(io(&tmp_path))?;
        match tmp.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: tmp_path,
                    what: "another process replaces the file".into(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&tmp_path, e)),
        }
        let permissions = file.metadata().map_err(io(&self.path))?.permissions();
        tmp.write_all(contents)
            .and_then(|()| tmp.set_permissions(permissions))
            .and_then(|()| tmp.sync_all())
            .map_err(io(&tmp_path))?;
        std::fs::rename(&tmp_path, &self.path).map_err(io(&self.path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        drop(tmp);
        drop(file);
        Ok(())
    }

    /// Truncates the `written` bytes of a failed append (the file's last
    /// bytes: this process is its only writer and holds the append mutex).
    fn undo(&self, file: &File, written: usize, cause: std::io::Error) -> Error {
        if written > 0 {
            let cut = file
                .metadata()
                .and_then(|m| file.set_len(m.len().saturating_sub(written as u64)));
            if let Err(e) = cut {
                error!(path = %self.path.display(), written, error = %e, "cannot truncate a failed append; the next open drops it");
            }
        }
        Error::io(&self.path, cause)
    }
}

impl Drop for AppendFile {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        // Handles are only added under the registry lock: if this is the
        // last, it stays the last. It unlocks the file here, under the
        // registry lock, so that a later `open` in this process never finds
        // the file still locked by a descriptor about to close.
        if Arc::strong_count(&self.shared) == 1 {
            open.remove(&self.shared.key);
            let file = self
                .shared
                .file
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = file.unlock() {
                warn!(path = %self.path.display(), error = %e, "cannot unlock an append file");
            }
        }
    }
}

impl unistream_core::sink::SetAside for AppendFile {
    fn set_aside(&self, line: &[u8]) -> Result<()> {
        self.append(line)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// Truncates the bytes after the last newline of `file` (`len` bytes long).
fn repair_torn_tail(file: &File, path: &Path, len: u64) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    let good = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.read_exact_at(&mut chunk[..n], start).map_err(io)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if good < len {
        warn!(
            path = %path.display(),
            offset = good,
            dropped = len - good,
            "dropping a torn last line (a write that never completed; its record is sent again)"
        );
        file.set_len(good).map_err(io)?;
    }
    Ok(())
}

/// Takes an exclusive advisory lock (`flock`) on `path`, creating the file.
/// `Ok(None)` if another process holds it. The OS releases the lock when the
/// returned file is dropped or the process dies, even by `kill -9`.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be created or locked.
pub fn lock_exclusive(path: &Path) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "torn tail: {text:?}"
        );
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_line_cut_at_every_offset_is_dropped_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let whole = "{\"id\": \"1\"}\n{\"id\": \"2\"}\n";
        let last = "{\"id\": \"3\", \"note\": \"a line the kill cut short\"}\n";
        for cut in 0..last.len() {
            std::fs::write(&path, format!("{whole}{}", &last[..cut])).unwrap();
            let file = AppendFile::open(&path, Durability::Process).unwrap();
            file.append(last.as_bytes()).unwrap();
            drop(file);
            let got = lines(&path);
            assert_eq!(got.len(), 3, "cut at {cut}: {got:?}");
            for l in &got {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("cut at {cut}: {l:?}: {e}"));
            }
            assert_eq!(format!("{}\n{}\n", got[0], got[1]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_file_of_one_torn_line_longer_than_the_read_chunk_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        let file = AppendFile::open(&path, Durability::Process).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        file.append(b"a\n").unwrap();
        assert_eq!(lines(&path), ["a"]);
    }

    #[test]
    fn a_short_write_then_a_restart_loses_only_the_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let file = AppendFile::open(&path, Durability::Process).unwrap();
        file.append(b"{\"id\": \"1\"}\n").unwrap();
        // The kernel stops a write part-way and the process dies: half a line
        // reaches the file (written here through a descriptor of its own),
        // and nothing more is written by that process.
        let half = b"{\"id\": \"2\", \"pad\": \"xxxxxxxx";
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(half)
            .unwrap();
        drop(file);
        // The restart: the record is sent again.
        let file = AppendFile::open(&path, Durability::PowerLoss).unwrap();
        file.append(b"{\"id\": \"2\", \"pad\": \"xxxxxxxxxxxxxxxx\"}\n")
            .unwrap();
        assert_eq!(
            lines(&path),
            [
                "{\"id\": \"1\"}",
                "{\"id\": \"2\", \"pad\": \"xxxxxxxxxxxxxxxx\"}"
            ]
        );
    }

    #[test]
    fn another_process_is_locked_out_and_this_one_shares_one_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // Another process's writer: a descriptor of its own holding the lock.
        let other = File::create(&path).unwrap();
        other.try_lock().unwrap();
        let err = AppendFile::open(&path, Durability::Process).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(other);

        // Two tasks of this process (say, two shards) open it: one
        // descriptor, one repair, both append.
        std::fs::write(&path, "a\ntorn").unwrap();
        let first = AppendFile::open(&path, Durability::Process).unwrap();
        first.append(b"b\n").unwrap();
        let second = AppendFile::open(dir.path().join("./out.jsonl"), Durability::Process).unwrap();
        second.append(b"c\n").unwrap();
        assert!(Arc::ptr_eq(&first.shared, &second.shared));
        assert!(File::open(&path).unwrap().try_lock().is_err());
        drop(first);
        assert!(File::open(&path).unwrap().try_lock().is_err(), "still open");
        second.append(b"d\n").unwrap();
        drop(second);
        assert!(File::open(&path).unwrap().try_lock().is_ok(), "unlocked");
        assert_eq!(lines(&path), ["a", "b", "c", "d"]);
        // And a later open in this process locks it again.
        let again = AppendFile::open(&path, Durability::Process).unwrap();
        assert!(File::open(&path).unwrap().try_lock().is_err());
        drop(again);
    }

    #[test]
    fn a_failed_write_is_truncated_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let file = AppendFile::open(&path, Durability::Process).unwrap();
        file.append(b"a\n").unwrap();
        // As if a write had put 3 bytes of "bcd\n" down, then failed (disk
        // full): `undo` removes them before the error is returned.
        let f = file.shared.file.lock().unwrap();
        (&*f).write_all(b"bcd").unwrap();
        let err = file.undo(&f, 3, std::io::ErrorKind::StorageFull.into());
        drop(f);
        assert!(matches!(err, Error::Io { .. }), "{err}");
        file.append(b"e\n").unwrap();
        assert_eq!(lines(&path), ["a", "e"]);
    }
}
