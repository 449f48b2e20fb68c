//! What the user writes: a [`Processor`] (one record per call) or a
//! [`SliceProcessor`] (a slice of records per call, with an outcome per
//! record), the [`Outcome`] of an attempt and the [`Attempt`] it is given;
//! and [`Handler`], how the engine calls either.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::dlq::DeadLetter;
use crate::error::BoxError;
use crate::record::Record;
use crate::source::Pointer;

/// What a successful [`Processor::process`] call decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Processed.
    Succeeded,
    /// Processed; keep this value in the tracker's `data`.
    SucceededWith(serde_json::Value),
    /// Deliberately skipped (final, not sent to the dead-letter queue).
    Ignored,
}

/// Facts about the attempt in progress, given to the processor.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// 1-based attempt number, counted across restarts.
    pub number: u32,
    /// The most attempts the record gets.
    pub max_attempts: u32,
    /// Where the record is in the stream.
    pub pointer: &'a Pointer,
    /// The batch it belongs to.
    pub batch_sequence: u64,
    /// The partition key the stream filed the record under, if the source
    /// told it ([`SourceRecord::partition_key`]; Kinesis does, for plain
    /// and de-aggregated records alike). `None` in a batch resumed from a
    /// checkpoint after a restart: the checkpoint keeps only pointers and
    /// data.
    ///
    /// [`SourceRecord::partition_key`]: crate::source::SourceRecord::partition_key
    pub partition_key: Option<&'a str>,
    /// The explicit hash key of the record, if the source told it.
    pub explicit_hash_key: Option<&'a str>,
    /// The consumer running the attempt ([`ConsumerConfig::consumer_id`]).
    ///
    /// [`ConsumerConfig::consumer_id`]: super::ConsumerConfig::consumer_id
    pub consumer_id: &'a str,
    /// The record's bytes as the source gave them (empty when unknown).
    pub data: &'a [u8],
    /// When the attempt's lock expires: after it, another delivery of the
    /// record may start (`None` when unknown). The engine never runs the
    /// next attempt of a record before this one is over, ended by its
    /// lock's expiry, its timeout, or its process's death.
    pub lock_expires: Option<DateTime<Utc>>,
}

impl<'a> Attempt<'a> {
    /// Attempt `number` of at most `max_attempts` on the record at
    /// `pointer`, in batch `batch_sequence`: what the engine passes to
    /// [`Processor::process`], for calling a processor in its own tests.
    ///
    /// ```
    /// use unistream_core::consumer::Attempt;
    /// use unistream_core::source::Pointer;
    /// let pointer = Pointer::from("0@0");
    /// let first = Attempt::new(1, 3, &pointer, 1);
    /// assert_eq!((first.number, first.max_attempts), (1, 3));
    /// ```
    pub fn new(number: u32, max_attempts: u32, pointer: &'a Pointer, batch_sequence: u64) -> Self {
        Attempt {
            number,
            max_attempts,
            pointer,
            batch_sequence,
            partition_key: None,
            explicit_hash_key: None,
            consumer_id: "",
            data: &[],
            lock_expires: None,
        }
    }

    /// With the consumer that runs it, the record's bytes and when the
    /// attempt's lock expires.
    pub fn with_context(
        mut self,
        consumer_id: &'a str,
        data: &'a [u8],
        lock_expires: Option<DateTime<Utc>>,
    ) -> Self {
        self.consumer_id = consumer_id;
        self.data = data;
        self.lock_expires = lock_expires;
        self
    }

    /// With the stream's keys of the record.
    pub fn with_keys(
        mut self,
        partition_key: Option<&'a str>,
        explicit_hash_key: Option<&'a str>,
    ) -> Self {
        self.partition_key = partition_key;
        self.explicit_hash_key = explicit_hash_key;
        self
    }
}

