//! Integration tests against a real emulator through the real SDK. Run them
//! with `cargo xtask it`; a plain `cargo test` lists them as ignored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::BoxError;
use unistream_core::buffer::BufferLimits;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryBuffer, MemoryCheckpointStore, MemoryDeadLetterQueue};
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_kinesis::{KinesisSink, KinesisSource, StartingPosition};
use unistream_local::Durability;
use unistream_local::FileCheckpointStore;
use unistream_test_support::{Env, Service};

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

fn rec(i: u64) -> Rec {
    Rec {
        id: i.to_string(),
        create_at: Utc::now(),
        value: i % 100,
    }
}

/// Fails the first attempt of ids ending in 3, every attempt of `poison`,
/// hangs (a crash) on `hang`; logs every attempt.
#[derive(Clone, Default)]
struct Flaky {
    poison: HashSet<String>,
    hang: Option<String>,
    log: Arc<Mutex<Vec<(String, u32, bool)>>>,
}

impl Processor for Flaky {
    type Record = Rec;

    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if self.hang.as_deref() == Some(r.id.as_str()) && a.number == 1 {
            std::future::pending::<()>().await;
        }
        let fails = self.poison.contains(&r.id) || (r.id.ends_with('3') && a.number == 1);
        let ok = !fails;
        self.log.lock().unwrap().push((r.id.clone(), a.number, ok));
        if ok {
            Ok(Outcome::Succeeded)
        } else {
            Err(format!("flaky {}", r.id).into())
        }
    }
}

impl Flaky {
    fn succeeded(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, ok)| *ok)
            .map(|(i, _, _)| i.clone())
            .collect()
    }
}

fn consumer_config(limit: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("it-consumer");
    c.limit = limit;
    c.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(2);
    c.dlq_retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(2);
    c.stop_at_end = true;
    c
}

async fn produce(env: &Env, stream: &str, ids: std::ops::Range<u64>) {
    let mut config = ProducerConfig::default();
    config.linger = None;
    config.retry = RetryPolicy::waits([Duration::from_millis(50)]).with_max_attempts(20);
    let producer = Producer::new(
        config,
        MemoryBuffer::new(BufferLimits::records(500)),
        KinesisSink::new(env.kinesis(), stream),
    );
    let records: Vec<Rec> = ids.map(rec).collect();
    for chunk in records.chunks(500) {
        producer.put_many(chunk).await.unwrap();
    }
    producer.flush().await.unwrap();
}

