//! Smoke tests of the integration environment: each proves that one
//! emulated service works through the real SDK the way our backends need.
//! They run under `cargo xtask it`; a plain `cargo test` lists them as
//! ignored.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use unistream_test_support::{Env, Service};

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn kinesis_stream_round_trips_a_record() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let k = env.kinesis();
    let stream = env.create_stream(1).await;
    let data = br#"{"id": "1", "create_at": "2024-01-09T06:24:06.759449+00:00", "value": 72}"#;
    let put = k
        .put_record()
        .stream_name(&stream)
        .partition_key("1")
        .data(Blob::new(data.to_vec()))
        .send()
        .await
        .unwrap();
    let shards = k.list_shards().stream_name(&stream).send().await.unwrap();
    let shard = shards.shards()[0].shard_id().to_owned();
    assert_eq!(put.shard_id(), shard);
    let iterator = k
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let got = k
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    let records = got.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].data().as_ref(),
        data,
        "raw bytes, no extra encoding"
    );
    assert_eq!(records[0].partition_key(), Some("1"));
    assert_eq!(records[0].sequence_number(), put.sequence_number());
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn dynamodb_conditional_write_fails_with_the_typed_error() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::DynamoDb) {
        return;
    }
    let d = env.without_retries().dynamodb();
    let table = env.create_table("pk").await;
    let put = || {
        d.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("consumer-1".into()))
            .item("owner", AttributeValue::S("a".into()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .send()
    };
    put().await.unwrap();
    let err = put().await.unwrap_err().into_service_error();
    assert!(
        matches!(err, PutItemError::ConditionalCheckFailedException(_)),
        "expected ConditionalCheckFailedException, got {err:?}"
    );
    env.delete_table(&table).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn s3_round_trips_an_object_and_reports_no_such_key() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::S3) {
        return;
    }
    let s3 = env.without_retries().s3();
    let bucket = env.create_bucket().await;
    let body = b"line 1\nline 2\n\xff binary".to_vec();
    s3.put_object()
        .bucket(&bucket)
        .key("checkpoints/consumer 1.json")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("checkpoints/consumer 1.json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[..]
    );
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("missing")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, GetObjectError::NoSuchKey(_)),
        "expected NoSuchKey, got {err:?}"
    );
    env.delete_bucket(&bucket).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn sqs_fifo_queue_round_trips_a_batch_in_order() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Sqs) {
        return;
    }
    let sqs = env.sqs();
    let url = env.create_queue(true).await;
    let entries: Vec<_> = (1..=3)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(format!("{{\"id\": \"{i}\"}}"))
                .message_group_id("key-1")
                .message_deduplication_id(format!("record-{i}"))
                .build()
                .unwrap()
        })
        .collect();
    let sent = sqs
        .send_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.successful().len(), 3);
    assert!(sent.failed().is_empty());
    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        assert!(
            !got.messages().is_empty(),
            "messages missing after {bodies:?}"
        );
        for m in got.messages() {
            bodies.push(m.body().unwrap_or_default().to_owned());
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(
        bodies,
        ["{\"id\": \"1\"}", "{\"id\": \"2\"}", "{\"id\": \"3\"}"]
    );
    env.delete_queue(&url).await;
}
