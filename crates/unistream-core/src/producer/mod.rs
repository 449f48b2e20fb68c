//! The producer engine: [`Producer`] (this file: `put`, the buffer, the
//! linger), its settings (`config.rs`), the send step and its holds
//! (`send.rs`) and its metrics (`metrics.rs`). See `docs/producer.md`.
//!
//! [`Producer::put`] encodes a record and appends it to the [`Buffer`]; only
//! then does it return (so a record `put` accepted survives a crash, to the
//! buffer's durability). Then, if a sealed batch is ready and the producer is
//! not *on hold*, it sends the oldest batch to the [`Sink`]:
//! - success: the batch is committed and the retry state reset;
//! - failure: the batch stays, and the producer is on hold until the wait the
//!   [`RetryPolicy`] gives for the next attempt has passed. **`put` never
//!   sleeps**: while on hold, further puts only append;
//! - partial acceptance: the batch is narrowed to the rejected records
//!   (accepted ones are never sent again) and the producer holds as for a
//!   failure.
//!
//! [`Producer::flush`] seals the active batch and sends everything,
//! honouring the waits (it does sleep), until the buffer is empty or the
//! policy's `max_attempts` consecutive failures.
//!
//! Dropping a producer never loses a record `put` accepted: what was not sent
//! stays in the buffer for the next start.
//!
//! Every step is a `tracing` event and is also returned as a [`SendStep`], so
//! a program can print the seed's demo output.
//!
//! Metrics (through the `metrics` facade; names, units and meaning in
//! `docs/operations.md`): records put, sent and rejected, failed sends, send
//! durations, the length of each hold, and the buffer's backlog (records,
//! bytes, segment files) after every put and every send that changed it. The
//! handles are registered when the producer is built: install a recorder
//! before.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::debug;

use crate::buffer::Buffer;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::record::{Codec, JsonCodec, Record};
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::sink::{EncodedRecord, Sink};

mod config;
mod metrics;
mod send;

pub use config::{ProducerConfig, SendErrors, WhenFull};
pub use send::SendStep;

use self::metrics::ProducerMetrics;
use self::send::{SenderState, send_error};

/// A reliable producer over a [`Buffer`] and a [`Sink`]. Share it between
/// tasks with an `Arc`: every method takes `&self`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::{DateTime, Utc};
/// use serde::{Deserialize, Serialize};
/// use unistream_core::buffer::BufferLimits;
/// use unistream_core::clock::VirtualClock;
/// use unistream_core::memory::{MemoryBuffer, MemorySink};
/// use unistream_core::producer::{Producer, ProducerConfig, SendStep};
/// use unistream_core::record::{iso8601, Record};
///
/// #[derive(Serialize, Deserialize)]
/// struct Event { id: String, #[serde(with = "iso8601")] create_at: DateTime<Utc> }
/// impl Record for Event {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
///
/// let sink = MemorySink::default();
/// let producer = Producer::new(ProducerConfig::default(), MemoryBuffer::new(BufferLimits::records(2)), sink.clone())
///     .with_clock(VirtualClock::default());
/// let e = |id: &str| Event { id: id.into(), create_at: Utc::now() };
/// assert_eq!(producer.put(&e("1")).await?, SendStep::NotReady);
/// sink.fail_next(1);
/// assert!(matches!(producer.put(&e("2")).await?, SendStep::Failed { .. }));
/// assert!(matches!(producer.put(&e("3")).await?, SendStep::OnHold { .. })); // put never sleeps
/// producer.flush().await?; // waits out the backoff (here in virtual time)
/// assert_eq!(sink.ids(), ["1", "2", "3"]);
/// # Ok(()) }
/// ```
pub struct Producer<B, S, C = JsonCodec> {
    config: ProducerConfig,
    buffer: B,
    sink: S,
    codec: C,
    clock: SharedClock,
    sender: tokio::sync::Mutex<SenderState>,
    active_since: Mutex<Option<DateTime<Utc>>>,
    metrics: ProducerMetrics,
}

impl<B, S, C> std::fmt::Debug for Producer<B, S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.config)
            .field("buffer", &std::any::type_name::<B>())
            .field("sink", &std::any::type_name::<S>())
            .finish_non_exhaustive()
    }
}

impl<B: Buffer, S: Sink> Producer<B, S, JsonCodec> {
    /// A producer encoding records as JSON, on the system clock. Registers
    /// its metrics (with the recorder installed now, if any) and sets the
    /// backlog gauges to what the buffer holds (e.g. records recovered from a
    /// write-ahead log).
    pub fn new(config: ProducerConfig, buffer: B, sink: S) -> Self {
        let metrics = ProducerMetrics::new(&buffer);
        Producer {
            config,
            buffer,
            sink,
            codec: JsonCodec::default(),
            clock: std::sync::Arc::new(SystemClock),
            sender: tokio::sync::Mutex::new(SenderState::default()),
            active_since: Mutex::new(None),
            metrics,
        }
    }
}

impl<B: Buffer, S: Sink, C> Producer<B, S, C> {
    /// Uses another codec.
    pub fn with_codec<C2>(self, codec: C2) -> Producer<B, S, C2> {
        Producer {
            config: self.config,
            buffer: self.buffer,
            sink: self.sink,
            codec,
            clock: self.clock,
            sender: self.sender,
            active_since: self.active_since,
            metrics: self.metrics,
        }
    }

