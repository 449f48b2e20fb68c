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

mod results;
mod write;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{ConsumerConfig, OnExhausted};
use super::letters::Letters;
use super::metrics::EngineMetrics;
use super::processor::{Call, Handler};
use super::report::BatchReport;
use super::schedule::Schedule;
use super::work::{Dirty, Done, Running, dead_letter, lanes, launch, one_item, send_letter};
use crate::checkpoint::{Checkpoint, CheckpointStore, Status};
use crate::clock::SharedClock;
use crate::dlq::DeadLetterQueue;
use crate::error::{Error, ErrorInfo, Result};
use crate::record::Record;
use crate::source::SourceRecord;

/// What the engine borrows from the consumer for one batch (the store
/// apart: it is lent to each write).
pub(super) struct Parts<'a, H, D> {
    pub(super) config: &'a ConsumerConfig,
    pub(super) handler: &'a H,
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

/// When record `record` (tracker `t`) reaches `max_record_age`, if there
/// is one: its age counts from the source's arrival time, else the time
/// the record carries (the Unix epoch means unknown), else when this
/// consumer first read it.
pub(super) fn age_deadline<R: Record>(
    config: &ConsumerConfig,
    record: &SourceRecord,
    decoded: Option<&R>,
    t: &crate::checkpoint::Tracker,
) -> Option<DateTime<Utc>> {
    let max = config.max_record_age?;
    let born = record
        .arrival_time
        .or_else(|| {
            decoded
                .map(Record::create_at)
                .filter(|&c| c != DateTime::UNIX_EPOCH)
        })
        .unwrap_or(t.create_time);
    Some(until(born, max))
}

/// Runs the unfinished records of the checkpoint's batch. `new_batch`: the
/// batch was just started in memory and is not saved yet (its first write is
/// `save_batch`).
pub(super) async fn run_records<'a, H, K, D>(
    parts: Parts<'a, H, D>,
    store: &'a mut K,
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
    BatchRun::new(parts, store, cp, records, decoded, new_batch, report)
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
    parts: Parts<'a, H, D>,
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
    /// What each call of user code is given.
    call: Call<'a>,

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
        parts: Parts<'a, H, D>,
        store: &'a mut K,
        cp: &'c mut Checkpoint,
        records: &'a [SourceRecord],
        decoded: &'a [std::result::Result<H::Record, ErrorInfo>],
        new_batch: bool,
        report: &'c mut BatchReport,
    ) -> Self {
        let (config, handler, clock, instance) =
            (parts.config, parts.handler, parts.clock, parts.instance);
        let n = records.len();
        let max_slice = handler.max_slice(config.slice_size);
        let in_flight_limit = config.concurrency.max(max_slice);
        let sequential = config.concurrency == 1 && max_slice == 1;
        let lookahead = in_flight_limit.max(config.checkpoint_interval.map_or(0, |i| i.records));
        let call = Call {
            consumer_id: &config.consumer_id,
            timeout: config.attempt_timeout,
            bisect: config.bisect_on_error,
            clock,
            timeouts: &parts.metrics.timed_out,
            bisect_calls: &parts.metrics.bisect_calls,
        };
        let (lane_of, lane_count) = lanes(decoded, sequential);
        // Marking behind a lane's front: always in the one lane of a
        // sequential consumer; with keys, when the checkpoint interval asks
        // for more records per write than run at once (else one write could
        // mark only each key's front, and a batch of many records per key
        // would take a write for each of them).
        let ahead = sequential || lookahead > in_flight_limit;
        let mut sched = Schedule::new(lane_of, lane_count, |i| cp.trackers()[i].is_done(), ahead);
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
                        let at = until(now, wait);
                        let deadline = age_deadline(config, &records[i], d.as_ref().ok(), t);
                        sched.wait(i, deadline.map_or(at, |d| at.min(d)));
                    }
                }
                (Ok(_), _) => {}
            }
        }

        BatchRun {
            parts,
            cp,
            records,
            decoded,
            report,
            max_slice,
            in_flight_limit,
            sequential,
            lookahead,
            call,
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
            let now = now_hint.take().unwrap_or_else(|| self.parts.clock.now());
            if !self.stopping && self.parts.shutdown.is_cancelled() {
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
            if !self.stopping && self.letters.any_ready() {
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
        self.grace_until = Some(until(now, self.parts.config.shutdown_grace));
    }

    /// Runs record `i` right here, for a sequential consumer with nothing
    /// else in hand: no boxed future, no `select!` round, as fast as a plain
    /// loop. Its result is settled; returns the time it settled at (the next
    /// step's start), or `None` if a shutdown's grace ran out first (the
    /// attempt dropped, retried after a restart).
    async fn run_in_place(&mut self, i: usize) -> Result<Option<DateTime<Utc>>> {
        let Some(item) = one_item(
            &self.parts.config.consumer_id,
            self.cp,
            self.records,
            self.decoded,
            i,
        ) else {
            return Err(Error::InvalidTransition(format!(
                "record {i} was started but is not decoded"
            )));
        };
        let (clock, shutdown, grace) = (
            self.parts.clock,
            self.parts.shutdown,
            self.parts.config.shutdown_grace,
        );
        self.parts.metrics.in_flight(self.sched.in_flight());
        let attempt = self.parts.handler.handle_one(item, self.call);
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
            self.parts.metrics.in_flight(0);
            warn!(consumer = %self.parts.config.consumer_id, records = 1, grace = ?grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
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
        self.parts.metrics.in_flight(self.sched.in_flight());
        Ok(Some(done_at))
    }

    /// Starts every startable record up to the in-flight limit: one future
    /// per record, or per slice of up to `max_slice` first attempts (a
    /// retried record runs alone).
    fn start_ready(&mut self) {
        let (handler, records, decoded) = (self.parts.handler, self.records, self.decoded);
        let mut unit: Vec<usize> = Vec::new();
        while self.sched.in_flight() < self.in_flight_limit {
            let Some(i) = self.sched.take_startable() else {
                break;
            };
            if self.max_slice == 1 || self.cp.trackers()[i].attempts > 1 {
                self.running.push(launch(
                    handler,
                    self.call,
                    self.cp,
                    records,
                    decoded,
                    vec![i],
                ));
                continue;
            }
            unit.push(i);
            if unit.len() == self.max_slice {
                let full = std::mem::take(&mut unit);
                self.running
                    .push(launch(handler, self.call, self.cp, records, decoded, full));
            }
        }
        if !unit.is_empty() {
            self.running
                .push(launch(handler, self.call, self.cp, records, decoded, unit));
        }
        self.parts.metrics.in_flight(self.sched.in_flight());
    }

    /// Sends every letter whose exhaustion is durable, each a future in
    /// flight (retried with `dlq_retry`); its record is done once it
    /// returns ([`on_done`](Self::on_done)).
    fn send_letters(&mut self, now: DateTime<Utc>) {
        let (config, clock, dlq) = (self.parts.config, self.parts.clock, self.parts.dlq);
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

    /// Record `i` (already in `letters`) goes to the dead-letter queue, not
    /// to the processor; with `OnExhausted::Halt`, nothing more starts.
    fn exhausted(&mut self, i: usize) {
        self.sched.dead_letter(i);
        self.halting |= self.parts.config.on_exhausted == OnExhausted::Halt;
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
}
