//! [`ConsumerConfig`]: the settings of a [`Consumer`](super::Consumer), and
//! [`OnExhausted`].

use std::time::Duration;

#[cfg(doc)]
use super::Consumer;
use crate::error::{Error, Result};
use crate::filter::FilterCriteria;
use crate::retry::RetryPolicy;

/// What to do after a record is exhausted and sent to the dead-letter queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnExhausted {
    /// Go on with the next record (default).
    #[default]
    Continue,
    /// Strict ordering: stop and return [`Error::Halted`] so an operator is
    /// alerted. The record stays exhausted (it is in the dead-letter queue);
    /// a restarted consumer goes on after it.
    Halt,
}

/// Settings of a [`Consumer`]: [`new`](Self::new) with the consumer's id,
/// then a setter per field to change (the fields are public too).
///
/// ```
/// use std::time::Duration;
/// use unistream_core::consumer::{ConsumerConfig, OnExhausted};
/// use unistream_core::retry::RetryPolicy;
///
/// let config = ConsumerConfig::new("orders")
///     .limit(500)
///     .concurrency(64)
///     .retry(RetryPolicy::waits([1, 2, 4].map(Duration::from_secs)))
///     .on_exhausted(OnExhausted::Halt);
/// assert_eq!((config.limit, config.concurrency), (500, 64));
/// assert_eq!(config.retry.max_attempts(), 4);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Names the consumer in its checkpoint, locks and dead letters.
    pub consumer_id: String,
    /// Most records per batch.
    pub limit: usize,
    /// Attempts and waits for processing one record.
    pub retry: RetryPolicy,
    /// Attempts and waits for handing a record to the dead-letter queue.
    pub dlq_retry: RetryPolicy,
    /// How long a record's lock lives (whole seconds, at least 1).
    pub lock_expire: Duration,
    /// Wait before pulling again after a pull that found nothing new.
    pub delay: Duration,
    /// Continue or halt after an exhausted record.
    pub on_exhausted: OnExhausted,
    /// Make [`Consumer::run`] return when it has caught up with the stream
    /// instead of polling for more.
    pub stop_at_end: bool,
    /// Most records in flight at once (at least 1). 1 (the default)
    /// processes the batch strictly in stream order, one record at a time.
    /// Above 1, records of different partition keys run concurrently; a
    /// record starts only once the previous record with its key is done
    /// (succeeded, ignored or dead-lettered), so each key keeps its stream
    /// order and never has two records in flight, and one record's backoff
    /// never holds up other keys.
    pub concurrency: usize,
    /// Records per call of a [`SliceProcessor`](super::SliceProcessor)
    /// (ignored by a [`Processor`](super::Processor)). Default 100.
    pub slice_size: usize,
    /// Mark more records started per checkpoint write than are about to
    /// run; `None` (the default) marks only the records that start now.
    /// See [`CheckpointInterval`].
    pub checkpoint_interval: Option<CheckpointInterval>,
    /// After a shutdown request, how long records in flight may take to
    /// finish before they are dropped (they stay `in_progress` and are
    /// retried after a restart, their attempt counted). Default 30 s.
    pub shutdown_grace: Duration,
    /// Records older than this are not attempted again: they are exhausted
    /// and go to the dead-letter queue (payload included) with an error
    /// saying so (Lambda's `MaximumRecordAgeInSeconds`). Checked before
    /// every attempt, and a retry wait ends at the record's age limit. A
    /// record's age counts from the source's arrival time (Kinesis:
    /// `ApproximateArrivalTimestamp`), else from the time the record
    /// carries ([`Record::create_at`](crate::record::Record::create_at);
    /// the Unix epoch means unknown), else from when this consumer first
    /// read it. `None` (the default): no limit.
    pub max_record_age: Option<Duration>,
    /// An attempt (a processor call; for a slice, each call) that runs
    /// longer than this is cancelled and counts as a failed attempt with an
    /// error saying so; its key and its slot are freed. At most
    /// [`lock_expire`](Self::lock_expire). `None` (the default): no limit.
    pub attempt_timeout: Option<Duration>,
    /// A slice whose call fails as a whole (an error, a timeout or a
    /// malformed answer, not per-record outcomes) is split in halves,
    /// recursively, until the failing records are alone (Lambda's
    /// `BisectBatchOnFunctionError`). The calls of a bisection are one
    /// attempt: a record that then succeeds has one attempt counted. One
    /// failing record among `n` costs at most ⌈log₂ n⌉ + 1 extra calls.
    /// Default `false`. Ignored by a [`Processor`](super::Processor).
    pub bisect_on_error: bool,
    /// Records that match none of these patterns are settled as ignored
    /// without an attempt (Lambda's `FilterCriteria`); see
    /// [`FilterCriteria`]. `None` (the default): every record is processed.
    pub filter: Option<FilterCriteria>,
}

