//! The consumer engine: [`Consumer`] (this file), its settings
//! (`config.rs`), the user's [`Processor`] (`processor.rs`), what it reports
//! (`report.rs`) and the signal helper (`signal.rs`). See `docs/consumer.md`.
//!
//! [`Consumer::process_batch`] does one step of the loop:
//! 1. if the checkpoint's batch is finished, commit it and fetch the next one
//!    at `start_pointer` (at most `limit` records) and decode it — otherwise
//!    resume the unfinished batch from the checkpoint;
//! 2. run the records (`engine.rs`, scheduled in key order by
//!    `schedule.rs`): each record not done goes to the [`Processor`] (or, in
//!    slices, to a [`SliceProcessor`]) up to `max_attempts` times, waiting
//!    between attempts as the [`RetryPolicy`] says, with up to
//!    [`ConsumerConfig::concurrency`] records of different partition keys in
//!    flight; every attempt is saved as `in_progress` *before* the processor
//!    runs, and the attempts and results of many records share one
//!    checkpoint write (group commit; a new batch is saved together with its
//!    first attempts);
//! 3. send an exhausted record to the [`DeadLetterQueue`] (retried with its
//!    own policy) before its key moves on, then continue or halt as
//!    [`OnExhausted`] says;
//! 4. commit, in the same write as the last results.
//!
//! A record that cannot be decoded — or that the source marked unreadable
//! ([`SourceRecord::error`], e.g. a corrupted Kinesis aggregate) — is
//! exhausted at once (no attempt) and goes to the dead-letter queue with its
//! raw bytes and the decode (or source) error; it never stops the loop.
//!
//! **Delivery is at-least-once.** A crash after the processor finished but
//! before its result was saved makes the record run again after the restart;
//! a crash after the dead-letter queue accepted a record but before that was
//! saved sends it again. Make processing idempotent, keyed by the record id,
//! to get effectively-once results.

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::dlq::DeadLetterQueue;
use crate::error::ErrorInfo;
use crate::error::{Error, Result};
use crate::record::{Codec, JsonCodec, Record};
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::source::{Source, SourceRecord};

mod config;
mod engine;
mod letters;
mod metrics;
mod processor;
mod report;
mod schedule;
mod signal;
mod work;

pub use config::{CheckpointInterval, ConsumerConfig, OnExhausted};
pub use processor::{
    Attempt, AttemptTimedOut, Call, Handler, Outcome, Processor, SliceItem, SliceProcessor,
    SliceResult, Slices,
};
pub use report::{BatchReport, RunSummary};
pub use signal::cancel_on_signals;

struct BatchState<R> {
    checkpoint: Checkpoint,
    records: Vec<SourceRecord>,
    decoded: Vec<std::result::Result<R, ErrorInfo>>,
}

/// A reliable consumer: a [`Source`], a [`Processor`], a [`CheckpointStore`]
/// and a [`DeadLetterQueue`], with a [`Codec`] in between (JSON by default).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
/// use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
/// use unistream_core::record::{iso8601, Record};
/// use unistream_core::BoxError;
///
/// #[derive(Serialize, Deserialize)]
/// struct Event { id: String, #[serde(with = "iso8601")] create_at: DateTime<Utc> }
/// impl Record for Event {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
///
/// struct Print;
/// impl Processor for Print {
///     type Record = Event;
///     async fn process(&self, e: &Event, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
///         println!("{}", e.id);
///         Ok(Outcome::Succeeded)
///     }
/// }
///
/// let source = MemorySource::new(vec![
///     br#"{"id": "1", "create_at": "2024-01-09T06:24:06.759449+00:00"}"#.to_vec(),
///     b"not json".to_vec(),
/// ]);
/// source.close();
/// let dlq = MemoryDeadLetterQueue::default();
/// let mut consumer = Consumer::new(
///     ConsumerConfig::new("demo"), source, Print, MemoryCheckpointStore::default(), dlq.clone(),
/// )?;
/// let summary = consumer.run().await?;
/// assert_eq!((summary.succeeded, summary.dead_lettered, summary.closed), (1, 1, true));
/// assert_eq!(dlq.letters()[0].data, b"not json");
/// # Ok(()) }
/// ```
pub struct Consumer<S, P: Handler, K, D, C = JsonCodec> {
    config: ConsumerConfig,
    source: S,
    processor: P,
    store: K,
    dlq: D,
    codec: C,
    clock: SharedClock,
    shutdown: CancellationToken,
    instance: String,
    lock_counter: u64,
    state: Option<BatchState<P::Record>>,
    metrics: metrics::EngineMetrics,
    keep: Option<Keep<P::Record>>,
}

