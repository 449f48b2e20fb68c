//! A stream written by someone else — bytes that are not JSON, put by a
//! plain SDK client, some in a KPL aggregate — consumed one for one as
//! `RawRecord`s with Kinesis's metadata, without a `Record` type. Against a
//! real emulator through the real SDK: run with `cargo xtask it`.

use std::sync::{Arc, Mutex};

use unistream_core::BoxError;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue};
use unistream_core::raw::{RawCodec, RawRecord};
use unistream_kinesis::{KinesisSource, StartingPosition, aggregation};
use unistream_test_support::{Env, Service};

#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<RawRecord>>>);

impl Processor for Keep {
    type Record = RawRecord;
    async fn process(&self, r: &RawRecord, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        self.0.lock().map_err(|e| e.to_string())?.push(r.clone());
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn any_bytes_are_consumed_one_for_one_with_their_kinesis_metadata() {
    let env = Env::from_env().await;
    if env.skip_unless(Service::Kinesis) {
        return;
    }
    let stream = env.create_stream(1).await;
    // Not JSON, not UTF-8: what a protobuf or Avro writer puts.
    let plain: Vec<(String, Vec<u8>)> = (0u8..5)
        .map(|i| (format!("device-{i}"), vec![0xff, 0x00, i, 0x80]))
        .collect();
    env.put_raw(&stream, plain.clone()).await;
    let users: Vec<_> = (0u8..3)
        .map(|i| aggregation::UserRecord::new(format!("agg-{i}"), None, vec![0xfe, i]))
        .collect();
    env.put_raw(
        &stream,
        [("agg-0".to_string(), aggregation::encode(&users))],
    )
    .await;
    let shard = env.shards(&stream).await.remove(0).0;

    let kept = Keep::default();
    let source = KinesisSource::new(
        env.kinesis(),
        &stream,
        &shard,
        StartingPosition::TrimHorizon,
    );
    let mut config = ConsumerConfig::new("raw");
    config.stop_at_end = true;
    config.concurrency = 4;
    let mut consumer = Consumer::new(
        config,
        source,
        kept.clone(),
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .with_codec(RawCodec);
    let summary = consumer.run().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.succeeded, 8);
    assert_eq!(summary.dead_lettered, 0);

    let mut got = kept.0.lock().map(|g| g.clone()).unwrap_or_default();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let (whole, inside): (Vec<_>, Vec<_>) = got.iter().partition(|r| !r.id.contains(':'));
    // The plain records: their bytes, keys, sequence numbers as ids.
    assert_eq!(whole.len(), 5);
    for (r, (key, data)) in whole.iter().zip(&plain) {
        assert_eq!(
            (r.partition_key.as_deref(), &r.data),
            (Some(key.as_str()), data)
        );
        assert!(r.id.bytes().all(|b| b.is_ascii_digit()), "{}", r.id);
        assert!(r.arrival_time.is_some(), "arrival time of {}", r.id);
    }
    // The aggregate's user records: `<sequence>:<sub>`, their own keys.
    assert_eq!(inside.len(), 3);
    for (sub, r) in inside.iter().enumerate() {
        assert!(r.id.ends_with(&format!(":{sub}")), "{}", r.id);
        assert_eq!(
            r.partition_key.as_deref(),
            Some(format!("agg-{sub}").as_str())
        );
        assert_eq!(r.data, vec![0xfe, sub as u8]);
    }
    env.delete_stream(&stream).await;
}
