//! The checkpoint: where a consumer is in its stream, and the processing
//! status of every record of the batch in hand.
//!
//! # Invariants
//! - A batch is *finished* when every [`Tracker`] is [`Status::Succeeded`],
//!   [`Status::Ignored`], or [`Status::Exhausted`] **and** delivered to the
//!   dead-letter queue. Only a finished batch can be committed, and only a
//!   committed checkpoint moves `start_pointer` (to `next_pointer`).
//! - `attempts` only grows. It is incremented *before* an attempt runs and the
//!   increment is persisted before the user's code is called, so a crash
//!   during an attempt still counts it: `max_attempts` holds across restarts.
//! - A record is attempted only under a lock that expires `lock_expire`
//!   **seconds** after it was taken. An unexpired lock held by another owner
//!   forbids a new attempt ([`Error::RecordLocked`]); a result can only be
//!   recorded by the holder of the lock ([`Error::InvalidTransition`]).
//! - After a restart, a record found `in_progress` whose owner is gone (the
//!   store guarantees exclusive ownership, or the lock expired) is turned into
//!   `failed` — or `exhausted` when it has no attempts left — by
//!   [`Checkpoint::recover`], and then retried or dead-lettered like any other.
//! - A batch whose `next_pointer` is `None` is the last one: once finished and
//!   committed, the stream (or shard) is closed.
//!
//! # Transitions
//! ```text
//!             begin_attempt            succeed
//!  pending ───────────────► in_progress ────────► succeeded
//!  failed  ───────────────►     │  │    ignore
//!     ▲                         │  └────────────► ignored
//!     │ fail (attempts < max)   │ fail (attempts >= max)
//!     └─────────────────────────┤
//!                               ▼           mark_dead_lettered
//!                           exhausted ─────────────────────► (exhausted, delivered)
//! ```
//!
//! Persistence is the job of a [`CheckpointStore`]; the state machine itself
//! is pure and tested transition by transition.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::source::{Pointer, SourceRecord};

/// The processing status of a record. The numeric codes are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Not attempted yet.
    Pending = 0,
    /// An attempt is running (or was running when its owner died).
    InProgress = 10,
    /// The last attempt failed; attempts are left.
    Failed = 20,
    /// Every attempt failed; the record goes to the dead-letter queue.
    Exhausted = 30,
    /// Processed.
    Succeeded = 40,
    /// The processor chose to skip it.
    Ignored = 50,
}

impl Status {
    /// The seed's numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status of a numeric code.
    pub fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Pending,
            10 => Status::InProgress,
            20 => Status::Failed,
            30 => Status::Exhausted,
            40 => Status::Succeeded,
            50 => Status::Ignored,
            _ => return None,
        })
    }

    /// Whether no more attempts will be made.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Exhausted | Status::Succeeded | Status::Ignored
        )
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Status, D::Error> {
        let code = u8::deserialize(d)?;
        Status::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown status code {code}")))
    }
}

/// An error as stored in a tracker: its text and its cause chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `to_string()` of the error.
    pub message: String,
    /// `to_string()` of each `source()`, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl ErrorInfo {
    /// An error with no cause.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorInfo {
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// The text and cause chain of an error.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(e) = source {
            causes.push(e.to_string());
            source = e.source();
        }
        ErrorInfo {
            message: error.to_string(),
            causes,
        }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// The processing status of one record of the current batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tracker {
    /// The record's id (`undecodable@<pointer>` when it could not be decoded).
    pub record_id: String,
    /// Current status.
    pub status: Status,
    /// Attempts started so far, across restarts.
    pub attempts: u32,
    /// When the batch holding the record was started.
    #[serde(with = "crate::timefmt")]
    pub create_time: DateTime<Utc>,
    /// Last change.
    #[serde(with = "crate::timefmt")]
    pub update_time: DateTime<Utc>,
    /// Id of the lock of the running attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// When the lock was taken.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub lock_time: Option<DateTime<Utc>>,
    /// When the lock expires.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub lock_expire_time: Option<DateTime<Utc>>,
    /// When the first attempt started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub first_attempt_time: Option<DateTime<Utc>>,
    /// Data the processor returned on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorInfo>,
    /// Whether an exhausted record has been accepted by the dead-letter queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_lettered: bool,
}

