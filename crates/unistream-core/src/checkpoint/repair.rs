//! What an operator may do to a checkpoint by hand (the `unistream
//! checkpoint reset` and `retry` commands): move the start of the next
//! batch, give an exhausted record another round. Both are plain state
//! changes; the caller must hold the checkpoint (its store's lock, or the
//! shard's lease) and save the result with
//! [`CheckpointStore::save_batch`](super::CheckpointStore::save_batch).

use chrono::{DateTime, Utc};

use super::{Checkpoint, Status, StoredCheckpoint};
use crate::error::{Error, Result};
use crate::source::Pointer;

/// What a store's `repair` did: the checkpoint before and after the change,
/// what the change returned, and whether it was written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Repaired<T> {
    /// The checkpoint as read.
    pub before: Checkpoint,
    /// The checkpoint and records as changed (written if `applied`).
    pub after: StoredCheckpoint,
    /// What the change returned.
    pub outcome: T,
    /// Whether it was written (`false`: a dry run).
    pub applied: bool,
}

impl<T> Repaired<T> {
    /// A repair's result.
    pub fn new(before: Checkpoint, after: StoredCheckpoint, outcome: T, applied: bool) -> Self {
        Repaired {
            before,
            after,
            outcome,
            applied,
        }
    }
}

impl Checkpoint {
    /// Refuses a repair while a record is in progress under a lock that has
    /// not expired at `now`: some consumer is working on the batch. `store`
    /// names the store in the error.
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointOwned`] naming the record, its lock and until
    /// when.
    pub fn refuse_while_in_progress(&self, store: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(t) = self.trackers.iter().find(|t| t.is_locked(now)) else {
            return Ok(());
        };
        Err(Error::CheckpointOwned {
            store: store.to_owned(),
            key: self.consumer_id().to_owned(),
            detail: format!(
                "record {:?} is being processed by a running consumer (lock {} until {}): stop it first",
                t.record_id,
                t.lock.as_deref().unwrap_or("?"),
                t.lock_expire_time.map_or("?".into(), |t| t.to_rfc3339())
            ),
        })
    }

    /// Drops the current batch, committed or not, and makes the next batch
    /// start at `pointer` (in the source's terms: for Kinesis a sequence
    /// number, read after it, or `TRIM_HORIZON`, `LATEST`,
    /// `AT_TIMESTAMP:<ms>`). Records of the dropped batch that were not done
    /// are skipped unless `pointer` is at or before them; a closed stream is
    /// opened again. Returns how many records of the dropped batch were not
    /// done.
    ///
    /// ```
    /// use chrono::Utc;
    /// use std::time::Duration;
    /// use unistream_core::checkpoint::Checkpoint;
    /// use unistream_core::source::Pointer;
    ///
    /// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 3, Duration::from_secs(60));
    /// cp.start_batch(["a".to_string(), "b".to_string()], Some(Pointer::from("2")), Utc::now())?;
    /// assert_eq!(cp.reset_to(Pointer::from("TRIM_HORIZON")), 2);
    /// assert!(cp.is_committed() && cp.trackers().is_empty());
    /// assert_eq!(cp.start_pointer().as_str(), "TRIM_HORIZON");
    /// # Ok::<(), unistream_core::Error>(())
    /// ```
    pub fn reset_to(&mut self, pointer: Pointer) -> usize {
        let dropped = self.trackers.iter().filter(|t| !t.is_done()).count();
        self.trackers.clear();
        self.start_pointer = pointer.clone();
        self.next_pointer = Some(pointer);
        self.committed = true;
        dropped
    }

