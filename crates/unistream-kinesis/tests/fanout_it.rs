//! Reading ahead and enhanced fan-out against the fast Kinesis emulator
//! (`ferrokinesis`, started per test with its own options), through the real
//! SDK; faults it cannot produce (`ResourceInUseException`, a dropped
//! connection) come from the loopback read-quota proxy in front of it. Run
//! with `cargo xtask it`; a plain `cargo test` lists them as ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::BoxError;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::MemoryDeadLetterQueue;
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_kinesis::{
    KinesisSource, StartingPosition, deregister_consumer, list_consumers, register_consumer,
};
use unistream_local::{Durability, FileCheckpointStore};
use unistream_test_support::{Env, FastKinesis, ReadQuotaProxy};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
    key: String,
    /// The record's place among its key's records.
    n: u64,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
}

impl Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
    fn partition_key(&self) -> &str {
        &self.key
    }
}

const KEYS: u64 = 20;

fn rec(i: u64) -> (String, Vec<u8>) {
    let key = format!("k{}", i % KEYS);
    let r = Rec {
        id: i.to_string(),
        key: key.clone(),
        n: i / KEYS,
        create_at: Utc::now(),
    };
    (key, serde_json::to_vec(&r).unwrap())
}

/// Logs each record it processes (taking `.1` to do so); never fails.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, String, u64)>>>, Duration);

impl Processor for Log {
    type Record = Rec;

    async fn process(&self, r: &Rec, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        self.0
            .lock()
            .unwrap()
            .push((r.id.clone(), r.key.clone(), r.n));
        Ok(Outcome::Succeeded)
    }
}

impl Log {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn distinct(&self) -> usize {
        let log = self.0.lock().unwrap();
        let ids: std::collections::HashSet<&str> =
            log.iter().map(|(id, _, _)| id.as_str()).collect();
        ids.len()
    }

    /// Every record of `0..total` processed exactly once, each key's in order.
    fn assert_once_in_order(&self, total: u64) {
        let log = self.0.lock().unwrap();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for (id, _, _) in log.iter() {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "processed more than once: {twice:?}");
        assert_eq!(seen.len() as u64, total, "every record processed");
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (id, key, n) in log.iter() {
            if let Some(prev) = last.insert(key.as_str(), *n) {
                assert!(*n > prev, "key {key}: record {id} (#{n}) after #{prev}");
            }
        }
    }

    /// Every record of `0..total` processed at least once.
    fn assert_all(&self, total: u64) {
        let log = self.0.lock().unwrap();
        let mut ids: Vec<u64> = log.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids,
            (0..total).collect::<Vec<_>>(),
            "nothing lost or skipped"
        );
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new("fanout-it")
        .limit(500)
        .concurrency(8)
        .lock_expire(Duration::from_secs(1))
        .retry(RetryPolicy::waits([Duration::from_millis(10)]))
}

/// Puts `total` records, `per_tick` every `tick`, in order.
async fn write_steadily(env: Env, stream: String, total: u64, per_tick: u64, tick: Duration) {
    let mut i = 0;
    let mut next = tokio::time::Instant::now();
    while i < total {
        let end = (i + per_tick).min(total);
        env.put_raw(&stream, (i..end).map(rec)).await;
        i = end;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
}

/// Runs `consumer` until `log` holds `total` records (or `within` passes).
async fn run_until<S, K>(
    consumer: &mut Consumer<S, Log, K, MemoryDeadLetterQueue>,
    log: &Log,
    total: u64,
    within: Duration,
) where
    S: unistream_core::source::Source,
    K: unistream_core::checkpoint::CheckpointStore,
{
    let token = consumer.shutdown_token();
    let watch = {
        let log = log.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + within;
            while (log.distinct() as u64) < total && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            token.cancel();
        })
    };
    consumer.run().await.unwrap();
    watch.await.unwrap();
}