/// Fewer checkpoint writes for processors that accept replays: the
/// "attempt started" of up to `records` records is written in one call
/// before the first of them starts, and results are written with the next
/// such call (or once `time` has passed since the last write).
///
/// The trade-off: a `kill -9` replays up to `records` records that were
/// marked (and counts an attempt against each, even those that had not
/// started yet); `max_attempts` still holds across crashes. Use it with a
/// sequential consumer (concurrency 1), where marks follow stream order
/// across keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInterval {
    /// Records marked started per write (at least 1).
    pub records: usize,
    /// Results are written at least this often, if any are unsaved.
    pub time: Option<Duration>,
}

impl CheckpointInterval {
    /// Marks `records` records per write; results wait for the next mark.
    pub fn records(records: usize) -> Self {
        CheckpointInterval {
            records,
            time: None,
        }
    }

    /// Also writes unsaved results once `time` has passed since the last
    /// write.
    pub fn with_time(mut self, time: Duration) -> Self {
        self.time = Some(time);
        self
    }
}

impl ConsumerConfig {
    /// Defaults: `limit` 100, 3 attempts waiting 1 s then 2 s, the DLQ
    /// retried 5 times (1, 2, 4, 8 s), locks of 15 minutes, 1 s idle delay,
    /// continue after exhausted records, poll forever, one record in flight,
    /// slices of 100, no checkpoint interval, 30 s of shutdown grace.
    pub fn new(consumer_id: impl Into<String>) -> Self {
        ConsumerConfig {
            consumer_id: consumer_id.into(),
            limit: 100,
            retry: RetryPolicy::default(),
            dlq_retry: RetryPolicy::waits([1, 2, 4, 8].map(Duration::from_secs)),
            lock_expire: Duration::from_secs(900),
            delay: Duration::from_secs(1),
            on_exhausted: OnExhausted::Continue,
            stop_at_end: false,
            concurrency: 1,
            slice_size: 100,
            checkpoint_interval: None,
            shutdown_grace: Duration::from_secs(30),
            max_record_age: None,
            attempt_timeout: None,
            bisect_on_error: false,
            filter: None,
        }
    }

    /// Sets [`consumer_id`](Self::consumer_id): the name in checkpoints, locks and dead letters.
    #[must_use]
    pub fn consumer_id(mut self, consumer_id: impl Into<String>) -> Self {
        self.consumer_id = consumer_id.into();
        self
    }

    /// Sets [`limit`](Self::limit): most records per batch (default 100).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets [`retry`](Self::retry): attempts and waits per record (default 3 attempts, 1 s then 2 s).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`dlq_retry`](Self::dlq_retry): attempts and waits for the dead-letter queue (default 1, 2, 4, 8 s).
    #[must_use]
    pub fn dlq_retry(mut self, dlq_retry: RetryPolicy) -> Self {
        self.dlq_retry = dlq_retry;
        self
    }

