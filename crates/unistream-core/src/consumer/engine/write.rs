//! The checkpoint writes of a [`BatchRun`]: when one is due, the marking of
//! candidates it carries, the write itself (in place or in flight), and the
//! last write (`save_commit`, or the state saved at a stop or a halt).

use chrono::{DateTime, Utc};
use tracing::info;

use super::{BatchRun, Finish, Wrote, remaining};
use crate::checkpoint::{CheckpointStore, Status};
use crate::consumer::metrics::Write;
use crate::consumer::processor::Handler;
use crate::dlq::DeadLetterQueue;
use crate::error::{Error, Result};

impl<H, K, D> BatchRun<'_, '_, H, K, D>
where
    H: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    /// Whether candidates may be marked now: starting, room in flight,
    /// nothing marked left to start, and room under `lookahead` (records
    /// marked ahead of their key's front count until they run: without
    /// room, a write would mark nothing).
    pub(super) fn can_mark(&self, starting: bool) -> bool {
        starting
            && self.sched.in_flight() < self.in_flight_limit
            && self.sched.marked() + self.sched.in_flight() < self.lookahead
            && !self.sched.has_startable()
            && self.sched.has_candidate()
    }

    /// Whether a write is needed (none being in flight): the batch is not
    /// saved yet, candidates can be marked, an exhaustion must be durable
    /// before its letter, or results are unsaved and nothing else moves (or
    /// `checkpoint_interval`'s time is up). Once every record is done, the
    /// commit carries the results instead.
    pub(super) fn write_due(&self, mark: bool, now: DateTime<Utc>) -> bool {
        let idle = self.running.is_empty() && !self.sched.has_startable() && !mark;
        let timed = self
            .parts
            .config
            .checkpoint_interval
            .and_then(|i| i.time)
            .is_some_and(|t| remaining(self.last_write, now) >= t);
        let finished = self.sched.unfinished() == 0;
        self.first_write
            || mark
            || self.letters.any_unsaved()
            || (self.dirty.any() && !finished && (idle || timed))
    }

    /// Marks candidates, oldest first, until `lookahead` records are marked
    /// or in flight: each begins an attempt under one new lock id (counted
    /// and locked in the checkpoint, saved by the write that follows). A
    /// letter candidate is exhausted instead; a record whose waited-for lock
    /// expired has that attempt counted first (and may be exhausted by it);
    /// one still locked by another owner waits again.
    pub(super) fn mark(&mut self, now: DateTime<Utc>) -> Result<()> {
        *self.parts.lock_counter += 1;
        // Hot path (once per write): no `format!` machinery, and one buffer
        // for the batch (`begin_attempt` copies it).
        self.lock.clear();
        self.lock.push_str(self.parts.instance);
        self.lock.push('-');
        self.lock
            .push_str(itoa::Buffer::new().format(*self.parts.lock_counter));
        while self.sched.marked() + self.sched.in_flight() < self.lookahead {
            let Some(i) = self.sched.take_candidate() else {
                break;
            };
            if self.sched.is_letter(i) {
                if let Err(error) = &self.decoded[i]
                    && self.cp.trackers()[i].status != Status::Exhausted
                {
                    self.cp.exhaust(i, error.clone(), now)?;
                    self.dirty.add(i);
                }
                if self.dirty.flag[i] || self.first_write {
                    self.letters.unsaved(i);
                } else {
                    self.letters.ready(i);
                }
                self.exhausted(i);
                continue;
            }
            // A lock waited for has expired: that attempt counts (as on a
            // restart), and may have been the last.
            if self.cp.recover_expired(i, now)? {
                self.dirty.add(i);
                if self.cp.trackers()[i].status == Status::Exhausted {
                    self.letters.unsaved(i);
                    self.exhausted(i);
                    continue;
                }
            }
            if self.aged_out(i, now)? {
                continue;
            }
            match self.cp.begin_attempt(i, &self.lock, now) {
                Ok(_) => self.dirty.add(i),
                Err(Error::RecordLocked {
                    record_id, until, ..
                }) => {
                    info!(consumer = %self.parts.config.consumer_id, %record_id, %until, "record locked by another owner; waiting for the lock to expire");
                    self.sched
                        .unmark(i, until.max(now + chrono::Duration::milliseconds(1)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether record `i` reached `max_record_age` at `now` (and is not
    /// locked by another owner): then it is exhausted without another
    /// attempt, with an error saying so, and its letter waits for the write.
    fn aged_out(&mut self, i: usize, now: DateTime<Utc>) -> Result<bool> {
        let config = self.parts.config;
        let t = &self.cp.trackers()[i];
        let Some(deadline) =
            super::age_deadline(config, &self.records[i], self.decoded[i].as_ref().ok(), t)
        else {
            return Ok(false);
        };
        if now < deadline || t.is_locked(now) {
            return Ok(false);
        }
        let max = config.max_record_age.unwrap_or_default();
        let error = crate::error::ErrorInfo::new(format!(
            "the record reached the max record age ({max:?}, at {deadline}) after {} attempts: not attempted again",
            t.attempts
        ));
        info!(consumer = %config.consumer_id, record_id = %t.record_id, attempts = t.attempts, ?max, "record reached the max record age; sending it to the dead-letter queue");
        self.cp.exhaust(i, error, now)?;
        self.dirty.add(i);
        self.letters.unsaved(i);
        self.exhausted(i);
        self.report.aged_out += 1;
        Ok(true)
    }

    /// Writes everything changed since the last write: `save_batch` for the
    /// batch's first, else one `save_tracker` per changed tracker and a
    /// `sync`. Awaited here when nothing else could move while it runs (the
    /// first write, or nothing in flight: the common case of a sequential
    /// consumer, no boxed future nor `select!` round); else left in flight
    /// for [`wait`](Self::wait). The marks and exhaustions it carries are
    /// durable once it returns.
    pub(super) async fn write(&mut self, now: DateTime<Utc>) -> Result<Wrote> {
        let Some(store) = self.store.take() else {
            return Err(Error::InvalidTransition(
                "checkpoint write already in flight".into(),
            ));
        };
        let metrics = self.parts.metrics;
        self.last_write = now;
        if self.first_write {
            self.first_write = false;
            let since = metrics.start();
            let saved = store.save_batch(self.cp, self.records).await;
            metrics.wrote(Write::Batch, since, 1);
            saved?;
            self.dirty.clear();
            self.store = Some(store);
            self.made_durable_in_place();
            return Ok(Wrote::Awaited(None));
        }
        let since = self
            .dirty
            .save(store, self.cp, metrics, metrics.start())
            .await?;
        if self.running.is_empty() {
            // A shutdown is seen right after.
            let synced = store.sync().await;
            metrics.wrote(Write::Sync, since, 1);
            synced?;
            self.store = Some(store);
            self.made_durable_in_place();
            // The record just marked starts next, and its result reads the
            // clock: the write's start time serves until then.
            let hint = self.sched.has_startable().then_some(now);
            return Ok(Wrote::Awaited(hint));
        }
        self.letters.write_started();
        self.write = Some(Box::pin(async move {
            let r = store.sync().await;
            metrics.wrote(Write::Sync, since, 1);
            (store, r)
        }));
        Ok(Wrote::InFlight)
    }

    /// A write awaited in place returned: its marks may start, its
    /// exhaustions' letters may be sent.
    pub(super) fn made_durable_in_place(&mut self) {
        self.sched.made_durable();
        self.letters.saved_in_place();
    }

    /// After the loop: every record done (and no halt) — the last results
    /// and the commit in `save_commit`; else the marks never started are
    /// taken back and the state synced (a stop or a halt).
    pub(super) async fn finish(mut self) -> Result<Finish> {
        let Some(store) = self.store.take() else {
            return Err(Error::InvalidTransition(
                "checkpoint write still in flight".into(),
            ));
        };
        let metrics = self.parts.metrics;
        if self.sched.unfinished() == 0 && self.halted.is_none() {
            self.cp.commit()?;
            let since = self
                .dirty
                .save(store, self.cp, metrics, metrics.start())
                .await?;
            let committed = store.save_commit(self.cp).await;
            metrics.wrote(Write::Commit, since, 1);
            committed?;
            return Ok(Finish::Committed);
        }
        // Marked records that never started: their attempt is taken back.
        let now = self.parts.clock.now();
        for i in self.sched.marked_records() {
            if let Some(lock) = self.cp.trackers()[i].lock.clone() {
                self.cp.release(i, &lock, now)?;
                self.dirty.add(i);
            }
        }
        let since = self
            .dirty
            .save(store, self.cp, metrics, metrics.start())
            .await?;
        let synced = store.sync().await;
        metrics.wrote(Write::Sync, since, 1);
        synced?;
        match self.halted.take() {
            Some((record_id, attempts)) => Ok(Finish::Halted {
                record_id,
                attempts,
            }),
            None => Ok(Finish::Stopped),
        }
    }
}
