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
}

impl ConsumerConfig {
    /// Defaults: `limit` 100, 3 attempts waiting 1 s then 2 s, the DLQ
    /// retried 5 times (1, 2, 4, 8 s), locks of 15 minutes, 1 s idle delay,
    /// continue after exhausted records, poll forever.
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
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.limit == 0 {
            return Err(Error::Config("limit must be at least 1".into()));
        }
        if self.consumer_id.is_empty() {
            return Err(Error::Config("consumer_id must not be empty".into()));
        }
        Ok(())
    }
}
