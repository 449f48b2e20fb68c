//! The file write-ahead log behind [`FileBuffer`]. Its invariants, on-disk
//! format and recovery rules are the crate's documentation (`lib.rs`); this
//! module is their implementation, one role per file:
//!
//! | file | role |
//! |---|---|
//! | `options.rs` | [`FileBufferConfig`], [`Recovery`] |
//! | `state.rs` | what the open log keeps in memory, and its lock |
//! | `segment.rs` | segment file names, creation, the active segment's append path |
//! | `writer.rs` | appending records, sealing, commit and narrow frames, rolling, deleting |
//! | `reader.rs` | reading a sealed batch back |
//! | `recover.rs` | replaying every segment on open, repairing a torn tail |
//! | `inspect.rs` | [`inspect`]: what a WAL holds, read without opening it |
//! | `sync.rs` | group commit: many `put`s share one `fdatasync` |
//! | `file_buffer.rs` | [`FileBuffer`]: open, and the [`Buffer`](unistream_core::buffer::Buffer) implementation |

mod file_buffer;
mod inspect;
mod options;
mod reader;
mod recover;
mod segment;
mod state;
mod sync;
mod writer;

pub use file_buffer::FileBuffer;
pub use inspect::{OldestRecord, PendingBatch, SegmentInfo, TornTail, WalReport, inspect};
pub use options::{FileBufferConfig, Recovery};
