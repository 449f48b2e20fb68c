//! The results of a [`BatchRun`]: waiting for what is in flight, and
//! recording what ended — an attempt's or a slice's results, a letter sent,
//! the write returned.

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tracing::{debug, info, warn};

use super::{BatchRun, Event, remaining, until};
use crate::checkpoint::{CheckpointStore, Status};
use crate::consumer::config::OnExhausted;
use crate::consumer::processor::{Handler, Outcome};
use crate::consumer::work::Done;
use crate::dlq::DeadLetterQueue;
use crate::error::{BoxError, Error, ErrorInfo, Result};

impl<H, K, D> BatchRun<'_, '_, H, K, D>
where
    H: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    /// Waits for the first of: an attempt, slice or letter ending (then
    /// every other one already ended: the next write carries them all), the
    /// write in flight returning, a shutdown, the next retry or lock timer
    /// (when `starting`), or the shutdown grace running out.
    pub(super) async fn wait(&mut self, starting: bool, now: DateTime<Utc>) -> Result<()> {
        let clock = self.parts.clock;
        let timer = if starting {
            self.sched.next_timer()
        } else {
            None
        };
        let writing = self.write.is_some();
        let grace_until = self.grace_until;
        let event = {
            let write = &mut self.write;
            let written = async {
                match write.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(done) = self.running.next(), if !self.running.is_empty() => Event::Done(done),
                (s, r) = written, if writing => Event::Written(s, r),
                _ = self.parts.shutdown.cancelled(), if !self.stopping => Event::Shutdown,
                // Lazy: a disabled branch's expression is still evaluated.
                () = async { clock.sleep(remaining(now, timer.unwrap_or(now))).await }, if timer.is_some() => Event::Timer,
                () = async { clock.sleep(remaining(now, grace_until.unwrap_or(now))).await }, if grace_until.is_some() && !self.running.is_empty() => Event::GraceOver,
            }
        };
        match event {
            Event::Written(s, r) => {
                self.store = Some(s);
                self.write = None;
                r?;
                self.sched.made_durable();
                self.letters.write_done();
            }
            Event::Shutdown => self.stop(clock.now()),
            Event::Timer => {}
            Event::GraceOver => {
                warn!(consumer = %self.parts.config.consumer_id, records = self.sched.in_flight(), grace = ?self.parts.config.shutdown_grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
                self.running = FuturesUnordered::new();
                self.parts.metrics.in_flight(0);
            }
            Event::Done(done) => {
                self.on_done(done)?;
                // Every other result already in: the next write carries
                // them all (group commit), rather than one now and the rest
                // after.
                while let Some(Some(done)) = self.running.next().now_or_never() {
                    self.on_done(done)?;
                }
                self.parts.metrics.in_flight(self.sched.in_flight());
            }
        }
        Ok(())
    }

    /// One ended future: an attempt's or a slice's results are settled; a
    /// letter sent marks its record dead-lettered (a letter that could not
    /// be sent, after `dlq_retry`, fails the run).
    pub(super) fn on_done(&mut self, done: Done) -> Result<()> {
        match done {
            Done::One {
                index,
                lock,
                result,
            } => self.settle(index, &lock, result, self.parts.clock.now()),
            Done::Unit {
                indices,
                locks,
                results,
            } => {
                let now = self.parts.clock.now();
                for ((i, lock), result) in indices.into_iter().zip(locks).zip(results) {
                    self.settle(i, &lock, result, now)?;
                }
                Ok(())
            }
            Done::Letter {
                index,
                letter,
                result,
            } => {
                if let Err(e) = result {
                    return Err(Error::DeadLetter {
                        record_id: letter.record_id,
                        source: Box::new(e),
                    });
                }
                self.cp.mark_dead_lettered(index, self.parts.clock.now())?;
                self.dirty.add(index);
                self.sched.done(index);
                self.report.dead_lettered += 1;
                info!(consumer = %self.parts.config.consumer_id, record_id = %letter.record_id, attempts = letter.attempts, "record sent to the dead-letter queue");
                self.parts.handler.on_dead_letter(&letter);
                if self.parts.config.on_exhausted == OnExhausted::Halt {
                    self.halting = true;
                    self.halted
                        .get_or_insert((letter.record_id, letter.attempts));
                }
                Ok(())
            }
        }
    }

    /// Records one attempt's result (under `lock`) in the checkpoint: done
    /// if it succeeded or was ignored; else failed and waiting for its retry
    /// delay, or exhausted (a letter, unsaved).
    pub(super) fn settle(
        &mut self,
        i: usize,
        lock: &str,
        result: std::result::Result<Outcome, BoxError>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.report.attempts += 1;
        self.dirty.add(i);
        match result {
            Ok(Outcome::Succeeded) => {
                self.cp.succeed(i, lock, None, now)?;
                self.report.succeeded += 1;
                self.sched.done(i);
            }
            Ok(Outcome::SucceededWith(data)) => {
                self.cp.succeed(i, lock, Some(data), now)?;
                self.report.succeeded += 1;
                self.sched.done(i);
            }
            Ok(Outcome::Ignored) => {
                self.cp.ignore(i, lock, now)?;
                self.report.ignored += 1;
                self.sched.done(i);
            }
            Err(e) => {
                self.report.failures += 1;
                let t = self.cp.fail(i, lock, ErrorInfo::from_error(&*e), now)?;
                debug!(consumer = %self.parts.config.consumer_id, record_id = %t.record_id, attempt = t.attempts, status = ?t.status, error = %e, "attempt failed");
                if t.status == Status::Exhausted {
                    self.letters.unsaved(i);
                    self.exhausted(i);
                } else {
                    let config = self.parts.config;
                    let at = until(now, config.retry.delay_before(t.attempts + 1));
                    // A retry wait ends at the record's age limit, where it
                    // goes to the dead-letter queue.
                    let deadline = super::age_deadline(
                        config,
                        &self.records[i],
                        self.decoded[i].as_ref().ok(),
                        t,
                    );
                    self.sched.failed(i, deadline.map_or(at, |d| at.min(d)));
                }
            }
        }
        Ok(())
    }
}