/// A predicate on the decoded record and what the source knows of it:
/// `false` filters the record out.
type Keep<R> = Box<KeepFn<R>>;
type KeepFn<R> = dyn Fn(&R, &SourceRecord) -> bool + Send + Sync;

impl<S, P: Handler, K, D, C> std::fmt::Debug for Consumer<S, P, K, D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("instance", &self.instance)
            .field("in_batch", &self.state.is_some())
            .field("shutdown", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<S, P, K, D> Consumer<S, P, K, D, JsonCodec>
where
    S: Source,
    P: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    /// A consumer decoding JSON records, on the system clock. For records
    /// that are not JSON (or not `serde` types), follow with
    /// [`with_codec`](Self::with_codec).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is out of range (a `limit` of 0,
    /// an empty consumer id).
    pub fn new(config: ConsumerConfig, source: S, processor: P, store: K, dlq: D) -> Result<Self> {
        config.validate()?;
        let metrics = metrics::EngineMetrics::new(&config.consumer_id);
        Ok(Consumer {
            config,
            source,
            processor,
            store,
            dlq,
            codec: JsonCodec::default(),
            clock: std::sync::Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            lock_counter: 0,
            state: None,
            metrics,
            keep: None,
        })
    }
}

impl<S, P: Handler, K, D, C> Consumer<S, P, K, D, C> {
    /// Uses another codec: the records need not be `serde` types.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
    /// use chrono::{DateTime, Utc};
    /// use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
    /// use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
    /// use unistream_core::record::{Codec, CodecError, Record};
    /// use unistream_core::BoxError;
    ///
    /// struct Tick(String); // its bytes are its id, as text
    /// impl Record for Tick {
    ///     fn id(&self) -> &str { &self.0 }
    ///     fn create_at(&self) -> DateTime<Utc> { DateTime::UNIX_EPOCH }
    /// }
    /// struct Text;
    /// impl Codec<Tick> for Text {
    ///     fn encode(&self, t: &Tick) -> Result<Vec<u8>, CodecError> { Ok(t.0.clone().into_bytes()) }
    ///     fn decode(&self, b: &[u8]) -> Result<Tick, CodecError> {
    ///         String::from_utf8(b.to_vec()).map(Tick).map_err(CodecError::decode)
    ///     }
    /// }
    /// struct Count;
    /// impl Processor for Count {
    ///     type Record = Tick;
    ///     async fn process(&self, _: &Tick, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
    ///         Ok(Outcome::Succeeded)
    ///     }
    /// }
    ///
    /// let source = MemorySource::new(vec![b"t1".to_vec(), vec![0xff]]);
    /// source.close();
    /// let dlq = MemoryDeadLetterQueue::default();
    /// let mut consumer = Consumer::new(
    ///     ConsumerConfig::new("ticks"), source, Count, MemoryCheckpointStore::default(), dlq.clone(),
    /// )?
    /// .with_codec(Text);
    /// let summary = consumer.run().await?;
    /// assert_eq!((summary.succeeded, summary.dead_lettered), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn with_codec<C2: Codec<P::Record>>(self, codec: C2) -> Consumer<S, P, K, D, C2> {
        Consumer {
            config: self.config,
            source: self.source,
            processor: self.processor,
            store: self.store,
            dlq: self.dlq,
            codec,
            clock: self.clock,
            shutdown: self.shutdown,
            instance: self.instance,
            lock_counter: self.lock_counter,
            state: None,
            metrics: self.metrics,
            keep: self.keep,
        }
    }
}