/// A consumer of `source` (a file checkpoint, the default processor
/// settings of these tests) until `total` records were processed: what it
/// processed, and what its source saw.
async fn consume(
    source: KinesisSource,
    total: u64,
    within: Duration,
) -> (Log, unistream_kinesis::ShardStats) {
    let log = Log::default();
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::open(dir.path(), "fanout-it", Durability::Process).unwrap();
    let mut consumer = Consumer::new(
        config(),
        source,
        log.clone(),
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    run_until(&mut consumer, &log, total, within).await;
    (log, consumer.source().stats().clone())
}

async fn fan_out_env(fast: &FastKinesis) -> (Env, String, String, String) {
    let env = Env::from_env().await.with_kinesis_at(fast.url());
    let stream = env.create_stream(1).await;
    let shard = env.shards(&stream).await.remove(0).0;
    let arn = register_consumer(
        &env.kinesis(),
        &stream,
        "fanout-it",
        Duration::from_millis(50),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    (env, stream, shard, arn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fast Kinesis emulator: run with `cargo xtask it`"]
async fn fan_out_reads_every_record_once_in_order_across_a_hundred_resubscriptions() {
    // Sessions of 1 s (AWS: 5 minutes): a hundred of them in ~2 minutes.
    let fast = FastKinesis::start(&["--session-ms", "1000"]);
    let (env, stream, shard, arn) = fan_out_env(&fast).await;
    const TOTAL: u64 = 5_400;
    let writer = tokio::spawn(write_steadily(
        env.clone(),
        stream.clone(),
        TOTAL,
        10,
        Duration::from_millis(200),
    ));
    let source = KinesisSource::new(
        env.kinesis(),
        &stream,
        &shard,
        StartingPosition::TrimHorizon,
    )
    .with_fan_out(&arn);
    let (log, stats) = consume(source, TOTAL, Duration::from_secs(240)).await;
    writer.await.unwrap();
    println!("FAN-OUT RESUBSCRIPTIONS {stats:?}");
    log.assert_once_in_order(TOTAL);
    assert!(
        stats.resubscriptions >= 100,
        "only {} resubscriptions",
        stats.resubscriptions
    );

    let listed = list_consumers(&env.kinesis(), &stream).await.unwrap();
    assert!(listed.iter().any(|c| c.arn == arn), "{listed:?}");
    deregister_consumer(&env.kinesis(), &stream, "fanout-it")
        .await
        .unwrap();
    env.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fast Kinesis emulator: run with `cargo xtask it`"]
async fn fan_out_subscribes_again_after_resource_in_use_and_dropped_connections() {
    let fast = FastKinesis::start(&[]);
    let proxy = ReadQuotaProxy::start(fast.url()).await;
    let (env, stream, shard, arn) = fan_out_env(&fast).await;
    const TOTAL: u64 = 2_000;
    // Three refusals first, then every connection dropped after 700 ms.
    proxy.refuse_subscriptions(3);
    proxy.cut_subscriptions_after(Some(Duration::from_millis(700)));
    let writer = tokio::spawn(write_steadily(
        env.clone(),
        stream.clone(),
        TOTAL,
        50,
        Duration::from_millis(100),
    ));
    let through_proxy = env.with_kinesis_at(&proxy.url());
    let source = KinesisSource::new(
        through_proxy.kinesis(),
        &stream,
        &shard,
        StartingPosition::TrimHorizon,
    )
    .with_fan_out(&arn)
    .with_fan_out_settings(
        Duration::from_secs(5),
        RetryPolicy::waits([Duration::from_millis(50)]).with_max_attempts(10),
    );
    let (log, stats) = consume(source, TOTAL, Duration::from_secs(60)).await;
    writer.await.unwrap();
    println!("FAN-OUT FAULTS {stats:?} {:?}", proxy.counts());
    log.assert_once_in_order(TOTAL);
    assert_eq!(stats.resource_in_use, 3, "{stats:?}");
    assert!(stats.resubscriptions >= 3, "{stats:?}");
    env.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fast Kinesis emulator: run with `cargo xtask it`"]
async fn a_consumer_dropped_while_its_reader_is_ahead_loses_and_skips_nothing() {
    for fan_out in [false, true] {
        let fast = FastKinesis::start(&[]);
        let (env, stream, shard, arn) = fan_out_env(&fast).await;
        const TOTAL: u64 = 3_000;
        env.put_raw(&stream, (0..TOTAL).map(rec)).await;
        let dir = tempfile::tempdir().unwrap();
        let log = Log(Arc::default(), Duration::from_millis(5));
        let mut progress = Vec::new();
        // Ten runs cut at some point while pages are read ahead (a slow
        // processor: the reader is always ahead), then one to the end.
        for cut in 0..11u64 {
            let mut source = KinesisSource::new(
                env.kinesis(),
                &stream,
                &shard,
                StartingPosition::TrimHorizon,
            )
            .with_read_limit(400);
            if fan_out {
                source = source.with_fan_out(&arn);
            }
            let store =
                FileCheckpointStore::open(dir.path(), "fanout-it", Durability::Process).unwrap();
            let mut consumer = Consumer::new(
                config().limit(100),
                source,
                log.clone(),
                store,
                MemoryDeadLetterQueue::default(),
            )
            .unwrap();
            if cut < 10 {
                let run =
                    tokio::time::timeout(Duration::from_millis(100 + 23 * cut), consumer.run())
                        .await;
                assert!(run.is_err(), "cut {cut}: the run ended on its own");
                // Dropped mid-work, reader and all: what a kill leaves.
                drop(consumer);
                progress.push(log.distinct());
            } else {
                run_until(&mut consumer, &log, TOTAL, Duration::from_secs(60)).await;
            }
        }
        println!(
            "READ-AHEAD CUTS (fan-out: {fan_out}): {} attempts for {TOTAL} records; done after each cut: {progress:?}",
            log.len()
        );
        log.assert_all(TOTAL);
        assert!(
            progress.windows(2).filter(|w| w[0] < w[1]).count() >= 5
                && progress.last().is_some_and(|p| (*p as u64) < TOTAL),
            "the cuts fell mid-stream, each run going further: {progress:?}"
        );
        env.delete_stream(&stream).await;
    }
}
