//! The DynamoDB + S3 checkpoint store against a real emulator (moto) through
//! the real SDK. Run with `cargo xtask it`; `cargo test` lists them as ignored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use unistream_core::ErrorInfo;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status};
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryDeadLetterQueue, MemorySource};
use unistream_core::retry::RetryPolicy;
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{BoxError, Error};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_test_support::checkpoint_contract::{HOSTILE_IDS, summarized};
use unistream_test_support::{Env, Service, unique_name};

struct Fixture {
    env: Env,
    table: String,
    bucket: String,
    key: String,
}

impl Fixture {
    async fn new() -> Option<Fixture> {
        let env = Env::from_env().await;
        if env.skip_unless(Service::DynamoDb) || env.skip_unless(Service::S3) {
            return None;
        }
        let table = env.create_table("id").await;
        let bucket = env.create_bucket().await;
        Some(Fixture {
            env,
            table,
            bucket,
            key: unique_name("consumer"),
        })
    }

    fn store(&self) -> DynamoDbS3CheckpointStore {
        DynamoDbS3CheckpointStore::builder(self.env.without_retries().dynamodb(), self.env.s3())
            .table(&self.table)
            .key(&self.key)
            .bucket(&self.bucket)
            .prefix("checkpoints/")
            .build()
            .unwrap()
    }

    async fn cleanup(self) {
        self.env.delete_table(&self.table).await;
        self.env.delete_bucket(&self.bucket).await;
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_781_446, 123_456_789).unwrap()
}

fn records(ids: &[String]) -> Vec<SourceRecord> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            SourceRecord::new(
                Pointer::new(i.to_string()),
                format!("{{\"id\": {id:?}}}").into_bytes(),
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn hostile_record_ids_round_trip() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let mut ids: Vec<String> = HOSTILE_IDS.iter().map(|s| s.to_string()).collect();
    ids.push("x".repeat(256));
    let mut store = f.store();
    assert!(store.load().await.unwrap().is_none());
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 2, Duration::from_secs(60));
    cp.start_batch(
        ids.clone(),
        Some(Pointer::new(ids.len().to_string())),
        now(),
    )
    .unwrap();
    store.save_batch(&cp, &records(&ids)).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let lock = format!("L{i}");
        cp.begin_attempt(i, &lock, now()).unwrap();
        store.save_tracker(&cp, i).await.unwrap();
        store.sync().await.unwrap();
        if i % 2 == 0 {
            cp.succeed(i, &lock, None, now()).unwrap();
        } else {
            cp.fail(i, &lock, ErrorInfo::new(format!("failed {id}")), now())
                .unwrap();
        }
        store.save_tracker(&cp, i).await.unwrap();
    }
    store.sync().await.unwrap();
    let mut other = f.store();
    let loaded = other.load().await.unwrap().expect("stored");
    assert_eq!(
        loaded.checkpoint,
        summarized(&cp),
        "every tracker, under every id, round-trips (done records as their summary)"
    );
    assert_eq!(loaded.records, records(&ids));
    assert_eq!(loaded.checkpoint.trackers()[1].status, Status::Failed);
    f.cleanup().await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn two_consumers_racing_on_one_checkpoint_never_overwrite_silently() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let mut a = f.store();
    a.load().await.unwrap();
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(ids.clone(), Some(Pointer::from("3")), now())
        .unwrap();
    a.save_batch(&cp, &records(&ids)).await.unwrap();

    // A second consumer takes the checkpoint over.
    let mut b = f.store();
    let mut cp_b = b.load().await.unwrap().unwrap().checkpoint;
    // The first one's next write fails, typed; it did not clobber anything.
    cp.begin_attempt(0, "A", now()).unwrap();
    a.save_tracker(&cp, 0).await.unwrap();
    let err = a.sync().await.unwrap_err();
    assert!(matches!(err, Error::CheckpointOwned { .. }), "{err}");
    // The owner writes on.
    cp_b.begin_attempt(0, "B", now()).unwrap();
    b.save_tracker(&cp_b, 0).await.unwrap();
    b.sync().await.unwrap();
    let seen = f.store().load().await.unwrap().unwrap().checkpoint;
    assert_eq!(seen.trackers()[0].lock.as_deref(), Some("B"));
    // Racing on a fresh item: exactly one creates it.
    let ids2: Vec<String> = vec!["z".into()];
    let fresh_store = || {
        DynamoDbS3CheckpointStore::builder(f.env.without_retries().dynamodb(), f.env.s3())
            .table(&f.table)
            .key("fresh")
            .bucket(&f.bucket)
            .prefix("p/")
            .build()
            .unwrap()
    };
    let (mut c1, mut c2) = (fresh_store(), fresh_store());
    assert!(c1.load().await.unwrap().is_none());
    assert!(c2.load().await.unwrap().is_none());
    let mut fresh = Checkpoint::new("fresh", Pointer::from("0"), 3, Duration::from_secs(60));
    fresh
        .start_batch(ids2.clone(), Some(Pointer::from("1")), now())
        .unwrap();
    let r1 = c1.save_batch(&fresh, &records(&ids2)).await;
    let r2 = c2.save_batch(&fresh, &records(&ids2)).await;
    assert!(r1.is_ok());
    assert!(matches!(r2, Err(Error::CheckpointOwned { .. })), "{r2:?}");
    f.cleanup().await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_crash_between_the_s3_and_the_dynamodb_write_is_recovered() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = vec!["1".into(), "2".into()];
    let mut store = f.store();
    store.load().await.unwrap();
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(ids.clone(), Some(Pointer::from("2")), now())
        .unwrap();
    store.save_batch(&cp, &records(&ids)).await.unwrap();
    // The next batch's records reached S3, then the process died before the
    // item was updated.
    f.env
        .s3()
        .put_object()
        .bucket(&f.bucket)
        .key(format!(
            "checkpoints/{}/batch-{:020}-crashed.json",
            f.key, 2
        ))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"half-written garbage",
        ))
        .send()
        .await
        .unwrap();
    let mut restarted = f.store();
    let loaded = restarted.load().await.unwrap().unwrap();
    assert_eq!(
        loaded.checkpoint.batch_sequence(),
        1,
        "still the previous batch"
    );
    assert_eq!(loaded.records, records(&ids));
    f.cleanup().await;
}

