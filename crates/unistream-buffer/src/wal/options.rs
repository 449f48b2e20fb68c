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

/// How to open a [`FileBuffer`](super::FileBuffer): [`new`](Self::new) with
/// the limits and durability (or [`default`](Self::default)), then a setter
/// per field to change (the fields are public too).
///
/// ```
/// use unistream_buffer::{FileBufferConfig, Recovery};
/// use unistream_core::buffer::BufferLimits;
/// use unistream_local::Durability;
///
/// let config = FileBufferConfig::new(BufferLimits::records(500), Durability::PowerLoss)
///     .recovery(Recovery::SetAsideDamaged)
///     .segment_bytes(64 * 1024 * 1024);
/// assert_eq!(config.recovery, Recovery::SetAsideDamaged);
/// assert_eq!(config.segment_bytes, 64 * 1024 * 1024);
/// ```
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
    /// (recovery reads one file at a time into memory); change the others
    /// with their setters.
    pub fn new(limits: BufferLimits, durability: Durability) -> Self {
        FileBufferConfig {
            limits,
            durability,
            recovery: Recovery::Strict,
            segment_bytes: 8 * 1024 * 1024,
        }
    }

    /// Sets [`limits`](Self::limits): batch and total size limits.
    #[must_use]
    pub fn limits(mut self, limits: BufferLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`durability`](Self::durability): what a `put` survives once it returned.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`recovery`](Self::recovery): what to do with damaged segments (default [`Recovery::Strict`]).
    #[must_use]
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets [`segment_bytes`](Self::segment_bytes): the size at which a new segment file starts (default 8 MiB).
    #[must_use]
    pub fn segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }
}
