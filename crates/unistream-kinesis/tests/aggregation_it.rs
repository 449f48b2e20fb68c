//! KPL aggregated records read by `KinesisSource` from a real emulator
//! through the real SDK, and interop with the reference implementation of
//! the format (the `aws-kinesis-agg` Python package, which `cargo xtask it`
//! installs and names in `UNISTREAM_IT_PYTHON`). Run them with
//! `cargo xtask it`; a plain `cargo test` lists them as ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::BoxError;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue};
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_kinesis::aggregation::{self, AggregateBuilder, UserRecord};
use unistream_kinesis::{KinesisSource, StartingPosition};
use unistream_local::{Durability, FileCheckpointStore};
use unistream_test_support::{Env, Service, interop_python, run_python};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    value: u64,
}

impl Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

fn data(id: &str) -> Vec<u8> {
    serde_json::to_vec(&Rec {
        id: id.to_owned(),
        create_at: DateTime::from_timestamp(1_704_781_446, 0).unwrap(),
        value: 7,
    })
    .unwrap()
}

/// User record `i`: key `user-<i % 13>`, an explicit hash key for every
/// tenth from 3.
fn user(i: usize) -> UserRecord {
    let ehk = (i % 10 == 3).then(|| format!("{}", 1_000_000_007u64 * i as u64));
    UserRecord::new(format!("user-{}", i % 13), ehk, data(&i.to_string()))
}

/// One processed record: id, pointer, partition key, explicit hash key,
/// attempt number.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: String,
    pointer: String,
    key: Option<String>,
    ehk: Option<String>,
    attempt: u32,
}

/// Logs every record; hangs (a crash) on the first attempt of `hang`.
#[derive(Clone, Default)]
struct Log {
    hang: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Processor for Log {
    type Record = Rec;

    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if self.hang.as_deref() == Some(r.id.as_str()) && a.number == 1 {
            std::future::pending::<()>().await;
        }
        self.seen.lock().unwrap().push(Seen {
            id: r.id.clone(),
            pointer: a.pointer.to_string(),
            key: a.partition_key.map(str::to_owned),
            ehk: a.explicit_hash_key.map(str::to_owned),
            attempt: a.number,
        });
        Ok(Outcome::Succeeded)
    }
}

impl Log {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn ids(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.id).collect()
    }
}

fn config(limit: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("agg-consumer");
    c.limit = limit;
    c.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(2);
    c.dlq_retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(2);
    c.stop_at_end = true;
    c
}

async fn source(env: &Env, stream: &str) -> KinesisSource {
    let shard = env.shards(stream).await.remove(0).0;
    KinesisSource::new(env.kinesis(), stream, shard, StartingPosition::TrimHorizon)
}

/// Runs a consumer over the whole of `stream`: what it processed and the
/// dead-letter queue.
async fn consume(env: &Env, stream: &str, limit: usize) -> (Log, MemoryDeadLetterQueue) {
    let log = Log::default();
    let dlq = MemoryDeadLetterQueue::default();
    let mut consumer = Consumer::new(
        config(limit),
        source(env, stream).await,
        log.clone(),
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(120), consumer.run())
        .await
        .expect("the consumer reaches the end of the stream")
        .unwrap();
    (log, dlq)
}

/// Packs `records` 100 to an aggregate with our encoder.
fn aggregates(records: &[UserRecord]) -> Vec<(String, Vec<u8>)> {
    records
        .chunks(100)
        .map(|chunk| {
            let mut b = AggregateBuilder::new();
            for r in chunk {
                b.push(
                    &r.partition_key,
                    r.explicit_hash_key.as_deref(),
                    r.data.clone(),
                );
            }
            (b.first_partition_key().unwrap().to_owned(), b.to_bytes())
        })
        .collect()
}