/// A writer that lost the item (another consumer loaded it) and then saves
/// a batch must not touch what the new owner's item points at: its records
/// object has a key of its own, and its `PutItem` fails.
#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_fenced_writer_cannot_overwrite_the_new_owners_records() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let mut old_owner = f.store();
    old_owner.load().await.unwrap();
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(["a".to_string()], Some(Pointer::from("1")), now())
        .unwrap();
    old_owner
        .save_batch(&cp, &records(&["a".to_string()]))
        .await
        .unwrap();
    // The new owner takes over and starts batch 2 with its records.
    let mut new_owner = f.store();
    let mut theirs = new_owner.load().await.unwrap().unwrap().checkpoint;
    let done = |cp: &mut Checkpoint| {
        cp.begin_attempt(0, "L", now()).unwrap();
        cp.succeed(0, "L", None, now()).unwrap();
    };
    done(&mut theirs);
    let new_ids: Vec<String> = vec!["b".into(), "c".into()];
    theirs
        .start_batch(new_ids.clone(), Some(Pointer::from("3")), now())
        .unwrap();
    new_owner
        .save_batch(&theirs, &records(&new_ids))
        .await
        .unwrap();
    // The old owner, paused until now, saves its own batch 2 (other records).
    done(&mut cp);
    let stale: Vec<String> = vec!["x".into(), "y".into()];
    cp.start_batch(stale.clone(), Some(Pointer::from("3")), now())
        .unwrap();
    let err = old_owner
        .save_batch(&cp, &records(&stale))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CheckpointOwned { .. }), "{err}");
    assert_eq!(
        new_owner.calls().delete_object,
        1,
        "the new owner's first batch deletes the previous owner's object"
    );
    let loaded = f.store().load().await.unwrap().unwrap();
    assert_eq!(loaded.records, records(&new_ids), "the new owner's records");
    assert_eq!(loaded.checkpoint.trackers()[0].record_id, "b");
    f.cleanup().await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn the_item_does_not_grow_with_the_batch_and_its_size_limit_is_checked_before_the_call() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    // 10,000 records, no failures: the item stays small at every step.
    let ids: Vec<String> = (0..10_000).map(|i| format!("record-{i}")).collect();
    let mut store = f.store();
    store.load().await.unwrap();
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(ids.clone(), Some(Pointer::from("10000")), now())
        .unwrap();
    store.save_batch(&cp, &records(&ids)).await.unwrap();
    for group in 0..100 {
        let lock = format!("lock-{group}");
        for i in group * 100..(group + 1) * 100 {
            cp.begin_attempt(i, &lock, now()).unwrap();
            store.save_tracker(&cp, i).await.unwrap();
        }
        store.sync().await.unwrap();
        for i in group * 100..(group + 1) * 100 {
            cp.succeed(i, &lock, None, now()).unwrap();
            store.save_tracker(&cp, i).await.unwrap();
        }
    }
    cp.commit().unwrap();
    store.save_commit(&cp).await.unwrap();
    let calls = store.calls();
    eprintln!(
        "limit 10000, no failures: largest item {} bytes, {} write units in {} writes",
        calls.max_item_bytes,
        calls.write_units,
        calls.put_item + calls.update_item
    );
    assert!(calls.max_item_bytes <= 4096, "{calls:?}");
    assert_eq!(calls.write_units, calls.put_item + calls.update_item);
    let loaded = f.store().load().await.unwrap().unwrap();
    assert_eq!(loaded.checkpoint, summarized(&cp));

    // 1,500 records failing at once with long errors keep full trackers:
    // the write that would pass 400 KB is refused before the call, and
    // nothing is lost from the store's side.
    let key = unique_name("too-large");
    let store_for = |key: &str| {
        DynamoDbS3CheckpointStore::builder(f.env.without_retries().dynamodb(), f.env.s3())
            .table(&f.table)
            .key(key)
            .bucket(&f.bucket)
            .build()
            .unwrap()
    };
    let mut store = store_for(&key);
    store.load().await.unwrap();
    let ids: Vec<String> = (0..1500).map(|i| format!("record-{i}")).collect();
    let mut cp = Checkpoint::new(&key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(ids.clone(), Some(Pointer::from("1500")), now())
        .unwrap();
    store.save_batch(&cp, &records(&ids)).await.unwrap();
    for i in 0..ids.len() {
        cp.begin_attempt(i, "L", now()).unwrap();
        cp.fail(i, "L", ErrorInfo::new("e".repeat(300)), now())
            .unwrap();
        store.save_tracker(&cp, i).await.unwrap();
    }
    let calls_before = store.calls();
    let err = store.sync().await.unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("409600") && text.contains("full tracker") && text.contains("limit"),
        "{text}"
    );
    assert_eq!(
        store.calls().update_item,
        calls_before.update_item,
        "refused before the call"
    );
    let loaded = store_for(&key).load().await.unwrap().unwrap();
    assert!(
        loaded
            .checkpoint
            .trackers()
            .iter()
            .all(|t| t.status == Status::Pending),
        "the checkpoint is as before the refused write"
    );
    f.cleanup().await;
}

