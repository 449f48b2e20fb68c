//! [`SqsDeadLetterQueue`]: dead letters as SQS messages, in batches, with
//! the failure in message attributes (see `docs/production.md`).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use base64::Engine as _;
use tracing::warn;
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::Refusal;

use crate::error::SqsError;
use unistream_core::{Error, Result};

/// Most messages in one `SendMessageBatch`.
pub const MAX_BATCH_MESSAGES: usize = 10;
/// Most bytes in one message, and in one `SendMessageBatch`.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A dead-letter queue in an SQS queue; see the crate docs.
///
/// ```no_run
/// # async fn demo(client: aws_sdk_sqs::Client) {
/// use unistream_sqs_dlq::SqsDeadLetterQueue;
/// let dlq = SqsDeadLetterQueue::new(client, "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq.fifo");
/// # }
/// ```
#[derive(Clone)]
pub struct SqsDeadLetterQueue {
    client: Client,
    queue_url: String,
    fifo: bool,
    retry: RetryPolicy,
    clock: SharedClock,
}

impl std::fmt::Debug for SqsDeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SqsDeadLetterQueue {{ queue_url: {:?}, fifo: {}, .. }}",
            self.queue_url, self.fifo
        )
    }
}

struct Message {
    record_id: String,
    entry: SendMessageBatchRequestEntry,
    bytes: usize,
}

fn attribute(
    record_id: &str,
    data_type: &str,
    v: impl Into<String>,
) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(v)
        .build()
        .map_err(|source| {
            SqsError::Build {
                what: "message attribute",
                record_id: record_id.to_owned(),
                source,
            }
            .into()
        })
}

/// `id` if SQS takes it as a FIFO group or deduplication id, else `h-` and
/// a checksum of it.
fn fifo_id(id: &str) -> String {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if ok {
        id.to_owned()
    } else {
        format!("h-{:08x}-{}", crc32c::crc32c(id.as_bytes()), id.len())
    }
}

impl SqsDeadLetterQueue {
    /// A queue at `queue_url` (FIFO if it ends in `.fifo`).
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        SqsDeadLetterQueue {
            client,
            fifo: queue_url.ends_with(".fifo"),
            queue_url,
            retry: RetryPolicy::waits([100, 500, 2000].map(Duration::from_millis)),
            clock: Arc::new(SystemClock),
        }
    }

    /// Waits and attempts for entries SQS failed (default 4 attempts).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Uses another clock (virtual in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The SQS client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn message(&self, n: usize, l: &DeadLetter) -> Result<Message> {
        let (body, base64) = match std::str::from_utf8(&l.data) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&l.data),
                true,
            ),
        };
        let error: String = l
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
            .chars()
            .take(1000)
            .collect();
        let mut attrs = vec![
            ("consumer_id", l.consumer_id.clone()),
            ("record_id", l.record_id.clone()),
            ("pointer", l.pointer.to_string()),
            ("last_attempt_time", l.last_attempt_time.to_rfc3339()),
            ("dead_letter_time", l.dead_letter_time.to_rfc3339()),
        ];
        if !error.is_empty() {
            attrs.push(("error", error));
        }
        if let Some(t) = l.first_attempt_time {
            attrs.push(("first_attempt_time", t.to_rfc3339()));
        }
        if let Some(k) = &l.partition_key {
            attrs.push(("partition_key", k.clone()));
        }
        if base64 {
            attrs.push(("body_encoding", "base64".to_owned()));
        }
        let mut bytes = body.len() + "attempts".len() + 10;
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(format!("m{n}"))
            .message_body(body)
            .message_attributes(
                "attempts",
                attribute(&l.record_id, "Number", l.attempts.to_string())?,
            );
        for (name, value) in attrs {
            bytes += name.len() + value.len() + 6;
            entry = entry.message_attributes(name, attribute(&l.record_id, "String", value)?);
        }
        if self.fifo {
            let group = l.partition_key.as_deref().unwrap_or(&l.record_id);
            entry = entry
                .message_group_id(fifo_id(group))
                .message_deduplication_id(fifo_id(&l.record_id));
        }
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::InvalidRecord {
                record_id: l.record_id.clone(),
                reason: Refusal::Unrepresentable(format!(
                    "its dead letter is {bytes} bytes, over SQS's {MAX_BATCH_BYTES}; use a file or Kinesis dead-letter queue for records this large"
                )),
            });
        }
        Ok(Message {
            record_id: l.record_id.clone(),
            entry: entry.build().map_err(|source| SqsError::Build {
                what: "message",
                record_id: l.record_id.clone(),
                source,
            })?,
            bytes,
        })
    }

    /// Sends letters in batches of at most 10 messages and 256 KiB,
    /// retrying the entries SQS failed. Returns once all are stored.
    ///
    /// # Errors
    ///
    /// [`SqsError`](crate::SqsError) (as `Error::Backend`) if SQS refuses
    /// messages for good;
    /// [`Error::InvalidRecord`](unistream_core::Error::InvalidRecord) for a
    /// letter too large for SQS.
    pub async fn send_many(&self, letters: &[DeadLetter]) -> Result<()> {
        let messages = letters
            .iter()
            .enumerate()
            .map(|(n, l)| self.message(n, l))
            .collect::<Result<Vec<_>>>()?;
        let mut batch: Vec<Message> = Vec::new();
        let mut bytes = 0;
        for m in messages {
            if batch.len() == MAX_BATCH_MESSAGES || bytes + m.bytes > MAX_BATCH_BYTES {
                self.send_batch(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += m.bytes;
            batch.push(m);
        }
        if !batch.is_empty() {
            self.send_batch(batch).await?;
        }
        Ok(())
    }

    async fn send_batch(&self, mut batch: Vec<Message>) -> Result<()> {
        let mut attempt = 1;
        loop {
            let entries: Vec<_> = batch.iter().map(|m| m.entry.clone()).collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| SqsError::api("SendMessageBatch", &self.queue_url, e))?;
            let failed = out.failed();
            if failed.is_empty() {
                return Ok(());
            }
            let describe = || {
                failed
                    .iter()
                    .map(|f| {
                        let record = batch
                            .iter()
                            .find(|m| m.entry.id() == f.id())
                            .map_or("?", |m| m.record_id.as_str());
                        format!("{record}: {} {}", f.code(), f.message().unwrap_or_default())
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            if failed.iter().any(|f| f.sender_fault()) || !self.retry.allows(attempt + 1) {
                return Err(SqsError::Refused {
                    queue_url: self.queue_url.clone(),
                    failed: failed.len(),
                    sent: batch.len(),
                    detail: describe(),
                }
                .into());
            }
            warn!(queue = %self.queue_url, failed = failed.len(), "SendMessageBatch partly failed; retrying those messages");
            let failed_ids: Vec<String> = failed.iter().map(|f| f.id().to_owned()).collect();
            batch.retain(|m| failed_ids.iter().any(|id| id == m.entry.id()));
            attempt += 1;
            self.clock.sleep(self.retry.delay_before(attempt)).await;
        }
    }
}

impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<()> {
        self.send_many(std::slice::from_ref(letter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_ids_are_used_as_is_or_replaced() {
        assert_eq!(fifo_id("order-17"), "order-17");
        assert!(fifo_id("with space").starts_with("h-"));
        assert!(fifo_id("ü").starts_with("h-"));
        assert!(fifo_id(&"x".repeat(129)).starts_with("h-"));
        assert_ne!(fifo_id("a b"), fifo_id("a  b"));
    }
}
