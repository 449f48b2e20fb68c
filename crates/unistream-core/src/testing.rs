//! Check your own [`CheckpointStore`] against the contract (feature
//! `testing`): one suite for every store, the same checks the memory, file
//! and DynamoDB + S3 stores pass, as the trait's documentation promises:
//!
//! - [`round_trip`]: a batch, its records (binary, and under hostile ids)
//!   and every kind of transition load back exactly (done records up to
//!   their summary, for a store that summarizes them), before and after
//!   the commit;
//! - [`durable_once_synced`]: tracker changes are on record once `sync`
//!   returns, for a store opened afresh;
//! - [`foreign_data_is_an_error`]: a checkpoint the store cannot read is an
//!   error, never a silent reset (where the backend can be made to hold
//!   foreign data);
//! - [`a_second_owner_is_refused`]: two live owners of one checkpoint never
//!   both write (where the store promises exclusion).
//!
//! A check that does not apply to a store says so on stderr and in its
//! return value ([`Checked::Skipped`]); the caller asserts what it expects.
//! A check that fails panics, saying what broke: run the suite from a test.
//!
//! Describe how to open your store (and, if it can, how to put foreign data
//! in it) with [`StoreUnderTest`], then run [`check_all`] on fresh
//! checkpoints. With the in-memory store:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use unistream_core::Result;
//! use unistream_core::memory::MemoryCheckpointStore;
//! use unistream_core::testing::{Checked, StoreUnderTest, check_all};
//!
//! /// One checkpoint: every `open` is a new handle on it, as after a restart.
//! struct Memory(MemoryCheckpointStore);
//!
//! impl StoreUnderTest for Memory {
//!     type Store = MemoryCheckpointStore;
//!     async fn open(&mut self) -> Result<MemoryCheckpointStore> {
//!         Ok(self.0.clone())
//!     }
//!     fn excludes_owners(&self) -> bool {
//!         false // record locks stand in for owner exclusion
//!     }
//! }
//!
//! let checked = check_all(|| Memory(MemoryCheckpointStore::default())).await;
//! // Memory cannot hold foreign data and does not exclude owners: those two
//! // checks do not apply.
//! assert_eq!(checked, [Checked::Passed, Checked::Passed, Checked::Skipped, Checked::Skipped]);
//! # }
//! ```
//!
//! The suite is compiled only with the `testing` feature, which adds no
//! dependency: `unistream-core = { version = "…", features = ["testing"] }`
//! in your `[dev-dependencies]`.

pub mod idempotency;

use std::future::Future;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, CheckpointStore, Status};
use crate::error::{Error, ErrorInfo, Result};
use crate::source::{Pointer, SourceRecord};
use chrono::{DateTime, Utc};

/// Record ids that break naive encodings (path separators, quotes, the
/// DynamoDB store's `|`, expression characters, non-ASCII, a long one).
pub const HOSTILE_IDS: &[&str] = &[
    "a.b.c",
    "with space",
    "quote\"s and 'apostrophes'",
    "#hash",
    ":colon",
    "ünïcødé ✓ 日本",
    "a|b|c",
    "[0]",
    "slash/and\\backslash",
    "%41%",
];

/// One checkpoint of a store under test: every [`open`](Self::open) is a
/// new store on the same checkpoint, as a restarted process would open it.
pub trait StoreUnderTest {
    /// The store.
    type Store: CheckpointStore;

    /// A new store on this checkpoint. A store that excludes a second live
    /// owner at open MAY return its refusal here.
    fn open(&mut self) -> impl Future<Output = Result<Self::Store>>;

    /// Replaces the stored checkpoint with data the store did not write.
    /// `false` if the backend cannot hold foreign data (memory).
    fn corrupt(&mut self) -> impl Future<Output = bool> {
        async { false }
    }

    /// Whether the store promises that two live owners never both write.
    fn excludes_owners(&self) -> bool;

    /// Whether the store keeps done records as their
    /// [`Tracker::summary`](crate::checkpoint::Tracker::summary)
    /// (e.g. the DynamoDB + S3 store, whose item must not grow with the
    /// batch): the round trip is then checked up to that summary, and
    /// exactly for every other tracker. Default: no, every tracker round-trips
    /// exactly.
    fn summarizes_done_records(&self) -> bool {
        false
    }
}

/// `cp` with every done record as its
/// [`Tracker::summary`](crate::checkpoint::Tracker::summary): what a
/// store that summarizes done records loads back.
pub fn summarized(cp: &Checkpoint) -> Checkpoint {
    cp.clone().with_trackers(
        cp.trackers()
            .iter()
            .map(crate::checkpoint::Tracker::summary)
            .collect(),
    )
}

