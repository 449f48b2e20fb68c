//! The production consumer path against an emulator (moto), in one run:
//! `KinesisSource` + `DynamoDbS3CheckpointStore` + `SqsDeadLetterQueue`
//! driven by `Consumer`, next to a plain SDK `GetRecords` loop over the same
//! stream.
//!
//! ```text
//! moto_server -H 127.0.0.1 -p 5000 &
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!     cargo bench -p unistream-aws-examples --bench production -- [--quick] [--records N] [--sequential-records M]
//! ```
//!
//! - **Latency.** Every DynamoDB, S3 and SQS call waits 5 ms first
//!   (`Env::with_latency`: `unistream_test_support::LatencyHttpClient`, a
//!   device that injects latency, not a mock): moto answers from this
//!   machine without the few milliseconds AWS takes per call, which would
//!   hide what the number of calls costs. Kinesis calls (ours and the
//!   baseline's) get no added latency.
//! - **The stream**: one shard, written sequentially (moto loses records
//!   under concurrent `PutRecords` to one shard), ~130-byte JSON records
//!   over 1,000 partition keys, so that records of different keys can run
//!   concurrently.
//! - **Cases**, each a fresh checkpoint reading the stream from its start at
//!   `limit` 500 with a processor that succeeds at once (no failures):
//!   concurrency 1, 16 and 64 (`ConsumerConfig::concurrency`), and a
//!   `SliceProcessor` (slices of 100, the default `slice_size`). Concurrency
//!   1 reads fewer records (`--sequential-records`): it makes a checkpoint
//!   write per record.
//! - **Baseline**: a plain SDK `GetRecords` loop of 500 per call over the
//!   same stream and as many records, keeping to the Kinesis quota of 5
//!   calls per second per shard as `KinesisSource` does (a call at most
//!   every 200 ms); ratios are ours / the baseline's at the same count.
//! - **Per case**: records/s, the ratio, checkpoint store calls per record
//!   (DynamoDB + S3; the DLQ makes none without failures), DynamoDB write
//!   units per record (`StoreCalls::write_units`: as AWS bills them, by the
//!   item's size) and the largest item written (`StoreCalls::max_item_bytes`).
//! - **Item size** at `limit` 100, 1,000 and 10,000: one batch each
//!   (concurrency 64, no failures), the largest item written.
//!
//! - **Idempotent processing** (`Idempotent` over `DynamoDbIdempotencyStore`,
//!   in the checkpoint table under a namespace, 5 ms added to its calls
//!   too): concurrency 64 and slices of 100, each next to the same case
//!   without it (the ratio is ours with / without, same run), with the
//!   idempotency store's writes, calls and write units per record; and the
//!   same over a latency model (`Delayed`: the memory store behind 5 ms
//!   per call, calls overlapping — DynamoDB's shape; moto serves about a
//!   hundred conditional writes per second in all, which bounds the rows
//!   above; they read at most 3,000 records). `--idempotent-only` runs only
//!   these and what they compare to.
//!
//! Each row is also printed as a `BENCH {json}` line for `cargo xtask
//! bench`. Without `AWS_ENDPOINT_URL` (e.g. under `cargo test`) it says so
//! and does nothing; under `cargo test` with one it runs a small version.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use unistream::BoxError;
use unistream::consumer::{
    Attempt, Consumer, ConsumerConfig, Handler, Outcome, Processor, SliceItem, SliceProcessor,
    SliceResult, Slices,
};
use unistream::dynamodb_s3::{DynamoDbIdempotencyStore, DynamoDbS3CheckpointStore, StoreCalls};
use unistream::idempotency::{
    Claim, Claimed, Completion, IdempotencyConfig, IdempotencyItem, IdempotencyStore, Idempotent,
    MemoryIdempotencyStore, Owner,
};
use unistream::kinesis::{KinesisSource, StartingPosition};
use unistream::record::{JsonCodec, Record, iso8601};
use unistream::sqs_dlq::SqsDeadLetterQueue;
use unistream_test_support::{Env, unique_name};

/// Added to every DynamoDB, S3 and SQS call.
const LATENCY: Duration = Duration::from_millis(5);
/// Records per batch in the main cases.
const LIMIT: usize = 500;
/// Distinct partition keys in the stream.
const KEYS: u64 = 1_000;

