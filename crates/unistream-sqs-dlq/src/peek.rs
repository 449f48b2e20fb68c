//! Reading letters without consuming them, and the queue's depth.

use std::collections::HashSet;

use aws_sdk_sqs::types::{Message, QueueAttributeName};
use unistream_core::Result;

use crate::SqsDeadLetterQueue;
use crate::error::SqsError;
use crate::redrive::show_again;

/// How long [`SqsDeadLetterQueue::peek`] hides the messages it has seen
/// while it receives the next ones (they are made visible again right
/// after; if it dies, they come back after this).
const PEEK_VISIBILITY_SECONDS: i32 = 30;

/// A letter as read from the queue by [`SqsDeadLetterQueue::peek`]: its
/// message attributes (absent ones are `None`: not a unistream letter, or
/// written without them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeekedLetter {
    /// The SQS message id.
    pub message_id: String,
    /// `record_id`.
    pub record_id: Option<String>,
    /// `partition_key`.
    pub partition_key: Option<String>,
    /// `attempts`.
    pub attempts: Option<u32>,
    /// `error`: the last error and its causes (at most 1,000 characters).
    pub error: Option<String>,
    /// `consumer_id`.
    pub consumer_id: Option<String>,
    /// `pointer`.
    pub pointer: Option<String>,
    /// `dead_letter_time` (RFC 3339).
    pub dead_letter_time: Option<String>,
    /// The body's length in bytes (base64 when `body_encoding` is set).
    pub body_bytes: usize,
    /// SQS's `ApproximateReceiveCount`, this peek included.
    pub receive_count: Option<u32>,
}

impl PeekedLetter {
    fn of(m: &Message) -> Self {
        let attr = |name: &str| {
            m.message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .map(str::to_owned)
        };
        PeekedLetter {
            message_id: m.message_id().unwrap_or_default().to_owned(),
            record_id: attr("record_id"),
            partition_key: attr("partition_key"),
            attempts: attr("attempts").and_then(|a| a.parse().ok()),
            error: attr("error"),
            consumer_id: attr("consumer_id"),
            pointer: attr("pointer"),
            dead_letter_time: attr("dead_letter_time"),
            body_bytes: m.body().map_or(0, str::len),
            receive_count: m
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                })
                .and_then(|c| c.parse().ok()),
        }
    }
}

/// SQS's approximate message counts of a queue (`GetQueueAttributes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDepth {
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted
    /// (a redrive or a peek in progress).
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`.
    pub delayed: u64,
}

impl SqsDeadLetterQueue {
    /// Reads up to `max` letters without consuming them, oldest first as far
    /// as SQS keeps an order (a standard queue is only roughly ordered).
    ///
    /// SQS has no read-only receive. Receiving with `VisibilityTimeout=0`
    /// would leave each message visible, so the next receive could return
    /// the same ones again and a peek could never get past the first few.
    /// So messages are received hidden for 30 seconds, so that each receive
    /// returns new ones, and once `max` are read (or no more come) all of
    /// them are made visible again at once (`ChangeMessageVisibility` to
    /// 0). Nothing is deleted; a crash leaves them hidden for at most the
    /// 30 seconds. Each peek counts as a receive in
    /// `ApproximateReceiveCount` (a queue with its own redrive policy may
    /// move a message on after enough peeks), and while it runs a redrive
    /// does not see those messages. In a FIFO queue, a received message
    /// holds back the rest of its group, so a peek shows the first messages
    /// of each group.
    ///
    /// # Errors
    ///
    /// [`SqsError`](crate::SqsError) (as `Error::Backend`) if receiving
    /// fails, or making the messages visible again does (they are then
    /// visible again after the 30 seconds).
    pub async fn peek(&self, max: usize) -> Result<Vec<PeekedLetter>> {
        let url = self.queue_url();
        let mut seen: HashSet<String> = HashSet::new();
        let mut letters = Vec::new();
        let mut receipts = Vec::new();
        let received = async {
            while letters.len() < max {
                let want = (max - letters.len()).min(10);
                let out = self
                    .client()
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(i32::try_from(want).unwrap_or(10))
                    .message_attribute_names("All")
                    .message_system_attribute_names(
                        aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .visibility_timeout(PEEK_VISIBILITY_SECONDS)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .map_err(|e| SqsError::api("ReceiveMessage", url, e))?;
                let mut new = 0;
                for m in out.messages() {
                    receipts.push(m.receipt_handle().unwrap_or_default().to_owned());
                    let id = m.message_id().unwrap_or_default().to_owned();
                    // A standard queue may deliver a message twice.
                    if seen.insert(id) && letters.len() < max {
                        letters.push(PeekedLetter::of(m));
                        new += 1;
                    }
                }
                if new == 0 {
                    break;
                }
            }
            Ok::<(), unistream_core::Error>(())
        }
        .await;
        let shown = show_again(self, &receipts).await;
        received?;
        shown?;
        Ok(letters)
    }

    /// The queue's approximate depth (`GetQueueAttributes`).
    ///
    /// # Errors
    ///
    /// [`SqsError`](crate::SqsError) (as `Error::Backend`) if the call fails.
    pub async fn depth(&self) -> Result<QueueDepth> {
        let url = self.queue_url();
        let out = self
            .client()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| SqsError::api("GetQueueAttributes", url, e))?;
        let n = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: n(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}