impl Tracker {
    /// A pending tracker for `record_id`, created and updated at `now` (what
    /// a new batch starts with; stores that decode trackers field by field
    /// start from it).
    pub fn new(record_id: String, now: DateTime<Utc>) -> Self {
        Tracker {
            record_id,
            status: Status::Pending,
            attempts: 0,
            create_time: now,
            update_time: now,
            lock: None,
            lock_time: None,
            lock_expire_time: None,
            first_attempt_time: None,
            data: None,
            errors: None,
            dead_lettered: false,
        }
    }

    /// Whether this record needs nothing more: succeeded, ignored, or
    /// exhausted and delivered to the dead-letter queue.
    pub fn is_done(&self) -> bool {
        match self.status {
            Status::Succeeded | Status::Ignored => true,
            Status::Exhausted => self.dead_lettered,
            _ => false,
        }
    }

    /// Whether the lock is held and not expired at `now`.
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::InProgress && self.lock_expire_time.is_some_and(|t| t > now)
    }

    fn unlock(&mut self) {
        self.lock = None;
        self.lock_time = None;
        self.lock_expire_time = None;
    }
}

/// The checkpoint of one consumer (one per shard or partition).
///
/// ```
/// use chrono::Utc;
/// use std::time::Duration;
/// use unistream_core::checkpoint::{Checkpoint, ErrorInfo, Status};
/// use unistream_core::source::Pointer;
///
/// let now = Utc::now();
/// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 2, Duration::from_secs(900));
/// cp.start_batch(["a".to_string()], Some(Pointer::from("1")), now)?;
/// cp.begin_attempt(0, "lock-1", now)?;
/// cp.fail(0, "lock-1", ErrorInfo::new("boom"), now)?;
/// assert_eq!(cp.trackers()[0].status, Status::Failed);
/// cp.begin_attempt(0, "lock-2", now)?;
/// cp.fail(0, "lock-2", ErrorInfo::new("boom again"), now)?;
/// assert_eq!(cp.trackers()[0].status, Status::Exhausted); // 2 of 2 attempts used
/// cp.mark_dead_lettered(0, now)?;
/// cp.commit()?;
/// assert_eq!(cp.start_pointer().as_str(), "1");
/// # Ok::<(), unistream_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    consumer_id: String,
    initial_pointer: Pointer,
    start_pointer: Pointer,
    next_pointer: Option<Pointer>,
    batch_sequence: u64,
    max_attempts: u32,
    /// Seconds.
    lock_expire: u64,
    #[serde(default)]
    committed: bool,
    trackers: Vec<Tracker>,
}

impl Checkpoint {
    /// A fresh checkpoint that will read its first batch at `initial_pointer`.
    pub fn new(
        consumer_id: impl Into<String>,
        initial_pointer: Pointer,
        max_attempts: u32,
        lock_expire: Duration,
    ) -> Self {
        Checkpoint {
            consumer_id: consumer_id.into(),
            start_pointer: initial_pointer.clone(),
            next_pointer: Some(initial_pointer.clone()),
            initial_pointer,
            batch_sequence: 0,
            max_attempts: max_attempts.max(1),
            lock_expire: lock_expire.as_secs().max(1),
            committed: true,
            trackers: Vec::new(),
        }
    }

