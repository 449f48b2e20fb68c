//! Runs the records of one batch: the key-order [`Schedule`], attempts and
//! dead letters in flight, and group-committed checkpoint writes.
//!
//! The loop, until every record is done (or a stop):
//! 1. start every marked record whose write is durable, up to the in-flight
//!    limit (grouped into slices for a slice processor);
//! 2. send exhausted records whose exhaustion is durable to the dead-letter
//!    queue (concurrently with the rest);
//! 3. if no write is in flight and one is needed — records could start but
//!    none is marked, an exhaustion must be durable before its letter is
//!    sent, or nothing runs and results are unsaved — mark the candidates
//!    (begin their attempts in the checkpoint, one lock id for the group)
//!    and write everything changed since the last write in one call;
//! 4. wait for an attempt, a letter, the write, a timer or a shutdown.
//!
//! So every transition made while a write is in flight goes into the next
//! write, and an attempt is durable before it starts: `max_attempts` holds
//! across `kill -9`. The batch's first write is `save_batch` itself, which
//! carries the first group's marks; the last is `save_commit`, which carries
//! the last results.

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
use super::metrics::{EngineMetrics, Write};
use super::processor::{Handler, Outcome};
use super::report::BatchReport;
use super::schedule::Schedule;
use super::work::{Dirty, Done, Running, dead_letter, lanes, launch, one_item, send_letter};
use crate::checkpoint::{Checkpoint, CheckpointStore, Status};
use crate::clock::SharedClock;
use crate::dlq::DeadLetterQueue;
use crate::error::{Error, ErrorInfo, Result};
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

