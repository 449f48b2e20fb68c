//! A partial `SendMessageBatch` failure, with the SDK client mocked by
//! `aws-smithy-mocks` (the emulator cannot fail part of a batch).

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use unistream_core::clock::VirtualClock;
use unistream_core::dlq::DeadLetter;
use unistream_sqs_dlq::SqsDeadLetterQueue;

fn letter(id: &str) -> DeadLetter {
    DeadLetter::new(
        "c",
        id,
        id.as_bytes().to_vec(),
        id.into(),
        chrono::Utc::now(),
    )
}

fn ok(id: &str) -> SendMessageBatchResultEntry {
    SendMessageBatchResultEntry::builder()
        .id(id)
        .message_id(format!("msg-{id}"))
        .md5_of_message_body("x")
        .build()
        .unwrap()
}

#[tokio::test]
async fn only_the_failed_entries_of_a_batch_are_sent_again() {
    let first = mock!(Client::send_message_batch)
        .match_requests(|r| r.entries().len() == 3)
        .then_output(|| {
            SendMessageBatchOutput::builder()
                .successful(ok("m0"))
                .successful(ok("m2"))
                .failed(
                    BatchResultErrorEntry::builder()
                        .id("m1")
                        .code("InternalError")
                        .sender_fault(false)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        });
    let retry = mock!(Client::send_message_batch)
        .match_requests(|r| r.entries().len() == 1 && r.entries()[0].id() == "m1")
        .then_output(|| {
            SendMessageBatchOutput::builder()
                .successful(ok("m1"))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&first, &retry]);
    let clock = VirtualClock::default();
    let dlq = SqsDeadLetterQueue::new(client, "https://sqs.local/q").with_clock(clock.clone());
    dlq.send_many(&[letter("a"), letter("b"), letter("c")])
        .await
        .unwrap();
    assert_eq!((first.num_calls(), retry.num_calls()), (1, 1));
    assert_eq!(clock.sleeps(), vec![Duration::from_millis(100)]);
}
