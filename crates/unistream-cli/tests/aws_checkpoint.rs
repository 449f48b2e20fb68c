//! `unistream checkpoint` (DynamoDB + S3), `leases show` and `lag` against
//! an AWS emulator (moto), on checkpoints and leases written by the library.
//! Run with `cargo xtask it`.

use std::time::Duration;

use chrono::Utc;
use unistream_core::ErrorInfo;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_kinesis::aggregation;
use unistream_leases::{DynamoDbLeaseTable, LEASE_KEY, Lease, LeaseTable};
use unistream_test_support::{Env, Service};

mod tool;
use tool::{env_with, json, text, unistream_at};

fn store(env: &Env, table: &str, bucket: &str, key: &str) -> DynamoDbS3CheckpointStore {
    DynamoDbS3CheckpointStore::builder(env.dynamodb(), env.s3())
        .table(table)
        .key(key)
        .bucket(bucket)
        .build()
        .unwrap()
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn checkpoint_show_retry_reset_on_dynamodb_s3_respect_locks_and_leases() {
    let Some(env) = env_with(&[Service::DynamoDb, Service::S3]).await else {
        return;
    };
    let (table, bucket) = (env.create_table("id").await, env.create_bucket().await);
    let leases_table = env.create_table(LEASE_KEY).await;
    let key = "app/shardId-000000000000";
    let now = Utc::now();

    // A running consumer's checkpoint: a succeeded, b exhausted (one attempt
    // allowed) and not yet dead-lettered, c in progress under a live lock.
    let mut running = store(&env, &table, &bucket, key);
    running.load().await.unwrap();
    let mut cp = Checkpoint::new(
        key,
        Pointer::from("TRIM_HORIZON"),
        1,
        Duration::from_secs(600),
    );
    let ids = ["a", "b", "c"].map(String::from);
    cp.start_batch(
        ids.clone(),
        Some(Pointer::from("49000000000000000000003")),
        now,
    )
    .unwrap();
    let records: Vec<SourceRecord> = (0..3)
        .map(|i| {
            SourceRecord::new(
                Pointer::new(format!("4900000000000000000000{i}")),
                b"{}".to_vec(),
            )
        })
        .collect();
    running.save_batch(&cp, &records).await.unwrap();
    cp.begin_attempt(0, "L", now).unwrap();
    cp.succeed(0, "L", None, now).unwrap();
    cp.begin_attempt(1, "L", now).unwrap();
    cp.fail(1, "L", ErrorInfo::new("the payment service said no"), now)
        .unwrap();
    cp.begin_attempt(2, "L", now).unwrap();
    for i in 0..3 {
        running.save_tracker(&cp, i).await.unwrap();
    }
    running.sync().await.unwrap();

    let at = ["--table", &table, "--key", key, "--bucket", &bucket];
    let j = json(&unistream_at(
        &env,
        &[&["checkpoint", "show"][..], &at, &["--json"]].concat(),
    ));
    assert_eq!(j["counts"]["succeeded"], 1, "{j}");
    assert_eq!(j["counts"]["exhausted"], 1, "{j}");
    assert_eq!(j["counts"]["in_progress"], 1, "{j}");
    assert_eq!(j["failing"][0]["record_id"], "b");
    assert_eq!(j["failing"][0]["error"], "the payment service said no");
    let out = unistream_at(&env, &[&["checkpoint", "show"][..], &at].concat());
    assert!(
        text(&out).contains("the payment service said no"),
        "{}",
        text(&out)
    );

    // A record in progress under a live lock: some consumer is working on
    // the batch, so a repair is refused (and nothing is taken over).
    let retry = [&["checkpoint", "retry"][..], &at, &["b", "--yes"]].concat();
    let out = unistream_at(&env, &retry);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("being processed by a running consumer"),
        "{}",
        text(&out)
    );

    // `show` and the refused repair took nothing over: the running consumer
    // writes on.
    cp.succeed(2, "L", None, now).unwrap();
    running.save_tracker(&cp, 2).await.unwrap();
    running.sync().await.unwrap();

    // A lease-coordinated consumer's lease is held: refused.
    let leases = DynamoDbLeaseTable::new(env.dynamodb(), &leases_table);
    leases
        .create(&Lease::new("shardId-000000000000", Vec::new()))
        .await
        .unwrap();
    let free = leases.list().await.unwrap().remove(0);
    let held = leases.take(&free, "worker-1").await.unwrap().unwrap();
    let retry = [&retry[..], &["--lease-table", &leases_table]].concat();
    let out = unistream_at(&env, &retry);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("held by worker worker-1"),
        "{}",
        text(&out)
    );
    leases.release(&held).await.unwrap();

    // Released: the retry is written, and the running store is fenced.
    let out = unistream_at(&env, &retry);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("gets 1 attempts again"),
        "{}",
        text(&out)
    );
    running.save_tracker(&cp, 0).await.unwrap();
    let err = running.sync().await.unwrap_err();
    assert!(
        matches!(err, unistream_core::Error::CheckpointOwned { .. }),
        "{err}"
    );
    let mut after = store(&env, &table, &bucket, key);
    let loaded = after.load().await.unwrap().unwrap();
    let b = &loaded.checkpoint.trackers()[1];
    assert_eq!((b.status, b.attempts), (Status::Pending, 0));
    assert_eq!(loaded.records, records, "the batch's records are kept");
    let batch = loaded.checkpoint.batch_sequence();
    drop(after);

    // Reset: the batch is dropped, the next read starts at TRIM_HORIZON.
    let reset = [
        &["checkpoint", "reset"][..],
        &at,
        &["--to", "TRIM_HORIZON", "--yes"],
    ]
    .concat();
    let out = unistream_at(&env, &reset);
    assert!(out.status.success(), "{}", text(&out));
    let loaded = store(&env, &table, &bucket, key)
        .load()
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.checkpoint.is_committed() && loaded.checkpoint.trackers().is_empty());
    assert_eq!(loaded.checkpoint.start_pointer().as_str(), "TRIM_HORIZON");
    assert_eq!(loaded.checkpoint.batch_sequence(), batch);
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn leases_show_and_lag_per_shard() {
    let Some(env) = env_with(&[Service::Kinesis, Service::DynamoDb, Service::S3]).await else {
        return;
    };
    let stream = env.create_stream(2).await;
    let (table, bucket) = (env.create_table("id").await, env.create_bucket().await);
    let leases_table = env.create_table(LEASE_KEY).await;
    env.put_raw(
        &stream,
        (0..40).map(|i| (format!("key-{i}"), format!("r{i}").into_bytes())),
    )
    .await;
    let shards = env.shards(&stream).await;
    let (s0, s1) = (shards[0].0.clone(), shards[1].0.clone());

    // What each shard holds, read directly.
    let kinesis = env.kinesis();
    let mut counts = Vec::new();
    let mut first_two = Vec::new();
    for s in [&s0, &s1] {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(s)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .send()
            .await
            .unwrap();
        counts.push(out.records().len());
        if first_two.is_empty() {
            first_two = out
                .records()
                .iter()
                .take(2)
                .map(|r| r.sequence_number().to_owned())
                .collect();
        }
    }
    assert!(
        counts[0] >= 3 && counts[1] >= 1,
        "40 keys over 2 shards: {counts:?}"
    );

    // Shard 0's consumer committed its first two records; shard 1 has no
    // checkpoint yet.
    let now = Utc::now();
    let mut s = store(&env, &table, &bucket, &format!("orders/{s0}"));
    s.load().await.unwrap();
    let mut cp = Checkpoint::new(
        format!("orders/{s0}"),
        Pointer::from("TRIM_HORIZON"),
        3,
        Duration::from_secs(60),
    );
    cp.start_batch(
        ["r0".into(), "r1".into()],
        Some(Pointer::new(first_two[1].clone())),
        now,
    )
    .unwrap();
    let records: Vec<SourceRecord> = first_two
        .iter()
        .map(|q| SourceRecord::new(Pointer::new(q.clone()), b"{}".to_vec()))
        .collect();
    s.save_batch(&cp, &records).await.unwrap();
    for i in 0..2 {
        cp.begin_attempt(i, "L", now).unwrap();
        cp.succeed(i, "L", None, now).unwrap();
        s.save_tracker(&cp, i).await.unwrap();
    }
    cp.commit().unwrap();
    s.save_commit(&cp).await.unwrap();

    let leases = DynamoDbLeaseTable::new(env.dynamodb(), &leases_table);
    for shard in [&s0, &s1] {
        leases
            .create(&Lease::new(shard.clone(), Vec::new()))
            .await
            .unwrap();
    }
    let l0 = leases
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.shard_id == s0)
        .unwrap();
    leases.take(&l0, "worker-7").await.unwrap().unwrap();

    let j = json(&unistream_at(
        &env,
        &["leases", "show", "--table", &leases_table, "--json"],
    ));
    let rows = j["leases"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j}");
    let r0 = rows.iter().find(|r| r["shard_id"] == s0.as_str()).unwrap();
    assert_eq!(r0["owner"], "worker-7");
    assert_eq!(r0["counter"], 1);
    assert!(r0["changed"].is_string(), "a take records when: {j}");
    let out = unistream_at(&env, &["leases", "show", "--table", &leases_table]);
    assert!(
        text(&out).contains("2 leases, 1 held, 1 free, 0 ended"),
        "{}",
        text(&out)
    );

    let lag = [
        "lag",
        "--stream",
        &stream,
        "--table",
        &table,
        "--app",
        "orders",
        "--lease-table",
        &leases_table,
    ];
    let j = json(&unistream_at(&env, &[&lag[..], &["--json"]].concat()));
    let rows = j["shards"].as_array().unwrap();
    let r0 = rows.iter().find(|r| r["shard_id"] == s0.as_str()).unwrap();
    let r1 = rows.iter().find(|r| r["shard_id"] == s1.as_str()).unwrap();
    assert_eq!(r0["checkpoint"], first_two[1].as_str(), "{j}");
    assert_eq!(r0["records_behind"], counts[0] - 2, "{j}");
    assert_eq!(r0["records_behind_exact"], true, "{j}");
    assert_eq!(r0["owner"], "worker-7");
    assert_eq!(r1["checkpoint"], serde_json::Value::Null);
    assert_eq!(
        r1["records_behind"], counts[1],
        "no checkpoint: all of it: {j}"
    );
    let out = unistream_at(&env, &lag);
    assert!(text(&out).contains(&first_two[1]), "{}", text(&out));

    // --max-read bounds the read: "more than".
    let j = json(&unistream_at(
        &env,
        &[&lag[..], &["--json", "--max-read", "1"]].concat(),
    ));
    let r1 = j["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["shard_id"] == s1.as_str())
        .unwrap()
        .clone();
    if counts[1] > 1 {
        assert_eq!(r1["records_behind_exact"], false, "{j}");
        assert_eq!(r1["records_behind"], 1, "{j}");
    }
    env.delete_stream(&stream).await;
}

