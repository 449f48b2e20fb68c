use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Durability;
use crate::error::{Error, Result};

/// A file opened for appending whole chunks (whole lines) with one `write`
/// each, so concurrent readers and a crash never see half a chunk followed by
/// another chunk; a crash can at most leave one unterminated last line,
/// which every reader of this crate skips.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: File,
    durability: Durability,
}

impl AppendFile {
    /// Opens (creating it and its directory if needed) `path` for appending.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(AppendFile {
            path,
            file,
            durability,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `chunk` (which should end with a newline) and, in power-loss
    /// mode, waits until it is on disk.
    pub fn append(&self, chunk: &[u8]) -> Result<()> {
        (&self.file)
            .write_all(chunk)
            .map_err(|e| Error::io(&self.path, e))?;
        if self.durability == Durability::PowerLoss {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Takes an exclusive advisory lock (`flock`) on `path`, creating the file.
/// `Ok(None)` if another process holds it. The OS releases the lock when the
/// returned file is dropped or the process dies, even by `kill -9`.
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