/// Every user record delivered once, in order, with its keys.
fn assert_delivered_as_put(log: &Log, records: &[UserRecord]) {
    let seen = log.seen();
    assert_eq!(seen.len(), records.len(), "each user record once");
    for (s, r) in seen.iter().zip(records) {
        let id: Rec = serde_json::from_slice(&r.data).unwrap();
        assert_eq!(s.id, id.id, "in order");
        assert_eq!(s.key.as_deref(), Some(r.partition_key.as_str()), "{s:?}");
        assert_eq!(s.ehk, r.explicit_hash_key, "{s:?}");
        assert_eq!(s.attempt, 1);
    }
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_thousand_user_records_in_ten_aggregates_reach_the_consumer_one_by_one() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    let records: Vec<UserRecord> = (0..1000).map(user).collect();
    let aggs = aggregates(&records);
    assert_eq!(aggs.len(), 10);
    env.put_raw(&stream, aggs).await;

    // A limit of 250 cuts every other batch inside an aggregate.
    let (log, dlq) = consume(&env, &stream, 250).await;
    assert!(dlq.letters().is_empty(), "{:?}", dlq.letters());
    assert_delivered_as_put(&log, &records);
    let seen = log.seen();
    let first_seq = seen[0].pointer.split_once(':').unwrap().0.to_owned();
    assert_eq!(seen[0].pointer, format!("{first_seq}:0"));
    assert_eq!(seen[99].pointer, format!("{first_seq}:99"));
    assert!(!seen[100].pointer.starts_with(&format!("{first_seq}:")));
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_restart_in_the_middle_of_an_aggregate_resumes_at_the_next_user_record() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    let records: Vec<UserRecord> = (0..300).map(user).collect();
    env.put_raw(&stream, aggregates(&records)).await;
    let dir = tempfile::tempdir().unwrap();
    let open =
        || FileCheckpointStore::open(dir.path(), "agg-consumer", Durability::Process).unwrap();

    // Batches of 30 (concurrency 1): the fifth is 120..150, inside the
    // second aggregate (100..200); the consumer hangs on 145, in the middle
    // of both.
    let first = Log {
        hang: Some("145".into()),
        ..Default::default()
    };
    let mut consumer = Consumer::new(
        config(30),
        source(&env, &stream).await,
        first.clone(),
        open(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    let crashed = tokio::time::timeout(Duration::from_secs(5), consumer.run()).await;
    assert!(crashed.is_err(), "the first consumer hangs on record 145");
    drop(consumer);
    let expected_first: Vec<String> = (0..145).map(|i| i.to_string()).collect();
    assert_eq!(first.ids(), expected_first);

    // A new consumer and source: the checkpoint is all they have.
    let second = Log::default();
    let dlq = MemoryDeadLetterQueue::default();
    let mut consumer = Consumer::new(
        config(30),
        source(&env, &stream).await,
        second.clone(),
        open(),
        dlq.clone(),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), consumer.run())
        .await
        .unwrap()
        .unwrap();
    let expected_second: Vec<String> = (145..300).map(|i| i.to_string()).collect();
    assert_eq!(
        second.ids(),
        expected_second,
        "resumed at the record in hand, nothing done replayed, nothing skipped"
    );
    assert_eq!(
        second.seen()[0].attempt,
        2,
        "the interrupted attempt counted"
    );
    // After the resumed batch (145..150, from the checkpoint) the next one
    // is read from the pointer of record 149 (the second aggregate's user
    // record 49), AT_SEQUENCE_NUMBER, skipping its first 50.
    let s = second.seen();
    assert!(s[5].pointer.ends_with(":50"), "{:?}", s[5]);
    assert_eq!(
        s[5].key.as_deref(),
        Some(records[150].partition_key.as_str())
    );
    assert!(dlq.letters().is_empty());
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_stream_mixing_aggregates_plain_records_and_corrupted_aggregates() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    let named = |prefix: &str, n: usize| -> Vec<UserRecord> {
        (0..n)
            .map(|i| UserRecord::new(format!("{prefix}-key"), None, data(&format!("{prefix}{i}"))))
            .collect()
    };
    let (a, c) = (named("a", 10), named("c", 5));
    let mut bad_digest = aggregation::encode(&named("x", 5));
    let last = bad_digest.len() - 1;
    bad_digest[last] ^= 0x55;
    let truncated = aggregation::encode(&named("y", 5))[..40].to_vec();
    let put = vec![
        ("p".to_owned(), data("p0")),
        ("a-key".to_owned(), aggregation::encode(&a)),
        ("p".to_owned(), data("p1")),
        ("x-key".to_owned(), bad_digest.clone()),
        ("y-key".to_owned(), truncated.clone()),
        ("p".to_owned(), data("p2")),
        ("c-key".to_owned(), aggregation::encode(&c)),
    ];
    env.put_raw(&stream, put).await;

    let (log, dlq) = consume(&env, &stream, 100).await;
    let expected: Vec<String> = ["p0"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..10).map(|i| format!("a{i}")))
        .chain(["p1".to_owned(), "p2".to_owned()])
        .chain((0..5).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(log.ids(), expected);
    let seen = log.seen();
    assert!(
        !seen[0].pointer.contains(':'),
        "a plain record keeps its sequence number: {:?}",
        seen[0]
    );
    assert!(seen[1].pointer.ends_with(":0"));
    assert_eq!(seen[1].key.as_deref(), Some("a-key"));

    let letters = dlq.letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].data, bad_digest, "the whole Kinesis record");
    assert_eq!(letters[1].data, truncated);
    for (l, key) in letters.iter().zip(["x-key", "y-key"]) {
        let error = &l.error.as_ref().unwrap().message;
        assert!(
            error.contains("corrupted or truncated KPL aggregate: bad MD5 digest"),
            "{error}"
        );
        assert!(!l.pointer.as_str().contains(':'), "{:?}", l.pointer);
        assert_eq!(l.partition_key.as_deref(), Some(key));
        assert_eq!(l.attempts, 0);
    }
    env.delete_stream(&stream).await;
}