/// `cp` as a store of this kind loads it back.
fn as_stored<T: StoreUnderTest>(t: &T, cp: &Checkpoint) -> Checkpoint {
    if t.summarizes_done_records() {
        summarized(cp)
    } else {
        cp.clone()
    }
}

/// Whether a check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// It ran and passed (it panics otherwise).
    Passed,
    /// It does not apply to this store.
    Skipped,
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_781_446, 123_456_789).unwrap_or_default()
}

fn ids() -> Vec<String> {
    let mut ids: Vec<String> = HOSTILE_IDS.iter().map(|s| s.to_string()).collect();
    ids.push("x".repeat(256));
    ids
}

fn records(ids: &[String]) -> Vec<SourceRecord> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            // JSON for most; raw, non-UTF-8 bytes for some.
            let data = if i % 3 == 2 {
                vec![0xff, 0x00, b'\n', i as u8]
            } else {
                format!("{{\"id\": {id:?}}}").into_bytes()
            };
            SourceRecord::new(Pointer::new(format!("{i}@{}", i * 10)), data)
        })
        .collect()
}

async fn load<S: CheckpointStore>(store: &mut S) -> Option<(Checkpoint, Vec<SourceRecord>)> {
    let loaded = store.load().await.unwrap_or_else(|e| panic!("load: {e}"));
    loaded.map(|l| (l.checkpoint, l.records))
}

async fn open<T: StoreUnderTest>(t: &mut T) -> T::Store {
    t.open().await.unwrap_or_else(|e| panic!("open: {e}"))
}

/// A store on a new checkpoint holding a saved batch of records `ids`
/// (pointers `0..n`, the next batch at `n`).
async fn with_batch<T: StoreUnderTest>(t: &mut T, ids: &[String]) -> (T::Store, Checkpoint) {
    with_batch_of(t, ids, 3).await
}

/// [`with_batch`] with `max_attempts`, asserting that the checkpoint is new.
async fn with_batch_of<T: StoreUnderTest>(
    t: &mut T,
    ids: &[String],
    max_attempts: u32,
) -> (T::Store, Checkpoint) {
    let mut store = open(t).await;
    assert!(
        load(&mut store).await.is_none(),
        "a new checkpoint loads as none"
    );
    let mut cp = Checkpoint::new(
        "contract",
        Pointer::from("0"),
        max_attempts,
        Duration::from_secs(60),
    );
    let next = Pointer::new(ids.len().to_string());
    cp.start_batch(ids.to_vec(), Some(next), now()).unwrap();
    store.save_batch(&cp, &records(ids)).await.unwrap();
    (store, cp)
}

/// A batch over hostile ids with every kind of transition — success with
/// data, failure with causes, ignored, exhausted and dead-lettered, in
/// progress — saved, loaded by a new store, committed, loaded again.
pub async fn round_trip<T: StoreUnderTest>(t: &mut T) -> Checked {
    let ids = ids();
    let (mut store, mut cp) = with_batch_of(t, &ids, 2).await;
    let recs = records(&ids);
    let t1 = now() + chrono::Duration::milliseconds(1);
    for (i, id) in ids.iter().enumerate() {
        let lock = format!("L{i}");
        if i % 5 != 4 {
            cp.begin_attempt(i, &lock, t1).unwrap();
            store.save_tracker(&cp, i).await.unwrap();
        }
        match i % 5 {
            0 => {
                cp.succeed(i, &lock, Some(serde_json::json!({"k": [i, "v"]})), t1)
                    .unwrap();
            }
            1 => {
                let error = ErrorInfo {
                    message: format!("failed {id:?}"),
                    causes: vec!["inner".into(), "root\n cause".into()],
                };
                cp.fail(i, &lock, error, t1).unwrap();
            }
            2 => {
                cp.ignore(i, &lock, t1).unwrap();
            }
            3 => {} // left in progress
            _ => {
                cp.exhaust(i, ErrorInfo::new("undecodable"), t1).unwrap();
                cp.mark_dead_lettered(i, t1).unwrap();
            }
        }
        store.save_tracker(&cp, i).await.unwrap();
    }
    store.sync().await.unwrap();
    drop(store);
    let mut store = open(t).await;
    let (got, got_records) = load(&mut store).await.expect("saved");
    assert_eq!(
        got,
        as_stored(t, &cp),
        "every tracker, under every id, round-trips"
    );
    assert_eq!(
        got_records, recs,
        "the batch's records round-trip byte for byte"
    );
    assert_eq!(got.trackers()[1].status, Status::Failed);

    // Finish the batch, commit, and load the commit.
    let mut cp = got;
    cp.recover(t1, true);
    for i in 0..ids.len() {
        let tr = &cp.trackers()[i];
        if tr.is_done() {
            continue;
        }
        let lock = format!("M{i}");
        if cp.begin_attempt(i, &lock, t1).is_ok() {
            cp.succeed(i, &lock, None, t1).unwrap();
        } else {
            cp.mark_dead_lettered(i, t1).unwrap();
        }
        store.save_tracker(&cp, i).await.unwrap();
    }
    store.sync().await.unwrap();
    cp.commit().unwrap();
    store.save_commit(&cp).await.unwrap();
    drop(store);
    let mut store = open(t).await;
    let (got, _) = load(&mut store).await.expect("committed");
    assert!(got.is_committed(), "the commit is on record");
    assert_eq!(got.start_pointer().as_str(), ids.len().to_string());
    assert_eq!(got, as_stored(t, &cp));
    Checked::Passed
}