impl<S, P, K, D, C> Consumer<S, P, K, D, C>
where
    S: Source,
    P: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
    C: Codec<P::Record>,
{
    /// Uses another clock (e.g. a [`VirtualClock`](crate::clock::VirtualClock) in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// Stops gracefully when `token` is cancelled: the record in hand is
    /// finished and saved, a pending backoff wait is cut short, and
    /// `process_batch` / `run` return with `interrupted` set.
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Keeps only the records for which `keep` answers `true` (applied
    /// with [`ConsumerConfig::filter`], if any: a record must pass both).
    /// A record filtered out is settled as ignored before any attempt: no
    /// processor call, no attempt counted, counted in
    /// `unistream_consumer_records_filtered_total` and
    /// [`BatchReport::filtered`]. Records that cannot be decoded are never
    /// filtered: they go to the dead-letter queue.
    ///
    /// ```
    /// # use unistream_core::consumer::*;
    /// # use unistream_core::memory::*;
    /// # use unistream_core::raw::{RawCodec, RawRecord};
    /// # use unistream_core::BoxError;
    /// # struct Count;
    /// # impl Processor for Count {
    /// #     type Record = RawRecord;
    /// #     async fn process(&self, _: &RawRecord, _: &Attempt<'_>) -> Result<Outcome, BoxError> { Ok(Outcome::Succeeded) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
    /// let source = MemorySource::new(vec![b"keep".to_vec(), b"skip".to_vec()]);
    /// source.close();
    /// let mut consumer = Consumer::new(
    ///     ConsumerConfig::new("c"), source, Count, MemoryCheckpointStore::default(), MemoryDeadLetterQueue::default(),
    /// )?
    /// .with_codec(RawCodec)
    /// .with_filter(|r: &RawRecord, _| r.data != b"skip");
    /// let summary = consumer.run().await?;
    /// assert_eq!((summary.succeeded, summary.filtered, summary.attempts), (1, 1, 1));
    /// # Ok(()) }
    /// ```
    pub fn with_filter(
        mut self,
        keep: impl Fn(&P::Record, &SourceRecord) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.keep = Some(Box::new(keep));
        self
    }

    /// The token that stops this consumer.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The processor.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// The source (e.g. for its statistics).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The checkpoint store (e.g. for its statistics).
    pub fn store(&self) -> &K {
        &self.store
    }

    /// The checkpoint in memory (`None` before the first `process_batch`).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.state.as_ref().map(|s| &s.checkpoint)
    }

    /// Loops over [`process_batch`](Self::process_batch) until the stream
    /// is closed, shutdown is requested, or (with `stop_at_end`) nothing new
    /// is left; waits `delay` after a pull that found nothing (or what the
    /// source asked for: [`BatchReport::idle_delay`]).
    ///
    /// # Errors
    ///
    /// What [`process_batch`](Self::process_batch) returns; [`Error::Halted`]
    /// after an exhausted record with [`OnExhausted::Halt`].
    pub async fn run(&mut self) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        while !self.shutdown.is_cancelled() {
            let report = self.process_batch().await?;
            summary.add(&report);
            if report.interrupted || report.closed {
                break;
            }
            if report.caught_up {
                if self.config.stop_at_end {
                    break;
                }
                // A source that waited for records itself asks for no
                // delay on top (a zero delay of the configuration still
                // sleeps a timer tick: a source that answers at once is
                // not polled in a busy loop).
                if report.idle_delay.is_some_and(|d| d.is_zero()) {
                    continue;
                }
                let delay = report.idle_delay.unwrap_or(self.config.delay);
                tokio::select! {
                    _ = self.clock.sleep(delay) => {}
                    _ = self.shutdown.cancelled() => { summary.interrupted = true; }
                }
            }
        }
        summary.interrupted |= self.shutdown.is_cancelled();
        info!(consumer = %self.config.consumer_id, ?summary, "consumer stopped");
        Ok(summary)
    }

    /// Does one step: resume or fetch a batch, process it, commit it.
    ///
    /// # Errors
    ///
    /// The checkpoint store's, the source's or the dead-letter queue's error
    /// ([`Error::CheckpointOwned`] when another consumer took the checkpoint
    /// over, [`Error::DeadLetter`] when the queue kept refusing a record — it
    /// is sent again on the next call), or [`Error::Halted`]. A processor's
    /// error is never returned: it is recorded and retried.
    pub async fn process_batch(&mut self) -> Result<BatchReport> {
        let started = std::time::Instant::now();
        let mut report = BatchReport::default();
        let result = self.step(&mut report).await;
        // Whatever was in flight has ended or was dropped with the step.
        self.metrics.in_flight(0);
        metrics::batch(
            &self.config.consumer_id,
            &report,
            started.elapsed(),
            result.is_err(),
        );
        result.map(|()| report)
    }

    /// [`process_batch`](Self::process_batch), filling `report` as it goes
    /// (so that a failed step still reports what it did).
    async fn step(&mut self, report: &mut BatchReport) -> Result<()> {
        let Consumer {
            config,
            source,
            processor,
            store,
            dlq,
            codec,
            clock,
            shutdown,
            instance,
            lock_counter,
            state,
            metrics: m,
            keep,
        } = self;
        let st = match state {
            Some(st) => st,
            None => {
                state.insert(load(config, instance, source, store, codec, clock.now(), m).await?)
            }
        };
        let cp = &mut st.checkpoint;
        let mut new_batch = false;

        if cp.is_batch_finished() {
            if cp.is_closed() {
                report.closed = true;
                report.batch_sequence = cp.batch_sequence();
                return Ok(());
            }
            if !cp.is_committed() {
                cp.commit()?;
                let since = m.start();
                let committed = store.save_commit(cp).await;
                m.wrote(metrics::Write::Commit, since, 1);
                committed?;
                // The last batch of a closed stream whose commit had not
                // been written (e.g. the write failed): closed now.
                if cp.is_closed() {
                    report.closed = true;
                    report.batch_sequence = cp.batch_sequence();
                    return Ok(());
                }
            }
            let from = cp.start_pointer().clone();
            // A source may wait for records (one reading ahead waits for
            // its next read): a shutdown does not wait for it. Nothing is
            // taken until the fetch returns, so dropping it loses nothing.
            let fetched = tokio::select! {
                biased;
                fetched = source.fetch(&from, config.limit) => fetched?,
                () = shutdown.cancelled() => {
                    report.interrupted = true;
                    report.batch_sequence = cp.batch_sequence();
                    return Ok(());
                }
            };
            report.millis_behind = fetched.millis_behind;
            if fetched.records.is_empty() && fetched.next_pointer.as_ref() == Some(&from) {
                report.caught_up = true;
                report.idle_delay = fetched.idle_delay;
                report.batch_sequence = cp.batch_sequence();
                return Ok(());
            }
            let decoded: Vec<_> = fetched.records.iter().map(|r| decode(codec, r)).collect();
            let ids = decoded
                .iter()
                .zip(&fetched.records)
                .map(|(d, r)| record_id(d, r));
            let now = clock.now();
            cp.start_batch(ids, fetched.next_pointer, now)?;
            report.filtered =
                filter_out(config, keep.as_deref(), cp, &fetched.records, &decoded, now)?;
            // Saved by the engine's first write, with the first attempts.
            new_batch = true;
            report.fetched = fetched.records.len();
            st.records = fetched.records;
            st.decoded = decoded;
            debug!(consumer = %config.consumer_id, batch = cp.batch_sequence(), records = report.fetched, from = %from, "started batch");
        }
        report.batch_sequence = cp.batch_sequence();
        report.records = st.records.len();
        let parts = engine::Parts {
            config,
            handler: processor,
            dlq,
            clock,
            shutdown,
            instance,
            lock_counter,
            metrics: m,
        };
        let finish = engine::run_records(
            parts,
            store,
            cp,
            &st.records,
            &st.decoded,
            new_batch,
            report,
        )
        .await;
        match finish {
            Ok(engine::Finish::Committed) => {
                report.closed = cp.is_closed();
                Ok(())
            }
            Ok(engine::Finish::Stopped) => {
                report.interrupted = true;
                Ok(())
            }
            Ok(engine::Finish::Halted {
                record_id,
                attempts,
            }) => Err(Error::Halted {
                record_id,
                attempts,
            }),
            Err(e) => {
                // The store may hold less than memory (a write failed or was
                // refused): start again from what it holds.
                *state = None;
                Err(e)
            }
        }
    }
}