    /// The consumer this checkpoint belongs to.
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }
    /// Where the very first batch was read.
    pub fn initial_pointer(&self) -> &Pointer {
        &self.initial_pointer
    }
    /// Where the current batch was read from (after a commit: where the next
    /// one will be read).
    pub fn start_pointer(&self) -> &Pointer {
        &self.start_pointer
    }
    /// Where the batch after the current one starts; `None` if the current
    /// batch is the last of a closed stream.
    pub fn next_pointer(&self) -> Option<&Pointer> {
        self.next_pointer.as_ref()
    }
    /// How many batches were started.
    pub fn batch_sequence(&self) -> u64 {
        self.batch_sequence
    }
    /// Attempts allowed per record.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// Lock lifetime.
    pub fn lock_expire(&self) -> Duration {
        Duration::from_secs(self.lock_expire)
    }
    /// The trackers of the current batch, in record order.
    pub fn trackers(&self) -> &[Tracker] {
        &self.trackers
    }
    /// Whether the finished batch has been committed.
    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// Changes the limits (they may differ between runs). Applies to the
    /// attempts that follow; a record already exhausted stays exhausted.
    pub fn set_limits(&mut self, max_attempts: u32, lock_expire: Duration) {
        self.max_attempts = max_attempts.max(1);
        self.lock_expire = lock_expire.as_secs().max(1);
    }

    /// Whether every record of the batch is done (vacuously true before the
    /// first batch).
    pub fn is_batch_finished(&self) -> bool {
        self.trackers.iter().all(Tracker::is_done)
    }

    /// Whether the stream is closed: the last batch (no next pointer) is
    /// finished and committed.
    pub fn is_closed(&self) -> bool {
        self.committed && self.batch_sequence > 0 && self.next_pointer.is_none()
    }

    /// Starts a new batch of records with these ids. The previous batch must
    /// be finished (it is committed here if it was not yet).
    pub fn start_batch(
        &mut self,
        record_ids: impl IntoIterator<Item = String>,
        next_pointer: Option<Pointer>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::InvalidTransition(
                "cannot start a batch: the stream is closed".into(),
            ));
        }
        self.commit()?;
        self.trackers = record_ids
            .into_iter()
            .map(|id| Tracker::new(id, now))
            .collect();
        self.next_pointer = next_pointer;
        self.batch_sequence += 1;
        self.committed = false;
        Ok(())
    }

    /// The tracker of the record at `index` of the batch (for a store saving
    /// it); an error if there is none.
    pub fn tracker(&self, index: usize) -> Result<&Tracker> {
        let len = self.trackers.len();
        self.trackers.get(index).ok_or_else(|| {
            Error::InvalidTransition(format!("no record at index {index} (batch of {len})"))
        })
    }

    fn tracker_mut(&mut self, index: usize) -> Result<&mut Tracker> {
        let len = self.trackers.len();
        self.trackers.get_mut(index).ok_or_else(|| {
            Error::InvalidTransition(format!("no record at index {index} (batch of {len})"))
        })
    }

    /// Starts an attempt: `in_progress`, `attempts += 1`, lock `lock_id`
    /// until `now + lock_expire` seconds.
    pub fn begin_attempt(
        &mut self,
        index: usize,
        lock_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&Tracker> {
        let max = self.max_attempts;
        let expire = chrono::Duration::seconds(i64::try_from(self.lock_expire).unwrap_or(i64::MAX));
        let t = self.tracker_mut(index)?;
        match t.status {
            Status::Pending | Status::Failed => {}
            Status::InProgress if !t.is_locked(now) => {}
            Status::InProgress => {
                return Err(Error::RecordLocked {
                    record_id: t.record_id.clone(),
                    lock: t.lock.clone().unwrap_or_default(),
                    until: t.lock_expire_time.unwrap_or(now),
                });
            }
            s => {
                return Err(Error::InvalidTransition(format!(
                    "record {:?} is {s:?}: no more attempts",
                    t.record_id
                )));
            }
        }
        if t.attempts >= max {
            return Err(Error::InvalidTransition(format!(
                "record {:?} already had {} of {max} attempts",
                t.record_id, t.attempts
            )));
        }
        t.status = Status::InProgress;
        t.attempts += 1;
        t.lock = Some(lock_id.to_owned());
        t.lock_time = Some(now);
        t.lock_expire_time = Some(now + expire);
        t.first_attempt_time.get_or_insert(now);
        t.update_time = now;
        Ok(t)
    }

    fn holder_mut(&mut self, index: usize, lock_id: &str) -> Result<&mut Tracker> {
        let t = self.tracker_mut(index)?;
        if t.status != Status::InProgress || t.lock.as_deref() != Some(lock_id) {
            return Err(Error::InvalidTransition(format!(
                "record {:?} is {:?} with lock {:?}, not held by {lock_id:?}",
                t.record_id, t.status, t.lock
            )));
        }
        Ok(t)
    }

    /// Records a successful attempt.
    pub fn succeed(
        &mut self,
        index: usize,
        lock_id: &str,
        data: Option<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<&Tracker> {
        let t = self.holder_mut(index, lock_id)?;
        t.status = Status::Succeeded;
        t.data = data;
        t.errors = None;
        t.unlock();
        t.update_time = now;
        Ok(t)
    }

    /// Records that the processor chose to skip the record.
    pub fn ignore(&mut self, index: usize, lock_id: &str, now: DateTime<Utc>) -> Result<&Tracker> {
        let t = self.holder_mut(index, lock_id)?;
        t.status = Status::Ignored;
        t.errors = None;
        t.unlock();
        t.update_time = now;
        Ok(t)
    }

    /// Records a failed attempt: `exhausted` when no attempts are left, else
    /// `failed`.
    pub fn fail(
        &mut self,
        index: usize,
        lock_id: &str,
        error: ErrorInfo,
        now: DateTime<Utc>,
    ) -> Result<&Tracker> {
        let max = self.max_attempts;
        let t = self.holder_mut(index, lock_id)?;
        Self::set_failed(t, max, error, now);
        Ok(t)
    }

    fn set_failed(t: &mut Tracker, max_attempts: u32, error: ErrorInfo, now: DateTime<Utc>) {
        t.status = if t.attempts >= max_attempts {
            Status::Exhausted
        } else {
            Status::Failed
        };
        t.errors = Some(error);
        t.unlock();
        t.update_time = now;
    }

    /// Marks a record that can never succeed (e.g. it cannot be decoded) as
    /// exhausted without an attempt.
    pub fn exhaust(
        &mut self,
        index: usize,
        error: ErrorInfo,
        now: DateTime<Utc>,
    ) -> Result<&Tracker> {
        let t = self.tracker_mut(index)?;
        if t.status.is_final() || t.is_locked(now) {
            return Err(Error::InvalidTransition(format!(
                "record {:?} is {:?} and cannot be exhausted",
                t.record_id, t.status
            )));
        }
        t.status = Status::Exhausted;
        t.errors = Some(error);
        t.unlock();
        t.update_time = now;
        Ok(t)
    }

    /// Records that the dead-letter queue accepted an exhausted record.
    pub fn mark_dead_lettered(&mut self, index: usize, now: DateTime<Utc>) -> Result<&Tracker> {
        let t = self.tracker_mut(index)?;
        if t.status != Status::Exhausted {
            return Err(Error::InvalidTransition(format!(
                "record {:?} is {:?}, only exhausted records go to the dead-letter queue",
                t.record_id, t.status
            )));
        }
        t.dead_lettered = true;
        t.update_time = now;
        Ok(t)
    }

    /// After a restart: every `in_progress` record whose attempt was
    /// interrupted — all of them when `exclusive` (the store guarantees no
    /// other consumer is alive), else only those whose lock expired — becomes
    /// `failed`, or `exhausted` if it has no attempts left. Its attempts keep
    /// counting. Returns the indexes changed.
    pub fn recover(&mut self, now: DateTime<Utc>, exclusive: bool) -> Vec<usize> {
        let max = self.max_attempts;
        let mut changed = Vec::new();
        for (i, t) in self.trackers.iter_mut().enumerate() {
            if t.status == Status::InProgress && (exclusive || !t.is_locked(now)) {
                let error = ErrorInfo::new(format!(
                    "attempt {} was interrupted: its consumer stopped (crash, kill or lost lock) before recording a result",
                    t.attempts
                ));
                Self::set_failed(t, max, error, now);
                changed.push(i);
            }
        }
        changed
    }

    /// Commits a finished batch: `start_pointer = next_pointer`. Idempotent.
    pub fn commit(&mut self) -> Result<()> {
        if self.committed {
            return Ok(());
        }
        if let Some(t) = self.trackers.iter().find(|t| !t.is_done()) {
            return Err(Error::InvalidTransition(format!(
                "cannot commit: record {:?} is {:?}",
                t.record_id, t.status
            )));
        }
        if let Some(next) = &self.next_pointer {
            self.start_pointer = next.clone();
        }
        self.committed = true;
        Ok(())
    }

    /// The checkpoint without its trackers (for stores that keep trackers
    /// apart, e.g. one map entry per record).
    pub fn without_trackers(&self) -> Checkpoint {
        Checkpoint {
            trackers: Vec::new(),
            ..self.clone()
        }
    }

    /// Puts back the trackers of a checkpoint stored by
    /// [`without_trackers`](Self::without_trackers).
    pub fn with_trackers(mut self, trackers: Vec<Tracker>) -> Checkpoint {
        self.trackers = trackers;
        self
    }

    /// Puts a tracker as a store loaded it (replaying a journal).
    pub fn restore_tracker(&mut self, index: usize, tracker: Tracker) -> Result<()> {
        *self.tracker_mut(index)? = tracker;
        Ok(())
    }
}

/// A checkpoint as loaded from a store, with the records of its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The records of its current batch, in tracker order.
    pub records: Vec<SourceRecord>,
}

