//! The producer's aggregation and rate limits against a real emulator
//! through the real SDK, and interop with the reference implementation of
//! the KPL format (the `aws-kinesis-agg` Python package, which `cargo xtask
//! it` installs and names in `UNISTREAM_IT_PYTHON`): what our producer
//! aggregates, its deaggregator reads back into exactly the user records put,
//! with their keys. Run them with `cargo xtask it`; a plain `cargo test`
//! lists them as ignored.

use std::collections::HashMap;

use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::memory::MemoryBuffer;
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::sink::EncodedRecord;
use unistream_kinesis::aggregation;
use unistream_kinesis::{Aggregation, KinesisSink, RateLimit};
use unistream_test_support::{Env, Service, interop_python, run_python};

/// One Kinesis record as read from a shard.
struct Stored {
    shard: String,
    partition_key: String,
    data: Vec<u8>,
}

/// Every record of every shard of `stream`, shard by shard, in order.
async fn read_all(env: &Env, stream: &str) -> Vec<Stored> {
    let k = env.kinesis();
    let mut out = Vec::new();
    for (shard, _) in env.shards(stream).await {
        let mut it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let got = k
                .get_records()
                .shard_iterator(i)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            if got.records().is_empty() {
                break;
            }
            for r in got.records() {
                out.push(Stored {
                    shard: shard.clone(),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                });
            }
            it = got.next_shard_iterator;
        }
    }
    out
}

/// The hash-key range of each shard of `stream`.
async fn ranges(env: &Env, stream: &str) -> HashMap<String, (u128, u128)> {
    let out = env
        .kinesis()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_owned(),
                (
                    r.starting_hash_key().parse().unwrap(),
                    r.ending_hash_key().parse().unwrap(),
                ),
            )
        })
        .collect()
}

fn hash(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// 3,000 records of about 100 bytes over 37 partition keys.
fn records() -> Vec<EncodedRecord> {
    (0..3000)
        .map(|i| {
            let mut data = format!("{{\"id\":\"{i}\",\"note\":\"").into_bytes();
            data.resize(98, b'x');
            data.extend_from_slice(b"\"}");
            EncodedRecord::new(i.to_string(), format!("user-{}", i % 37), data)
        })
        .collect()
}

/// Sends `records` through a producer over `sink` (batches of 1,000).
async fn produce(sink: KinesisSink, records: &[EncodedRecord]) {
    let buffer = MemoryBuffer::new(BufferLimits::records(1000));
    for chunk in records.chunks(1000) {
        buffer.put_many(chunk).await.unwrap();
    }
    let mut config = ProducerConfig::default();
    config.linger = None;
    let producer = Producer::new(config, buffer, sink);
    producer.flush().await.unwrap();
}

/// Checks that `users` (shard, partition key, data), read back, are exactly
/// `put`: each once, each key's records in put order, each on the shard its
/// key hashes to.
fn assert_exactly_as_put(
    users: &[(String, String, Vec<u8>)],
    put: &[EncodedRecord],
    ranges: &HashMap<String, (u128, u128)>,
) {
    assert_eq!(users.len(), put.len(), "every user record, once");
    let mut by_key: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for (shard, key, data) in users {
        let (start, end) = ranges[shard];
        let h = hash(key);
        assert!(
            start <= h && h <= end,
            "{key} read from {shard}, not its shard"
        );
        by_key.entry(key.as_str()).or_default().push(data);
    }
    let mut want: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for r in put {
        want.entry(r.partition_key.as_str())
            .or_default()
            .push(&r.data);
    }
    assert_eq!(by_key, want, "each key's records, in put order");
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn aggregated_and_rate_limited_records_land_on_their_shards_in_key_order() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(2).await;
    let put = records();
    let sink = KinesisSink::new(env.kinesis(), &stream)
        .with_aggregation(Aggregation::default())
        .with_rate_limit(RateLimit::default());
    produce(sink, &put).await;
    let stored = read_all(&env, &stream).await;
    assert!(
        stored.len() < put.len() / 50,
        "packed: {} Kinesis records for {} user records",
        stored.len(),
        put.len()
    );
    let mut users = Vec::new();
    for s in &stored {
        match aggregation::decode(&s.data).unwrap() {
            Some(records) => {
                assert_eq!(
                    s.partition_key, records[0].partition_key,
                    "an aggregate goes with its first key"
                );
                users.extend(
                    records
                        .into_iter()
                        .map(|u| (s.shard.clone(), u.partition_key, u.data)),
                );
            }
            None => users.push((s.shard.clone(), s.partition_key.clone(), s.data.clone())),
        }
    }
    assert_exactly_as_put(&users, &put, &ranges(&env, &stream).await);
    env.delete_stream(&stream).await;
}

/// Reads `[{"pk", "data" (base64)}]`, the Kinesis records of a stream, and
/// de-aggregates each with the reference deaggregator (a plain record comes
/// out as it is); prints, per Kinesis record, `[{"pk", "data" (base64),
/// "aggregated"}]`.
const DEAGGREGATE: &str = r#"
import base64, json, sys
from aws_kinesis_agg.deaggregator import deaggregate_records
out = []
for i, r in enumerate(json.load(sys.stdin)):
    record = {"kinesis": {"kinesisSchemaVersion": "1.0", "sequenceNumber": str(i),
              "approximateArrivalTimestamp": 0, "partitionKey": r["pk"], "data": r["data"]}}
    users = []
    for u in deaggregate_records([record]):
        k = u["kinesis"]
        d = k["data"]
        users.append({"pk": k["partitionKey"], "data": d.decode() if isinstance(d, bytes) else d,
                      "aggregated": k.get("aggregated", False)})
    out.append(users)
json.dump(out, sys.stdout)
"#;

#[tokio::test]
#[ignore = "needs an AWS emulator and aws-kinesis-agg: run with `cargo xtask it`"]
async fn the_reference_deaggregator_reads_what_our_producer_aggregated() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let Some(python) = interop_python() else {
        return;
    };
    let stream = env.create_stream(2).await;
    let put = records();
    // Small aggregates, so that the stream holds many of them.
    let sink = KinesisSink::new(env.kinesis(), &stream)
        .with_aggregation(Aggregation::default().with_max_bytes(10_000));
    produce(sink, &put).await;
    let stored = read_all(&env, &stream).await;
    let input: Vec<serde_json::Value> = stored
        .iter()
        .map(|s| serde_json::json!({"pk": s.partition_key, "data": B64.encode(&s.data)}))
        .collect();
    let out = run_python(&python, DEAGGREGATE, &serde_json::Value::Array(input));
    let mut users = Vec::new();
    let mut aggregates = 0;
    for (s, records) in stored.iter().zip(out.as_array().unwrap()) {
        let records = records.as_array().unwrap();
        if records.len() > 1 {
            aggregates += 1;
            assert!(
                records.iter().all(|u| u["aggregated"] == true),
                "digest and protobuf accepted"
            );
        }
        for u in records {
            users.push((
                s.shard.clone(),
                u["pk"].as_str().unwrap().to_owned(),
                B64.decode(u["data"].as_str().unwrap()).unwrap(),
            ));
        }
    }
    assert!(
        aggregates >= 20,
        "{aggregates} aggregates in {} Kinesis records",
        stored.len()
    );
    assert_exactly_as_put(&users, &put, &ranges(&env, &stream).await);
    env.delete_stream(&stream).await;
}
