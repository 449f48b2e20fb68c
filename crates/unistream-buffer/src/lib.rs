//! # unistream-buffer
//!
//! The producer's durable buffer: a write-ahead log (WAL) of numbered,
//! checksummed segment files. It implements
//! [`unistream_core::buffer::Buffer`].
//!
//! # Invariants
//! - `put` returns only once its record is stored: written to the active
//!   segment with one `write(2)` (it survives `kill -9`), and with
//!   [`Durability::PowerLoss`](unistream_core::Durability::PowerLoss) also
//!   covered by an `fdatasync` (group commit: concurrent puts share one).
//! - Segments are numbered by a counter, never by time. The newest segment is
//!   the *active* one; every older one is *sealed*. Sealing is creating the
//!   next segment — there is no rename, so no crash window between a last
//!   write and a rename.
//! - Records leave in FIFO order: `emit` reads the oldest sealed segment,
//!   `commit` deletes it. Narrowing appends a frame listing the records still
//!   unsent; the segment stays the oldest.
//! - Nothing leaves the log except by `commit` or `narrow`. A full log
//!   refuses `put` with `BufferFull`; nothing is dropped.
//! - Memory does not grow with the backlog: only a few numbers per sealed
//!   segment are kept in memory, records are read back when emitted.
//!
//! # On-disk format
//! ```text
//! <dir>/LOCK                       flock'ed by the open log (one producer)
//! <dir>/<20-digit number>.wal      segments, oldest = lowest number
//! <dir>/damaged/                   segments set aside by Recovery::SetAsideDamaged
//!
//! segment := "USWAL" 0x00 0x00 0x01                        magic, format version 1
//!            frame*
//! frame   := len u32le | crc32c u32le | kind u8 | payload   len = payload bytes,
//!                                                           crc over kind + payload
//! kind 1, a record: id_len u16le | id | key_len u16le | partition key | data
//! kind 2, narrowed: n u32le | n × u32le                     indexes (ascending) of the
//!                                                           segment's records still unsent;
//!                                                           the last such frame wins
//! ```
//!
//! # Recovery on open
//! - Every segment is read and checked. A bad **tail** — a frame cut short,
//!   a last frame whose checksum fails, zeros — is what a crash leaves; it is
//!   truncated and the log opens with every record before it.
//! - A bad frame **followed by more data**, a segment without the magic, or a
//!   gap in the numbering is damage, not a crash: [`Recovery::Strict`] (the
//!   default) refuses to open with an error naming the file and the byte
//!   offset; [`Recovery::SetAsideDamaged`] moves the segment into `damaged/`
//!   and opens without it — the documented way past it.
//! - Limits may differ from the last run: sealed segments keep their size (a
//!   sink splits batches to its own limits); an active segment already over
//!   the new limits is sealed at once.

#![warn(missing_docs)]

pub mod frame;
mod sync;
mod wal;

pub use wal::{FileBuffer, FileBufferOptions, Recovery};
