//! How a [`FileBuffer`](super::FileBuffer) is opened: limits, durability,
//! recovery mode, segment size.

use unistream_core::buffer::BufferLimits;
use unistream_local::Durability;

/// What to do with a damaged segment found on open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Refuse to open: [`Error::Corrupt`](unistream_core::Error::Corrupt) names the file and offset (default).
    #[default]
    Strict,
    /// Move each damaged segment into `<dir>/damaged/` (untouched, for
    /// inspection) and open without its records; a missing segment is
    /// skipped. Each case is logged at error level. The way past a corrupt
    /// log once an operator has looked at it.
    SetAsideDamaged,
}

/// How to open a [`FileBuffer`](super::FileBuffer).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FileBufferOptions {
    /// Batch and total size limits (may differ from the last run).
    pub limits: BufferLimits,
    /// What a `put` survives once it returned.
    pub durability: Durability,
    /// What to do with damaged segments.
    pub recovery: Recovery,
    /// Start a new segment file once the active one holds this many bytes
    /// (checked when a batch is sealed; a file holds many batches).
    pub segment_bytes: u64,
}

impl Default for FileBufferOptions {
    fn default() -> Self {
        FileBufferOptions::new(BufferLimits::default(), Durability::Process)
    }
}

impl FileBufferOptions {
    /// Options with these limits and durability, strict recovery, segment
    /// files of 8 MiB (recovery reads one file at a time into memory).
    pub fn new(limits: BufferLimits, durability: Durability) -> Self {
        FileBufferOptions {
            limits,
            durability,
            recovery: Recovery::Strict,
            segment_bytes: 8 * 1024 * 1024,
        }
    }

    /// Sets the recovery mode.
    pub fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets the size at which a new segment file is started.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }
}