    /// Sets [`lock_expire`](Self::lock_expire): how long a record's lock lives (default 15 minutes).
    #[must_use]
    pub fn lock_expire(mut self, lock_expire: Duration) -> Self {
        self.lock_expire = lock_expire;
        self
    }

    /// Sets [`delay`](Self::delay): the wait after a pull that found nothing new (default 1 s).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets [`on_exhausted`](Self::on_exhausted): continue or halt after an exhausted record (default continue).
    #[must_use]
    pub fn on_exhausted(mut self, on_exhausted: OnExhausted) -> Self {
        self.on_exhausted = on_exhausted;
        self
    }

    /// Sets [`stop_at_end`](Self::stop_at_end): whether `run` returns once caught up (default false).
    #[must_use]
    pub fn stop_at_end(mut self, stop_at_end: bool) -> Self {
        self.stop_at_end = stop_at_end;
        self
    }

    /// Sets [`concurrency`](Self::concurrency): most records in flight at once (default 1).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`slice_size`](Self::slice_size): records per call of a slice processor (default 100).
    #[must_use]
    pub fn slice_size(mut self, slice_size: usize) -> Self {
        self.slice_size = slice_size;
        self
    }

    /// Sets [`checkpoint_interval`](Self::checkpoint_interval): an interval, or `None` (the default).
    #[must_use]
    pub fn checkpoint_interval(
        mut self,
        checkpoint_interval: impl Into<Option<CheckpointInterval>>,
    ) -> Self {
        self.checkpoint_interval = checkpoint_interval.into();
        self
    }

    /// Sets [`shutdown_grace`](Self::shutdown_grace): how long records in flight may finish after a shutdown request (default 30 s).
    #[must_use]
    pub fn shutdown_grace(mut self, shutdown_grace: Duration) -> Self {
        self.shutdown_grace = shutdown_grace;
        self
    }

    /// Sets [`max_record_age`](Self::max_record_age): records older than this go to the dead-letter queue without another attempt.
    #[must_use]
    pub fn max_record_age(mut self, max_record_age: impl Into<Option<Duration>>) -> Self {
        self.max_record_age = max_record_age.into();
        self
    }

    /// Sets [`attempt_timeout`](Self::attempt_timeout): attempts running longer are cancelled and count as failed.
    #[must_use]
    pub fn attempt_timeout(mut self, attempt_timeout: impl Into<Option<Duration>>) -> Self {
        self.attempt_timeout = attempt_timeout.into();
        self
    }

    /// Sets [`bisect_on_error`](Self::bisect_on_error): split a failed slice until the failing records are alone.
    #[must_use]
    pub fn bisect_on_error(mut self, bisect_on_error: bool) -> Self {
        self.bisect_on_error = bisect_on_error;
        self
    }

    /// Sets [`filter`](Self::filter): keep only the records that match one of the patterns.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<Option<FilterCriteria>>) -> Self {
        self.filter = filter.into();
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.max_record_age.is_some_and(|a| a.is_zero()) {
            return Err(Error::Config("max_record_age must be above 0".into()));
        }
        if let Some(t) = self.attempt_timeout {
            if t.is_zero() {
                return Err(Error::Config("attempt_timeout must be above 0".into()));
            }
            if t > self.lock_expire {
                return Err(Error::Config(format!(
                    "attempt_timeout ({t:?}) must be at most lock_expire ({:?}): else an attempt could outlive its lock and run twice",
                    self.lock_expire
                )));
            }
        }
        if self.limit == 0 {
            return Err(Error::Config("limit must be at least 1".into()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.slice_size == 0 {
            return Err(Error::Config("slice_size must be at least 1".into()));
        }
        if self.checkpoint_interval.is_some_and(|i| i.records == 0) {
            return Err(Error::Config(
                "checkpoint_interval.records must be at least 1".into(),
            ));
        }
        if self.consumer_id.is_empty() {
            return Err(Error::Config("consumer_id must not be empty".into()));
        }
        Ok(())
    }
}
