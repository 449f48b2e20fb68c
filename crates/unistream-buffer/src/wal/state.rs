//! The log's state in memory: the segment files, the sealed batches (a few
//! numbers each; records stay on file), the open batch, and the lock that
//! guards them.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use unistream_core::buffer::Batch;
use unistream_local::Durability;

use super::options::FileBufferConfig;
use super::segment::ActiveFile;

/// A sealed batch: where its frames are, and what is left of it.
#[derive(Debug, Clone)]
pub(super) struct BatchMeta {
    pub(super) id: u64,
    /// The segment file holding it.
    pub(super) file: u64,
    /// Byte range from its first record frame to the end of its seal frame.
    pub(super) start: u64,
    pub(super) end: u64,
    /// Records it was sealed with.
    pub(super) original: u64,
    /// Records and bytes still unsent.
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// Indexes (among `original`) still unsent, if narrowed.
    pub(super) keep: Option<Vec<u32>>,
}

/// The records put since the last seal.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OpenBatch {
    /// Offset of its first record frame in the active file.
    pub(super) start: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
}

#[derive(Debug)]
pub(super) struct Emitted {
    pub(super) batch: Batch,
    /// Original index of each record of `batch`.
    pub(super) original: Vec<u32>,
}

#[derive(Debug)]
pub(super) struct State {
    /// Every segment file on disk, oldest first; the last is the active one.
    pub(super) files: VecDeque<u64>,
    pub(super) sealed: VecDeque<BatchMeta>,
    pub(super) active: ActiveFile,
    pub(super) open: OpenBatch,
    pub(super) next_id: u64,
    pub(super) total_bytes: u64,
    pub(super) total_records: u64,
    pub(super) emitted: Option<Emitted>,
    /// Record frames written so far (for group commit).
    pub(super) written: u64,
    pub(super) scratch: Vec<u8>,
    /// Where each encoded frame of an append ends in `scratch`.
    pub(super) ends: Vec<usize>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) options: FileBufferConfig,
    pub(super) state: Mutex<State>,
    pub(super) _lock: File,
}

/// Locks the state, even if a panic poisoned the mutex (every change to it
/// is completed before the lock is released).
pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub(super) fn power_loss(&self) -> bool {
        self.options.durability == Durability::PowerLoss
    }
}
