//! # unistream-sqs-dlq
//!
//! A [`DeadLetterQueue`](unistream_core::dlq::DeadLetterQueue) over Amazon
//! SQS.
//!
//! - The message **body** is the record's bytes — as text when they are
//!   UTF-8, else base64 with the attribute `body_encoding = base64`.
//! - **Message attributes** carry the failure: `consumer_id`, `record_id`,
//!   `attempts` (Number), `error` (the last error and its causes, at most
//!   1,000 characters), `first_attempt_time`, `last_attempt_time`,
//!   `dead_letter_time`, `pointer`.
//! - **FIFO queues** (URL ending in `.fifo`): the group id is the record's
//!   partition key (its id if unknown), the deduplication id its record id;
//!   an id SQS does not accept (over 128 characters, or characters outside
//!   printable ASCII) is replaced by `h-` and a checksum of it.
//! - [`SqsDeadLetterQueue::send_many`] sends in `SendMessageBatch` calls of
//!   at most 10 messages and 256 KiB, and retries the entries SQS failed
//!   (not the ones it accepted).
//! - A letter over SQS's 256 KiB message limit is refused with
//!   [`Error::InvalidRecord`](unistream_core::Error::InvalidRecord) naming the
//!   record: the consumer keeps the record exhausted and reports the error,
//!   nothing is dropped. Use a file or Kinesis dead-letter queue for such
//!   records.
//! - [`redrive`] reads the letters back and puts their records into a stream
//!   through a producer, deleting each message only once its record was
//!   accepted; [`redrive_to_sink`] puts them straight into a sink, deleting
//!   each message only once the sink accepted its record.
//! - [`SqsDeadLetterQueue::peek`] reads letters without consuming them;
//!   [`SqsDeadLetterQueue::depth`] is the queue's approximate depth.

#![warn(missing_docs)]

mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod peek;
mod queue;
mod redrive;

pub use error::SqsError;
pub use peek::{PeekedLetter, QueueDepth};
pub use queue::{MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, SqsDeadLetterQueue};
pub use redrive::{RedriveReport, redrive, redrive_to_sink};
pub use unistream_core::dlq::LeftLetter;