    /// Uses another clock (a [`VirtualClock`](crate::clock::VirtualClock) in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// The buffer.
    pub fn buffer(&self) -> &B {
        &self.buffer
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    fn encode<R: Record>(&self, record: &R) -> Result<EncodedRecord>
    where
        C: Codec<R>,
    {
        let encoded = EncodedRecord::new(
            record.id(),
            record.partition_key(),
            self.codec.encode(record)?,
        )
        .with_explicit_hash_key(record.explicit_hash_key().map(str::to_owned));
        self.sink
            .validate(&encoded)
            .map_err(|reason| Error::InvalidRecord {
                record_id: encoded.id.clone(),
                reason,
            })?;
        Ok(encoded)
    }

    /// Encodes `record`, stores it in the buffer (durably, before
    /// returning), then sends the oldest ready batch unless on hold. The
    /// record is accepted iff this returns `Ok` — or
    /// [`Error::SendFailed`], which only reports a failed send.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRecord`] if the codec, the sink or the buffer refuses
    /// the record, [`Error::BufferFull`] (with `WhenFull::Error`), an I/O error
    /// of the buffer — in each case the record was not accepted; and, with
    /// `SendErrors::Return`, [`Error::SendFailed`], which only reports a failed
    /// send of an accepted record.
    pub async fn put<R: Record>(&self, record: &R) -> Result<SendStep>
    where
        C: Codec<R>,
    {
        let encoded = self.encode(record)?;
        self.store(std::slice::from_ref(&encoded)).await?;
        self.after_put().await
    }

    /// Puts a record that is already encoded (e.g. one read back from a
    /// dead-letter queue to redrive it). The same guarantees as [`put`](Self::put).
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    pub async fn put_encoded(&self, record: EncodedRecord) -> Result<SendStep> {
        self.sink
            .validate(&record)
            .map_err(|reason| Error::InvalidRecord {
                record_id: record.id.clone(),
                reason,
            })?;
        self.store(std::slice::from_ref(&record)).await?;
        self.after_put().await
    }

    /// [`put`](Self::put) for many records at once: one write (and one sync)
    /// for all of them. Either all are accepted or none.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put); a refused record refuses the whole call.
    pub async fn put_many<R: Record>(&self, records: &[R]) -> Result<SendStep>
    where
        C: Codec<R>,
    {
        let encoded = records
            .iter()
            .map(|r| self.encode(r))
            .collect::<Result<Vec<_>>>()?;
        self.store(&encoded).await?;
        self.after_put().await
    }

    /// Seals a lingering active batch and sends a ready one unless on hold:
    /// call it on a timer when puts are rare.
    ///
    /// # Errors
    ///
    /// The buffer's error; with `SendErrors::Return`, [`Error::SendFailed`].
    pub async fn tick(&self) -> Result<SendStep> {
        self.after_put().await
    }

    /// Seals the active batch and sends everything, waiting out backoffs;
    /// returns when the buffer is empty, or with [`Error::SendFailed`] after
    /// `max_attempts` consecutive failures.
    ///
    /// # Errors
    ///
    /// [`Error::SendFailed`] once the retry policy's `max_attempts` is used up
    /// (the records stay buffered), or the buffer's error.
    pub async fn flush(&self) -> Result<()> {
        self.seal_and_send(usize::MAX).await
    }

    async fn store(&self, records: &[EncodedRecord]) -> Result<()> {
        loop {
            let stored = match records {
                [one] => self.buffer.put(one).await,
                many => self.buffer.put_many(many).await,
            };
            match stored {
                Err(Error::BufferFull { .. }) if self.config.when_full == WhenFull::Wait => {
                    self.make_room().await?;
                }
                Ok(()) => {
                    self.metrics.put.increment(records.len() as u64);
                    self.metrics.backlog(&self.buffer);
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    /// Sends one batch, waiting out a hold, to free room in a full buffer.
    async fn make_room(&self) -> Result<()> {
        self.seal_and_send(1).await
    }

    fn set_active_since(&self, t: Option<DateTime<Utc>>) {
        *self
            .active_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }

    /// Seals the active batch if it has lingered too long.
    fn check_linger(&self) -> Result<()> {
        let Some(linger) = self.config.linger else {
            return Ok(());
        };
        let active = self.buffer.stats().active_records;
        let now = self.clock.now();
        let mut since = self
            .active_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *since {
            _ if active == 0 => *since = None,
            None => *since = Some(now),
            Some(t) if (now - t).to_std().unwrap_or(Duration::ZERO) >= linger => {
                debug!(records = active, ?linger, "sealing a lingering batch");
                self.buffer.seal()?;
                *since = None;
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn after_put(&self) -> Result<SendStep> {
        self.check_linger()?;
        let Ok(mut st) = self.sender.try_lock() else {
            return Ok(SendStep::Busy);
        };
        let step = self.send_one(&mut st).await?;
        match (self.config.send_errors, send_error(&step, st.failures)) {
            (SendErrors::Return, Some(e)) => Err(e),
            _ => Ok(step),
        }
    }
}
