//! [`ProducerConfig`]: the settings of a [`Producer`](super::Producer),
//! and the choices it holds ([`SendErrors`], [`WhenFull`]).

use std::time::Duration;

#[cfg(doc)]
use super::{Producer, SendStep};
#[cfg(doc)]
use crate::error::Error;
use crate::retry::RetryPolicy;

/// What happens to a failed send as seen by `put`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendErrors {
    /// Log it and return `Ok` with a [`SendStep::Failed`] (default): the
    /// records stay buffered and are retried.
    #[default]
    Log,
    /// Return [`Error::SendFailed`] from `put` (the record put *was*
    /// accepted and stays buffered).
    Return,
}

/// What `put` does when the buffer is at its byte cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Return [`Error::BufferFull`]; the record was not accepted (default).
    #[default]
    Error,
    /// Send batches (waiting out backoffs) until there is room.
    Wait,
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Waits between failed sends; `max_attempts` bounds `flush` (and a
    /// `put` that waits for room), never the buffering itself.
    pub retry: RetryPolicy,
    /// Seal a non-full active batch once its first record is this old, so a
    /// trickle of records is still delivered. Checked on `put` and `tick`.
    pub linger: Option<Duration>,
    /// Whether `put` returns send errors.
    pub send_errors: SendErrors,
    /// What `put` does when the buffer is full.
    pub when_full: WhenFull,
}

impl Default for ProducerConfig {
    /// The seed's waits (1, 2, 4, 8, 15, 30, 60 s, then 60 s, no limit), a
    /// linger of 1 s, send errors logged, `BufferFull` returned.
    fn default() -> Self {
        ProducerConfig {
            retry: RetryPolicy::unbounded_backoff_to_a_minute(),
            linger: Some(Duration::from_secs(1)),
            send_errors: SendErrors::Log,
            when_full: WhenFull::Error,
        }
    }
}
