//! `unistream dlq show` and `unistream dlq redrive` against an AWS emulator
//! (moto): an SQS dead-letter queue written by the library, redriven into a
//! Kinesis stream; a file dead-letter queue redriven into a Kinesis stream.
//! Run with `cargo xtask it`.

use chrono::Utc;
use unistream_core::ErrorInfo;
use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
use unistream_core::source::Pointer;
use unistream_local::{Durability, FileDeadLetterQueue};
use unistream_sqs_dlq::SqsDeadLetterQueue;
use unistream_test_support::{Env, Service};

mod tool;
use tool::{env_with, json, text, unistream_at};

/// Letter `i`: record `{"id": "rI"}` with key `kI`, three attempts.
fn letter(i: usize) -> DeadLetter {
    let mut l = DeadLetter::new(
        "c1",
        format!("r{i}"),
        format!("{{\"id\": \"r{i}\"}}").into_bytes(),
        Pointer::new(i.to_string()),
        Utc::now(),
    );
    l.partition_key = Some(format!("k{i}"));
    l.attempts = 3;
    l.error = Some(ErrorInfo::new(format!("boom {i}")));
    l
}

/// (record id is not in Kinesis: partition key, data) of `letters`, sorted.
fn want(letters: &[DeadLetter]) -> Vec<(String, Vec<u8>)> {
    let mut w: Vec<_> = letters
        .iter()
        .map(|l| (l.partition_key.clone().unwrap(), l.data.clone()))
        .collect();
    w.sort();
    w
}

/// Every record of a one-shard stream: (partition key, data), sorted.
async fn stream_records(env: &Env, stream: &str) -> Vec<(String, Vec<u8>)> {
    let kinesis = env.kinesis();
    let shards = env.shards(stream).await;
    let mut got = Vec::new();
    for (shard, _) in shards {
        let mut it = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let out = kinesis
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .unwrap();
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                got.push((
                    r.partition_key().unwrap_or_default().to_owned(),
                    r.data().as_ref().to_vec(),
                ));
            }
            it = out.next_shard_iterator;
        }
    }
    got.sort();
    got
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn dlq_show_and_redrive_an_sqs_queue_into_a_kinesis_stream() {
    let Some(env) = env_with(&[Service::Sqs, Service::Kinesis]).await else {
        return;
    };
    let url = env.create_queue(false).await;
    let stream = env.create_stream(1).await;
    let letters: Vec<DeadLetter> = (0..12).map(letter).collect();
    let dlq = SqsDeadLetterQueue::new(env.sqs(), &url);
    dlq.send_many(&letters).await.unwrap();
    // Not a unistream letter (no record_id): left in place, reported.
    env.sqs()
        .send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();

    // show reads without consuming: twice the same 13, the depth unchanged.
    let j = json(&unistream_at(
        &env,
        &["dlq", "show", "--queue-url", &url, "--max", "5", "--json"],
    ));
    assert_eq!(j["letters"].as_array().unwrap().len(), 5, "{j}");
    assert_eq!(j["depth"]["visible"], 13);
    let letter0 = j["letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["record_id"].is_string())
        .unwrap();
    assert_eq!(letter0["attempts"], 3);
    assert!(letter0["error"].as_str().unwrap().starts_with("boom"));
    let out = unistream_at(&env, &["dlq", "show", "--queue-url", &url, "--max", "50"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("about 13 letters") && t.contains("boom"), "{t}");
    assert_eq!(t.matches("boom").count(), 12, "every letter once: {t}");

    // Redrive, 4 then the rest.
    let j = json(&unistream_at(
        &env,
        &[
            "dlq",
            "redrive",
            "--queue-url",
            &url,
            "--to-stream",
            &stream,
            "--max",
            "4",
            "--json",
        ],
    ));
    let first = j["redriven"].as_u64().unwrap();
    assert_eq!(first + j["left"].as_u64().unwrap(), 4, "{j}");
    let j = json(&unistream_at(
        &env,
        &[
            "dlq",
            "redrive",
            "--queue-url",
            &url,
            "--to-stream",
            &stream,
            "--json",
        ],
    ));
    assert_eq!(first + j["redriven"].as_u64().unwrap(), 12, "{j}");
    let errors = j["errors"].as_array().unwrap();
    assert!(
        errors.len() == 1 && errors[0]["error"].as_str().unwrap().contains("record_id"),
        "{j}"
    );
    assert_eq!(stream_records(&env, &stream).await, want(&letters));
    // Only the non-letter is left, visible again at once.
    let j = json(&unistream_at(
        &env,
        &["dlq", "show", "--queue-url", &url, "--json"],
    ));
    assert_eq!(j["depth"]["visible"], 1, "{j}");
    assert_eq!(j["letters"][0]["record_id"], serde_json::Value::Null);
    env.delete_queue(&url).await;
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn dlq_redrive_a_file_queue_into_a_kinesis_stream() {
    let Some(env) = env_with(&[Service::Kinesis]).await else {
        return;
    };
    let stream = env.create_stream(1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dlq.jsonl");
    let letters: Vec<DeadLetter> = (0..3).map(letter).collect();
    let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
    for l in &letters {
        dlq.send(l).await.unwrap();
    }
    drop(dlq);
    let p = path.to_str().unwrap();
    let out = unistream_at(&env, &["dlq", "redrive", p, "--to-stream", &stream]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("redriven: 3 records"), "{t}");
    assert_eq!(stream_records(&env, &stream).await, want(&letters));
    assert_eq!(std::fs::read(&path).unwrap(), b"", "the queue is empty");

    // A stream that does not exist: the letters stay, each reported.
    let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
    dlq.send(&letters[0]).await.unwrap();
    drop(dlq);
    let before = std::fs::read(&path).unwrap();
    let out = unistream_at(
        &env,
        &[
            "dlq",
            "redrive",
            p,
            "--to-stream",
            "no-such-stream",
            "--json",
        ],
    );
    let t = text(&out);
    let j = json(&out);
    assert_eq!(
        (j["redriven"].as_u64(), j["left"].as_u64()),
        (Some(0), Some(1)),
        "{t}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    env.delete_stream(&stream).await;
}