/// Persists a [`Checkpoint`] and its batch's records.
///
/// Contract:
/// - `save_batch` is durable (to the store's own durability)
///   when it returns, records included, and atomic: after a crash, `load`
///   returns either the previous batch or the new one, whole.
/// - `save_tracker` MAY buffer; everything saved is durable once `sync` or
///   `save_commit` returns. The engine calls `sync` before it runs user code,
///   so an attempt is always on record before it starts.
/// - `load` never returns a silently reset checkpoint: unreadable data is
///   [`Error::CheckpointUnreadable`] or [`Error::Corrupt`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::Utc;
/// use std::time::Duration;
/// use unistream_core::checkpoint::{Checkpoint, CheckpointStore};
/// use unistream_core::memory::MemoryCheckpointStore;
/// use unistream_core::source::{Pointer, SourceRecord};
///
/// let mut store = MemoryCheckpointStore::default();
/// assert!(store.load().await?.is_none());
/// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 3, Duration::from_secs(60));
/// cp.start_batch(["a".to_string()], Some(Pointer::from("1")), Utc::now())?;
/// let records = vec![SourceRecord::new(Pointer::from("0"), b"{}".to_vec())];
/// store.save_batch(&cp, &records).await?;
/// let loaded = store.load().await?.expect("saved");
/// assert_eq!(loaded.checkpoint, cp);
/// assert_eq!(loaded.records, records);
/// # Ok(()) }
/// ```
pub trait CheckpointStore: Send {
    /// Whether a successful `load` makes this process the only live owner of
    /// the checkpoint (e.g. an exclusive file lock), so that records found
    /// `in_progress` were left by a dead consumer and can be retried at once.
    fn is_exclusive(&self) -> bool {
        false
    }