/// The user's processing code (the seed's `process_record`).
///
/// Contract: `process` MAY fail (any error; it is recorded with its cause
/// chain and retried); it MUST NOT assume it runs once per record — delivery
/// is at-least-once. With [`ConsumerConfig::concurrency`] above 1, calls for
/// records of different partition keys run concurrently (in the consumer's
/// task, like `buffer_unordered`: await I/O, do not block the thread), so
/// `process` takes `&self`; keep shared state in atomics or a mutex. Calls
/// for one key never overlap and come in stream order. `on_dead_letter` is
/// told after the dead-letter queue has accepted an exhausted record.
///
/// [`ConsumerConfig::concurrency`]: super::ConsumerConfig::concurrency
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// use unistream_core::consumer::{Attempt, Outcome, Processor};
/// use unistream_core::record::{iso8601, Record};
/// use unistream_core::BoxError;
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { id: String, #[serde(with = "iso8601")] create_at: DateTime<Utc>, amount: u64 }
/// impl Record for Order {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
///
/// struct Totals { sum: AtomicU64 }
/// impl Processor for Totals {
///     type Record = Order;
///     async fn process(&self, order: &Order, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
///         if order.amount == 0 {
///             return Ok(Outcome::Ignored);
///         }
///         self.sum.fetch_add(order.amount, Ordering::Relaxed);
///         Ok(Outcome::Succeeded)
///     }
/// }
/// ```
pub trait Processor: Send + Sync {
    /// The record type, decoded by the consumer's codec.
    type Record: Record;

    /// Processes one record.
    fn process(
        &self,
        record: &Self::Record,
        attempt: &Attempt<'_>,
    ) -> impl Future<Output = std::result::Result<Outcome, BoxError>> + Send;

    /// Called after an exhausted record was accepted by the dead-letter queue.
    fn on_dead_letter(&self, letter: &DeadLetter) {
        let _ = letter;
    }
}

/// One record of a slice given to a [`SliceProcessor`], with its attempt.
#[derive(Debug)]
#[non_exhaustive]
pub struct SliceItem<'a, R> {
    /// The record.
    pub record: &'a R,
    /// Its attempt (attempts are counted per record).
    pub attempt: Attempt<'a>,
}

impl<R> Clone for SliceItem<'_, R> {
    fn clone(&self) -> Self {
        SliceItem {
            record: self.record,
            attempt: self.attempt.clone(),
        }
    }
}

impl<'a, R> SliceItem<'a, R> {
    /// A slice item (for calling a slice processor in its own tests).
    pub fn new(record: &'a R, attempt: Attempt<'a>) -> Self {
        SliceItem { record, attempt }
    }
}

/// User code that processes a slice of records per call and answers with an
/// outcome per record — Lambda's partial batch response, self-hosted. Wrap
/// it in [`Slices`] to give it to a consumer; the slice size is
/// [`ConsumerConfig::slice_size`].
///
/// Contract: the answer MUST hold one result per item, in the items' order
/// (anything else fails the whole slice); an `Err` for the whole call fails
/// every record of the slice — or, with
/// [`ConsumerConfig::bisect_on_error`](super::ConsumerConfig::bisect_on_error),
/// the slice is split in halves until the failing records are alone. A slice never holds two records with the same
/// partition key, and a record is given only once the records before it with
/// its key are done, so per-key order holds as with [`Processor`]. Failed
/// records are retried alone (a slice of one), each with its own attempt
/// count and backoff.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// use unistream_core::consumer::{Outcome, SliceItem, SliceProcessor};
/// use unistream_core::record::{iso8601, Record};
/// use unistream_core::BoxError;
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { id: String, #[serde(with = "iso8601")] create_at: DateTime<Utc>, amount: u64 }
/// impl Record for Order {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
///
/// /// Writes a slice in one call to a store that reports each row.
/// struct BulkInsert;
/// impl SliceProcessor for BulkInsert {
///     type Record = Order;
///     async fn process_slice(
///         &self,
///         slice: &[SliceItem<'_, Order>],
///     ) -> Result<Vec<Result<Outcome, BoxError>>, BoxError> {
///         Ok(slice
///             .iter()
///             .map(|item| match item.record.amount {
///                 0 => Ok(Outcome::Ignored),
///                 a if a > 1_000_000 => Err("amount over the limit".into()),
///                 _ => Ok(Outcome::Succeeded),
///             })
///             .collect())
///     }
/// }
/// ```
///
/// [`ConsumerConfig::slice_size`]: super::ConsumerConfig::slice_size
pub trait SliceProcessor: Send + Sync {
    /// The record type, decoded by the consumer's codec.
    type Record: Record;

    /// Processes a slice of records.
    fn process_slice(
        &self,
        slice: &[SliceItem<'_, Self::Record>],
    ) -> impl Future<Output = SliceResult> + Send;

    /// Called after an exhausted record was accepted by the dead-letter queue.
    fn on_dead_letter(&self, letter: &DeadLetter) {
        let _ = letter;
    }
}

/// What a [`SliceProcessor`] answers: an outcome per record, or an error for
/// the whole slice.
pub type SliceResult = std::result::Result<Vec<std::result::Result<Outcome, BoxError>>, BoxError>;

/// Gives a [`SliceProcessor`] to a [`Consumer`](super::Consumer):
/// `Consumer::new(config, source, Slices(my_slice_processor), store, dlq)`.
#[derive(Debug, Clone, Default)]
pub struct Slices<B>(pub B);

/// What the engine passes to every call of user code: the attempt timeout
/// and whether a failed slice is bisected (from the
/// [`ConsumerConfig`](super::ConsumerConfig)), the clock the timeout runs
/// on, and the counters of timed-out and bisection calls.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub(super) consumer_id: &'a str,
    pub(super) timeout: Option<Duration>,
    pub(super) bisect: bool,
    pub(super) clock: &'a SharedClock,
    pub(super) timeouts: &'a metrics::Counter,
    pub(super) bisect_calls: &'a metrics::Counter,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("timeout", &self.timeout)
            .field("bisect", &self.bisect)
            .finish_non_exhaustive()
    }
}