#[derive(Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    key: String,
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
    fn partition_key(&self) -> &str {
        &self.key
    }
}

fn rec(i: u64) -> Rec {
    Rec {
        id: format!("rec-{i}"),
        create_at: DateTime::from_timestamp(1_704_781_446 + i as i64, 0).unwrap_or_default(),
        key: format!("key-{}", i % KEYS),
        value: i,
        note: "lorem ipsum dolor sit amet".into(),
    }
}

/// Succeeds at once.
struct Noop;

impl Processor for Noop {
    type Record = Rec;
    async fn process(&self, _: &Rec, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        Ok(Outcome::Succeeded)
    }
}

/// Succeeds at once, a slice per call.
struct NoopSlices;

impl SliceProcessor for NoopSlices {
    type Record = Rec;
    async fn process_slice(&self, slice: &[SliceItem<'_, Rec>]) -> SliceResult {
        Ok(slice.iter().map(|_| Ok(Outcome::Succeeded)).collect())
    }
}

use unistream_test_support::bench_arg as arg;

/// The stream, the checkpoint table and bucket, the dead-letter queue, and
/// the clients: Kinesis as is, the others 5 ms slower per call.
struct Setup {
    env: Env,
    slow: Env,
    stream: String,
    shard: String,
    table: String,
    bucket: String,
    /// The dead-letter queue's URL.
    queue: String,
}

/// What one consumer run measured.
struct Measured {
    records: u64,
    secs: f64,
    calls: StoreCalls,
    /// The item's size at the end (`DynamoDbS3CheckpointStore::item_bytes`).
    final_item_bytes: usize,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }
    fn per_record(&self, n: u64) -> f64 {
        n as f64 / self.records as f64
    }
}

