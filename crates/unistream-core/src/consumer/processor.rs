//! What the user writes: the [`Processor`] trait, the [`Outcome`] of an
//! attempt, and the [`Attempt`] it is given.

use std::future::Future;

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
        }
    }
}

/// The user's processing code (the seed's `process_record`).
///
/// Contract: `process` MAY fail (any error; it is recorded with its cause
/// chain and retried); it MUST NOT assume it runs once per record — delivery
/// is at-least-once. `on_dead_letter` is told after the dead-letter queue has
/// accepted an exhausted record.
///
/// ```
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
/// struct Totals { sum: u64 }
/// impl Processor for Totals {
///     type Record = Order;
///     async fn process(&mut self, order: &Order, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
///         if order.amount == 0 {
///             return Ok(Outcome::Ignored);
///         }
///         self.sum = self.sum.checked_add(order.amount).ok_or("overflow")?;
///         Ok(Outcome::Succeeded)
///     }
/// }
/// ```
pub trait Processor: Send {
    /// The record type, decoded by the consumer's codec.
    type Record: Record;

    /// Processes one record.
    fn process(
        &mut self,
        record: &Self::Record,
        attempt: &Attempt<'_>,
    ) -> impl Future<Output = std::result::Result<Outcome, BoxError>> + Send;

    /// Called after an exhausted record was accepted by the dead-letter queue.
    fn on_dead_letter(&mut self, letter: &DeadLetter) {
        let _ = letter;
    }
}
