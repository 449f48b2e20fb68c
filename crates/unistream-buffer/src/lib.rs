//! # unistream-buffer
//!
//! The producer's durable buffer: a write-ahead log (WAL) of numbered,
//! checksummed segment files. It implements
//! [`unistream_core::buffer::Buffer`].
//!
//! # Invariants
//! - `put` returns only once its record is stored in the active segment
//!   file: with [`Durability::Process`](unistream_local::Durability::Process),
//!   copied into the file's shared memory mapping (Linux; a `write(2)`
//!   elsewhere) — the kernel's page cache holds it, so it survives `kill -9`
//!   — and with [`Durability::PowerLoss`](unistream_local::Durability::PowerLoss)
//!   written and covered by an `fdatasync` (group commit: concurrent puts
//!   share one). See [`FrameFile`](unistream_local::FrameFile) for how
//!   a mapped append is published whole or not at all.
//! - A segment file holds many batches. The records put since the last seal
//!   form the *open* batch; sealing appends a seal frame carrying the batch's
//!   id. Ids grow by one, across files and restarts, and never by time.
//! - Records leave in FIFO order: `emit` reads the oldest sealed batch back
//!   from its file; `commit` appends a commit frame; `narrow` appends a frame
//!   listing the records still unsent. Bookkeeping frames go to the active
//!   file, so files are only ever appended to.
//! - A file is deleted once every batch in it is committed; a new file is
//!   started after a seal once the active one reaches `segment_bytes`.
//! - Nothing leaves the log except by `commit` or `narrow`. A full log
//!   refuses `put` with `BufferFull`; nothing is dropped.
//! - Memory does not grow with the records held: a few numbers per sealed
//!   batch stay in memory; records are read back when emitted.
//!
//! # On-disk format
//! ```text
//! <dir>/LOCK                       flock'ed by the open log (one producer)
//! <dir>/<20-digit number>.wal      segment files, oldest = lowest number;
//!                                  the newest is the active one
//! <dir>/damaged/                   files set aside by Recovery::SetAsideDamaged
//!
//! segment := "USWAL" 0x00 0x00 0x03                  magic, format version 3
//!            frame*                                  (format 2 is read; see below)
//! frame   := len u32le | crc32c(len) u32le | kind u8 | payload
//!            | crc32c(kind, payload) u32le | zeros to a multiple of 8 bytes
//!                                     len = payload bytes
//! kind 1, record:  id_len u16le | id | key_len u16le | partition key | data
//! kind 5, record with an explicit hash key:
//!                  id_len u16le | id | key_len u16le | partition key
//!                  | hash_len u16le | explicit hash key | data
//! kind 3, seal:    batch id u64le        the records since the last seal are this batch
//! kind 4, commit:  batch id u64le        every batch up to this one is committed
//! kind 2, narrow:  batch id u64le | kept bytes u64le | n u32le | n x index u32le
//!                                     the batch's records still unsent (ascending);
//!                                     the last such frame wins
//! kind 0, padding: zeros             format 2 only (aligned its mapped appends); skipped
//! ```
//! Frames start on multiples of 8 bytes; a mapped segment publishes each
//! frame by storing its first 8 bytes last (see `FrameFile`). A finished
//! segment is cut to its frames before the next one starts. Segments of
//! format 2 (no length checksum, no alignment) are read, and rewritten in
//! format 3 on open.
//!
//! # Recovery on open
//! - Every file is read, oldest first, and its frames replayed: seals make
//!   batches, narrow frames shrink them, commit frames drop them.
//! - A bad frame is a crash's **torn tail** only in a shape a crash leaves
//!   (the file ends inside a frame whose length checks; a header word of
//!   zeros; a power loss's zeroed last sector) **and with no valid frame
//!   after it** (rules: [`unistream_local::framing`]). A torn tail of the
//!   newest file is truncated and the log opens with every record before it
//!   (a lost seal, commit or narrow frame only means a batch is sent again).
//! - Anything else is damage, never dropped: a damaged length, kind,
//!   checksum or payload anywhere (the last frame included), a zero header
//!   or torn-looking frame followed by valid frames, a bad tail in an older
//!   file, a file without the magic, or a gap in the file numbers.
//!   [`Recovery::Strict`] (the default) refuses to open with an error naming
//!   the file, the byte offset and how many valid records follow the damage;
//!   [`Recovery::SetAsideDamaged`] moves the file into `damaged/` and opens
//!   without it — the documented way past.
//! - Limits may differ from the last run: sealed batches keep their size (a
//!   sink splits batches to its own limits); an open batch already over the
//!   new limits is sealed at once.

#![warn(missing_docs)]

pub mod frame;
mod wal;

pub use wal::{
    FileBuffer, FileBufferConfig, OldestRecord, PendingBatch, Recovery, SegmentInfo, TornTail,
    WalReport, inspect,
};
