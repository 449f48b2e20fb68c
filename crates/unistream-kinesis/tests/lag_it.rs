//! `list_shards` and `shard_lag` against a real emulator through the real
//! SDK. Run with `cargo xtask it`; a plain `cargo test` lists them as
//! ignored.

use unistream_kinesis::{Position, aggregation, list_shards, shard_lag};
use unistream_test_support::{Env, Service};

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn lag_counts_records_after_each_kind_of_position() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    let k = env.kinesis();
    // By name and by ARN, the same shards.
    let shards = list_shards(&k, &stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shards.len(), 1);
    let arn = k
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .stream_description_summary
        .map(|d| d.stream_arn)
        .unwrap_or_default();
    let by_arn = list_shards(&k, &arn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_arn, shards);
    let shard = shards[0].shard_id().to_owned();

    // An aggregate of 3 user records, then 4 plain records.
    let users: Vec<_> = (0..3)
        .map(|i| aggregation::UserRecord::new(format!("k{i}"), None, format!("u{i}")))
        .collect();
    env.put_raw(&stream, [("k0".to_string(), aggregation::encode(&users))])
        .await;
    env.put_raw(
        &stream,
        (0..4).map(|i| (format!("p{i}"), b"plain".to_vec())),
    )
    .await;

    let lag = |from: Position, max_read: usize| {
        let (k, stream, shard) = (&k, &stream, &shard);
        async move {
            shard_lag(k, stream, shard, &from, max_read)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let all = lag(Position::TrimHorizon, 100).await;
    assert!(all.at_tip, "{all:?}");
    assert_eq!(all.records_behind, 5);
    let tip = all.latest_sequence.clone().unwrap_or_default();

    // The sequence numbers, read back.
    let first = lag(Position::TrimHorizon, 1).await;
    assert!(!first.at_tip && first.records_behind == 1, "{first:?}");
    let aggregate = first.latest_sequence.unwrap_or_default();

    // After the aggregate: the 4 plain records.
    assert_eq!(
        lag(Position::After(aggregate.clone()), 100)
            .await
            .records_behind,
        4
    );
    // Inside it: the aggregate counts until its last user record.
    let inside = |sub| Position::InAggregate {
        sequence: aggregate.clone(),
        sub_sequence: sub,
    };
    assert_eq!(lag(inside(1), 100).await.records_behind, 5);
    assert_eq!(lag(inside(2), 100).await.records_behind, 4);
    // At the tip: nothing behind, exactly.
    let none = lag(Position::After(tip.clone()), 100).await;
    assert!(none.at_tip && none.records_behind == 0, "{none:?}");
    // A bound on what is read: a lower bound, not the tip.
    let cut = lag(Position::TrimHorizon, 2).await;
    assert!(!cut.at_tip && cut.records_behind == 2, "{cut:?}");
    env.delete_stream(&stream).await;
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn a_missing_stream_is_an_error_that_names_it() {
    let env = Env::from_env().await.without_retries();
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let e = list_shards(&env.kinesis(), "no-such-stream-here")
        .await
        .err()
        .map(|e| unistream_core::ErrorInfo::from_error(&e).to_string())
        .unwrap_or_default();
    assert!(
        e.contains("ListShards") && e.contains("no-such-stream-here"),
        "{e}"
    );
}
