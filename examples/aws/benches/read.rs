//! Reading at the shard's quota: the consumer's read path against the fast
//! Kinesis emulator behind the loopback **read-quota proxy**
//! (`unistream_test_support::ReadQuotaProxy`: 5 `GetRecords`/s and 2 MiB/s
//! per shard, 2 MiB/s per subscription), with the production checkpoint
//! store (DynamoDB + S3 on moto, 5 ms — and in one case 25 ms — added to
//! every store call by `Env::with_latency`), concurrency 64; next to plain
//! SDK loops in the same run.
//!
//! ```text
//! cargo xtask bench        # builds the emulator, starts moto, runs this
//! ```
//!
//! Cases:
//! - **backlog drain**: one shard holding `--records` (200,000) records of
//!   ~100 bytes. A plain `GetRecords` loop of 10,000 per call, as fast as
//!   the proxy allows (a throttled call waits 100 ms); the consumer
//!   polling with its read-ahead (default settings); the consumer by
//!   enhanced fan-out. Rows: records/s, MiB/s, the ratio to the quota
//!   (2 MiB/s), store writes per second and per record, throttled calls.
//! - **latency**: records put one at a time at 3/s and 500/s; put →
//!   processed p50/p99 for polling (defaults) and fan-out, next to a plain
//!   loop paced at 5 calls/s.
//! - **two applications** on one stream, each draining the backlog at
//!   once: polling (they share the shard's quota) and fan-out (each its
//!   own): each one's records/s against one alone.
//!
//! Each row is also printed as a `BENCH {json}` line. Without
//! `AWS_ENDPOINT_URL` and `UNISTREAM_IT_FAST_KINESIS` it says so and does
//! nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::ShardIteratorType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream::BoxError;
use unistream::consumer::{
    Attempt, CheckpointInterval, Consumer, ConsumerConfig, Outcome, Processor,
};
use unistream::dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream::kinesis::{KinesisSource, StartingPosition, register_consumer};
use unistream::memory::MemoryDeadLetterQueue;
use unistream::record::{Record, iso8601};
use unistream_test_support::{Env, FastKinesis, ReadQuotaProxy, bench_arg as arg, unique_name};

const QUOTA: f64 = 2.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
const KEYS: u64 = 1_000;

#[derive(Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    key: String,
    /// When it was put (µs since the epoch), for the latency cases.
    sent: i64,
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

fn rec(i: u64) -> (String, Vec<u8>) {
    let r = Rec {
        id: format!("r{i}"),
        create_at: DateTime::from_timestamp(1_704_781_446, 0).unwrap_or_default(),
        key: format!("k{}", i % KEYS),
        sent: Utc::now().timestamp_micros(),
    };
    let data = serde_json::to_vec(&r).unwrap_or_else(|e| panic!("{e}"));
    (r.key, data)
}

/// Counts what it processes; keeps put → processed delays when asked.
#[derive(Clone, Default)]
struct Count {
    done: Arc<std::sync::atomic::AtomicU64>,
    delays: Option<Arc<Mutex<Vec<f64>>>>,
}

impl Processor for Count {
    type Record = Rec;
    async fn process(&self, r: &Rec, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if let Some(d) = &self.delays {
            let ms = (Utc::now().timestamp_micros() - r.sent) as f64 / 1000.0;
            d.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
        }
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Outcome::Succeeded)
    }
}

struct Bench {
    moto: Env,
    kinesis: Env,
    proxy: ReadQuotaProxy,
    table: String,
    bucket: String,
    _fast: FastKinesis,
}

struct Drained {
    records: u64,
    bytes: u64,
    secs: f64,
    writes: u64,
    throttled: u64,
}