impl Setup {
    async fn new(records: u64) -> Setup {
        let env = Env::from_env().await;
        let slow = env.with_latency(LATENCY);
        let stream = env.create_stream(1).await;
        let shard = env.shards(&stream).await[0].0.clone();
        let codec = JsonCodec::default();
        let t = Instant::now();
        // One PutRecords of 500 at a time (moto is not safe under
        // concurrent writes to one shard).
        env.put_raw(
            &stream,
            (0..records).map(|i| {
                let r = rec(i);
                let data = codec.to_vec(&r).unwrap_or_else(|e| panic!("{e}"));
                (r.key, data)
            }),
        )
        .await;
        eprintln!(
            "production bench: {records} records written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let table = env.create_table("id").await;
        let bucket = env.create_bucket().await;
        let queue = env.create_queue(false).await;
        Setup {
            env,
            slow,
            stream,
            shard,
            table,
            bucket,
            queue,
        }
    }

    /// A fresh idempotency store over the checkpoint table, 5 ms slower
    /// per call (its own counters).
    fn keys(&self) -> DynamoDbIdempotencyStore {
        DynamoDbIdempotencyStore::new(self.slow.dynamodb(), &self.table)
    }

    /// Keys under a namespace of their own, apart from the checkpoints.
    fn keys_config(&self) -> IdempotencyConfig {
        IdempotencyConfig::default().namespace(unique_name("keys"))
    }

    async fn delete(&self) {
        self.env.delete_stream(&self.stream).await;
        self.env.delete_table(&self.table).await;
        self.env.delete_bucket(&self.bucket).await;
        self.env.delete_queue(&self.queue).await;
    }

    /// A plain SDK loop reading `n` records from the start of the stream,
    /// 500 per `GetRecords`, a call at most every 200 ms; records/s.
    async fn baseline(&self, n: u64) -> f64 {
        let k = self.env.kinesis();
        let t = Instant::now();
        let mut it = k
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .shard_iterator;
        let mut read = 0u64;
        let mut last: Option<Instant> = None;
        while read < n {
            // At most 5 calls per second per shard; no sleep once 200 ms have
            // passed (a zero-length sleep still waits for the timer's next tick).
            let wait = last.map_or(Duration::ZERO, |last| {
                Duration::from_millis(200).saturating_sub(last.elapsed())
            });
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            last = Some(Instant::now());
            let out = k
                .get_records()
                .set_shard_iterator(it.clone())
                .limit(LIMIT as i32)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            read += out.records().len() as u64;
            it = out.next_shard_iterator;
        }
        read as f64 / t.elapsed().as_secs_f64()
    }

    /// A fresh consumer (its own checkpoint item) reading the stream from
    /// its start, batch by batch, until `n` records succeeded.
    async fn consume<H>(
        &self,
        handler: H,
        limit: usize,
        concurrency: usize,
        n: u64,
    ) -> unistream::Result<Measured>
    where
        H: Handler<Record = Rec>,
    {
        let consumer_id = unique_name("bench");
        let config = ConsumerConfig::new(&consumer_id)
            .limit(limit)
            .concurrency(concurrency);
        let store = DynamoDbS3CheckpointStore::builder(self.slow.dynamodb(), self.slow.s3())
            .table(&self.table)
            .key(&consumer_id)
            .bucket(&self.bucket)
            .build()?;
        let dlq = SqsDeadLetterQueue::new(self.slow.sqs(), &self.queue);
        let source = KinesisSource::new(
            self.env.kinesis(),
            &self.stream,
            &self.shard,
            StartingPosition::TrimHorizon,
        );
        let mut consumer = Consumer::new(config, source, handler, store, dlq)?;
        let t = Instant::now();
        let mut done = 0u64;
        while done < n {
            let r = consumer.process_batch().await?;
            assert_eq!(
                (r.failures, r.dead_lettered),
                (0, 0),
                "no record fails in this bench"
            );
            assert!(!r.caught_up, "the stream ran out after {done} records");
            done += r.succeeded as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        Ok(Measured {
            records: done,
            secs,
            calls: consumer.store().calls(),
            final_item_bytes: consumer.store().item_bytes(),
        })
    }
}

fn header() {
    println!(
        "{:<52} {:>7} {:>10} {:>8} {:>10} {:>8} {:>10}",
        "case", "records", "records/s", "vs base", "calls/rec", "WU/rec", "item B"
    );
}

/// A consumer's row; `base`: the baseline's records/s, if comparable.
fn report(name: &str, m: &Measured, base: Option<f64>) {
    let rate = m.rate();
    let calls = m.per_record(m.calls.total());
    let units = m.per_record(m.calls.write_units);
    let item = m.calls.max_item_bytes;
    let (ratio, ratio_json) = match base {
        Some(b) => (format!("{:.2}", rate / b), format!("{:.3}", rate / b)),
        None => ("-".to_owned(), "null".to_owned()),
    };
    println!(
        "{name:<52} {:>7} {rate:>10.0} {ratio:>8} {calls:>10.3} {units:>8.3} {item:>10}",
        m.records
    );
    println!(
        "BENCH {{\"bench\":\"production\",\"case\":{name:?},\"records\":{},\"records_per_s\":{rate:.0},\"ratio\":{ratio_json},\"store_calls_per_record\":{calls:.4},\"write_units_per_record\":{units:.4},\"max_item_bytes\":{item},\"final_item_bytes\":{},\"calls\":{}}}",
        m.records,
        m.final_item_bytes,
        calls_json(&m.calls)
    );
}

/// The store's calls by kind, as a JSON object.
fn calls_json(c: &StoreCalls) -> String {
    format!(
        "{{\"get_item\":{},\"put_item\":{},\"update_item\":{},\"put_object\":{},\"get_object\":{},\"delete_object\":{},\"write_units\":{}}}",
        c.get_item,
        c.put_item,
        c.update_item,
        c.put_object,
        c.get_object,
        c.delete_object,
        c.write_units
    )
}

fn report_baseline(name: &str, n: u64, rate: f64) {
    println!(
        "{name:<52} {n:>7} {rate:>10.0} {:>8.2} {:>10} {:>8} {:>10}",
        1.0, "-", "-", "-"
    );
    println!(
        "BENCH {{\"bench\":\"production\",\"case\":{name:?},\"records\":{n},\"records_per_s\":{rate:.0},\"ratio\":1.0}}"
    );
}

fn report_error(name: &str, e: &unistream::Error) {
    println!("{name:<52} error: {e}");
    println!(
        "BENCH {{\"bench\":\"production\",\"case\":{name:?},\"error\":{:?}}}",
        e.to_string()
    );
}

fn main() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!(
            "production bench: no AWS_ENDPOINT_URL, nothing measured (start an emulator; see the file's docs)"
        );
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    // Only the idempotent cases (and the cases they are compared with).
    let idempotent_only = args.iter().any(|a| a == "--idempotent-only");
    let (records, sequential, item_limits): (u64, u64, &[usize]) = if smoke {
        (1_000, 500, &[100])
    } else if quick {
        (5_000, 1_000, &[100, 1_000, 10_000])
    } else {
        (20_000, 2_000, &[100, 1_000, 10_000])
    };
    let records = arg("--records", records);
    let sequential = arg("--sequential-records", sequential);
    let stream_records = records
        .max(sequential)
        .max(item_limits.iter().copied().max().unwrap_or(0) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let setup = Setup::new(stream_records).await;
        println!(
            "production path on {}: limit {LIMIT}, {KEYS} partition keys, {} ms added to every DynamoDB/S3/SQS call",
            setup.env.emulator,
            LATENCY.as_millis()
        );
        header();

        let base_seq = setup.baseline(sequential).await;
        report_baseline(
            &format!("plain SDK GetRecords loop, {LIMIT}/call, 5 calls/s"),
            sequential,
            base_seq,
        );
        let base = if records == sequential {
            base_seq
        } else {
            let base = setup.baseline(records).await;
            report_baseline(
                &format!("plain SDK GetRecords loop, {LIMIT}/call, 5 calls/s"),
                records,
                base,
            );
            base
        };

        let row = |what: &str, n: u64, measured: unistream::Result<Measured>| {
            let name = format!("unistream, limit {LIMIT}, {what}");
            let b = if n == sequential { base_seq } else { base };
            match measured {
                Ok(m) => report(&name, &m, Some(b)),
                Err(e) => report_error(&name, &e),
            }
        };
        let n = sequential;
        if !idempotent_only {
        row("concurrency 1", n, setup.consume(Noop, LIMIT, 1, n).await);
        let n = records;
        row("concurrency 16", n, setup.consume(Noop, LIMIT, 16, n).await);
        row("concurrency 64", n, setup.consume(Noop, LIMIT, 64, n).await);
        row(
            "slices of 100 (SliceProcessor)",
            n,
            setup.consume(Slices(NoopSlices), LIMIT, 1, n).await,
        );

        println!();
        println!("checkpoint item size: one batch, concurrency 64, no failures");
        header();
        for &limit in item_limits {
            let name = format!("unistream, limit {limit}, one batch");
            match setup.consume(Noop, limit, 64, limit as u64).await {
                Ok(m) => report(&name, &m, None),
                Err(e) => report_error(&name, &e),
            }
        }
        }
        println!();
        println!(
            "idempotent processing: Idempotent over DynamoDB (5 ms per call), vs the same case without it"
        );
        // Moto takes ~100 claims/s: at most 3,000 records here, the case
        // without idempotency at the same count.
        let m = records.min(3_000);
        let plain = setup.consume(Noop, LIMIT, 64, m).await;
        let keys = setup.keys();
        let idem = setup
            .consume(Idempotent::new(Noop, keys.clone()).with_config(setup.keys_config()), LIMIT, 64, m)
            .await;
        idempotent_row("concurrency 64", &plain, &idem, Cost::of_dynamodb(&keys));
        let plain = setup.consume(Slices(NoopSlices), LIMIT, 1, m).await;
        let keys = setup.keys();
        let idem = setup
            .consume(
                Slices(Idempotent::new(NoopSlices, keys.clone()).with_config(setup.keys_config())),
                LIMIT,
                1,
                m,
            )
            .await;
        idempotent_row("slices of 100", &plain, &idem, Cost::of_dynamodb(&keys));
        let n = records;
        let plain64 = setup.consume(Noop, LIMIT, 64, n).await;
        let plain_slices = setup.consume(Slices(NoopSlices), LIMIT, 1, n).await;
        println!();
        println!(
            "idempotent processing, latency model: keys in memory behind {} ms per call (injected latency: DynamoDB's shape without moto's request ceiling)",
            LATENCY.as_millis()
        );
        let keys = Delayed::default();
        let idem64 = setup
            .consume(Idempotent::new(Noop, keys.clone()), LIMIT, 64, n)
            .await;
        idempotent_row("concurrency 64, 5 ms store", &plain64, &idem64, keys.cost());
        let keys = Delayed::default();
        let idem_slices = setup
            .consume(Slices(Idempotent::new(NoopSlices, keys.clone())), LIMIT, 1, n)
            .await;
        idempotent_row("slices of 100, 5 ms store", &plain_slices, &idem_slices, keys.cost());
        setup.delete().await;
    });
}

