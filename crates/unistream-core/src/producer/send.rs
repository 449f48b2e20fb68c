//! The send step: [`Producer::send_one`] takes the oldest sealed batch
//! from the buffer, sends it to the sink and commits, narrows or keeps it by
//! what the sink accepted, reporting a [`SendStep`]; after a failure the
//! producer is on hold for the [`RetryPolicy`]'s wait (`hold`), which `put`
//! never sleeps through and `flush` waits out (`wait_hold`,
//! `send_waiting`). One task sends at a time: the caller holds the sender
//! lock, whose [`SenderState`] is the retry state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::Producer;
use crate::buffer::Buffer;
use crate::error::ErrorInfo;
use crate::error::{Error, Result};
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::sink::{Delivery, Sink};

/// What the producer did about sending, after a `put` or `tick`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SendStep {
    /// No sealed batch ("we should not emit").
    NotReady,
    /// A batch is ready but a failed send's wait has not passed ("on hold
    /// due to exponential backoff").
    OnHold {
        /// When the next send may happen.
        until: DateTime<Utc>,
    },
    /// Another task is sending right now.
    Busy,
    /// A batch was sent and committed.
    Sent {
        /// The ids sent.
        ids: Vec<String>,
    },
    /// A batch failed; it stays buffered.
    Failed {
        /// The ids of the batch.
        ids: Vec<String>,
        /// The sink's error.
        error: ErrorInfo,
        /// Consecutive failed sends.
        failures: u32,
        /// When the next send may happen.
        retry_at: DateTime<Utc>,
    },
    /// A batch was partly accepted; the rest stays buffered.
    Partial {
        /// The ids of the batch.
        ids: Vec<String>,
        /// The ids not accepted.
        rejected: Vec<String>,
        /// The sink's error.
        error: ErrorInfo,
        /// Consecutive failed sends.
        failures: u32,
        /// When the next send may happen.
        retry_at: DateTime<Utc>,
    },
}

/// The sender's retry state, behind the producer's sender lock: whoever
/// holds the lock is the one task sending.
#[derive(Debug, Default)]
pub(super) struct SenderState {
    /// Consecutive failed (or partly accepted) sends.
    pub(super) failures: u32,
    /// No batch is sent before this instant.
    pub(super) hold_until: Option<DateTime<Utc>>,
}

impl<B: Buffer, S: Sink, C> Producer<B, S, C> {
    /// Seals the active batch and sends up to `batches` batches, waiting out
    /// holds.
    pub(super) async fn seal_and_send(&self, batches: usize) -> Result<()> {
        let mut st = self.sender.lock().await;
        self.buffer.seal()?;
        self.set_active_since(None);
        for _ in 0..batches {
            if !self.buffer.should_emit() {
                break;
            }
            self.send_waiting(&mut st).await?;
        }
        Ok(())
    }

    /// Waits out a hold and sends the oldest batch; an error once the policy's
    /// `max_attempts` consecutive sends have failed.
    async fn send_waiting(&self, st: &mut SenderState) -> Result<()> {
        self.wait_hold(st).await;
        let step = self.send_one(st).await?;
        match send_error(&step, st.failures) {
            Some(e) if st.failures >= self.config.retry.max_attempts() => Err(e),
            _ => Ok(()),
        }
    }

    async fn wait_hold(&self, st: &SenderState) {
        if let Some(until) = st.hold_until {
            let wait = (until - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                debug!(?wait, "waiting out the backoff before sending");
                self.clock.sleep(wait).await;
            }
        }
    }

