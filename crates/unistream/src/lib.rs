//! # unistream
//!
//! Reliable stream producers and consumers. You write how one record is
//! processed; unistream tracks every record's status in a checkpoint, retries
//! with backoff, sends what keeps failing to a dead-letter queue, and resumes
//! exactly where it stopped after a crash.
//!
//! This crate is a facade: it re-exports [`unistream_core`] (the engines and
//! the embedded local-file backends). AWS backends join it behind features
//! as they land.
//!
//! See the repository's `README.md` and `docs/` for the guarantees
//! (at-least-once, what a `kill -9` can and cannot cause).

pub use unistream_core as core;
pub use unistream_core::*;
