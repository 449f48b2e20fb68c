//! Redrive: sending dead letters back into a stream.

use aws_sdk_sqs::types::Message;
use base64::Engine as _;
use tracing::{info, warn};
use unistream_core::buffer::Buffer;
use unistream_core::producer::Producer;
use unistream_core::sink::{EncodedRecord, Sink};
use unistream_core::{Error, Result};

use crate::SqsDeadLetterQueue;
use crate::error::SqsError;

/// What [`redrive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Records put back through the producer (and their messages deleted).
    pub redriven: u64,
    /// Messages left in the queue because their record could not be put.
    pub left: u64,
}

fn record_of(m: &Message) -> std::result::Result<EncodedRecord, String> {
    let attr = |name: &str| {
        m.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    let body = m.body().unwrap_or_default();
    let data = if attr("body_encoding").as_deref() == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("bad base64 body: {e}"))?
    } else {
        body.as_bytes().to_vec()
    };
    let id = attr("record_id").ok_or("no record_id attribute: not a unistream dead letter")?;
    let key = attr("partition_key").unwrap_or_else(|| id.clone());
    Ok(EncodedRecord::new(id, key, data))
}

/// Reads every message of `queue` and puts its record back through
/// `producer` (the record's original bytes, id and partition key). A message
/// is deleted only after the producer accepted its record — it is then in
/// the producer's buffer, durably — so a crash mid-redrive loses nothing and
/// at worst puts a record twice. Stops when the queue has nothing left to
/// receive, or after `max` messages. Call `producer.flush()` afterwards to
/// wait for the records to reach the stream.
///
/// # Errors
///
/// [`SqsError`](crate::SqsError) (as `Error::Backend`) if receiving or deleting
/// fails, or the producer's error; a letter is deleted only once its record is
/// accepted, so nothing is lost.
pub async fn redrive<B: Buffer, S: Sink, C>(
    queue: &SqsDeadLetterQueue,
    producer: &Producer<B, S, C>,
    max: Option<u64>,
) -> Result<RedriveReport> {
    let client = queue.client();
    let url = queue.queue_url();
    let mut report = RedriveReport::default();
    loop {
        if max.is_some_and(|m| report.redriven + report.left >= m) {
            break;
        }
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| SqsError::api("ReceiveMessage", url, e))?;
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let record = match record_of(m) {
                Ok(r) => r,
                Err(why) => {
                    warn!(queue = %url, message = ?m.message_id(), why, "message left in the queue");
                    report.left += 1;
                    continue;
                }
            };
            match producer.put_encoded(record).await {
                Ok(_) | Err(Error::SendFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| SqsError::api("DeleteMessage", url, e))?;
            report.redriven += 1;
        }
    }
    info!(queue = %url, redriven = report.redriven, left = report.left, "redrive done");
    Ok(report)
}