    pub(super) async fn send_one(&self, st: &mut SenderState) -> Result<SendStep> {
        if !self.buffer.should_emit() {
            debug!("we should not emit");
            return Ok(SendStep::NotReady);
        }
        let now = self.clock.now();
        if let Some(until) = st.hold_until
            && now < until
        {
            debug!(%until, "on hold due to exponential backoff");
            return Ok(SendStep::OnHold { until });
        }
        let Some(batch) = self.buffer.emit()? else {
            return Ok(SendStep::NotReady);
        };
        let ids: Vec<String> = batch.records.iter().map(|r| r.id.clone()).collect();
        debug!(batch = batch.id, records = ids.len(), "send records");
        let started = std::time::Instant::now();
        let sent = self.sink.send(&batch.records).await;
        self.metrics
            .send_seconds
            .record(started.elapsed().as_secs_f64());
        match sent {
            Ok(Delivery::All) => {
                self.metrics.sent.increment(ids.len() as u64);
                self.buffer.commit(&batch)?;
                self.metrics.backlog(&self.buffer);
                *st = SenderState::default();
                info!(batch = batch.id, records = ids.len(), "batch sent");
                Ok(SendStep::Sent { ids })
            }
            Ok(Delivery::Partial {
                mut rejected,
                error,
            }) => {
                rejected.retain(|&i| i < ids.len());
                rejected.sort_unstable();
                rejected.dedup();
                self.metrics
                    .sent
                    .increment((ids.len() - rejected.len()) as u64);
                if rejected.is_empty() {
                    self.buffer.commit(&batch)?;
                    self.metrics.backlog(&self.buffer);
                    *st = SenderState::default();
                    return Ok(SendStep::Sent { ids });
                }
                self.metrics.rejected.increment(rejected.len() as u64);
                self.buffer.narrow(&batch, &rejected)?;
                self.metrics.backlog(&self.buffer);
                let retry_at = self.hold(st);
                let rejected: Vec<String> = rejected.iter().map(|&i| ids[i].clone()).collect();
                warn!(batch = batch.id, rejected = rejected.len(), of = ids.len(), %error, failures = st.failures, %retry_at, "batch partly accepted; the rest stays buffered");
                Ok(SendStep::Partial {
                    ids,
                    rejected,
                    error,
                    failures: st.failures,
                    retry_at,
                })
            }
            Err(e) => {
                self.metrics.sends_failed.increment(1);
                if let Some(denied) = Error::denied_in(&*e) {
                    // Retrying cannot grant a permission: say so at once.
                    // The batch stays buffered, for a run that may send it.
                    warn!(batch = batch.id, records = ids.len(), error = %denied, "send denied; the batch stays buffered");
                    return Err(denied);
                }
                let error = ErrorInfo::from_error(&*e);
                let retry_at = self.hold(st);
                warn!(batch = batch.id, records = ids.len(), %error, failures = st.failures, %retry_at, "send failed; the batch stays buffered");
                Ok(SendStep::Failed {
                    ids,
                    error,
                    failures: st.failures,
                    retry_at,
                })
            }
        }
    }

    /// Puts the producer on hold after a failed or partly accepted send: no
    /// batch is sent until the policy's wait has passed (`send_one` refuses
    /// before, `wait_hold` sleeps until then), so the hold lasts exactly that
    /// wait, which is recorded now.
    fn hold(&self, st: &mut SenderState) -> DateTime<Utc> {
        st.failures = st.failures.saturating_add(1);
        let wait = self
            .config
            .retry
            .delay_before(st.failures.saturating_add(1));
        self.metrics.hold_seconds.record(wait.as_secs_f64());
        let until =
            self.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        st.hold_until = Some(until);
        until
    }
}

/// The error a failed or partly accepted send step reports as
/// [`Error::SendFailed`] (`None` for any other step).
pub(super) fn send_error(step: &SendStep, failures: u32) -> Option<Error> {
    match step {
        SendStep::Failed { ids, error, .. } => Some(Error::SendFailed {
            records: ids.len(),
            failures,
            source: error.to_string().into(),
        }),
        SendStep::Partial {
            rejected, error, ..
        } => Some(Error::SendFailed {
            records: rejected.len(),
            failures,
            source: error.to_string().into(),
        }),
        _ => None,
    }
}