impl Call<'_> {
    /// Runs one call of user code, cancelled (dropped) at the attempt
    /// timeout.
    async fn run<T>(
        &self,
        call: impl Future<Output = std::result::Result<T, BoxError>>,
    ) -> std::result::Result<T, BoxError> {
        let Some(timeout) = self.timeout else {
            return call.await;
        };
        tokio::select! {
            biased;
            r = call => r,
            () = self.clock.sleep(timeout) => {
                self.timeouts.increment(1);
                Err(Box::new(AttemptTimedOut(timeout)))
            }
        }
    }
}

/// The error of an attempt cancelled at
/// [`ConsumerConfig::attempt_timeout`](super::ConsumerConfig::attempt_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the attempt ran longer than the attempt timeout ({0:?}) and was cancelled")]
pub struct AttemptTimedOut(pub Duration);

/// How the engine calls user code: implemented for every [`Processor`] (one
/// record per call) and for [`Slices`] of a [`SliceProcessor`]. Implement
/// one of those two, not this.
pub trait Handler: Send + Sync {
    /// The record type.
    type Record: Record;

    /// Most records per call (1 for a [`Processor`]).
    fn max_slice(&self, configured: usize) -> usize;

    /// Runs the items; one result per item, in order.
    fn handle<'a>(
        &'a self,
        items: &'a [SliceItem<'a, Self::Record>],
        call: Call<'a>,
    ) -> impl Future<Output = Vec<std::result::Result<Outcome, BoxError>>> + Send + 'a;

    /// Runs one item (the common case, without the slice's allocations).
    fn handle_one<'a>(
        &'a self,
        item: SliceItem<'a, Self::Record>,
        call: Call<'a>,
    ) -> impl Future<Output = std::result::Result<Outcome, BoxError>> + Send + 'a;

    /// Called after an exhausted record was accepted by the dead-letter queue.
    fn on_dead_letter(&self, letter: &DeadLetter);
}

impl<P: Processor> Handler for P {
    type Record = P::Record;

    fn max_slice(&self, _configured: usize) -> usize {
        1
    }

    async fn handle<'a>(
        &'a self,
        items: &'a [SliceItem<'a, Self::Record>],
        call: Call<'a>,
    ) -> Vec<std::result::Result<Outcome, BoxError>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(call.run(self.process(item.record, &item.attempt)).await);
        }
        out
    }

    async fn handle_one<'a>(
        &'a self,
        item: SliceItem<'a, Self::Record>,
        call: Call<'a>,
    ) -> std::result::Result<Outcome, BoxError> {
        call.run(self.process(item.record, &item.attempt)).await
    }

    fn on_dead_letter(&self, letter: &DeadLetter) {
        Processor::on_dead_letter(self, letter);
    }
}

type SliceOutcomes = Vec<std::result::Result<Outcome, BoxError>>;

