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
//! Persistence is the job of a [`CheckpointStore`] (`store.rs`); the state
//! machine itself (this file) is pure and tested transition by transition.
//! See `docs/checkpoint.md` for the stores and their formats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorInfo, Result};
use crate::source::Pointer;

mod repair;
mod store;
mod tracker;

pub use repair::Repaired;
pub use store::{CheckpointStore, StoredCheckpoint};
pub use tracker::{Status, Tracker};

/// The checkpoint of one consumer (one per shard or partition).
///
/// ```
/// use chrono::Utc;
/// use std::time::Duration;
/// use unistream_core::ErrorInfo;
/// use unistream_core::checkpoint::{Checkpoint, Status};
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the stream is closed or the current
    /// batch is not finished.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if `index` is not in the batch.
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
    ///
    /// # Errors
    ///
    /// [`Error::RecordLocked`] if another owner's lock has not expired;
    /// [`Error::InvalidTransition`] if the record is done, exhausted, out of
    /// attempts or not in the batch.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is not in progress under
    /// `lock_id`.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is not in progress under
    /// `lock_id`.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is not in progress under
    /// `lock_id`.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is already done or not in the
    /// batch.
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

    /// Settles a record that a filter dropped: `ignored` without an attempt
    /// (no processor call, `attempts` stays 0).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record was already attempted, is
    /// done, or is not in the batch.
    pub fn filter_out(&mut self, index: usize, now: DateTime<Utc>) -> Result<&Tracker> {
        let t = self.tracker_mut(index)?;
        if t.status != Status::Pending || t.attempts > 0 {
            return Err(Error::InvalidTransition(format!(
                "record {:?} is {:?} after {} attempts: only a pending record can be filtered out",
                t.record_id, t.status, t.attempts
            )));
        }
        t.status = Status::Ignored;
        t.update_time = now;
        Ok(t)
    }

    /// Records that the dead-letter queue accepted an exhausted record.
    /// Idempotent: marking a record already marked changes nothing (a done
    /// record never changes).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is not exhausted or not in
    /// the batch.
    pub fn mark_dead_lettered(&mut self, index: usize, now: DateTime<Utc>) -> Result<&Tracker> {
        let t = self.tracker_mut(index)?;
        if t.status != Status::Exhausted {
            return Err(Error::InvalidTransition(format!(
                "record {:?} is {:?}, only exhausted records go to the dead-letter queue",
                t.record_id, t.status
            )));
        }
        if !t.dead_lettered {
            t.dead_lettered = true;
            t.update_time = now;
        }
        Ok(t)
    }

    /// Takes back an attempt that was begun (and possibly saved) but never
    /// handed to the processor — e.g. a record marked ahead when a shutdown
    /// came: the attempt is not counted, the record is `pending` or `failed`
    /// again as before.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the record is not in progress under
    /// `lock_id`.
    pub fn release(&mut self, index: usize, lock_id: &str, now: DateTime<Utc>) -> Result<&Tracker> {
        let t = self.holder_mut(index, lock_id)?;
        t.attempts -= 1;
        t.status = if t.attempts == 0 {
            t.first_attempt_time = None;
            Status::Pending
        } else {
            Status::Failed
        };
        t.unlock();
        t.update_time = now;
        Ok(t)
    }

    /// Every `in_progress` record whose lock id starts with `owner` — the
    /// attempts of this process that were cut short (e.g. by a store error)
    /// — becomes `failed`, or `exhausted` if it has no attempts left, as in
    /// [`recover`](Self::recover). Returns the indexes changed.
    pub fn recover_owned(&mut self, owner: &str, now: DateTime<Utc>) -> Vec<usize> {
        let max = self.max_attempts;
        let mut changed = Vec::new();
        for (i, t) in self.trackers.iter_mut().enumerate() {
            if t.status == Status::InProgress
                && t.lock.as_deref().is_some_and(|l| l.starts_with(owner))
            {
                Self::set_failed(t, max, interrupted(t.attempts), now);
                changed.push(i);
            }
        }
        changed
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
                Self::set_failed(t, max, interrupted(t.attempts), now);
                changed.push(i);
            }
        }
        changed
    }

    /// [`recover`](Self::recover) for one record: if it is `in_progress`
    /// and its lock has expired at `now` (its owner is gone), it becomes
    /// `failed`, or `exhausted` if it has no attempts left. Returns whether
    /// it changed. The engine calls it when a lock it waited for expires.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if `index` is not in the batch.
    pub fn recover_expired(&mut self, index: usize, now: DateTime<Utc>) -> Result<bool> {
        let max = self.max_attempts;
        let t = self.tracker_mut(index)?;
        if t.status != Status::InProgress || t.is_locked(now) {
            return Ok(false);
        }
        Self::set_failed(t, max, interrupted(t.attempts), now);
        Ok(true)
    }

    /// Commits a finished batch: `start_pointer = next_pointer`. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] naming a record that is not done.
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
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if `index` is not in the batch.
    pub fn restore_tracker(&mut self, index: usize, tracker: Tracker) -> Result<()> {
        *self.tracker_mut(index)? = tracker;
        Ok(())
    }
}

fn interrupted(attempt: u32) -> ErrorInfo {
    ErrorInfo::new(format!(
        "attempt {attempt} was interrupted: its consumer stopped (crash, kill or lost lock) before recording a result"
    ))
}

#[cfg(test)]
mod tests;