    /// Loads the checkpoint, or `None` if there is none yet.
    fn load(&mut self) -> impl Future<Output = Result<Option<StoredCheckpoint>>> + Send;

    /// Saves a newly started batch: the whole checkpoint and its records.
    fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Saves the change of one tracker (may be buffered until `sync`).
    fn save_tracker(
        &mut self,
        checkpoint: &Checkpoint,
        index: usize,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Makes every saved change durable.
    fn sync(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Saves a commit (durably).
    fn save_commit(&mut self, checkpoint: &Checkpoint) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_781_446, 0).unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn batch(n: usize, max_attempts: u32) -> Checkpoint {
        let mut cp = Checkpoint::new(
            "c",
            Pointer::from("p0"),
            max_attempts,
            Duration::from_secs(30),
        );
        cp.start_batch(
            (0..n).map(|i| format!("r{i}")),
            Some(Pointer::from("p1")),
            t0(),
        )
        .unwrap();
        cp
    }

    #[test]
    fn status_codes_are_the_seeds() {
        let all = [
            (Status::Pending, 0),
            (Status::InProgress, 10),
            (Status::Failed, 20),
            (Status::Exhausted, 30),
            (Status::Succeeded, 40),
            (Status::Ignored, 50),
        ];
        for (s, code) in all {
            assert_eq!(s.code(), code);
            assert_eq!(Status::from_code(code), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), code.to_string());
        }
        assert_eq!(Status::from_code(7), None);
        assert!(serde_json::from_str::<Status>("7").is_err());
    }

    #[test]
    fn fresh_checkpoint_is_finished_committed_and_not_closed() {
        let cp = Checkpoint::new("c", Pointer::from("p0"), 3, Duration::from_secs(30));
        assert!(cp.is_batch_finished());
        assert!(cp.is_committed());
        assert!(!cp.is_closed());
        assert_eq!(cp.batch_sequence(), 0);
        assert_eq!(cp.start_pointer().as_str(), "p0");
    }

    #[test]
    fn new_batch_sets_every_tracker_pending_and_counts_the_batch() {
        let cp = batch(3, 3);
        assert_eq!(cp.batch_sequence(), 1);
        assert_eq!(cp.next_pointer().unwrap().as_str(), "p1");
        assert_eq!(cp.start_pointer().as_str(), "p0");
        assert!(!cp.is_committed());
        for t in cp.trackers() {
            assert_eq!((t.status, t.attempts), (Status::Pending, 0));
        }
    }