/// Changes saved and synced are seen by a store opened afterwards.
pub async fn durable_once_synced<T: StoreUnderTest>(t: &mut T) -> Checked {
    let ids: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    let (mut store, mut cp) = with_batch(t, &ids).await;
    for i in 0..3 {
        cp.begin_attempt(i, "L", now()).unwrap();
        store.save_tracker(&cp, i).await.unwrap();
        store.sync().await.unwrap();
        let mut other_view = cp.clone();
        // What another process would find now:
        drop(store);
        let mut reopened = open(t).await;
        let (got, _) = load(&mut reopened).await.expect("saved");
        assert_eq!(
            got.trackers()[i].attempts,
            1,
            "attempt {i} on record after sync"
        );
        assert_eq!(got.trackers()[i].status, Status::InProgress);
        other_view
            .restore_tracker(i, got.trackers()[i].clone())
            .unwrap();
        assert_eq!(got, as_stored(t, &other_view));
        store = reopened;
        // The reopened store owns the checkpoint now: carry on with it.
        cp = got;
    }
    Checked::Passed
}

/// Data the store did not write is an error on load, never `None`.
pub async fn foreign_data_is_an_error<T: StoreUnderTest>(t: &mut T) -> Checked {
    let ids: Vec<String> = vec!["a".into()];
    let (store, _) = with_batch(t, &ids).await;
    drop(store);
    if !t.corrupt().await {
        eprintln!(
            "checkpoint contract: foreign_data_is_an_error skipped: this backend cannot hold foreign data"
        );
        return Checked::Skipped;
    }
    let result = match t.open().await {
        Ok(mut s) => s.load().await.map(|l| l.is_some()),
        Err(e) => Err(e),
    };
    match result {
        Err(Error::CheckpointUnreadable { .. } | Error::Corrupt { .. }) => Checked::Passed,
        other => panic!("foreign data must be CheckpointUnreadable or Corrupt, got {other:?}"),
    }
}

/// Two live owners: the second is refused at open or load, or the first's
/// next write fails; never do both write.
pub async fn a_second_owner_is_refused<T: StoreUnderTest>(t: &mut T) -> Checked {
    if !t.excludes_owners() {
        eprintln!(
            "checkpoint contract: a_second_owner_is_refused skipped: this store does not exclude owners"
        );
        return Checked::Skipped;
    }
    let ids: Vec<String> = vec!["a".into(), "b".into()];
    let (mut first, mut cp) = with_batch(t, &ids).await;
    let refused = |e: &Error| matches!(e, Error::CheckpointOwned { .. } | Error::Locked { .. });
    let mut second = match t.open().await {
        Err(e) if refused(&e) => return Checked::Passed,
        Err(e) => panic!("a second owner must be refused with CheckpointOwned or Locked, got {e}"),
        Ok(s) => s,
    };
    match second.load().await {
        Err(e) if refused(&e) => return Checked::Passed,
        Err(e) => panic!("a second owner must be refused with CheckpointOwned or Locked, got {e}"),
        Ok(_) => {}
    }
    // The second took over: the first's next write must fail.
    cp.begin_attempt(0, "first", now()).unwrap();
    let wrote = match first.save_tracker(&cp, 0).await {
        Ok(()) => first.sync().await,
        Err(e) => Err(e),
    };
    match wrote {
        Err(e) if refused(&e) => Checked::Passed,
        other => {
            panic!("the displaced owner's write must fail with CheckpointOwned, got {other:?}")
        }
    }
}

/// Runs every check against fresh checkpoints from `fresh`; returns how
/// each went, in the order of the module docs.
pub async fn check_all<T: StoreUnderTest>(mut fresh: impl FnMut() -> T) -> [Checked; 4] {
    [
        round_trip(&mut fresh()).await,
        durable_once_synced(&mut fresh()).await,
        foreign_data_is_an_error(&mut fresh()).await,
        a_second_owner_is_refused(&mut fresh()).await,
    ]
}
