//! Runs the records of one batch: the key-order [`Schedule`], attempts and
//! dead letters in flight, and group-committed checkpoint writes — a
//! [`BatchRun`], whose methods are the steps of its loop.
//!
//! The loop ([`BatchRun::run`]), until every record is done (or a stop):
//! 1. start every marked record whose write is durable, up to the in-flight
//!    limit (grouped into slices for a slice processor) —
//!    [`start_ready`](BatchRun::start_ready), or for a sequential consumer
//!    with nothing else in hand [`run_in_place`](BatchRun::run_in_place);
//! 2. send exhausted records whose exhaustion is durable to the dead-letter
//!    queue (concurrently with the rest) — [`send_letters`](BatchRun::send_letters);
//! 3. if no write is in flight and one is needed — records could start but
//!    none is marked, an exhaustion must be durable before its letter is
//!    sent, or nothing runs and results are unsaved — mark the candidates
//!    (begin their attempts in the checkpoint, one lock id for the group)
//!    and write everything changed since the last write in one call —
//!    [`write_due`](BatchRun::write_due), [`mark`](BatchRun::mark),
//!    [`write`](BatchRun::write);
//! 4. wait for an attempt, a letter, the write, a timer or a shutdown —
//!    [`wait`](BatchRun::wait), whose results [`settle`](BatchRun::settle).
//!
//! So every transition made while a write is in flight goes into the next
//! write, and an attempt is durable before it starts: `max_attempts` holds
//! across `kill -9`. The batch's first write is `save_batch` itself, which
//! carries the first group's marks; the last is `save_commit`, which carries
//! the last results ([`finish`](BatchRun::finish)).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{ConsumerConfig, OnExhausted};
use super::letters::Letters;
use super::metrics::{EngineMetrics, Write};
use super::processor::{Handler, Outcome};
use super::report::BatchReport;
use super::schedule::Schedule;
use super::work::{Dirty, Done, Running, dead_letter, lanes, launch, one_item, send_letter};
use crate::checkpoint::{Checkpoint, CheckpointStore, Status};
use crate::clock::SharedClock;
use crate::dlq::DeadLetterQueue;
use crate::error::{BoxError, Error, ErrorInfo, Result};
use crate::record::Record;
use crate::source::SourceRecord;

/// What the engine borrows from the consumer for one batch.
pub(super) struct Parts<'a, H, K, D> {
    pub(super) config: &'a ConsumerConfig,
    pub(super) handler: &'a H,
    pub(super) store: &'a mut K,
    pub(super) dlq: &'a D,
    pub(super) clock: &'a SharedClock,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) instance: &'a str,
    pub(super) lock_counter: &'a mut u64,
    pub(super) metrics: &'a EngineMetrics,
}

/// How a batch run ended (when it did not fail).
#[derive(Debug)]
pub(super) enum Finish {
    /// Every record is done and the batch is committed.
    Committed,
    /// A shutdown: the state is saved, the batch unfinished.
    Stopped,
    /// `OnExhausted::Halt` after this record went to the dead-letter queue.
    Halted { record_id: String, attempts: u32 },
}

/// What woke [`BatchRun::wait`].
enum Event<'s, K> {
    Done(Done),
    Written(&'s mut K, Result<()>),
    Shutdown,
    Timer,
    GraceOver,
}

/// How [`BatchRun::write`] left the write.
enum Wrote {
    /// Awaited in place and durable; the next step may start at this time
    /// (one clock read saved) or reads the clock.
    Awaited(Option<DateTime<Utc>>),
    /// In flight: [`BatchRun::wait`] sees it return.
    InFlight,
}

/// A checkpoint write in flight; it hands the store back.
type Writing<'s, K> = Pin<Box<dyn Future<Output = (&'s mut K, Result<()>)> + Send + 's>>;

fn until(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

fn remaining(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// Runs the unfinished records of the checkpoint's batch. `new_batch`: the
/// batch was just started in memory and is not saved yet (its first write is
/// `save_batch`).
pub(super) async fn run_records<'a, H, K, D>(
    parts: Parts<'a, H, K, D>,
    cp: &mut Checkpoint,
    records: &'a [SourceRecord],
    decoded: &'a [std::result::Result<H::Record, ErrorInfo>],
    new_batch: bool,
    report: &mut BatchReport,
) -> Result<Finish>
where
    H: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    BatchRun::new(parts, cp, records, decoded, new_batch, report)
        .run()
        .await
}

