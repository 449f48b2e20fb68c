//! The SQS dead-letter queue against a real emulator (moto) through the real
//! SDK. Run with `cargo xtask it`; `cargo test` lists them as ignored.

use std::collections::HashMap;

use chrono::DateTime;
use unistream_core::Error;
use unistream_core::ErrorInfo;
use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
use unistream_core::source::Pointer;
use unistream_sqs_dlq::SqsDeadLetterQueue;
use unistream_test_support::{Env, Service};

fn letter(id: &str, key: &str, data: &[u8]) -> DeadLetter {
    let t = DateTime::from_timestamp(1_704_781_446, 0).unwrap();
    let mut l = DeadLetter::new(
        "orders-consumer",
        id,
        data.to_vec(),
        Pointer::new(format!("4955{id}")),
        t,
    );
    l.partition_key = Some(key.into());
    l.attempts = 3;
    l.error = Some(ErrorInfo {
        message: format!("random error at record_id = {id}"),
        causes: vec!["connection reset".into()],
    });
    l.first_attempt_time = Some(t);
    l
}

async fn receive_all(env: &Env, url: &str, n: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let sqs = env.sqs();
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .unwrap();
            got.push(m.clone());
        }
    }
    got
}

fn attrs(m: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn dead_letters_carry_the_record_and_its_failure() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let url = env.create_queue(false).await;
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    dlq.send_many(&[
        letter("17", "k", br#"{"id": "17", "value": 31}"#),
        letter("bin", "k", b"\xff\x00raw"),
    ])
    .await
    .unwrap();
    let got = receive_all(&env, &url, 2).await;
    assert_eq!(got.len(), 2);
    let by_id: HashMap<String, &aws_sdk_sqs::types::Message> = got
        .iter()
        .map(|m| (attrs(m)["record_id"].clone(), m))
        .collect();
    let m = by_id["17"];
    assert_eq!(
        m.body(),
        Some(r#"{"id": "17", "value": 31}"#),
        "the body is the record's bytes"
    );
    let a = attrs(m);
    assert_eq!(a["consumer_id"], "orders-consumer");
    assert_eq!(a["attempts"], "3");
    assert_eq!(
        a["error"],
        "random error at record_id = 17: connection reset"
    );
    assert_eq!(a["pointer"], "495517");
    assert!(a.contains_key("first_attempt_time") && a.contains_key("last_attempt_time"));
    assert!(!a.contains_key("body_encoding"));
    let b = attrs(by_id["bin"]);
    assert_eq!(b["body_encoding"], "base64");
    assert_eq!(by_id["bin"].body(), Some("/wByYXc="));
    env.delete_queue(&url).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_fifo_queue_keeps_the_order_of_a_key() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let url = env.create_queue(true).await;
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    for i in 0..12 {
        // One at a time, as the consumer sends them; and a batch of 12 (two calls).
        dlq.send(&letter(
            &format!("a{i}"),
            "key-1",
            format!("{{\"n\": {i}}}").as_bytes(),
        ))
        .await
        .unwrap();
    }
    let batch: Vec<_> = (0..12)
        .map(|i| {
            letter(
                &format!("b{i}"),
                "key-1",
                format!("{{\"n\": {i}}}").as_bytes(),
            )
        })
        .collect();
    dlq.send_many(&batch).await.unwrap();
    let got = receive_all(&env, &url, 24).await;
    let ids: Vec<String> = got.iter().map(|m| attrs(m)["record_id"].clone()).collect();
    let expected: Vec<String> = (0..12)
        .map(|i| format!("a{i}"))
        .chain((0..12).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(ids, expected);
    env.delete_queue(&url).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_letter_too_large_for_sqs_is_a_clear_error() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let url = env.create_queue(false).await;
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    let err = dlq
        .send(&letter("huge", "k", &vec![b'x'; 300 * 1024]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRecord { ref record_id, .. } if record_id == "huge"),
        "{err}"
    );
    env.delete_queue(&url).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn redrive_puts_every_dead_letter_back_once() {
    use unistream_core::buffer::BufferLimits;
    use unistream_core::memory::{MemoryBuffer, MemorySink};
    use unistream_core::producer::{Producer, ProducerConfig};
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let url = env.create_queue(false).await;
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    let letters: Vec<_> = (0..23)
        .map(|i| {
            letter(
                &format!("r{i}"),
                &format!("k{}", i % 3),
                format!("{{\"id\": \"r{i}\"}}").as_bytes(),
            )
        })
        .collect();
    dlq.send_many(&letters).await.unwrap();
    let sink = MemorySink::default();
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(5)),
        sink.clone(),
    );
    let report = unistream_sqs_dlq::redrive(&dlq, &producer, None)
        .await
        .unwrap();
    producer.flush().await.unwrap();
    assert_eq!(report.redriven, 23);
    let mut got = sink.records();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want: Vec<_> = letters
        .iter()
        .map(|l| {
            (
                l.record_id.clone(),
                l.partition_key.clone().unwrap(),
                l.data.clone(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(
        got.iter()
            .map(|r| (r.id.clone(), r.partition_key.clone(), r.data.clone()))
            .collect::<Vec<_>>(),
        want,
        "every letter once, with its key and bytes"
    );
    assert!(
        receive_all(&env, &url, 1).await.is_empty(),
        "the queue is empty"
    );
    env.delete_queue(&url).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn peek_reads_without_consuming_and_redrive_to_sink_deletes_what_the_sink_took() {
    use unistream_core::memory::MemorySink;
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let url = env.create_queue(false).await;
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    let letters: Vec<_> = (0..12)
        .map(|i| {
            letter(
                &format!("r{i}"),
                &format!("k{i}"),
                format!("{{\"i\": {i}}}").as_bytes(),
            )
        })
        .collect();
    dlq.send_many(&letters).await.unwrap();
    // Not a unistream letter: no record_id.
    env.sqs()
        .send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();

    let peeked = dlq.peek(5).await.unwrap();
    assert_eq!(peeked.len(), 5);
    let some = peeked.iter().find(|p| p.record_id.is_some()).unwrap();
    assert_eq!(some.attempts, Some(3));
    assert!(some.error.as_deref().unwrap().contains("random error"));
    let all = dlq.peek(100).await.unwrap();
    assert_eq!(all.len(), 13, "every message once, all visible again");
    let depth = dlq.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (13, 0));

    let sink = MemorySink::default();
    let mut progress = Vec::new();
    let report = unistream_sqs_dlq::redrive_to_sink(&dlq, &sink, None, |r| {
        progress.push(r.redriven + r.left);
    })
    .await
    .unwrap();
    assert_eq!((report.redriven, report.left), (12, 1), "{report:?}");
    assert!(report.errors[0].reason.contains("record_id"), "{report:?}");
    assert_eq!(progress.last(), Some(&13));
    let mut got: Vec<_> = sink
        .records()
        .into_iter()
        .map(|r| (r.id, r.partition_key, r.data))
        .collect();
    got.sort();
    let mut want: Vec<_> = letters
        .iter()
        .map(|l| {
            (
                l.record_id.clone(),
                l.partition_key.clone().unwrap(),
                l.data.clone(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    // The message left is visible again at once, not after the timeout.
    let left = receive_all(&env, &url, 1).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body(), Some("hello"));
    env.delete_queue(&url).await;
}