/// What an idempotency store's calls cost, in total.
struct Cost {
    writes: u64,
    calls: u64,
    /// Write units (DynamoDB's, as billed; the latency model: one per write).
    units: u64,
}

impl Cost {
    fn of_dynamodb(keys: &DynamoDbIdempotencyStore) -> Cost {
        let c = keys.calls();
        Cost {
            writes: c.put_item + c.batch_items + c.delete_item,
            calls: c.total(),
            units: c.write_units,
        }
    }
}

/// A device that injects latency in front of the memory store, as
/// `LatencyHttpClient` does in front of moto: every call waits
/// [`LATENCY`] first, and calls overlap (DynamoDB's shape: latency-bound,
/// no request ceiling); completions of a slice go 25 per call, as
/// `DynamoDbIdempotencyStore` batches them.
#[derive(Clone, Default)]
struct Delayed {
    keys: MemoryIdempotencyStore,
    calls: Arc<AtomicU64>,
}

impl Delayed {
    async fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(LATENCY).await;
    }
    fn cost(&self) -> Cost {
        let writes = self.keys.writes();
        Cost {
            writes,
            calls: self.calls.load(Ordering::Relaxed),
            units: writes,
        }
    }
}

impl IdempotencyStore for Delayed {
    async fn claim(&self, claim: &Claim) -> unistream::Result<Claimed> {
        self.call().await;
        self.keys.claim(claim).await
    }
    async fn complete(&self, completion: &Completion) -> unistream::Result<()> {
        self.call().await;
        self.keys.complete(completion).await
    }
    async fn complete_many(&self, completions: &[Completion]) -> unistream::Result<()> {
        // As the DynamoDB store: 25 per call, the calls at once.
        let calls = completions.chunks(25).map(|chunk| async move {
            self.call().await;
            self.keys.complete_many(chunk).await
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }
    async fn release(&self, key: &str, owner: &Owner) -> unistream::Result<()> {
        self.call().await;
        self.keys.release(key, owner).await
    }
    async fn get(&self, key: &str) -> unistream::Result<Option<IdempotencyItem>> {
        self.call().await;
        self.keys.get(key).await
    }
    async fn forget(&self, key: &str) -> unistream::Result<()> {
        self.call().await;
        self.keys.forget(key).await
    }
}

/// A case with idempotency next to the same without: records/s of both,
/// the ratio, and the idempotency store's cost per record.
fn idempotent_row(
    case: &str,
    plain: &unistream::Result<Measured>,
    idem: &unistream::Result<Measured>,
    cost: Cost,
) {
    let name = format!("unistream, limit {LIMIT}, {case}, idempotent");
    let (p, i) = match (plain, idem) {
        (Ok(p), Ok(i)) => (p, i),
        (Err(e), _) | (_, Err(e)) => return report_error(&name, e),
    };
    let n = i.records as f64;
    let writes = cost.writes as f64 / n;
    let calls = cost.calls as f64 / n;
    let units = cost.units as f64 / n;
    let ratio = i.rate() / p.rate();
    println!(
        "{name:<52} {:>7} {:>10.0} vs {:.0} without: {ratio:.2}x; idempotency writes/rec {writes:.3}, calls/rec {calls:.3}, WU/rec {units:.3}",
        i.records,
        i.rate(),
        p.rate()
    );
    println!(
        "BENCH {{\"bench\":\"production\",\"case\":{name:?},\"records\":{},\"records_per_s\":{:.0},\"without_records_per_s\":{:.0},\"ratio\":{ratio:.3},\"idempotency_writes_per_record\":{writes:.4},\"idempotency_calls_per_record\":{calls:.4},\"idempotency_write_units_per_record\":{units:.4}}}",
        i.records,
        i.rate(),
        p.rate()
    );
}
