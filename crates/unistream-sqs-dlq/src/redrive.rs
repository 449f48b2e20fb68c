//! Redrive: sending dead letters back into a stream.

use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
};
use base64::Engine as _;
use tracing::{info, warn};
use unistream_core::buffer::Buffer;
use unistream_core::clock::SystemClock;
use unistream_core::dlq::LeftLetter;
pub use unistream_core::dlq::RedriveReport;
use unistream_core::producer::Producer;
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::{EncodedRecord, Sink, send_until_accepted};
use unistream_core::{Error, Result};

use crate::SqsDeadLetterQueue;
use crate::error::SqsError;

/// How long [`redrive_to_sink`] hides the messages it received while their
/// records go to the sink (if it dies, they come back after this).
const REDRIVE_VISIBILITY_SECONDS: i32 = 120;

pub(crate) fn record_of(m: &Message) -> std::result::Result<EncodedRecord, String> {
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
                    report.leave(LeftLetter::new(
                        m.message_id().unwrap_or_default(),
                        None,
                        why,
                    ));
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

/// Reads the messages of `queue` and puts their records back into `sink`
/// directly (no producer, no buffer: for a one-off redrive such as the
/// `unistream dlq redrive` command), deleting a message only once the sink
/// accepted its record. Stops when the queue has nothing left to receive,
/// after `max` messages, or when the sink took none of a batch (the stream
/// unreachable, say). `on_progress` is called with the report so far after
/// each batch.
///
/// Per batch: up to 10 messages are received and hidden for two minutes;
/// their records are sent with [`send_until_accepted`] (rejected ones are
/// sent again a few times); the messages of the accepted records are
/// deleted (`DeleteMessageBatch`). A crash at any point loses nothing: a
/// message not yet deleted becomes visible again and is redriven by the
/// next run, its record at worst put twice.
///
/// A message that is not a unistream letter, or whose record the sink
/// refuses or keeps rejecting, is left in the queue and reported in
/// [`RedriveReport::errors`]; at the end those messages are made visible
/// again at once (`ChangeMessageVisibility` to 0) instead of after the two
/// minutes. In a FIFO queue a left message holds back the rest of its
/// message group until then.
///
/// # Errors
///
/// [`SqsError`](crate::SqsError) (as `Error::Backend`) if receiving or
/// deleting fails. The records the sink accepted but whose messages are not
/// deleted are put again by the next redrive; nothing is lost.
pub async fn redrive_to_sink<S: Sink>(
    queue: &SqsDeadLetterQueue,
    sink: &S,
    max: Option<u64>,
    mut on_progress: impl FnMut(&RedriveReport),
) -> Result<RedriveReport> {
    let client = queue.client();
    let url = queue.queue_url();
    let policy = RetryPolicy::waits([100, 500, 2000].map(Duration::from_millis));
    let mut report = RedriveReport::default();
    // Receipt handles of the messages left, to make visible again.
    let mut left: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let result = async {
        loop {
            let looked_at = report.redriven + report.left;
            let want = max.map_or(10, |m| m.saturating_sub(looked_at).min(10));
            if want == 0 {
                break;
            }
            let out = client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(i32::try_from(want).unwrap_or(10))
                .message_attribute_names("All")
                .visibility_timeout(REDRIVE_VISIBILITY_SECONDS)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| SqsError::api("ReceiveMessage", url, e))?;
            if out.messages().is_empty() {
                break;
            }
            // A letter left earlier came back (its hiding ran out before the
            // queue looked empty, with tens of thousands left): every letter
            // has been looked at once. Stop, or this would never end.
            if out
                .messages()
                .iter()
                .any(|m| m.message_id().is_some_and(|id| seen.contains(id)))
            {
                left.extend(
                    out.messages()
                        .iter()
                        .map(|m| m.receipt_handle().unwrap_or_default().to_owned()),
                );
                break;
            }
            seen.extend(
                out.messages()
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_owned)),
            );
            let mut batch: Vec<(&Message, EncodedRecord)> = Vec::new();
            for m in out.messages() {
                match record_of(m) {
                    Ok(r) => batch.push((m, r)),
                    Err(why) => {
                        left.push(m.receipt_handle().unwrap_or_default().to_owned());
                        report.leave(LeftLetter::new(
                            m.message_id().unwrap_or_default(),
                            None,
                            why,
                        ));
                    }
                }
            }
            let records: Vec<EncodedRecord> = batch.iter().map(|(_, r)| r.clone()).collect();
            let outcome = send_until_accepted(sink, &records, &policy, &SystemClock).await;
            let sent = records.iter().filter(|r| sink.validate(r).is_ok()).count();
            let mut accepted: Vec<&Message> = Vec::new();
            for ((m, r), why) in batch.into_iter().zip(outcome) {
                match why {
                    None => accepted.push(m),
                    Some(e) => {
                        left.push(m.receipt_handle().unwrap_or_default().to_owned());
                        report.leave(LeftLetter::new(
                            m.message_id().unwrap_or_default(),
                            Some(r.id),
                            e.to_string(),
                        ));
                    }
                }
            }
            if !accepted.is_empty() {
                delete(queue, &accepted).await?;
                report.redriven += accepted.len() as u64;
            }
            on_progress(&report);
            if sent > 0 && accepted.is_empty() {
                warn!(queue = %url, "the sink took none of a batch; redrive stopped");
                break;
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    // Best effort: if it fails, they come back when their timeout ends.
    if let Err(e) = show_again(queue, &left).await {
        warn!(queue = %url, error = %e, "cannot make the messages left visible again; they are after {REDRIVE_VISIBILITY_SECONDS} s");
    }
    result?;
    info!(queue = %url, redriven = report.redriven, left = report.left, "redrive done");
    Ok(report)
}

/// Deletes `messages` (at most 10), whose records the sink accepted.
async fn delete(queue: &SqsDeadLetterQueue, messages: &[&Message]) -> Result<()> {
    let url = queue.queue_url();
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .map_err(|source| {
                    Error::from(SqsError::Build {
                        what: "delete entry",
                        record_id: m.message_id().unwrap_or_default().to_owned(),
                        source,
                    })
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = queue
        .client()
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| SqsError::api("DeleteMessageBatch", url, e))?;
    for f in out.failed() {
        // The record is in the stream; the message comes back and the next
        // redrive puts it again (at-least-once).
        warn!(queue = %url, entry = f.id(), code = f.code(), "cannot delete a redriven message; its record will be put again");
    }
    Ok(())
}

/// Makes the messages of `receipts` visible again now.
pub(crate) async fn show_again(queue: &SqsDeadLetterQueue, receipts: &[String]) -> Result<()> {
    let url = queue.queue_url();
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|source| {
                        Error::from(SqsError::Build {
                            what: "visibility entry",
                            record_id: String::new(),
                            source,
                        })
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let out = queue
            .client()
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| SqsError::api("ChangeMessageVisibilityBatch", url, e))?;
        if let Some(f) = out.failed().first() {
            warn!(queue = %url, failed = out.failed().len(), code = f.code(), "some messages stay hidden until their visibility timeout ends");
        }
    }
    Ok(())
}
