//! Integration tests against a real emulator through the real SDK. Run them
//! with `cargo xtask it` (moto) and `cargo xtask it --emulator
//! kinesis-local` (the split); a plain `cargo test` lists them as ignored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::MemoryDeadLetterQueue;
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::{BoxError, CancellationToken, Error};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_kinesis::{KinesisSource, StartingPosition};
use unistream_leases::{
    Coordinator, DynamoDbLeaseTable, LEASE_KEY, Lease, LeaseConfig, LeaseTable, MemoryLeaseTable,
    StreamConsumer,
};
use unistream_local::Durability;
use unistream_local::FileCheckpointStore;
use unistream_test_support::{Env, Service};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
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
}

/// `(worker, shard, id, attempt)` of every attempt, in order.
type Log = Arc<Mutex<Vec<(String, String, String, u32)>>>;

/// Logs attempts; blocks the first attempt of `gate_id` until `gate` is
/// notified (after telling `entered`).
#[derive(Clone)]
struct Recorder {
    worker: String,
    shard: String,
    log: Log,
    gate_id: Option<String>,
    entered: Arc<Notify>,
    gate: Arc<Notify>,
}

impl Recorder {
    fn new(worker: &str, shard: &str, log: &Log) -> Self {
        Recorder {
            worker: worker.into(),
            shard: shard.into(),
            log: log.clone(),
            gate_id: None,
            entered: Arc::new(Notify::new()),
            gate: Arc::new(Notify::new()),
        }
    }
}

impl Processor for Recorder {
    type Record = Rec;

    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        self.log.lock().unwrap().push((
            self.worker.clone(),
            self.shard.clone(),
            r.id.clone(),
            a.number,
        ));
        if self.gate_id.as_deref() == Some(r.id.as_str()) && a.number == 1 {
            self.entered.notify_one();
            self.gate.notified().await;
        }
        Ok(Outcome::Succeeded)
    }
}

async fn put(env: &Env, stream: &str, ids: std::ops::Range<u64>) {
    env.put_raw(
        stream,
        ids.map(|i| {
            let data =
                format!("{{\"id\": \"{i}\", \"create_at\": \"2024-01-09T06:24:06.759449+00:00\"}}");
            (i.to_string(), data.into_bytes())
        }),
    )
    .await;
}