/// An item written by the first layout (one tracker per record in the map,
/// keys `<index>|<record id>`, records object without ids) is read, taken
/// over and rewritten as layout 2 in the same write; the batch carries on.
#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn an_item_of_the_first_layout_is_read_and_converted() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = ["a", "b.c", "d|e"].iter().map(|s| s.to_string()).collect();
    let mut cp = Checkpoint::new(&f.key, Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(ids.clone(), Some(Pointer::from("3")), now())
        .unwrap();
    cp.begin_attempt(0, "old", now()).unwrap();
    cp.succeed(0, "old", Some(serde_json::json!({"n": 1})), now())
        .unwrap();
    cp.begin_attempt(1, "old", now()).unwrap();
    cp.fail(1, "old", ErrorInfo::new("boom"), now()).unwrap();
    // The layout-1 item and records object, as the previous release wrote them.
    let records_key = format!("checkpoints/{}/batch-{:020}.json", f.key, 1);
    let body: Vec<serde_json::Value> = records(&ids)
        .iter()
        .map(|r| {
            use base64::Engine as _;
            serde_json::json!({
                "pointer": r.pointer,
                "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
            })
        })
        .collect();
    f.env
        .s3()
        .put_object()
        .bucket(&f.bucket)
        .key(&records_key)
        .body(serde_json::to_vec(&body).unwrap().into())
        .send()
        .await
        .unwrap();
    let trackers = cp
        .trackers()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("{i}|{}", t.record_id),
                AttributeValue::S(serde_json::to_string(t).unwrap()),
            )
        })
        .collect();
    f.env
        .dynamodb()
        .put_item()
        .table_name(&f.table)
        .item("id", AttributeValue::S(f.key.clone()))
        .item("version", AttributeValue::N("7".into()))
        .item("owner", AttributeValue::S("old-owner".into()))
        .item(
            "meta",
            AttributeValue::S(serde_json::to_string(&cp.without_trackers()).unwrap()),
        )
        .item("trackers", AttributeValue::M(trackers))
        .item("records_key", AttributeValue::S(records_key))
        .send()
        .await
        .unwrap();

    let mut store = f.store();
    let loaded = store.load().await.unwrap().expect("the old item");
    assert_eq!(loaded.checkpoint, cp, "every tracker of layout 1 is read");
    assert_eq!(loaded.records, records(&ids));
    let item = f
        .env
        .dynamodb()
        .get_item()
        .table_name(&f.table)
        .key("id", AttributeValue::S(f.key.clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item["layout"].as_n().unwrap(),
        "2",
        "converted on take-over"
    );
    // The batch carries on under the new layout and loads back.
    let mut cp = loaded.checkpoint;
    cp.begin_attempt(2, "new", now()).unwrap();
    cp.succeed(2, "new", None, now()).unwrap();
    store.save_tracker(&cp, 2).await.unwrap();
    store.sync().await.unwrap();
    let again = f.store().load().await.unwrap().unwrap();
    assert_eq!(again.checkpoint, cp);
    f.cleanup().await;
}