enum Event<'s, K> {
    Done(Done),
    Written(&'s mut K, Result<()>),
    Shutdown,
    Timer,
    GraceOver,
}

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
#[allow(clippy::too_many_lines)] // one loop, read top to bottom (see the module docs)
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
    let interval = config.checkpoint_interval;
    let lookahead = in_flight_limit.max(interval.map_or(0, |i| i.records));
    let (lane_of, lane_count) = lanes(decoded, sequential);
    let mut sched = Schedule::new(
        lane_of,
        lane_count,
        |i| cp.trackers()[i].is_done(),
        sequential,
    );
    let mut dirty = Dirty::new(n);
    // Exhausted records at their lane's front whose exhaustion is not
    // durable yet / is being written / is durable.
    let mut dlq_unsaved: Vec<usize> = Vec::new();
    let mut dlq_in_write: Vec<usize> = Vec::new();
    let mut dlq_ready: Vec<usize> = Vec::new();

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
                // Another owner's attempt may still run (a store that cannot
                // prove it dead): wait for its lock to expire.
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

    let mut store_slot: Option<&'a mut K> = Some(store);
    let mut write: Option<Writing<'a, K>> = None;
    let mut running: Running<'a> = FuturesUnordered::new();
    let mut first_write = new_batch;
    let mut stopping = false;
    let mut grace_until: Option<DateTime<Utc>> = None;
    let mut halting = false;
    let mut halted: Option<(String, u32)> = None;
    let mut last_write = now;
    let mut lock = String::with_capacity(instance.len() + 21);

    // One record's result (a macro: it updates the loop's state).
    macro_rules! settle {
        ($i:expr, $lock:expr, $result:expr, $now:expr) => {{
            let (i, lock, result, now) = ($i, $lock, $result, $now);
            report.attempts += 1;
            dirty.add(i);
            match result {
                Ok(Outcome::Succeeded) => {
                    cp.succeed(i, &lock, None, now)?;
                    report.succeeded += 1;
                    sched.done(i);
                }
                Ok(Outcome::SucceededWith(data)) => {
                    cp.succeed(i, &lock, Some(data), now)?;
                    report.succeeded += 1;
                    sched.done(i);
                }
                Ok(Outcome::Ignored) => {
                    cp.ignore(i, &lock, now)?;
                    report.ignored += 1;
                    sched.done(i);
                }
                Err(e) => {
                    report.failures += 1;
                    let t = cp.fail(i, &lock, ErrorInfo::from_error(&*e), now)?;
                    debug!(consumer = %config.consumer_id, record_id = %t.record_id, attempt = t.attempts, status = ?t.status, error = %e, "attempt failed");
                    if t.status == Status::Exhausted {
                        sched.dead_letter(i);
                        dlq_unsaved.push(i);
                        halting |= config.on_exhausted == OnExhausted::Halt;
                    } else {
                        let wait = config.retry.delay_before(t.attempts + 1);
                        sched.failed(i, until(now, wait));
                    }
                }
            }
        }};
    }

    // One finished future: an attempt, a slice or a letter.
    macro_rules! on_done {
        ($done:expr) => {{
            match $done {
                Done::One {
                    index,
                    lock,
                    result,
                } => settle!(index, lock, result, clock.now()),
                Done::Unit {
                    indices,
                    locks,
                    results,
                } => {
                    let now = clock.now();
                    for ((i, lock), result) in indices.into_iter().zip(locks).zip(results) {
                        settle!(i, lock, result, now);
                    }
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
                    cp.mark_dead_lettered(index, clock.now())?;
                    dirty.add(index);
                    sched.done(index);
                    report.dead_lettered += 1;
                    info!(consumer = %config.consumer_id, record_id = %letter.record_id, attempts = letter.attempts, "record sent to the dead-letter queue");
                    handler.on_dead_letter(&letter);
                    if config.on_exhausted == OnExhausted::Halt {
                        halting = true;
                        halted.get_or_insert((letter.record_id, letter.attempts));
                    }
                }
            }
        }};
    }

    let mut now_hint: Option<DateTime<Utc>> = None;
    loop {
        let now = now_hint.take().unwrap_or_else(|| clock.now());
        if !stopping && shutdown.is_cancelled() {
            stopping = true;
            grace_until = Some(until(now, config.shutdown_grace));
        }
        sched.fire(now);
        let starting = !stopping && !halting;

        // 1. Start what may start. A sequential consumer with nothing else
        // in hand runs its record right here: no boxed future, no
        // `select!` round, as fast as a plain loop.
        if starting
            && sequential
            && running.is_empty()
            && write.is_none()
            && dlq_ready.is_empty()
            && let Some(i) = sched.take_startable()
        {
            let Some(item) = one_item(cp, records, decoded, i) else {
                return Err(Error::InvalidTransition(format!(
                    "record {i} was started but is not decoded"
                )));
            };
            // Usually marked by the last write, under the lock in the
            // buffer: no copy of it.
            let held: std::borrow::Cow<'_, str> = match &cp.trackers()[i].lock {
                Some(l) if *l == lock => std::borrow::Cow::Borrowed(lock.as_str()),
                l => std::borrow::Cow::Owned(l.clone().unwrap_or_default()),
            };
            metrics.in_flight(sched.in_flight());
            let attempt = handler.handle_one(item);
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
                stopping = true;
                result = tokio::select! {
                    biased;
                    r = &mut attempt => Some(r),
                    () = clock.sleep(config.shutdown_grace) => None,
                };
            }
            match result {
                Some(result) => {
                    let done_at = clock.now();
                    settle!(i, held, result, done_at);
                    metrics.in_flight(sched.in_flight());
                    // The next step starts now: one clock read saved.
                    now_hint = Some(done_at);
                }
                None => {
                    metrics.in_flight(0);
                    warn!(consumer = %config.consumer_id, records = 1, grace = ?config.shutdown_grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
                }
            }
            continue;
        }
        if starting {
            let mut unit: Vec<usize> = Vec::new();
            while sched.in_flight() < in_flight_limit {
                let Some(i) = sched.take_startable() else {
                    break;
                };
                if max_slice == 1 || cp.trackers()[i].attempts > 1 {
                    running.push(launch(handler, cp, records, decoded, vec![i]));
                    continue;
                }
                unit.push(i);
                if unit.len() == max_slice {
                    running.push(launch(
                        handler,
                        cp,
                        records,
                        decoded,
                        std::mem::take(&mut unit),
                    ));
                }
            }
            if !unit.is_empty() {
                running.push(launch(handler, cp, records, decoded, unit));
            }
            metrics.in_flight(sched.in_flight());
        }

        // 2. Letters whose exhaustion is durable.
        if !stopping {
            for i in dlq_ready.drain(..) {
                let key = decoded[i]
                    .as_ref()
                    .ok()
                    .map(|r| r.partition_key().to_owned())
                    .or_else(|| records[i].partition_key.clone());
                let letter = Box::new(dead_letter(config, cp, records, key, i, now));
                running.push(Box::pin(send_letter(config, clock, dlq, i, letter)));
            }
        }

        // 3. A write, if one is needed.
        if write.is_none() {
            let can_mark = starting
                && sched.in_flight() < in_flight_limit
                && !sched.has_startable()
                && sched.has_candidate();
            let idle = running.is_empty() && !sched.has_startable() && !can_mark;
            let timed = interval
                .and_then(|i| i.time)
                .is_some_and(|t| remaining(last_write, now) >= t);
            // Once every record is done, the commit carries the results.
            let finished = sched.unfinished() == 0;
            if first_write
                || can_mark
                || !dlq_unsaved.is_empty()
                || (dirty.any() && !finished && (idle || timed))
            {
                if can_mark {
                    *lock_counter += 1;
                    // Hot path (once per write): no `format!` machinery, and
                    // one buffer for the batch (`begin_attempt` copies it).
                    lock.clear();
                    lock.push_str(instance);
                    lock.push('-');
                    lock.push_str(itoa::Buffer::new().format(*lock_counter));
                    while sched.marked() + sched.in_flight() < lookahead {
                        let Some(i) = sched.take_candidate() else {
                            break;
                        };
                        if sched.is_letter(i) {
                            if let Err(error) = &decoded[i]
                                && cp.trackers()[i].status != Status::Exhausted
                            {
                                cp.exhaust(i, error.clone(), now)?;
                                dirty.add(i);
                            }
                            if dirty.flag[i] || first_write {
                                dlq_unsaved.push(i);
                            } else {
                                dlq_ready.push(i);
                            }
                            sched.dead_letter(i);
                            halting |= config.on_exhausted == OnExhausted::Halt;
                            continue;
                        }
                        // A lock waited for has expired: that attempt counts
                        // (as on a restart), and may have been the last.
                        if cp.recover_expired(i, now)? {
                            dirty.add(i);
                            if cp.trackers()[i].status == Status::Exhausted {
                                dlq_unsaved.push(i);
                                sched.dead_letter(i);
                                halting |= config.on_exhausted == OnExhausted::Halt;
                                continue;
                            }
                        }
                        match cp.begin_attempt(i, &lock, now) {
                            Ok(_) => dirty.add(i),
                            Err(Error::RecordLocked {
                                record_id, until, ..
                            }) => {
                                info!(consumer = %config.consumer_id, %record_id, %until, "record locked by another owner; waiting for the lock to expire");
                                sched.unmark(i, until.max(now + chrono::Duration::milliseconds(1)));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                let Some(store) = store_slot.take() else {
                    return Err(Error::InvalidTransition(
                        "checkpoint write already in flight".into(),
                    ));
                };
                last_write = now;
                if first_write {
                    first_write = false;
                    let since = metrics.start();
                    let saved = store.save_batch(cp, records).await;
                    metrics.wrote(Write::Batch, since, 1);
                    saved?;
                    dirty.clear();
                    sched.made_durable();
                    dlq_ready.append(&mut dlq_unsaved);
                    store_slot = Some(store);
                    continue;
                }
                let since = dirty.save(store, cp, metrics, metrics.start()).await?;
                if running.is_empty() {
                    // Nothing else could move while it runs (the common
                    // case of a sequential consumer): wait for the write
                    // here rather than through a boxed future and a
                    // `select!` round. A shutdown is seen right after.
                    let synced = store.sync().await;
                    metrics.wrote(Write::Sync, since, 1);
                    synced?;
                    store_slot = Some(store);
                    sched.made_durable();
                    dlq_ready.append(&mut dlq_unsaved);
                    // The record just marked starts next, and its result
                    // reads the clock: the write's start time serves until
                    // then (one clock read saved per record).
                    if sched.has_startable() {
                        now_hint = Some(now);
                    }
                    continue;
                }
                dlq_in_write.append(&mut dlq_unsaved);
                write = Some(Box::pin(async move {
                    let r = store.sync().await;
                    metrics.wrote(Write::Sync, since, 1);
                    (store, r)
                }));
            }
        }

        // Done, or stopped with nothing left in hand.
        if write.is_none() && running.is_empty() && dlq_ready.is_empty() {
            if sched.unfinished() == 0 {
                break;
            }
            if stopping || (halting && dlq_unsaved.is_empty()) {
                break;
            }
        }

        // 4. Wait for something to happen.
        let timer = if starting { sched.next_timer() } else { None };
        let writing = write.is_some();
        let event = {
            let written = async {
                match write.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(done) = running.next(), if !running.is_empty() => Event::Done(done),
                (s, r) = written, if writing => Event::Written(s, r),
                _ = shutdown.cancelled(), if !stopping => Event::Shutdown,
                // Lazy: a disabled branch's expression is still evaluated.
                () = async { clock.sleep(remaining(now, timer.unwrap_or(now))).await }, if timer.is_some() => Event::Timer,
                () = async { clock.sleep(remaining(now, grace_until.unwrap_or(now))).await }, if grace_until.is_some() && !running.is_empty() => Event::GraceOver,
            }
        };
        match event {
            Event::Written(s, r) => {
                store_slot = Some(s);
                write = None;
                r?;
                sched.made_durable();
                dlq_ready.append(&mut dlq_in_write);
            }
            Event::Shutdown => {
                stopping = true;
                grace_until = Some(until(clock.now(), config.shutdown_grace));
            }
            Event::Timer => {}
            Event::GraceOver => {
                warn!(consumer = %config.consumer_id, records = sched.in_flight(), grace = ?config.shutdown_grace, "records still in flight after the shutdown grace: dropped (retried after a restart)");
                running = FuturesUnordered::new();
                metrics.in_flight(0);
            }
            Event::Done(done) => {
                on_done!(done);
                // Every other result already in: the next write carries them
                // all (group commit), rather than one now and the rest after.
                while let Some(Some(done)) = running.next().now_or_never() {
                    on_done!(done);
                }
                metrics.in_flight(sched.in_flight());
            }
        }
    }

    let Some(store) = store_slot.take() else {
        return Err(Error::InvalidTransition(
            "checkpoint write still in flight".into(),
        ));
    };
    if sched.unfinished() == 0 && halted.is_none() {
        cp.commit()?;
        let since = dirty.save(store, cp, metrics, metrics.start()).await?;
        let committed = store.save_commit(cp).await;
        metrics.wrote(Write::Commit, since, 1);
        committed?;
        return Ok(Finish::Committed);
    }
    // Marked records that never started: their attempt is taken back.
    let now = clock.now();
    for i in sched.marked_records() {
        if let Some(lock) = cp.trackers()[i].lock.clone() {
            cp.release(i, &lock, now)?;
            dirty.add(i);
        }
    }
    let since = dirty.save(store, cp, metrics, metrics.start()).await?;
    let synced = store.sync().await;
    metrics.wrote(Write::Sync, since, 1);
    synced?;
    match halted {
        Some((record_id, attempts)) => Ok(Finish::Halted {
            record_id,
            attempts,
        }),
        None => Ok(Finish::Stopped),
    }
}