/// Saves a committed checkpoint of `key` whose next batch starts after
/// `pointer`.
async fn committed_at(env: &Env, table: &str, bucket: &str, key: &str, pointer: &str) {
    let now = Utc::now();
    let mut s = store(env, table, bucket, key);
    s.load().await.unwrap();
    let mut cp = Checkpoint::new(
        key,
        Pointer::from("TRIM_HORIZON"),
        3,
        Duration::from_secs(60),
    );
    cp.start_batch(["x".to_string()], Some(Pointer::new(pointer)), now)
        .unwrap();
    s.save_batch(
        &cp,
        &[SourceRecord::new(Pointer::new(pointer), b"{}".to_vec())],
    )
    .await
    .unwrap();
    cp.begin_attempt(0, "L", now).unwrap();
    cp.succeed(0, "L", None, now).unwrap();
    s.save_tracker(&cp, 0).await.unwrap();
    cp.commit().unwrap();
    s.save_commit(&cp).await.unwrap();
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn lag_inside_a_kpl_aggregate_counts_it_until_its_last_user_record() {
    let Some(env) = env_with(&[Service::Kinesis, Service::DynamoDb, Service::S3]).await else {
        return;
    };
    let stream = env.create_stream(1).await;
    let (table, bucket) = (env.create_table("id").await, env.create_bucket().await);
    let users: Vec<_> = (0..3)
        .map(|i| aggregation::UserRecord::new(format!("k{i}"), None, format!("u{i}")))
        .collect();
    env.put_raw(&stream, [("k0".to_string(), aggregation::encode(&users))])
        .await;
    env.put_raw(
        &stream,
        (0..2).map(|i| (format!("p{i}"), b"plain".to_vec())),
    )
    .await;
    let shard = env.shards(&stream).await.remove(0).0;
    let it = env
        .kinesis()
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let out = env
        .kinesis()
        .get_records()
        .shard_iterator(it)
        .send()
        .await
        .unwrap();
    let aggregate = out.records()[0].sequence_number().to_owned();

    let key = format!("orders/{shard}");
    let behind = |sub: usize| {
        let (env, stream, table, bucket, key, aggregate, shard) =
            (&env, &stream, &table, &bucket, &key, &aggregate, &shard);
        async move {
            committed_at(env, table, bucket, key, &format!("{aggregate}:{sub}")).await;
            let j = json(&unistream_at(
                env,
                &[
                    "lag", "--stream", stream, "--table", table, "--key", key, "--shard", shard,
                    "--json",
                ],
            ));
            assert_eq!(j["shards"][0]["records_behind_exact"], true, "{j}");
            j["shards"][0]["records_behind"].as_u64().unwrap()
        }
    };
    // Inside the aggregate: it and the two plain records are behind.
    assert_eq!(behind(1).await, 3);
    // At its last user record: only the two plain records.
    assert_eq!(behind(2).await, 2);
    env.delete_stream(&stream).await;
}