/// Settles as ignored (before any attempt) the decoded records of a new
/// batch that the configured criteria or the predicate drop; returns how
/// many.
fn filter_out<R>(
    config: &ConsumerConfig,
    keep: Option<&KeepFn<R>>,
    cp: &mut Checkpoint,
    records: &[SourceRecord],
    decoded: &[std::result::Result<R, ErrorInfo>],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize> {
    if config.filter.is_none() && keep.is_none() {
        return Ok(0);
    }
    let mut dropped = 0;
    for (i, (r, d)) in records.iter().zip(decoded).enumerate() {
        let Ok(record) = d else { continue };
        let kept = config.filter.as_ref().is_none_or(|f| f.matches(r))
            && keep.is_none_or(|k| k(record, r));
        if !kept {
            cp.filter_out(i, now)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// A record the source could not read keeps the source's error; the others
/// go through the codec.
fn decode<R, C: Codec<R>>(codec: &C, r: &SourceRecord) -> std::result::Result<R, ErrorInfo> {
    if let Some(reason) = &r.error {
        return Err(ErrorInfo::new(reason.clone()));
    }
    codec
        .decode_record(r)
        .map_err(|e| ErrorInfo::from_error(&e))
}

fn record_id<R: Record>(d: &std::result::Result<R, ErrorInfo>, r: &SourceRecord) -> String {
    match d {
        Ok(record) => record.id().to_owned(),
        Err(_) => format!("undecodable@{}", r.pointer),
    }
}

async fn load<S: Source, K: CheckpointStore, R: Record, C: Codec<R>>(
    config: &ConsumerConfig,
    instance: &str,
    source: &S,
    store: &mut K,
    codec: &C,
    now: chrono::DateTime<chrono::Utc>,
    m: &metrics::EngineMetrics,
) -> Result<BatchState<R>> {
    let max_attempts = config.retry.max_attempts();
    let Some(StoredCheckpoint {
        mut checkpoint,
        records,
    }) = store.load().await?
    else {
        let checkpoint = Checkpoint::new(
            config.consumer_id.clone(),
            source.initial_pointer(),
            max_attempts,
            config.lock_expire,
        );
        return Ok(BatchState {
            checkpoint,
            records: Vec::new(),
            decoded: Vec::new(),
        });
    };
    if checkpoint.consumer_id() != config.consumer_id {
        return Err(Error::Config(format!(
            "the checkpoint store holds the checkpoint of consumer {:?}, not {:?}",
            checkpoint.consumer_id(),
            config.consumer_id
        )));
    }
    if records.len() != checkpoint.trackers().len() {
        return Err(Error::CheckpointUnreadable {
            store: "checkpoint store".into(),
            key: config.consumer_id.clone(),
            reason: format!(
                "{} trackers but {} batch records",
                checkpoint.trackers().len(),
                records.len()
            ),
        });
    }
    checkpoint.set_limits(max_attempts, config.lock_expire);
    let mut recovered = checkpoint.recover(now, store.is_exclusive());
    // This process's own attempts, cut short when an earlier call failed.
    recovered.extend(checkpoint.recover_owned(instance, now));
    // Timed as the engine's writes are: the tracker saves together, then
    // the sync.
    let mut since = m.start();
    for (done, &i) in recovered.iter().enumerate() {
        if let Err(e) = store.save_tracker(&checkpoint, i).await {
            m.wrote(metrics::Write::Tracker, since, done as u64 + 1);
            return Err(e);
        }
    }
    if !recovered.is_empty() {
        since = m.wrote(metrics::Write::Tracker, since, recovered.len() as u64);
    }
    let synced = store.sync().await;
    m.wrote(metrics::Write::Sync, since, 1);
    synced?;
    if !recovered.is_empty() {
        warn!(consumer = %config.consumer_id, records = recovered.len(), "retrying records whose attempt was interrupted by a stop");
    }
    // The store keeps pointers and data: the source says again what it
    // knows of them (e.g. that one is a corrupted aggregate).
    let records: Vec<SourceRecord> = records.into_iter().map(|r| source.restore(r)).collect();
    let decoded = records.iter().map(|r| decode(codec, r)).collect();
    info!(consumer = %config.consumer_id, batch = checkpoint.batch_sequence(), start = %checkpoint.start_pointer(), "loaded checkpoint");
    Ok(BatchState {
        checkpoint,
        records,
        decoded,
    })
}