fn row(case: &str, d: &Drained) {
    let rate = d.records as f64 / d.secs;
    let mib = d.bytes as f64 / MIB / d.secs;
    let quota = d.bytes as f64 / d.secs / QUOTA;
    println!(
        "{case:<44} {rate:>9.0} {mib:>7.2} {quota:>7.2} {:>9.1} {:>9.4} {:>6}",
        d.writes as f64 / d.secs,
        d.writes as f64 / d.records as f64,
        d.throttled
    );
    println!(
        "BENCH {{\"bench\":\"read\",\"case\":\"{case}\",\"records\":{},\"records_per_s\":{rate:.0},\"mib_per_s\":{mib:.3},\"vs_quota\":{quota:.3},\"store_writes_per_s\":{:.2},\"store_writes_per_record\":{:.5},\"throttled\":{}}}",
        d.records,
        d.writes as f64 / d.secs,
        d.writes as f64 / d.records as f64,
        d.throttled
    );
}

fn latency_row(case: &str, delays: &mut [f64]) {
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99) = if delays.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (at(0.5), at(0.99))
    };
    println!(
        "{case:<44} p50 {p50:>7.0} ms   p99 {p99:>7.0} ms   ({} records)",
        delays.len()
    );
    println!(
        "BENCH {{\"bench\":\"read\",\"case\":\"{case}\",\"records\":{},\"p50_ms\":{p50:.1},\"p99_ms\":{p99:.1}}}",
        delays.len()
    );
}

impl Bench {
    async fn stream(&self, records: u64) -> (String, String) {
        let stream = self.kinesis.create_stream(1).await;
        let shard = self.kinesis.shards(&stream).await[0].0.clone();
        self.kinesis.put_raw(&stream, (0..records).map(rec)).await;
        (stream, shard)
    }