impl<B: SliceProcessor> Slices<B> {
    /// One call of the slice processor: its per-record outcomes, or why the
    /// call failed as a whole (an error, the timeout, or an answer that
    /// does not hold one result per record).
    async fn call_once(
        &self,
        items: &[SliceItem<'_, B::Record>],
        call: Call<'_>,
    ) -> std::result::Result<SliceOutcomes, BoxError> {
        let results = call.run(self.0.process_slice(items)).await?;
        if results.len() != items.len() {
            return Err(format!(
                "the slice processor answered {} results for {} records",
                results.len(),
                items.len()
            )
            .into());
        }
        Ok(results)
    }

    /// Calls the slice; if the call fails as a whole, bisects it (when
    /// asked) or fails every record with the call's error. Boxed: a
    /// bisection calls it again for its pool.
    fn run_slice<'s>(
        &'s self,
        items: &'s [SliceItem<'s, B::Record>],
        call: Call<'s>,
    ) -> Pin<Box<dyn Future<Output = SliceOutcomes> + Send + 's>> {
        Box::pin(async move {
            match self.call_once(items, call).await {
                Ok(results) => results,
                Err(e) if !call.bisect || items.len() == 1 => slice_failed(items.len(), &*e),
                Err(e) => self.bisect(items, e, call).await,
            }
        })
    }

    /// `items` failed as a whole with `error`: finds the failing records.
    /// Calls the first half of the part known to fail; if it succeeds, the
    /// failure is in the second half (split again, not called whole); if
    /// it fails, the second half joins a pool called once at the end (and
    /// bisected in turn if that fails). One failing record among `n` costs
    /// ⌈log₂ n⌉ calls to isolate plus at most one for the pool; it is
    /// given the error of the smallest call that failed with it.
    async fn bisect(
        &self,
        items: &[SliceItem<'_, B::Record>],
        error: BoxError,
        call: Call<'_>,
    ) -> SliceOutcomes {
        let n = items.len();
        let mut out: Vec<Option<std::result::Result<Outcome, BoxError>>> =
            (0..n).map(|_| None).collect();
        let (mut lo, mut hi) = (0, n);
        let mut error = error;
        let mut pool: Vec<usize> = Vec::new();
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            call.bisect_calls.increment(1);
            match self.call_once(&items[lo..mid], call).await {
                Ok(results) => {
                    for (k, r) in results.into_iter().enumerate() {
                        out[lo + k] = Some(r);
                    }
                    lo = mid;
                }
                Err(e) => {
                    pool.extend(mid..hi);
                    hi = mid;
                    error = e;
                }
            }
        }
        out[lo] = slice_failed(1, &*error).pop();
        if !pool.is_empty() {
            call.bisect_calls.increment(1);
            let rest: Vec<_> = pool.iter().map(|&i| items[i].clone()).collect();
            let results = self.run_slice(&rest, call).await;
            for (i, r) in pool.into_iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err("the bisection gave the record no result".into())))
            .collect()
    }
}

/// `n` results of a slice call that failed as a whole.
fn slice_failed(n: usize, e: &(dyn std::error::Error + Send + Sync + 'static)) -> SliceOutcomes {
    let info = crate::error::ErrorInfo::from_error(e);
    (0..n)
        .map(|_| Err(Box::new(SliceFailed(info.clone())) as BoxError))
        .collect()
}

impl<B: SliceProcessor> Handler for Slices<B> {
    type Record = B::Record;

    fn max_slice(&self, configured: usize) -> usize {
        configured.max(1)
    }

    async fn handle<'a>(
        &'a self,
        items: &'a [SliceItem<'a, Self::Record>],
        call: Call<'a>,
    ) -> SliceOutcomes {
        self.run_slice(items, call).await
    }

    async fn handle_one<'a>(
        &'a self,
        item: SliceItem<'a, Self::Record>,
        call: Call<'a>,
    ) -> std::result::Result<Outcome, BoxError> {
        let items = [item];
        self.handle(&items, call)
            .await
            .pop()
            .unwrap_or_else(|| Err("the slice processor answered no result".into()))
    }

    fn on_dead_letter(&self, letter: &DeadLetter) {
        self.0.on_dead_letter(letter);
    }
}

/// The whole slice failed: every record gets this error.
#[derive(Debug)]
struct SliceFailed(crate::error::ErrorInfo);

impl std::fmt::Display for SliceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the slice failed: {}", self.0)
    }
}

impl std::error::Error for SliceFailed {}
