//! Segment files: their names, their creation, and the active segment's
//! append path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::warn;
use unistream_core::{Error, Result};
use unistream_local::{Durability, FrameFile};

use super::options::FileBufferConfig;
use crate::frame::MAGIC;

#[derive(Debug)]
pub(super) struct ActiveFile {
    pub(super) seq: u64,
    pub(super) log: FrameFile,
}

impl ActiveFile {
    /// Bytes in the file.
    pub(super) fn len(&self) -> u64 {
        self.log.len()
    }
}

pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates segment `seq` holding only its header (synced with its directory
/// in power-loss mode). If that fails, the file is removed again: the
/// previous segment stays the newest, so that a restart does not take it for
/// a finished segment that has records after its last seal.
pub(super) fn create_segment(
    dir: &Path,
    seq: u64,
    options: &FileBufferConfig,
) -> Result<ActiveFile> {
    let path = dir.join(segment_name(seq));
    let io = |e| Error::io(&path, e);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let header = file.write_all(MAGIC).map_err(io).and_then(|()| {
        if options.durability == Durability::PowerLoss {
            file.sync_all().map_err(io)?;
            sync_dir(dir)?;
        }
        Ok(())
    });
    let created =
        header.and_then(|()| active_file(seq, path.clone(), file, MAGIC.len() as u64, options));
    if created.is_err()
        && let Err(rm) = std::fs::remove_file(&path)
    {
        warn!(path = %path.display(), error = %rm, "cannot remove a segment whose creation failed");
    }
    created
}

/// The active segment's append path: memory-mapped in process-crash mode
/// (no system call per put; see [`FrameFile`]).
pub(super) fn active_file(
    seq: u64,
    path: PathBuf,
    file: File,
    len: u64,
    options: &FileBufferConfig,
) -> Result<ActiveFile> {
    let log = FrameFile::new(path, file, len)?;
    let log = match options.durability {
        Durability::Process => log.mapped(MAP_GROWTH),
        Durability::PowerLoss => log,
    };
    Ok(ActiveFile { seq, log })
}

/// The mapped active segment grows by at least this much at a time.
const MAP_GROWTH: u64 = 1 << 20;
