//! [`FileBufferConfig`]: how a [`FileBuffer`](super::FileBuffer) is opened
//! (limits, durability, recovery mode, segment size), and [`Recovery`].

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
pub struct FileBufferConfig {
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

impl Default for FileBufferConfig {
    fn default() -> Self {
        FileBufferConfig::new(BufferLimits::default(), Durability::Process)
    }
}

impl FileBufferConfig {
    /// These limits and durability, strict recovery, segment files of 8 MiB
    /// (recovery reads one file at a time into memory); set the other fields
    /// after.
    pub fn new(limits: BufferLimits, durability: Durability) -> Self {
        FileBufferConfig {
            limits,
            durability,
            recovery: Recovery::Strict,
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}