    /// A plain loop: `GetRecords` of 10,000 through the proxy as fast as it
    /// allows (throttled: wait 100 ms).
    async fn plain(&self, stream: &str, shard: &str, n: u64) -> Drained {
        self.proxy.reset();
        let k = self.kinesis.with_kinesis_at(&self.proxy.url()).kinesis();
        let t = Instant::now();
        let mut it = trim_horizon(&k, stream, shard).await;
        let (mut read, mut bytes) = (0u64, 0u64);
        while read < n {
            match k
                .get_records()
                .set_shard_iterator(it.clone())
                .limit(10_000)
                .send()
                .await
            {
                Ok(out) => {
                    read += out.records().len() as u64;
                    bytes += out
                        .records()
                        .iter()
                        .map(|r| r.data().as_ref().len() as u64)
                        .sum::<u64>();
                    it = out.next_shard_iterator;
                }
                Err(e) => match e.into_service_error() {
                    GetRecordsError::ProvisionedThroughputExceededException(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    e => panic!("{e:?}"),
                },
            }
        }
        Drained {
            records: read,
            bytes,
            secs: t.elapsed().as_secs_f64(),
            writes: 0,
            throttled: self.proxy.counts().throttled,
        }
    }

    fn store(&self, id: &str, latency: Duration) -> DynamoDbS3CheckpointStore {
        let slow = self.moto.with_latency(latency);
        DynamoDbS3CheckpointStore::builder(slow.dynamodb(), slow.s3())
            .table(&self.table)
            .key(id)
            .bucket(&self.bucket)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn source(&self, stream: &str, shard: &str, efo: Option<&str>) -> KinesisSource {
        let k = self.kinesis.with_kinesis_at(&self.proxy.url()).kinesis();
        let s = KinesisSource::new(k, stream, shard, StartingPosition::TrimHorizon);
        match efo {
            Some(arn) => s.with_fan_out(arn),
            None => s,
        }
    }

    /// A consumer draining `n` records from the stream's start.
    async fn drain(
        &self,
        stream: &str,
        shard: &str,
        efo: Option<&str>,
        latency: Duration,
        n: u64,
    ) -> Drained {
        let id = unique_name("read");
        let config = ConsumerConfig::new(&id)
            .limit(10_000)
            .concurrency(64)
            .checkpoint_interval(Some(
                CheckpointInterval::records(10_000).with_time(Duration::from_secs(1)),
            ));
        let count = Count::default();
        let mut consumer = Consumer::new(
            config,
            self.source(stream, shard, efo),
            count.clone(),
            self.store(&id, latency),
            MemoryDeadLetterQueue::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let mut batches = 0u64;
        while count.done.load(std::sync::atomic::Ordering::Relaxed) < n {
            let r = consumer
                .process_batch()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            batches += u64::from(r.fetched > 0);
        }
        eprintln!(
            "read bench: {batches} batches, store calls {:?}, source {:?}",
            consumer.store().calls(),
            consumer.source().stats()
        );
        let secs = t.elapsed().as_secs_f64();
        let records = count.done.load(std::sync::atomic::Ordering::Relaxed);
        let calls = consumer.store().calls();
        Drained {
            records,
            // ~ record size × records (every record has the same size).
            bytes: records * rec(0).1.len() as u64,
            secs,
            writes: calls.put_item + calls.update_item + calls.put_object,
            throttled: self.proxy.counts().throttled,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() || !FastKinesis::available() {
        println!(
            "read bench skipped: it needs moto (AWS_ENDPOINT_URL) and the fast Kinesis emulator (UNISTREAM_IT_FAST_KINESIS): run `cargo xtask bench`"
        );
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let records = arg("--records", if quick { 40_000 } else { 200_000 });
    let seconds = arg("--latency-seconds", if quick { 10 } else { 30 });
    let fast = FastKinesis::start(&[]);
    let moto = Env::from_env().await;
    let kinesis = moto.with_kinesis_at(fast.url());
    let proxy = ReadQuotaProxy::start(fast.url()).await;
    let b = Bench {
        table: moto.create_table("id").await,
        bucket: moto.create_bucket().await,
        moto,
        kinesis,
        proxy,
        _fast: fast,
    };
    let t = Instant::now();
    let (stream, shard) = b.stream(records).await;
    eprintln!(
        "read bench: {records} records of {} bytes written in {:.1} s",
        rec(0).1.len(),
        t.elapsed().as_secs_f64()
    );
    let efo = |stream: String, name: &'static str| {
        let k = b.kinesis.kinesis();
        async move {
            register_consumer(
                &k,
                &stream,
                name,
                Duration::from_millis(50),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let arn_a = efo(stream.clone(), "bench-a").await;
    let arn_b = efo(stream.clone(), "bench-b").await;

    println!("\n## backlog drain ({records} records, quota 2 MiB/s per shard)");
    println!(
        "{:<44} {:>9} {:>7} {:>7} {:>9} {:>9} {:>6}",
        "case", "records/s", "MiB/s", "quota", "writes/s", "wr/rec", "thrtl"
    );
    row(
        "drain: plain GetRecords loop",
        &b.plain(&stream, &shard, records).await,
    );
    b.proxy.reset();
    row(
        "drain: polling, store +5 ms",
        &b.drain(&stream, &shard, None, Duration::from_millis(5), records)
            .await,
    );
    b.proxy.reset();
    row(
        "drain: polling, store +25 ms",
        &b.drain(&stream, &shard, None, Duration::from_millis(25), records)
            .await,
    );
    b.proxy.reset();
    row(
        "drain: fan-out, store +5 ms",
        &b.drain(
            &stream,
            &shard,
            Some(&arn_a),
            Duration::from_millis(5),
            records,
        )
        .await,
    );

    println!("\n## two applications, each draining the backlog");
    for (name, arns) in [
        ("polling", [None, None]),
        ("fan-out", [Some(&arn_a), Some(&arn_b)]),
    ] {
        b.proxy.reset();
        let (x, y) = tokio::join!(
            b.drain(
                &stream,
                &shard,
                arns[0].map(String::as_str),
                Duration::from_millis(5),
                records
            ),
            b.drain(
                &stream,
                &shard,
                arns[1].map(String::as_str),
                Duration::from_millis(5),
                records
            ),
        );
        row(&format!("two apps: {name}, app 1"), &x);
        row(&format!("two apps: {name}, app 2"), &y);
    }

    println!("\n## latency, put → processed");
    for rate in [3u64, 500] {
        for case in ["plain loop, 5 calls/s", "polling", "fan-out"] {
            let (stream, shard) = b.stream(0).await;
            let delays = Arc::new(Mutex::new(Vec::new()));
            let stop = tokio_util_stop();
            let reader = {
                let delays = Arc::clone(&delays);
                let stop = Arc::clone(&stop);
                let (stream, shard) = (stream.clone(), shard.clone());
                let arn = if case == "fan-out" {
                    Some(efo(stream.clone(), "bench-latency").await)
                } else {
                    None
                };
                let b = &b;
                async move {
                    if case.starts_with("plain") {
                        b.paced_loop(&stream, &shard, &delays, &stop).await;
                    } else {
                        b.follow(&stream, &shard, arn.as_deref(), &delays, &stop)
                            .await;
                    }
                }
            };
            let writer = async {
                // Let the reader start first.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let total = rate * seconds;
                let t = tokio::time::Instant::now();
                for i in 0..total {
                    b.kinesis.put_raw(&stream, [rec(i)]).await;
                    tokio::time::sleep_until(
                        t + Duration::from_secs_f64((i + 1) as f64 / rate as f64),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            };
            tokio::join!(reader, writer);
            let mut d = delays.lock().unwrap_or_else(|e| e.into_inner()).clone();
            latency_row(&format!("latency {rate}/s: {case}"), &mut d);
        }
    }
}

type Stop = Arc<std::sync::atomic::AtomicBool>;

async fn trim_horizon(k: &aws_sdk_kinesis::Client, stream: &str, shard: &str) -> Option<String> {
    k.get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .shard_iterator
}

fn tokio_util_stop() -> Stop {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

impl Bench {
    /// A plain SDK loop from the (empty) stream's start, a call every 200 ms.
    async fn paced_loop(&self, stream: &str, shard: &str, delays: &Mutex<Vec<f64>>, stop: &Stop) {
        let k = self.kinesis.kinesis();
        let mut it = trim_horizon(&k, stream, shard).await;
        let mut next = tokio::time::Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep_until(next).await;
            next += Duration::from_millis(200);
            let out = k
                .get_records()
                .set_shard_iterator(it.clone())
                .limit(10_000)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            let now = Utc::now().timestamp_micros();
            for r in out.records() {
                if let Ok(rec) = serde_json::from_slice::<Rec>(r.data().as_ref()) {
                    let ms = (now - rec.sent) as f64 / 1000.0;
                    delays.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                }
            }
            it = out.next_shard_iterator;
        }
    }

    /// The consumer with default settings (and the production store) until
    /// stopped.
    async fn follow(
        &self,
        stream: &str,
        shard: &str,
        efo: Option<&str>,
        delays: &Arc<Mutex<Vec<f64>>>,
        stop: &Stop,
    ) {
        let id = unique_name("latency");
        let count = Count {
            delays: Some(Arc::clone(delays)),
            ..Count::default()
        };
        let k = self.kinesis.kinesis();
        let mut source = KinesisSource::new(k, stream, shard, StartingPosition::TrimHorizon);
        if let Some(arn) = efo {
            source = source.with_fan_out(arn);
        }
        let mut consumer = Consumer::new(
            ConsumerConfig::new(&id).concurrency(64),
            source,
            count,
            self.store(&id, Duration::from_millis(5)),
            MemoryDeadLetterQueue::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let token = consumer.shutdown_token();
        let stopper = {
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                token.cancel();
            })
        };
        consumer.run().await.unwrap_or_else(|e| panic!("{e}"));
        let _ = stopper.await;
    }
}