    #[test]
    fn begin_attempt_locks_for_lock_expire_seconds() {
        let mut cp = batch(1, 3);
        let t = cp.begin_attempt(0, "L", t0()).unwrap();
        assert_eq!(t.status, Status::InProgress);
        assert_eq!(t.attempts, 1);
        assert_eq!(t.lock.as_deref(), Some("L"));
        assert_eq!(t.lock_time, Some(t0()));
        // Seconds, not days (defect 1 of the original).
        assert_eq!(t.lock_expire_time, Some(t0() + secs(30)));
        assert_eq!(t.first_attempt_time, Some(t0()));
    }

    #[test]
    fn an_unexpired_foreign_lock_forbids_an_attempt() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        let err = cp.begin_attempt(0, "B", t0() + secs(29)).unwrap_err();
        assert!(
            matches!(err, Error::RecordLocked { ref lock, .. } if lock == "A"),
            "{err}"
        );
        // Once expired, another owner may take it; the attempt counts.
        let t = cp.begin_attempt(0, "B", t0() + secs(30)).unwrap();
        assert_eq!((t.attempts, t.lock.as_deref()), (2, Some("B")));
    }

    #[test]
    fn only_the_lock_holder_records_a_result() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        assert!(matches!(
            cp.succeed(0, "B", None, t0()),
            Err(Error::InvalidTransition(_))
        ));
        assert!(matches!(
            cp.fail(0, "B", ErrorInfo::new("x"), t0()),
            Err(Error::InvalidTransition(_))
        ));
        // Nothing recorded without an attempt either.
        let mut cp = batch(1, 3);
        assert!(cp.succeed(0, "A", None, t0()).is_err());
    }

    #[test]
    fn success_unlocks_and_clears_errors() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.fail(0, "A", ErrorInfo::new("first"), t0()).unwrap();
        cp.begin_attempt(0, "B", t0() + secs(1)).unwrap();
        let t = cp
            .succeed(0, "B", Some(serde_json::json!({"ok": 1})), t0() + secs(2))
            .unwrap();
        assert_eq!(t.status, Status::Succeeded);
        assert_eq!(t.attempts, 2);
        assert_eq!(t.errors, None);
        assert_eq!(t.lock, None);
        assert_eq!(t.lock_expire_time, None);
        assert_eq!(t.update_time, t0() + secs(2));
        assert!(cp.is_batch_finished());
    }

    #[test]
    fn failure_keeps_error_and_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        let t = cp.fail(0, "A", ErrorInfo::from_error(&e), t0()).unwrap();
        assert_eq!(t.status, Status::Failed);
        assert_eq!(t.lock, None);
        let errors = t.errors.clone().unwrap();
        assert_eq!(errors.message, "outer");
        assert_eq!(errors.causes, vec!["inner".to_string()]);
        assert_eq!(errors.to_string(), "outer: inner");
    }

    #[test]
    fn last_failure_exhausts_and_forbids_more_attempts() {
        let mut cp = batch(1, 2);
        for lock in ["A", "B"] {
            cp.begin_attempt(0, lock, t0()).unwrap();
            cp.fail(0, lock, ErrorInfo::new("x"), t0()).unwrap();
        }
        assert_eq!(cp.trackers()[0].status, Status::Exhausted);
        assert!(matches!(
            cp.begin_attempt(0, "C", t0()),
            Err(Error::InvalidTransition(_))
        ));
        // Exhausted but not delivered: the batch is not finished.
        assert!(!cp.is_batch_finished());
        assert!(cp.commit().is_err());
        cp.mark_dead_lettered(0, t0()).unwrap();
        assert!(cp.is_batch_finished());
    }

    #[test]
    fn ignore_is_final() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        assert_eq!(cp.ignore(0, "A", t0()).unwrap().status, Status::Ignored);
        assert!(cp.is_batch_finished());
        assert!(cp.begin_attempt(0, "B", t0()).is_err());
    }

    #[test]
    fn only_exhausted_records_are_dead_lettered() {
        let mut cp = batch(1, 3);
        assert!(cp.mark_dead_lettered(0, t0()).is_err());
        cp.exhaust(0, ErrorInfo::new("undecodable"), t0()).unwrap();
        assert_eq!(cp.trackers()[0].attempts, 0);
        cp.mark_dead_lettered(0, t0()).unwrap();
        assert!(cp.trackers()[0].is_done());
    }

    #[test]
    fn commit_moves_start_pointer_and_is_idempotent() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        assert!(cp.commit().is_err(), "unfinished batch must not commit");
        cp.succeed(0, "A", None, t0()).unwrap();
        cp.commit().unwrap();
        cp.commit().unwrap();
        assert_eq!(cp.start_pointer().as_str(), "p1");
        assert!(cp.is_committed());
        assert!(!cp.is_closed());
    }

    #[test]
    fn starting_a_batch_commits_a_finished_one_and_refuses_an_unfinished_one() {
        let mut cp = batch(1, 3);
        assert!(cp.start_batch(["x".into()], None, t0()).is_err());
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.succeed(0, "A", None, t0()).unwrap();
        cp.start_batch(["x".into()], Some(Pointer::from("p2")), t0())
            .unwrap();
        assert_eq!(cp.start_pointer().as_str(), "p1");
        assert_eq!(cp.batch_sequence(), 2);
    }

    #[test]
    fn restart_in_progress_with_expired_lock_is_retried_with_attempts_kept() {
        let mut cp = batch(2, 3);
        cp.begin_attempt(0, "dead", t0()).unwrap();
        // Not exclusive, lock still valid: left alone.
        assert!(cp.recover(t0() + secs(10), false).is_empty());
        assert_eq!(cp.trackers()[0].status, Status::InProgress);
        // Expired: failed, attempts kept, error explains.
        assert_eq!(cp.recover(t0() + secs(31), false), vec![0]);
        let t = &cp.trackers()[0];
        assert_eq!((t.status, t.attempts), (Status::Failed, 1));
        assert!(t.errors.as_ref().unwrap().message.contains("interrupted"));
        assert_eq!(
            cp.begin_attempt(0, "new", t0() + secs(31))
                .unwrap()
                .attempts,
            2
        );
    }

    #[test]
    fn restart_in_progress_under_an_exclusive_store_is_retried_at_once() {
        let mut cp = batch(1, 3);
        cp.begin_attempt(0, "dead", t0()).unwrap();
        assert_eq!(cp.recover(t0(), true), vec![0]);
        assert_eq!(cp.trackers()[0].status, Status::Failed);
    }

    #[test]
    fn restart_in_progress_on_the_last_attempt_is_exhausted() {
        let mut cp = batch(1, 2);
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
        cp.begin_attempt(0, "dead", t0()).unwrap();
        cp.recover(t0(), true);
        let t = &cp.trackers()[0];
        assert_eq!((t.status, t.attempts), (Status::Exhausted, 2));
    }

    #[test]
    fn restart_failed_with_attempts_left_and_exhausted_are_untouched() {
        let mut cp = batch(2, 2);
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
        cp.exhaust(1, ErrorInfo::new("y"), t0()).unwrap();
        let before = cp.clone();
        assert!(cp.recover(t0() + secs(1000), true).is_empty());
        assert_eq!(cp, before);
        assert_eq!(cp.trackers()[0].status, Status::Failed);
        assert_eq!(cp.trackers()[1].status, Status::Exhausted);
    }

    #[test]
    fn finished_batch_with_no_next_pointer_closes_the_stream() {
        let mut cp = Checkpoint::new("c", Pointer::from("p0"), 3, Duration::from_secs(30));
        cp.start_batch(["a".into()], None, t0()).unwrap();
        assert!(!cp.is_closed());
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.succeed(0, "A", None, t0()).unwrap();
        assert!(!cp.is_closed(), "closed only once committed");
        cp.commit().unwrap();
        assert!(cp.is_closed());
        assert_eq!(cp.start_pointer().as_str(), "p0");
        assert!(cp.start_batch(["b".into()], None, t0()).is_err());
    }

    #[test]
    fn serde_round_trip_keeps_everything() {
        let mut cp = batch(3, 3);
        cp.begin_attempt(0, "A", t0()).unwrap();
        cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
        cp.begin_attempt(1, "B", t0()).unwrap();
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cp);
    }
}
