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

/// Settings of a [`Producer`]: [`default`](Self::default), then a setter per
/// field to change (the fields are public too).
///
/// ```
/// use std::time::Duration;
/// use unistream_core::producer::{ProducerConfig, SendErrors, WhenFull};
///
/// let config = ProducerConfig::default()
///     .linger(Duration::from_millis(200))
///     .send_errors(SendErrors::Return)
///     .when_full(WhenFull::Wait);
/// assert_eq!(config.linger, Some(Duration::from_millis(200)));
/// assert_eq!(ProducerConfig::default().linger(None).linger, None);
/// ```
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

impl ProducerConfig {
    /// Sets [`retry`](Self::retry): the waits between failed sends (default [`RetryPolicy::unbounded_backoff_to_a_minute`]).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`linger`](Self::linger): a duration, or `None` to seal only full batches (default 1 s).
    #[must_use]
    pub fn linger(mut self, linger: impl Into<Option<Duration>>) -> Self {
        self.linger = linger.into();
        self
    }

    /// Sets [`send_errors`](Self::send_errors): whether `put` returns send errors (default [`SendErrors::Log`]).
    #[must_use]
    pub fn send_errors(mut self, send_errors: SendErrors) -> Self {
        self.send_errors = send_errors;
        self
    }

    /// Sets [`when_full`](Self::when_full): what `put` does when the buffer is full (default [`WhenFull::Error`]).
    #[must_use]
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }
}