/// One batch's run: what it borrows, its settings, and the state of its
/// loop (see the module docs).
///
/// Invariants between steps:
/// - the store is in `store` or lent to `write`, never both;
/// - every tracker changed since the last write's start is in `dirty`;
/// - a record runs (is in `running`) only after the write that marked it
///   returned (`Schedule::made_durable`);
/// - a letter is sent only from `letters`' ready list.
struct BatchRun<'a, 'c, H: Handler, K, D> {
    config: &'a ConsumerConfig,
    handler: &'a H,
    dlq: &'a D,
    clock: &'a SharedClock,
    shutdown: &'a CancellationToken,
    instance: &'a str,
    lock_counter: &'a mut u64,
    metrics: &'a EngineMetrics,
    cp: &'c mut Checkpoint,
    records: &'a [SourceRecord],
    decoded: &'a [std::result::Result<H::Record, ErrorInfo>],
    report: &'c mut BatchReport,

    /// Records per processor call.
    max_slice: usize,
    /// Records in flight at most.
    in_flight_limit: usize,
    /// One record at a time, in the batch's order.
    sequential: bool,
    /// Records marked ahead of the ones in flight, at most.
    lookahead: usize,

    sched: Schedule,
    dirty: Dirty,
    letters: Letters,
    /// The store, when no write holds it.
    store: Option<&'a mut K>,
    /// The write in flight.
    write: Option<Writing<'a, K>>,
    /// Attempts, slices and letters in flight.
    running: Running<'a>,
    /// The batch is not saved yet: the next write is `save_batch`.
    first_write: bool,
    /// A shutdown was seen: nothing starts, the state is saved.
    stopping: bool,
    /// When the attempts in flight are dropped after a shutdown.
    grace_until: Option<DateTime<Utc>>,
    /// `OnExhausted::Halt` and a record is exhausted: nothing starts.
    halting: bool,
    /// The record a halt is for, once its letter is sent.
    halted: Option<(String, u32)>,
    /// When the last write started (for `checkpoint_interval`'s time).
    last_write: DateTime<Utc>,
    /// The lock id of the last group marked (one buffer for the batch).
    lock: String,
}