    /// Gives the record `record_id` of the current, uncommitted batch
    /// another round: it becomes `pending` with no attempts and no error, so
    /// the consumer runs it again with all of its attempts. For a record
    /// that is failed or exhausted (e.g. a consumer halted by
    /// [`OnExhausted::Halt`](crate::consumer::OnExhausted::Halt) after the
    /// cause was fixed). A record already dead-lettered keeps its letter in
    /// the queue: the tracker returned says so (`dead_lettered` is cleared
    /// on the tracker; the caller warns).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] if the batch is committed (its records
    /// are gone from the checkpoint: redrive the dead letter instead), if no
    /// record of the batch has this id, or if the record is not failed or
    /// exhausted (pending, running, succeeded or ignored).
    ///
    /// ```
    /// use chrono::Utc;
    /// use std::time::Duration;
    /// use unistream_core::ErrorInfo;
    /// use unistream_core::checkpoint::{Checkpoint, Status};
    /// use unistream_core::source::Pointer;
    ///
    /// let now = Utc::now();
    /// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 1, Duration::from_secs(60));
    /// cp.start_batch(["a".to_string()], Some(Pointer::from("1")), now)?;
    /// cp.begin_attempt(0, "l1", now)?;
    /// cp.fail(0, "l1", ErrorInfo::new("boom"), now)?;
    /// assert_eq!(cp.trackers()[0].status, Status::Exhausted);
    /// let before = cp.retry_record("a", now)?;
    /// assert_eq!(before.status, Status::Exhausted);
    /// assert_eq!((cp.trackers()[0].status, cp.trackers()[0].attempts), (Status::Pending, 0));
    /// # Ok::<(), unistream_core::Error>(())
    /// ```
    pub fn retry_record(&mut self, record_id: &str, now: DateTime<Utc>) -> Result<super::Tracker> {
        if self.committed {
            return Err(Error::InvalidTransition(format!(
                "batch {} is committed: its records are done and no longer retried from the checkpoint (a dead-lettered record is retried by redriving its letter)",
                self.batch_sequence
            )));
        }
        let batch = self.batch_sequence;
        let t = self
            .trackers
            .iter_mut()
            .find(|t| t.record_id == record_id)
            .ok_or_else(|| {
                Error::InvalidTransition(format!(
                    "no record {record_id:?} in batch {batch} of the checkpoint"
                ))
            })?;
        if !matches!(t.status, Status::Failed | Status::Exhausted) {
            return Err(Error::InvalidTransition(format!(
                "record {record_id:?} is {:?}: only a failed or exhausted record can be retried",
                t.status
            )));
        }
        let before = t.clone();
        t.status = Status::Pending;
        t.attempts = 0;
        t.errors = None;
        t.dead_lettered = false;
        t.first_attempt_time = None;
        t.unlock();
        t.update_time = now;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ErrorInfo;

    fn exhausted_batch() -> Checkpoint {
        let now = Utc::now();
        let mut cp = Checkpoint::new("c1", Pointer::from("0"), 1, Duration::from_secs(60));
        cp.start_batch(
            ["a".to_string(), "b".to_string(), "c".to_string()],
            Some(Pointer::from("3")),
            now,
        )
        .unwrap();
        cp.begin_attempt(0, "l", now).unwrap();
        cp.fail(0, "l", ErrorInfo::new("boom"), now).unwrap();
        cp.mark_dead_lettered(0, now).unwrap();
        cp.begin_attempt(1, "l", now).unwrap();
        cp.succeed(1, "l", None, now).unwrap();
        cp
    }

    #[test]
    fn a_repair_is_refused_while_a_lock_is_live_and_allowed_once_it_expired() {
        let mut cp = exhausted_batch();
        let now = Utc::now();
        assert!(cp.refuse_while_in_progress("s", now).is_ok());
        cp.begin_attempt(2, "worker-1", now).unwrap();
        let e = cp
            .refuse_while_in_progress("s", now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("record \"c\"") && e.contains("lock worker-1"),
            "{e}"
        );
        let later = now + chrono::Duration::seconds(61);
        assert!(cp.refuse_while_in_progress("s", later).is_ok());
    }

    #[test]
    fn a_retried_record_runs_again_with_every_attempt_and_the_batch_commits_after_it() {
        let mut cp = exhausted_batch();
        let now = Utc::now();
        let before = cp.retry_record("a", now).unwrap();
        assert!(before.dead_lettered);
        let t = &cp.trackers()[0];
        assert_eq!(
            (t.status, t.attempts, t.dead_lettered),
            (Status::Pending, 0, false)
        );
        assert!(t.errors.is_none() && t.lock.is_none());
        assert!(
            cp.commit().is_err(),
            "a retried record must block the commit"
        );
        cp.begin_attempt(0, "l2", now).unwrap();
        cp.succeed(0, "l2", None, now).unwrap();
        cp.begin_attempt(2, "l2", now).unwrap();
        cp.succeed(2, "l2", None, now).unwrap();
        cp.commit().unwrap();
        assert_eq!(cp.start_pointer().as_str(), "3");
    }

    #[test]
    fn retry_refuses_what_is_not_failed_or_exhausted_and_a_committed_batch() {
        let mut cp = exhausted_batch();
        let now = Utc::now();
        let e = cp.retry_record("b", now).unwrap_err().to_string();
        assert!(e.contains("Succeeded"), "{e}");
        let e = cp.retry_record("c", now).unwrap_err().to_string();
        assert!(e.contains("Pending"), "{e}");
        let e = cp.retry_record("zz", now).unwrap_err().to_string();
        assert!(e.contains("no record \"zz\""), "{e}");
        cp.begin_attempt(2, "l", now).unwrap();
        cp.succeed(2, "l", None, now).unwrap();
        cp.commit().unwrap();
        let e = cp.retry_record("a", now).unwrap_err().to_string();
        assert!(e.contains("committed"), "{e}");
    }

    #[test]
    fn reset_drops_the_batch_and_opens_a_closed_stream() {
        let now = Utc::now();
        let mut cp = Checkpoint::new("c1", Pointer::from("0"), 1, Duration::from_secs(60));
        cp.start_batch(["a".to_string()], None, now).unwrap();
        cp.begin_attempt(0, "l", now).unwrap();
        cp.succeed(0, "l", None, now).unwrap();
        cp.commit().unwrap();
        assert!(cp.is_closed());
        assert_eq!(cp.reset_to(Pointer::from("5")), 0);
        assert!(!cp.is_closed());
        assert_eq!(cp.next_pointer().map(Pointer::as_str), Some("5"));
        cp.start_batch(["b".to_string()], Some(Pointer::from("6")), now)
            .unwrap();
        assert_eq!(cp.batch_sequence(), 2);
        assert_eq!(exhausted_batch().reset_to(Pointer::from("9")), 1);
    }
}