fn config(app: &str, limit: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(app);
    c.limit = limit;
    c.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(3);
    c.delay = Duration::from_millis(100);
    c
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn lease_changes_are_conditional_on_the_counter() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::DynamoDb) {
        return;
    }
    let name = env.create_table(LEASE_KEY).await;
    let table = DynamoDbLeaseTable::new(env.dynamodb(), &name);
    let lease = Lease::new("shard-a", vec!["parent-1".into(), "parent-2".into()]);
    assert!(table.create(&lease).await.unwrap());
    assert!(!table.create(&lease).await.unwrap(), "created once");
    let seen = table.list().await.unwrap();
    assert_eq!(seen, vec![lease.clone()]);
    // Two workers race for the lease they both saw: exactly one wins.
    let (a, b) = tokio::join!(table.take(&seen[0], "a"), table.take(&seen[0], "b"));
    let winners: Vec<Lease> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let held = winners[0].clone();
    assert_eq!(held.counter, 1);
    assert_eq!(held.parents, lease.parents);
    // Renewal bumps the counter; a stale copy can do nothing.
    let renewed = table.renew(&held).await.unwrap().unwrap();
    assert_eq!(renewed.counter, 2);
    assert_eq!(table.renew(&held).await.unwrap(), None);
    assert!(!table.release(&held).await.unwrap());
    assert!(!table.end(&held).await.unwrap());
    // Ending retires the lease: ended, no owner.
    assert!(table.end(&renewed).await.unwrap());
    let now = table.list().await.unwrap().remove(0);
    assert!(now.ended);
    assert_eq!(now.owner, None);
    assert_eq!(now.counter, 3);
    env.delete_table(&name).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_worker_whose_lease_was_stolen_mid_batch_cannot_write_its_checkpoint() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::DynamoDb) {
        return;
    }
    let stream = env.create_stream(1).await;
    put(&env, &stream, 0..10).await;
    let shard = env.shards(&stream).await.remove(0).0;
    let leases = env.create_table(LEASE_KEY).await;
    let checkpoints = env.create_table("id").await;
    let bucket = env.create_bucket().await;
    let table = DynamoDbLeaseTable::new(env.dynamodb(), &leases);
    table.create(&Lease::new(&shard, vec![])).await.unwrap();
    let store = || {
        DynamoDbS3CheckpointStore::builder(env.dynamodb(), env.s3())
            .table(&checkpoints)
            .key(format!("app/{shard}"))
            .bucket(&bucket)
            .prefix("it/")
            .exclusive_by_lease()
            .build()
            .unwrap()
    };
    let source = || {
        KinesisSource::new(
            env.kinesis(),
            &stream,
            &shard,
            StartingPosition::TrimHorizon,
        )
    };
    let log: Log = Arc::default();

    // Worker a takes the lease and starts the batch; record 3 hangs.
    let failover = Duration::from_secs(10);
    let mut a = Coordinator::new(table.clone(), "a", LeaseConfig::new(failover));
    assert_eq!(a.balance().await.unwrap().taken.len(), 1);
    let mut gated = Recorder::new("a", &shard, &log);
    gated.gate_id = Some("3".into());
    let (entered, gate) = (gated.entered.clone(), gated.gate.clone());
    let mut consumer_a = Consumer::new(
        config(&format!("app/{shard}"), 10),
        source(),
        gated,
        store(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();

    let b_side = async {
        entered.notified().await;
        // Worker b sees a's lease stop moving for the failover time (its
        // clock is virtual) and takes it over.
        let clock = VirtualClock::default();
        let mut b = Coordinator::new(table.clone(), "b", LeaseConfig::new(failover))
            .with_clock(clock.clone());
        assert!(b.balance().await.unwrap().taken.is_empty());
        clock.advance(failover);
        assert_eq!(b.balance().await.unwrap().taken.len(), 1);
        let mut consumer_b = Consumer::new(
            config(&format!("app/{shard}"), 10),
            source(),
            Recorder::new("b", &shard, &log),
            store(),
            MemoryDeadLetterQueue::default(),
        )
        .unwrap();
        let report = consumer_b.process_batch().await.unwrap();
        // Now a's attempt finishes.
        gate.notify_one();
        (b, report)
    };
    let (a_result, (b, b_report)) = tokio::join!(consumer_a.process_batch(), b_side);
    match a_result {
        Err(Error::CheckpointOwned { .. }) => {}
        other => panic!("a's checkpoint write must fail, got {other:?}"),
    }
    assert_eq!(b_report.succeeded, 7, "{b_report:?}");
    // a's lease is gone: its renewal says so.
    assert_eq!(a.renew().await, vec![shard.clone()]);
    assert_eq!(b.held(), vec![shard.clone()]);
    let log = log.lock().unwrap().clone();
    let by = |w: &str| -> Vec<(String, u32)> {
        log.iter()
            .filter(|(who, ..)| who == w)
            .map(|(_, _, id, n)| (id.clone(), *n))
            .collect()
    };
    assert_eq!(
        by("a"),
        ["0", "1", "2", "3"].map(|i| (i.to_string(), 1)).to_vec()
    );
    // b retried record 3 at once (the lease proves a gone), counting a's
    // interrupted attempt, then went on.
    let b_ids = by("b");
    assert_eq!(b_ids[0], ("3".to_string(), 2));
    assert_eq!(b_ids.len(), 7);
    env.delete_stream(&stream).await;
    env.delete_table(&leases).await;
    env.delete_table(&checkpoints).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_worker_shutting_down_releases_its_leases_and_the_other_takes_them_at_once() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::DynamoDb) {
        return;
    }
    let stream = env.create_stream(2).await;
    put(&env, &stream, 0..100).await;
    let leases = env.create_table(LEASE_KEY).await;
    let checkpoints = env.create_table("id").await;
    let bucket = env.create_bucket().await;
    let log: Log = Arc::default();
    let failover = Duration::from_secs(6);
    let worker = |name: &'static str, token: CancellationToken| {
        let (ddb, s3) = (env.dynamodb(), env.s3());
        let (checkpoints, bucket) = (checkpoints.clone(), bucket.clone());
        let log = log.clone();
        StreamConsumer::builder(
            env.kinesis(),
            DynamoDbLeaseTable::new(env.dynamodb(), &leases),
        )
        .stream(&stream)
        .worker(name)
        .consumer(config("app", 50))
        .lease_config(LeaseConfig::new(failover))
        .shutdown(token)
        .build(
            move |shard| Ok(Recorder::new(name, shard, &log)),
            move |id| {
                DynamoDbS3CheckpointStore::builder(ddb.clone(), s3.clone())
                    .table(&checkpoints)
                    .key(id)
                    .bucket(&bucket)
                    .prefix("it/")
                    .exclusive_by_lease()
                    .build()
            },
            |_| Ok(MemoryDeadLetterQueue::default()),
        )
        .unwrap()
    };
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let mut a = worker("a", stop_a.clone());
    let mut b = worker("b", stop_b.clone());
    let table = DynamoDbLeaseTable::new(env.dynamodb(), &leases);
    let driver = async {
        let owners = || async {
            table
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.owner)
                .collect::<Vec<_>>()
        };
        // Both hold one shard and every record is processed.
        let t = Instant::now();
        loop {
            let o = owners().await;
            let done = log.lock().unwrap().len() >= 100;
            if done && o.contains(&Some("a".into())) && o.contains(&Some("b".into())) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no 1/1 split: {o:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // a shuts down: it checkpoints and releases; b takes its shard at its
        // next balancing round, well before the failover time.
        stop_a.cancel();
        let t = Instant::now();
        loop {
            if owners().await == [Some("b".to_string()), Some("b".to_string())] {
                break;
            }
            assert!(
                t.elapsed() < failover,
                "b did not take a's released lease at once"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = t.elapsed();
        put(&env, &stream, 100..120).await;
        let t = Instant::now();
        while log.lock().unwrap().len() < 120 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "new records not processed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_b.cancel();
        took
    };
    let (ra, rb, took) = tokio::join!(a.run(), b.run(), driver);
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    eprintln!("released lease taken over in {took:?} (failover {failover:?})");
    assert!(
        ra.leases_taken >= 1 && rb.leases_taken >= 2,
        "{ra:?} {rb:?}"
    );
    // Every record once: no record was in flight when a stopped gracefully.
    let mut ids: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, id, _)| id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120);
    // After both shut down, every lease is free.
    assert!(
        table
            .list()
            .await
            .unwrap()
            .iter()
            .all(|l| l.owner.is_none())
    );
    env.delete_stream(&stream).await;
    env.delete_table(&leases).await;
    env.delete_table(&checkpoints).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it --emulator kinesis-local`"]
async fn a_split_shard_is_processed_parent_first_by_the_stream_consumer() {
    let env = Env::from_env().await;
    if env.emulator != "kinesis-local" {
        eprintln!("SKIPPED: only kinesis-local models the end of a shard (moto never ends one)");
        return;
    }
    split_parent_first(&env, false).await;
}

/// The same, read by enhanced fan-out from the fast Kinesis emulator
/// (which models a shard's end; moto does not, nor `SubscribeToShard`).
#[tokio::test]
#[ignore = "needs the fast Kinesis emulator: run with `cargo xtask it`"]
async fn a_split_shard_is_processed_parent_first_by_fan_out() {
    let fast = unistream_test_support::FastKinesis::start(&[]);
    let env = Env::from_env().await.with_kinesis_at(fast.url());
    split_parent_first(&env, true).await;
}

async fn split_parent_first(env: &Env, fan_out: bool) {
    let stream = env.create_stream(1).await;
    put(env, &stream, 0..30).await;
    let parent = env.shards(&stream).await.remove(0).0;
    if fan_out {
        env.split_shard(&stream, &parent).await;
    } else {
        env.split_in_two(&stream).await;
    }
    put(env, &stream, 30..60).await;
    let all = env.shards(&stream).await;
    let children: Vec<String> = all
        .iter()
        .filter(|(_, p)| p.as_deref() == Some(parent.as_str()))
        .map(|(s, _)| s.clone())
        .collect();
    assert_eq!(children.len(), 2, "{all:?}");
    // kinesis-local serves Kinesis only: leases in memory, checkpoints in
    // files. The coordination logic is the same.
    let table = MemoryLeaseTable::default();
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().to_owned();
    let log: Log = Arc::default();
    let token = CancellationToken::new();
    let l = log.clone();
    let mut builder = StreamConsumer::builder(env.kinesis(), table.clone())
        .stream(&stream)
        .worker("w")
        .consumer(config("app", 100))
        .lease_config(LeaseConfig::new(Duration::from_secs(3)))
        .shutdown(token.clone());
    if fan_out {
        builder = builder.fan_out("split-app");
    }
    let mut worker = builder
        .build(
            move |shard| Ok(Recorder::new("w", shard, &l)),
            move |id| FileCheckpointStore::open(&cp, id, Durability::Process),
            |_| Ok(MemoryDeadLetterQueue::default()),
        )
        .unwrap();
    let driver = async {
        let t = Instant::now();
        while log.lock().unwrap().len() < 60 {
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "not every record was processed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        token.cancel();
    };
    let (summary, ()) = tokio::join!(worker.run(), driver);
    let summary = summary.unwrap();
    assert_eq!(summary.shards_ended, 1, "{summary:?}");
    let log = log.lock().unwrap().clone();
    let last_parent = log.iter().rposition(|(_, s, ..)| *s == parent).unwrap();
    let first_child = log
        .iter()
        .position(|(_, s, ..)| children.contains(s))
        .unwrap();
    assert!(
        last_parent < first_child,
        "a child record ran before the parent's last one"
    );
    assert_eq!(log.iter().filter(|(_, s, ..)| *s == parent).count(), 30);
    let leases = table.list().await.unwrap();
    let p = leases.iter().find(|l| l.shard_id == parent).unwrap();
    assert!(p.ended, "the parent's lease is retired");
    for c in &children {
        let l = leases.iter().find(|l| &l.shard_id == c).unwrap();
        assert_eq!(l.parents, vec![parent.clone()]);
    }
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn the_stream_consumer_de_aggregates_kpl_aggregates_on_every_shard() {
    use unistream_kinesis::aggregation::AggregateBuilder;
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(2).await;
    // 8 aggregates of 25 user records, under 8 outer keys spread over the
    // two shards.
    let aggregates: Vec<(String, Vec<u8>)> = (0..8)
        .map(|a| {
            let mut b = AggregateBuilder::new();
            for i in a * 25..(a + 1) * 25 {
                let data = format!(
                    "{{\"id\": \"{i}\", \"create_at\": \"2024-01-09T06:24:06.759449+00:00\"}}"
                );
                b.push(&format!("user-{i}"), None, data.into_bytes());
            }
            (format!("outer-{a}"), b.to_bytes())
        })
        .collect();
    env.put_raw(&stream, aggregates).await;
    let table = MemoryLeaseTable::default();
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().to_owned();
    let log: Log = Arc::default();
    let token = CancellationToken::new();
    let l = log.clone();
    let dlq = MemoryDeadLetterQueue::default();
    let d = dlq.clone();
    let mut worker = StreamConsumer::builder(env.kinesis(), table)
        .stream(&stream)
        .worker("w")
        .consumer(config("app", 40))
        .lease_config(LeaseConfig::new(Duration::from_secs(3)))
        .shutdown(token.clone())
        .build(
            move |shard| Ok(Recorder::new("w", shard, &l)),
            move |id| FileCheckpointStore::open(&cp, id, Durability::Process),
            move |_| Ok(d.clone()),
        )
        .unwrap();
    let driver = async {
        let t = Instant::now();
        while log.lock().unwrap().len() < 200 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "not every user record was processed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Anything more (a repeat) would show within a few reads.
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel();
    };
    let (summary, ()) = tokio::join!(worker.run(), driver);
    summary.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 200, "each user record once");
    // Within an aggregate (one shard), the user records come in order.
    let ids: Vec<u64> = log
        .iter()
        .map(|(_, _, id, _)| id.parse().unwrap())
        .collect();
    for a in 0..8u64 {
        let mine: Vec<u64> = ids.iter().copied().filter(|i| i / 25 == a).collect();
        assert_eq!(mine, (a * 25..(a + 1) * 25).collect::<Vec<_>>());
    }
    assert!(dlq.letters().is_empty());
    env.delete_stream(&stream).await;
}