/// Aggregates `[{"pk", "ehk", "data" (base64)}]` 100 user records to an
/// aggregate with the reference `RecordAggregator`; prints
/// `[{"pk", "data" (base64)}]`, one per aggregate.
const AGGREGATE: &str = r#"
import base64, json, sys
from aws_kinesis_agg.aggregator import RecordAggregator
records = json.load(sys.stdin)
agg = RecordAggregator()
out = []
def flush():
    r = agg.clear_and_get()
    if r is not None:
        pk, ehk, data = r.get_contents()
        out.append({"pk": pk, "data": base64.b64encode(data).decode()})
for i, r in enumerate(records):
    if agg.add_user_record(r["pk"], base64.b64decode(r["data"]), r["ehk"]) is not None:
        sys.exit("an aggregate filled up before 100 user records")
    if (i + 1) % 100 == 0:
        flush()
flush()
json.dump(out, sys.stdout)
"#;

/// De-aggregates `[data (base64)]` with the reference deaggregator; prints,
/// per aggregate, `[{"pk", "ehk", "data" (base64), "aggregated"}]`.
const DEAGGREGATE: &str = r#"
import base64, json, sys
from aws_kinesis_agg.deaggregator import deaggregate_records
out = []
for i, data in enumerate(json.load(sys.stdin)):
    record = {"kinesis": {"kinesisSchemaVersion": "1.0", "sequenceNumber": str(i),
              "approximateArrivalTimestamp": 0, "partitionKey": "outer", "data": data}}
    users = []
    for r in deaggregate_records([record]):
        k = r["kinesis"]
        d = k["data"]
        users.append({"pk": k["partitionKey"], "ehk": k.get("explicitHashKey"),
                      "data": d.decode() if isinstance(d, bytes) else d,
                      "aggregated": k.get("aggregated", False)})
    out.append(users)
json.dump(out, sys.stdout)
"#;

#[tokio::test]
#[ignore = "needs an AWS emulator and aws-kinesis-agg: run with `cargo xtask it`"]
async fn records_the_reference_aggregator_packs_reach_the_consumer_one_by_one() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let Some(python) = interop_python() else {
        return;
    };
    let records: Vec<UserRecord> = (0..1000).map(user).collect();
    let input: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "pk": r.partition_key,
                "ehk": r.explicit_hash_key,
                "data": B64.encode(&r.data),
            })
        })
        .collect();
    let out = run_python(&python, AGGREGATE, &serde_json::Value::Array(input));
    let aggs: Vec<(String, Vec<u8>)> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let data = B64.decode(a["data"].as_str().unwrap()).unwrap();
            (a["pk"].as_str().unwrap().to_owned(), data)
        })
        .collect();
    assert_eq!(aggs.len(), 10, "10 Kinesis records of 100 user records");
    assert!(aggs.iter().all(|(_, d)| aggregation::is_aggregate(d)));

    let stream = env.create_stream(1).await;
    env.put_raw(&stream, aggs).await;
    let (log, dlq) = consume(&env, &stream, 1000).await;
    assert!(dlq.letters().is_empty(), "{:?}", dlq.letters());
    assert_delivered_as_put(&log, &records);
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs aws-kinesis-agg: run with `cargo xtask it`"]
async fn the_reference_deaggregator_reads_our_aggregates() {
    let Some(python) = interop_python() else {
        return;
    };
    // The reference deaggregator gives a record without an explicit hash
    // key the table's first one when the table is not empty (it reads the
    // unset index as 0), so one aggregate has none and the other all.
    let plain: Vec<UserRecord> = (0..150)
        .map(|i| UserRecord::new(format!("k{}", i % 7), None, data(&i.to_string())))
        .collect();
    let hashed: Vec<UserRecord> = (0..50)
        .map(|i| {
            UserRecord::new(
                format!("k{}", i % 3),
                Some(format!("{}", i % 4 * 1_000_000_000)),
                vec![i as u8; i],
            )
        })
        .collect();
    let ours = [aggregation::encode(&plain), aggregation::encode(&hashed)];
    let input: Vec<serde_json::Value> = ours.iter().map(|d| B64.encode(d).into()).collect();
    let out = run_python(&python, DEAGGREGATE, &serde_json::Value::Array(input));
    let out = out.as_array().unwrap();
    for (users, expected) in out.iter().zip([&plain, &hashed]) {
        let users = users.as_array().unwrap();
        assert_eq!(users.len(), expected.len());
        for (u, r) in users.iter().zip(expected.iter()) {
            assert_eq!(
                u["aggregated"], true,
                "the digest and protobuf were accepted"
            );
            assert_eq!(u["pk"], r.partition_key.as_str());
            assert_eq!(u["ehk"].as_str(), r.explicit_hash_key.as_deref());
            assert_eq!(B64.decode(u["data"].as_str().unwrap()).unwrap(), r.data);
        }
    }
    // Keys are stored once: 7 partition keys for 150 records.
    let counts: HashMap<&str, usize> = plain.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.partition_key.as_str()).or_default() += 1;
        m
    });
    assert_eq!(counts.len(), 7);
}
