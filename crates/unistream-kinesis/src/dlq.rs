//! [`KinesisDeadLetterQueue`]: dead letters into another Kinesis stream.

use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
use unistream_core::sink::{Delivery, EncodedRecord, Sink};
use unistream_core::{Error, Result};

use crate::KinesisSink;
use crate::error::KinesisError;

/// A dead-letter queue that is another Kinesis stream, written through a
/// [`KinesisSink`].
///
/// Each letter is one Kinesis record: the JSON object of
/// [`DeadLetter::to_json`] (`record`, `record_id`, `attempts`, `error`,
/// `consumer_id`, `pointer`, times; the same a file dead-letter queue
/// writes), partitioned by the record's partition key (its id if unknown).
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) {
/// use unistream_kinesis::{KinesisDeadLetterQueue, KinesisSink};
/// let dlq = KinesisDeadLetterQueue::new(KinesisSink::new(client, "orders-dlq"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KinesisDeadLetterQueue {
    sink: KinesisSink,
}

impl KinesisDeadLetterQueue {
    /// A queue writing through `sink`.
    pub fn new(sink: KinesisSink) -> Self {
        KinesisDeadLetterQueue { sink }
    }
}

impl DeadLetterQueue for KinesisDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<()> {
        let line = letter.to_json();
        let key: String = letter
            .partition_key
            .as_deref()
            .unwrap_or(&letter.record_id)
            .chars()
            .take(256)
            .collect();
        let key = if key.is_empty() { "-".to_owned() } else { key };
        let record = EncodedRecord::new(&letter.record_id, key, line);
        self.sink
            .validate(&record)
            .map_err(|reason| Error::InvalidRecord {
                record_id: letter.record_id.clone(),
                reason,
            })?;
        match self.sink.send(std::slice::from_ref(&record)).await {
            Ok(Delivery::All) => Ok(()),
            Ok(Delivery::Partial { error, .. }) => Err(KinesisError::DeadLetter {
                record_id: letter.record_id.clone(),
                source: error.to_string().into(),
            }
            .into()),
            Err(e) => Err(KinesisError::DeadLetter {
                record_id: letter.record_id.clone(),
                source: e,
            }
            .into()),
        }
    }
}