async fn first_shard(env: &Env, stream: &str) -> String {
    env.shards(stream).await.remove(0).0
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn ten_thousand_records_round_trip_through_producer_stream_and_consumer() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    produce(&env, &stream, 0..10_000).await;

    let shard = first_shard(&env, &stream).await;
    let source = KinesisSource::new(env.kinesis(), &stream, shard, StartingPosition::TrimHorizon);
    let poison: HashSet<String> = (0..10_000)
        .filter(|i| i % 1000 == 7)
        .map(|i| i.to_string())
        .collect();
    let processor = Flaky {
        poison: poison.clone(),
        ..Default::default()
    };
    let dlq = MemoryDeadLetterQueue::default();
    let store = MemoryCheckpointStore::default();
    let mut consumer = Consumer::new(
        consumer_config(1000),
        source,
        processor.clone(),
        store.clone(),
        dlq.clone(),
    )
    .unwrap();
    let summary = consumer.run().await.unwrap();

    let succeeded = processor.succeeded();
    let unique: HashSet<&String> = succeeded.iter().collect();
    assert_eq!(unique.len(), succeeded.len(), "no record processed twice");
    let in_dlq: HashSet<String> = dlq.letters().into_iter().map(|l| l.record_id).collect();
    assert_eq!(in_dlq, poison);
    assert_eq!(
        succeeded.len() + in_dlq.len(),
        10_000,
        "every record delivered or in the DLQ"
    );
    assert_eq!(summary.fetched, 10_000);
    let cp = store.checkpoint().unwrap();
    assert!(
        cp.start_pointer()
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_digit()),
        "the pointer is a sequence number: {}",
        cp.start_pointer()
    );
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_consumer_dropped_mid_batch_resumes_from_its_sequence_number_checkpoint() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    produce(&env, &stream, 0..50).await;
    let shard = first_shard(&env, &stream).await;
    let dir = tempfile::tempdir().unwrap();
    let open =
        || FileCheckpointStore::open(dir.path(), "it-consumer", Durability::Process).unwrap();

    let first = Flaky {
        hang: Some("27".into()),
        ..Default::default()
    };
    let source = KinesisSource::new(
        env.kinesis(),
        &stream,
        shard.clone(),
        StartingPosition::TrimHorizon,
    );
    let mut consumer = Consumer::new(
        consumer_config(20),
        source,
        first.clone(),
        open(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    let crashed = tokio::time::timeout(Duration::from_secs(5), consumer.run()).await;
    assert!(crashed.is_err(), "the first consumer hangs on record 27");
    drop(consumer);

    // A new consumer, a new source (no cached iterator): the checkpoint's
    // sequence number is all it has.
    let second = Flaky::default();
    let source = KinesisSource::new(env.kinesis(), &stream, shard, StartingPosition::TrimHorizon);
    let mut consumer = Consumer::new(
        consumer_config(20),
        source,
        second.clone(),
        open(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    consumer.run().await.unwrap();

    let mut attempts: HashMap<String, Vec<u32>> = HashMap::new();
    for (id, n, _) in first
        .log
        .lock()
        .unwrap()
        .iter()
        .chain(second.log.lock().unwrap().iter())
    {
        attempts.entry(id.clone()).or_default().push(*n);
    }
    let mut all: Vec<String> = first
        .succeeded()
        .into_iter()
        .chain(second.succeeded())
        .collect();
    all.sort_by_key(|s| s.parse::<u64>().unwrap());
    assert_eq!(
        all,
        (0..50).map(|i| i.to_string()).collect::<Vec<_>>(),
        "each record once"
    );
    assert_eq!(
        attempts["27"],
        vec![2],
        "the interrupted attempt counted; the restart ran attempt 2"
    );
    assert!(
        second
            .succeeded()
            .iter()
            .all(|id| id.parse::<u64>().unwrap() >= 20),
        "the finished first batch was not read again"
    );
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it --emulator kinesis-local`"]
async fn a_split_shard_is_read_to_its_end_which_closes_the_consumer_and_names_the_children() {
    let env = Env::from_env().await;
    if env.emulator != "kinesis-local" {
        eprintln!("SKIPPED: only kinesis-local models the end of a shard (moto never ends one)");
        return;
    }
    let stream = env.create_stream(1).await;
    produce(&env, &stream, 0..10).await;
    let parent = first_shard(&env, &stream).await;
    env.split_in_two(&stream).await;
    let processor = Flaky::default();
    let source = KinesisSource::new(
        env.kinesis(),
        &stream,
        parent,
        StartingPosition::TrimHorizon,
    );
    let mut config = consumer_config(100);
    config.stop_at_end = false; // only the end of the shard may stop it
    let mut consumer = Consumer::new(
        config,
        source,
        processor.clone(),
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), consumer.run())
        .await
        .unwrap()
        .unwrap();
    assert!(summary.closed, "the consumer stops at the shard's end");
    assert_eq!(processor.succeeded().len(), 10);
    let stats = consumer.source().stats();
    assert!(stats.closed);
    assert_eq!(stats.child_shards.len(), 2, "{:?}", stats.child_shards);
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn another_stream_can_be_the_dead_letter_queue() {
    use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
    use unistream_kinesis::KinesisDeadLetterQueue;
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    let dlq = KinesisDeadLetterQueue::new(KinesisSink::new(env.kinesis(), &stream));
    let mut letter = DeadLetter::new(
        "c1",
        "17",
        br#"{"id": "17"}"#.to_vec(),
        "4955".into(),
        Utc::now(),
    );
    letter.attempts = 3;
    letter.partition_key = Some("k".into());
    dlq.send(&letter).await.unwrap();
    let shard = first_shard(&env, &stream).await;
    let mut source =
        KinesisSource::new(env.kinesis(), &stream, shard, StartingPosition::TrimHorizon);
    let f = unistream_core::source::Source::fetch(
        &mut source,
        &StartingPosition::TrimHorizon.to_pointer(),
        10,
    )
    .await
    .unwrap();
    assert_eq!(f.records.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&f.records[0].data).unwrap();
    assert_eq!(v["record_id"], "17");
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["record"]["id"], "17");
    env.delete_stream(&stream).await;
}
