//! Kinesis against an emulator, in one run: our producer next to a plain SDK
//! `PutRecords` loop of the same batches, and our consumer (per-record
//! checkpoint in local files) next to a plain `GetRecords` loop.
//!
//! ```text
//! moto_server -H 127.0.0.1 -p 5000 &
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo bench -p unistream-kinesis --bench kinesis -- [--records N]
//! ```
//!
//! Both readers keep to the Kinesis quota of 5 `GetRecords` per second.
//! Without `AWS_ENDPOINT_URL` (e.g. under `cargo test`) it says so and does
//! nothing.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::BoxError;
use unistream_core::buffer::BufferLimits;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryBuffer, MemoryDeadLetterQueue};
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_kinesis::{KinesisSink, KinesisSource, StartingPosition};
use unistream_local::Durability;
use unistream_local::FileCheckpointStore;
use unistream_test_support::Env;

#[derive(Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    value: u64,
    note: String,
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
        create_at: DateTime::from_timestamp(1_704_781_446, 0).unwrap_or_default(),
        value: i % 100,
        note: "lorem ipsum dolor".into(),
    }
}

struct Noop;
impl Processor for Noop {
    type Record = Rec;
    async fn process(&self, _: &Rec, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        Ok(Outcome::Succeeded)
    }
}

use unistream_test_support::bench_arg as arg;

async fn shard(env: &Env, stream: &str) -> String {
    let out = env
        .kinesis()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.shards()[0].shard_id().to_owned()
}

fn row(name: &str, n: u64, secs: f64, base: f64) -> f64 {
    let rate = n as f64 / secs;
    let ratio = rate / if base > 0.0 { base } else { rate };
    println!("{name:<52} {n:>8} {rate:>12.0} {ratio:>8.2}");
    println!(
        "BENCH {{\"bench\":\"kinesis\",\"case\":{name:?},\"records\":{n},\"records_per_s\":{rate:.0},\"ratio\":{ratio:.3}}}"
    );
    rate
}

fn main() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!(
            "kinesis bench: no AWS_ENDPOINT_URL, nothing measured (start an emulator; see the file's docs)"
        );
        return;
    }
    let n = arg("--records", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let env = Env::from_env().await;
        let k = env.kinesis();
        println!(
            "{:<52} {:>8} {:>12} {:>8}",
            "case", "records", "records/s", "vs base"
        );

        // Producer: a plain loop of PutRecords of 500, then ours.
        let codec = JsonCodec::default();
        let data: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (i.to_string(), codec.to_vec(&rec(i)).unwrap_or_default()))
            .collect();
        let plain_stream = env.create_stream(1).await;
        let t = Instant::now();
        for chunk in data.chunks(500) {
            let entries: Vec<_> = chunk
                .iter()
                .map(|(key, d)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(d.clone()))
                        .build()
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect();
            k.put_records()
                .stream_name(&plain_stream)
                .set_records(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        let base = row(
            "plain SDK PutRecords loop, 500 per call",
            n,
            t.elapsed().as_secs_f64(),
            0.0,
        );

        let ours_stream = env.create_stream(1).await;
        let mut config = ProducerConfig::default();
        config.linger = None;
        let producer = Producer::new(
            config,
            MemoryBuffer::new(BufferLimits::records(500)),
            KinesisSink::new(k.clone(), &ours_stream),
        );
        let t = Instant::now();
        for i in 0..n {
            producer
                .put(&rec(i))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        producer.flush().await.unwrap_or_else(|e| panic!("{e}"));
        row(
            "unistream producer: put per record, batches of 500",
            n,
            t.elapsed().as_secs_f64(),
            base,
        );

        // Consumer: a plain GetRecords loop, then ours; both 5 calls/s, 1000 per call.
        let sh = shard(&env, &plain_stream).await;
        let mut it = k
            .get_shard_iterator()
            .stream_name(&plain_stream)
            .shard_id(&sh)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .shard_iterator;
        let t = Instant::now();
        let mut read = 0u64;
        let mut last = Instant::now() - Duration::from_secs(1);
        while read < n {
            let wait = Duration::from_millis(200).saturating_sub(last.elapsed());
            tokio::time::sleep(wait).await;
            last = Instant::now();
            let out = k
                .get_records()
                .set_shard_iterator(it.clone())
                .limit(1000)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            read += out.records().len() as u64;
            it = out.next_shard_iterator;
        }
        let base = row(
            "plain SDK GetRecords loop, 1000 per call",
            n,
            t.elapsed().as_secs_f64(),
            0.0,
        );

        let sh = shard(&env, &ours_stream).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = ConsumerConfig::new("bench");
        c.limit = 1000;
        c.stop_at_end = true;
        let source = KinesisSource::new(k.clone(), &ours_stream, sh, StartingPosition::TrimHorizon);
        let store = FileCheckpointStore::open(dir.path(), "bench", Durability::Process)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut consumer = Consumer::new(c, source, Noop, store, MemoryDeadLetterQueue::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let s = consumer.run().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.succeeded, n);
        row(
            "unistream consumer, file checkpoint, limit 1000",
            n,
            t.elapsed().as_secs_f64(),
            base,
        );
        env.delete_stream(&plain_stream).await;
        env.delete_stream(&ours_stream).await;
    });
}
