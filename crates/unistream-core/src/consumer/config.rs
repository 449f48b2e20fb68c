//! [`ConsumerConfig`]: the settings of a [`Consumer`](super::Consumer), and
//! [`OnExhausted`].

use std::time::Duration;

#[cfg(doc)]
use super::Consumer;
use crate::error::{Error, Result};
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

/// Settings of a [`Consumer`].
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
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
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