impl<'a, 'c, H, K, D> BatchRun<'a, 'c, H, K, D>
where
    H: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    /// The run of the checkpoint's unfinished records: this process's own
    /// attempts cut short are taken back, and each record is placed —
    /// a letter (undecodable or exhausted), waiting for another owner's
    /// lock or for its retry delay, or ready.
    fn new(
        parts: Parts<'a, H, K, D>,
        cp: &'c mut Checkpoint,
        records: &'a [SourceRecord],
        decoded: &'a [std::result::Result<H::Record, ErrorInfo>],
        new_batch: bool,
        report: &'c mut BatchReport,
    ) -> Self {
        let Parts {
            config,
            handler,
            store,
            dlq,
            clock,
            shutdown,
            instance,
            lock_counter,
            metrics,
        } = parts;
        let n = records.len();
        let max_slice = handler.max_slice(config.slice_size);
        let in_flight_limit = config.concurrency.max(max_slice);
        let sequential = config.concurrency == 1 && max_slice == 1;
        let lookahead = in_flight_limit.max(config.checkpoint_interval.map_or(0, |i| i.records));
        let (lane_of, lane_count) = lanes(decoded, sequential);
        let mut sched = Schedule::new(
            lane_of,
            lane_count,
            |i| cp.trackers()[i].is_done(),
            sequential,
        );
        let mut dirty = Dirty::new(n);

        let now = clock.now();
        // Attempts of this process cut short by an earlier error or stop.
        for i in cp.recover_owned(instance, now) {
            dirty.add(i);
        }
        for (i, d) in decoded.iter().enumerate() {
            let t = &cp.trackers()[i];
            if t.is_done() {
                continue;
            }
            match (d, t.status) {
                (Err(_), _) | (_, Status::Exhausted) => sched.set_letter(i),
                (Ok(_), Status::InProgress) => {
                    // Another owner's attempt may still run (a store that
                    // cannot prove it dead): wait for its lock to expire.
                    let until = t.lock_expire_time.unwrap_or(now);
                    info!(consumer = %config.consumer_id, record_id = %t.record_id, %until, "record locked by another owner; waiting for the lock to expire");
                    sched.wait(i, until);
                }
                (Ok(_), Status::Failed) => {
                    let wait = config.retry.delay_before(t.attempts + 1);
                    if !wait.is_zero() {
                        sched.wait(i, until(now, wait));
                    }
                }
                (Ok(_), _) => {}
            }
        }

        BatchRun {
            config,
            handler,
            dlq,
            clock,
            shutdown,
            instance,
            lock_counter,
            metrics,
            cp,
            records,
            decoded,
            report,
            max_slice,
            in_flight_limit,
            sequential,
            lookahead,
            sched,
            dirty,
            letters: Letters::default(),
            store: Some(store),
            write: None,
            running: FuturesUnordered::new(),
            first_write: new_batch,
            stopping: false,
            grace_until: None,
            halting: false,
            halted: None,
            last_write: now,
            lock: String::with_capacity(instance.len() + 21),
        }
    }

    /// The loop (see the module docs), then [`finish`](Self::finish).
    async fn run(mut self) -> Result<Finish> {
        let mut now_hint: Option<DateTime<Utc>> = None;
        loop {
            let now = now_hint.take().unwrap_or_else(|| self.clock.now());
            if !self.stopping && self.shutdown.is_cancelled() {
                self.stop(now);
            }
            self.sched.fire(now);
            // Read once per step: a halt decided while marking (step 3)
            // still lets this step's timer run.
            let starting = !self.stopping && !self.halting;

            // 1. Start what may start.
            if starting
                && self.sequential
                && self.running.is_empty()
                && self.write.is_none()
                && !self.letters.any_ready()
                && let Some(i) = self.sched.take_startable()
            {
                now_hint = self.run_in_place(i).await?;
                continue;
            }
            if starting {
                self.start_ready();
            }
            // 2. Letters whose exhaustion is durable.
            if !self.stopping {
                self.send_letters(now);
            }
            // 3. A write, if one is needed.
            if self.write.is_none() {
                let mark = self.can_mark(starting);
                if self.write_due(mark, now) {
                    if mark {
                        self.mark(now)?;
                    }
                    if let Wrote::Awaited(hint) = self.write(now).await? {
                        now_hint = hint;
                        continue;
                    }
                }
            }
            if self.is_over() {
                break;
            }
            // 4. Wait for something to happen.
            self.wait(starting, now).await?;
        }
        self.finish().await
    }

    /// A shutdown seen at `now`: nothing more starts, and the attempts in
    /// flight have `shutdown_grace` to end.
    fn stop(&mut self, now: DateTime<Utc>) {
        self.stopping = true;
        self.grace_until = Some(until(now, self.config.shutdown_grace));
    }

    /// Runs record `i` right here, for a sequential consumer with nothing
    /// else in hand: no boxed future, no `select!` round, as fast as a plain
    /// loop. Its result is settled; returns the time it settled at (the next
    /// step's start), or `None` if a shutdown's grace ran out first (the
    /// attempt dropped, retried after a restart).
    async fn run_in_place(&mut self, i: usize) -> Result<Option<DateTime<Utc>>> {
        let Some(item) = one_item(self.cp, self.records, self.decoded, i) else {
            return Err(Error::InvalidTransition(format!(
                "record {i} was started but is not decoded"
            )));
        };
        let (clock, shutdown, grace) = (self.clock, self.shutdown, self.config.shutdown_grace);
        self.metrics.in_flight(self.sched.in_flight());
        let attempt = self.handler.handle_one(item);
        tokio::pin!(attempt);
        // A processor that is ready at once costs no waiting machinery.
        let mut result = match (&mut attempt).now_or_never() {
            Some(r) => Some(r),
            None => tokio::select! {
                biased;
                r = &mut attempt => Some(r),
                _ = shutdown.cancelled() => None,
            },
        };
        if result.is_none() {
            self.stopping = true;
            result = tokio::select! {
                biased;
                r = &mut attempt => Some(r),
                () = clock.sleep(grace) => None,
            };
        }
        let Some(result) = result else {
            self.metrics.in_flight(0);
            warn!(consumer = %self.config.consumer_id, records = 1, grace = ?grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
            return Ok(None);
        };
        let done_at = clock.now();
        // Usually marked by the last write, under the lock in the buffer:
        // no copy of it.
        let lock = std::mem::take(&mut self.lock);
        let held: Cow<'_, str> = match &self.cp.trackers()[i].lock {
            Some(l) if *l == lock => Cow::Borrowed(lock.as_str()),
            l => Cow::Owned(l.clone().unwrap_or_default()),
        };
        self.settle(i, &held, result, done_at)?;
        drop(held);
        self.lock = lock;
        self.metrics.in_flight(self.sched.in_flight());
        Ok(Some(done_at))
    }

    /// Starts every startable record up to the in-flight limit: one future
    /// per record, or per slice of up to `max_slice` first attempts (a
    /// retried record runs alone).
    fn start_ready(&mut self) {
        let (handler, records, decoded) = (self.handler, self.records, self.decoded);
        let mut unit: Vec<usize> = Vec::new();
        while self.sched.in_flight() < self.in_flight_limit {
            let Some(i) = self.sched.take_startable() else {
                break;
            };
            if self.max_slice == 1 || self.cp.trackers()[i].attempts > 1 {
                self.running
                    .push(launch(handler, self.cp, records, decoded, vec![i]));
                continue;
            }
            unit.push(i);
            if unit.len() == self.max_slice {
                let full = std::mem::take(&mut unit);
                self.running
                    .push(launch(handler, self.cp, records, decoded, full));
            }
        }
        if !unit.is_empty() {
            self.running
                .push(launch(handler, self.cp, records, decoded, unit));
        }
        self.metrics.in_flight(self.sched.in_flight());
    }

    /// Sends every letter whose exhaustion is durable, each a future in
    /// flight (retried with `dlq_retry`); its record is done once it
    /// returns ([`on_done`](Self::on_done)).
    fn send_letters(&mut self, now: DateTime<Utc>) {
        let (config, clock, dlq) = (self.config, self.clock, self.dlq);
        for i in self.letters.take_ready() {
            let key = self.decoded[i]
                .as_ref()
                .ok()
                .map(|r| r.partition_key().to_owned())
                .or_else(|| self.records[i].partition_key.clone());
            let letter = Box::new(dead_letter(config, self.cp, self.records, key, i, now));
            self.running
                .push(Box::pin(send_letter(config, clock, dlq, i, letter)));
        }
    }

    /// Whether candidates may be marked now: starting, room in flight, and
    /// nothing marked left to start.
    fn can_mark(&self, starting: bool) -> bool {
        starting
            && self.sched.in_flight() < self.in_flight_limit
            && !self.sched.has_startable()
            && self.sched.has_candidate()
    }

    /// Whether a write is needed (none being in flight): the batch is not
    /// saved yet, candidates can be marked, an exhaustion must be durable
    /// before its letter, or results are unsaved and nothing else moves (or
    /// `checkpoint_interval`'s time is up). Once every record is done, the
    /// commit carries the results instead.
    fn write_due(&self, mark: bool, now: DateTime<Utc>) -> bool {
        let idle = self.running.is_empty() && !self.sched.has_startable() && !mark;
        let timed = self
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
    fn mark(&mut self, now: DateTime<Utc>) -> Result<()> {
        *self.lock_counter += 1;
        // Hot path (once per write): no `format!` machinery, and one buffer
        // for the batch (`begin_attempt` copies it).
        self.lock.clear();
        self.lock.push_str(self.instance);
        self.lock.push('-');
        self.lock
            .push_str(itoa::Buffer::new().format(*self.lock_counter));
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
            match self.cp.begin_attempt(i, &self.lock, now) {
                Ok(_) => self.dirty.add(i),
                Err(Error::RecordLocked {
                    record_id, until, ..
                }) => {
                    info!(consumer = %self.config.consumer_id, %record_id, %until, "record locked by another owner; waiting for the lock to expire");
                    self.sched
                        .unmark(i, until.max(now + chrono::Duration::milliseconds(1)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Record `i` (already in `letters`) goes to the dead-letter queue, not
    /// to the processor; with `OnExhausted::Halt`, nothing more starts.
    fn exhausted(&mut self, i: usize) {
        self.sched.dead_letter(i);
        self.halting |= self.config.on_exhausted == OnExhausted::Halt;
    }

    /// Writes everything changed since the last write: `save_batch` for the
    /// batch's first, else one `save_tracker` per changed tracker and a
    /// `sync`. Awaited here when nothing else could move while it runs (the
    /// first write, or nothing in flight: the common case of a sequential
    /// consumer, no boxed future nor `select!` round); else left in flight
    /// for [`wait`](Self::wait). The marks and exhaustions it carries are
    /// durable once it returns.
    async fn write(&mut self, now: DateTime<Utc>) -> Result<Wrote> {
        let Some(store) = self.store.take() else {
            return Err(Error::InvalidTransition(
                "checkpoint write already in flight".into(),
            ));
        };
        let metrics = self.metrics;
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
    fn made_durable_in_place(&mut self) {
        self.sched.made_durable();
        self.letters.saved_in_place();
    }

    /// Whether the loop ends: nothing in hand (no write, nothing in flight,
    /// no letter to send) and every record done — or a stop, or a halt whose
    /// exhaustions are all durable.
    fn is_over(&self) -> bool {
        if self.write.is_some() || !self.running.is_empty() || self.letters.any_ready() {
            return false;
        }
        self.sched.unfinished() == 0
            || self.stopping
            || (self.halting && !self.letters.any_unsaved())
    }

    /// Waits for the first of: an attempt, slice or letter ending (then
    /// every other one already ended: the next write carries them all), the
    /// write in flight returning, a shutdown, the next retry or lock timer
    /// (when `starting`), or the shutdown grace running out.
    async fn wait(&mut self, starting: bool, now: DateTime<Utc>) -> Result<()> {
        let clock = self.clock;
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
                _ = self.shutdown.cancelled(), if !self.stopping => Event::Shutdown,
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
                warn!(consumer = %self.config.consumer_id, records = self.sched.in_flight(), grace = ?self.config.shutdown_grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
                self.running = FuturesUnordered::new();
                self.metrics.in_flight(0);
            }
            Event::Done(done) => {
                self.on_done(done)?;
                // Every other result already in: the next write carries
                // them all (group commit), rather than one now and the rest
                // after.
                while let Some(Some(done)) = self.running.next().now_or_never() {
                    self.on_done(done)?;
                }
                self.metrics.in_flight(self.sched.in_flight());
            }
        }
        Ok(())
    }

    /// One ended future: an attempt's or a slice's results are settled; a
    /// letter sent marks its record dead-lettered (a letter that could not
    /// be sent, after `dlq_retry`, fails the run).
    fn on_done(&mut self, done: Done) -> Result<()> {
        match done {
            Done::One {
                index,
                lock,
                result,
            } => self.settle(index, &lock, result, self.clock.now()),
            Done::Unit {
                indices,
                locks,
                results,
            } => {
                let now = self.clock.now();
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
                self.cp.mark_dead_lettered(index, self.clock.now())?;
                self.dirty.add(index);
                self.sched.done(index);
                self.report.dead_lettered += 1;
                info!(consumer = %self.config.consumer_id, record_id = %letter.record_id, attempts = letter.attempts, "record sent to the dead-letter queue");
                self.handler.on_dead_letter(&letter);
                if self.config.on_exhausted == OnExhausted::Halt {
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
    fn settle(
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
                debug!(consumer = %self.config.consumer_id, record_id = %t.record_id, attempt = t.attempts, status = ?t.status, error = %e, "attempt failed");
                if t.status == Status::Exhausted {
                    self.letters.unsaved(i);
                    self.exhausted(i);
                } else {
                    let wait = self.config.retry.delay_before(t.attempts + 1);
                    self.sched.failed(i, until(now, wait));
                }
            }
        }
        Ok(())
    }

    /// After the loop: every record done (and no halt) — the last results
    /// and the commit in `save_commit`; else the marks never started are
    /// taken back and the state synced (a stop or a halt).
    async fn finish(mut self) -> Result<Finish> {
        let Some(store) = self.store.take() else {
            return Err(Error::InvalidTransition(
                "checkpoint write still in flight".into(),
            ));
        };
        let metrics = self.metrics;
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
        let now = self.clock.now();
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