#[derive(Clone, Default)]
struct Hangs {
    on: Option<String>,
    log: Arc<Mutex<Vec<(String, u32)>>>,
}

#[derive(serde::Deserialize)]
struct R {
    id: String,
}

impl unistream_core::record::Record for R {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        now()
    }
}

impl Processor for Hangs {
    type Record = R;
    async fn process(&self, r: &R, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if self.on.as_deref() == Some(r.id.as_str()) {
            std::future::pending::<()>().await;
        }
        self.log.lock().unwrap().push((r.id.clone(), a.number));
        Ok(Outcome::Succeeded)
    }
}

impl serde::Serialize for R {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_restarted_consumer_resumes_mid_batch_from_dynamodb_and_s3() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = (0..8).map(|i| format!("r {i}.x")).collect();
    let source = MemorySource::new(records(&ids).into_iter().map(|r| r.data).collect());
    let clock = VirtualClock::default();
    let mut config = ConsumerConfig::new(&f.key);
    config.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(3);
    config.lock_expire = Duration::from_secs(30);
    config.stop_at_end = true;
    let first = Hangs {
        on: Some("r 5.x".into()),
        ..Default::default()
    };
    let mut c = Consumer::new(
        config.clone(),
        source.clone(),
        first.clone(),
        f.store(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(clock.clone());
    assert!(
        tokio::time::timeout(Duration::from_secs(3), c.run())
            .await
            .is_err(),
        "hangs on r 5.x"
    );
    drop(c);
    let second = Hangs::default();
    let mut c = Consumer::new(
        config,
        source,
        second.clone(),
        f.store(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(clock.clone());
    c.run().await.unwrap();
    let done_first: Vec<String> = first
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(i, _)| i.clone())
        .collect();
    let done_second = second.log.lock().unwrap().clone();
    assert_eq!(done_first, ids[..5].to_vec());
    assert_eq!(
        done_second
            .iter()
            .map(|(i, _)| i.clone())
            .collect::<Vec<_>>(),
        ids[5..].to_vec(),
        "resumed mid-batch, nothing repeated"
    );
    assert_eq!(done_second[0].1, 2, "the interrupted attempt counted");
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(30)],
        "waited for the dead owner's lock to expire"
    );
    f.cleanup().await;
}

#[derive(Clone, Default)]
struct Ok_;

impl Processor for Ok_ {
    type Record = R;
    async fn process(&self, _: &R, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn one_dynamodb_write_per_record_in_the_common_case() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let source = MemorySource::new(records(&ids).into_iter().map(|r| r.data).collect());
    let mut config = ConsumerConfig::new(&f.key);
    config.limit = 50;
    config.stop_at_end = true;
    let mut c = Consumer::new(
        config,
        source,
        Ok_,
        f.store(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let s = c.run().await.unwrap();
    assert_eq!(s.succeeded, 100);
    let calls = c.store().calls();
    eprintln!("calls for 100 records in batches of 50: {calls:?}");
    // Per record: one UpdateItem (its start, carrying the previous record's
    // result; the batch's first start rides on its PutItem, its last result
    // on the commit). Per batch: one PutObject, one PutItem; no DeleteObject
    // (the writer's two records objects alternate).
    assert_eq!(calls.update_item, 100);
    assert_eq!(
        (calls.put_item, calls.put_object, calls.delete_object),
        (2, 2, 0)
    );
    assert_eq!((calls.get_item, calls.get_object), (1, 0));
    // The item holds no tracker per record: every write is one write unit.
    assert!(calls.max_item_bytes < 1024, "{calls:?}");
    assert_eq!(calls.write_units, calls.put_item + calls.update_item);
    f.cleanup().await;
}

/// One checkpoint item of the contract suite: a fresh key per check.
struct ContractItem {
    env: Env,
    table: String,
    bucket: String,
    key: String,
}

impl unistream_test_support::checkpoint_contract::StoreUnderTest for ContractItem {
    type Store = DynamoDbS3CheckpointStore;
    async fn open(&mut self) -> unistream_core::Result<DynamoDbS3CheckpointStore> {
        DynamoDbS3CheckpointStore::builder(self.env.without_retries().dynamodb(), self.env.s3())
            .table(&self.table)
            .key(&self.key)
            .bucket(&self.bucket)
            .build()
    }
    async fn corrupt(&mut self) -> bool {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.env
            .dynamodb()
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(self.key.clone()))
            .update_expression("SET #m = :garbage")
            .expression_attribute_names("#m", "meta")
            .expression_attribute_values(":garbage", AttributeValue::S("{not json".into()))
            .send()
            .await
            .unwrap();
        true
    }
    fn excludes_owners(&self) -> bool {
        true
    }
    fn summarizes_done_records(&self) -> bool {
        true
    }
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn the_dynamodb_s3_store_keeps_the_checkpoint_store_contract() {
    use unistream_test_support::checkpoint_contract::{Checked, check_all};
    let Some(f) = Fixture::new().await else {
        return;
    };
    let checked = check_all(|| ContractItem {
        env: f.env.clone(),
        table: f.table.clone(),
        bucket: f.bucket.clone(),
        key: unique_name("contract"),
    })
    .await;
    assert_eq!(checked, [Checked::Passed; 4]);
    f.cleanup().await;
}

/// A repair reads with `peek` (nothing written) and takes the item over
/// only if it is still at the version it read: a consumer that wrote in
/// between keeps its checkpoint and goes on writing.
#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn peek_takes_nothing_over_and_a_take_over_at_a_stale_version_is_refused() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let mut running = f.store();
    assert!(running.load().await.unwrap().is_none());
    let mut cp = Checkpoint::new(
        f.key.clone(),
        Pointer::from("0"),
        3,
        Duration::from_secs(60),
    );
    cp.start_batch(ids.clone(), Some(Pointer::from("2")), now())
        .unwrap();
    running.save_batch(&cp, &records(&ids)).await.unwrap();

    let mut repair = f.store();
    let peeked = repair.peek().await.unwrap().expect("a checkpoint");
    assert_eq!(peeked.stored.checkpoint, cp);
    assert_eq!(peeked.stored.records, records(&ids));

    // The consumer writes on after the peek (it was not fenced)...
    cp.begin_attempt(0, "L", now()).unwrap();
    running.save_tracker(&cp, 0).await.unwrap();
    running.sync().await.unwrap();
    // ...so a take-over at the version peeked is refused, and the consumer
    // still owns its checkpoint.
    let err = repair.load_if_unchanged(peeked.version).await.unwrap_err();
    assert!(matches!(err, Error::CheckpointOwned { .. }), "{err}");
    cp.succeed(0, "L", None, now()).unwrap();
    running.save_tracker(&cp, 0).await.unwrap();
    running.sync().await.unwrap();

    // At the current version, it is taken over, and the consumer fenced.
    let now_at = repair.peek().await.unwrap().unwrap().version;
    let loaded = repair.load_if_unchanged(now_at).await.unwrap();
    assert_eq!(
        loaded.checkpoint.trackers()[0].status,
        cp.trackers()[0].status
    );
    running.save_tracker(&cp, 1).await.unwrap();
    assert!(matches!(
        running.sync().await.unwrap_err(),
        Error::CheckpointOwned { .. }
    ));
    f.cleanup().await;
}

/// `repair`: refused while a record is in progress under a live lock; a dry
/// run writes nothing; applied, it takes the item over, so the consumer
/// that was running stops at its next write instead of overwriting it.
#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn repair_refuses_a_live_lock_dry_runs_and_fences_the_running_consumer() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let ids: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let mut running = f.store();
    assert!(running.load().await.unwrap().is_none());
    let mut cp = Checkpoint::new(
        f.key.clone(),
        Pointer::from("0"),
        3,
        Duration::from_secs(60),
    );
    let live = Utc::now();
    cp.start_batch(ids.clone(), Some(Pointer::from("2")), live)
        .unwrap();
    cp.begin_attempt(0, "worker-1", live).unwrap();
    running.save_batch(&cp, &records(&ids)).await.unwrap();

    let reset = |cp: &mut Checkpoint, records: &mut Vec<SourceRecord>| {
        records.clear();
        Ok(cp.reset_to(Pointer::from("TRIM_HORIZON")))
    };
    let mut tool = f.store();
    let err = tool.repair(true, reset).await.unwrap_err();
    assert!(
        matches!(err, Error::CheckpointOwned { ref detail, .. } if detail.contains("lock worker-1")),
        "{err}"
    );
    // The attempt ends; the lock is gone.
    cp.succeed(0, "worker-1", None, Utc::now()).unwrap();
    running.save_tracker(&cp, 0).await.unwrap();
    running.sync().await.unwrap();

    let version = tool.peek().await.unwrap().unwrap().version;
    let dry = tool
        .repair(false, reset)
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(!dry.applied);
    assert_eq!(dry.outcome, 1, "one record was not done");
    // As stored (a done record kept compactly): its statuses.
    let statuses = |c: &Checkpoint| c.trackers().iter().map(|t| t.status).collect::<Vec<_>>();
    assert_eq!(statuses(&dry.before), statuses(&cp));
    assert_eq!(dry.before.batch_sequence(), cp.batch_sequence());
    assert_eq!(
        tool.peek().await.unwrap().unwrap().version,
        version,
        "nothing written"
    );

    let done = tool
        .repair(true, reset)
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(done.applied);
    let stored = tool.peek().await.unwrap().unwrap().stored;
    assert_eq!(stored.checkpoint.start_pointer().as_str(), "TRIM_HORIZON");
    assert!(stored.records.is_empty());
    // The consumer that held it is fenced.
    cp.begin_attempt(1, "worker-1", Utc::now()).unwrap();
    running.save_tracker(&cp, 1).await.unwrap();
    assert!(matches!(
        running.sync().await.unwrap_err(),
        Error::CheckpointOwned { .. }
    ));
    f.cleanup().await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: cargo xtask it"]
async fn the_dynamodb_idempotency_store_passes_the_contract() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::DynamoDb) {
        return;
    }
    let table = env.create_table("id").await;
    let store = unistream_dynamodb_s3::DynamoDbIdempotencyStore::new(env.dynamodb(), &table);
    unistream_core::testing::idempotency::check_all(&store, "ddb", Utc::now()).await;
    // An item that is not an idempotency item is an error, never a claim.
    env.dynamodb()
        .put_item()
        .table_name(&table)
        .item(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("foreign".into()),
        )
        .send()
        .await
        .unwrap();
    let err = unistream_core::idempotency::IdempotencyStore::get(&store, "foreign")
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&table), "{err}");
    env.delete_table(&table).await;
}
