//! The seed's `aws_kinesis_producer.py`: records are buffered in a
//! write-ahead log (batches of 3), sent to a Kinesis stream with `PutRecords`
//! while half of the sends fail at random, retried with backoff (1, 2, 4 s),
//! and recovered after a crash.
//!
//! ```text
//! cargo xtask it ...   # or any emulator; see docs/kinesis.md
//! cargo run --release -p unistream-aws-examples --example aws_kinesis_producer -- --endpoint http://127.0.0.1:4566 \
//!     --stream demo --create --count 15 --verbose
//! ```
//!
//! `--aggregate` packs the records of a batch into KPL aggregates per
//! predicted shard (`--max-aggregate-bytes`, 51,200 by default);
//! `--rate-records` / `--rate-bytes` pace sends per shard (the service's
//! quota, 1,000 entries and 1 MiB per second, for the one not given).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use rand::{Rng, SeedableRng};
use unistream::Error;
use unistream::buffer::BufferLimits;
use unistream::buffer::{FileBuffer, FileBufferConfig};
use unistream::kinesis::{Aggregation, KinesisSink, RateLimit};
use unistream::local::Durability;
use unistream::producer::{Producer, ProducerConfig};
use unistream::retry::RetryPolicy;
use unistream_aws_examples::kinesis_client;
use unistream_examples::{MyRecord, RandomFailSink, exit_code, init_logging, put_verbose};

#[derive(Parser, Debug)]
#[command(about = "Produce records to a Kinesis stream through a write-ahead log")]
struct Args {
    /// An emulator's endpoint (default: AWS, from the usual configuration).
    #[arg(long)]
    endpoint: Option<String>,
    /// The stream.
    #[arg(long)]
    stream: String,
    /// Create the stream if it does not exist.
    #[arg(long)]
    create: bool,
    /// Shards of a stream created by `--create`.
    #[arg(long, default_value_t = 1)]
    shards: i32,
    /// How many records to put.
    #[arg(long, default_value_t = 15)]
    count: u64,
    /// Id of the first record.
    #[arg(long, default_value_t = 1)]
    start_id: u64,
    /// Records per batch (the seed's buffer of 3).
    #[arg(long, default_value_t = 3)]
    max_records: usize,
    /// Probability that a send fails (the seed's 50 %).
    #[arg(long, default_value_t = 0.5)]
    fail_rate: f64,
    /// Waits after failed sends, in milliseconds (the seed's 1, 2, 4 s).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000")]
    backoff_ms: Vec<u64>,
    /// Milliseconds between puts (the seed sleeps 1 s); 0 puts without a pause.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Seed of the failures and values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the write-ahead log lives.
    #[arg(long, default_value = "aws_kinesis_producer_demo")]
    dir: PathBuf,
    /// Print the seed's demo output.
    #[arg(long)]
    verbose: bool,
    /// Pack records into KPL aggregates per predicted shard (for small
    /// records, many per shard; readers must de-aggregate).
    #[arg(long)]
    aggregate: bool,
    /// With `--aggregate`: the most bytes of one aggregate (data and
    /// partition key; the KPL's default, at most 1 MiB).
    #[arg(long, default_value_t = unistream::kinesis::DEFAULT_MAX_AGGREGATE_BYTES)]
    max_aggregate_bytes: usize,
    /// Pace sends at most this many entries per second per shard (turns the
    /// per-shard rate limit on; the other limit defaults to the quota).
    #[arg(long)]
    rate_records: Option<u32>,
    /// Pace sends at most this many bytes per second per shard (turns the
    /// per-shard rate limit on; the other limit defaults to the quota).
    #[arg(long)]
    rate_bytes: Option<u32>,
    /// Serve metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9899).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    exit_code(run(args).await)
}

async fn run(args: Args) -> unistream::Result<()> {
    unistream_examples::init_metrics(args.metrics_addr)?;
    let client = kinesis_client(args.endpoint.as_deref()).await;
    if args.create {
        create_stream(&client, &args.stream, args.shards).await?;
    }
    let wal = FileBuffer::open(
        args.dir.join("wal"),
        FileBufferConfig::new(BufferLimits::records(args.max_records), Durability::Process),
    )?;
    let mut kinesis = KinesisSink::new(client, &args.stream);
    if args.aggregate {
        kinesis = kinesis
            .with_aggregation(Aggregation::default().with_max_bytes(args.max_aggregate_bytes));
    }
    if args.rate_records.is_some() || args.rate_bytes.is_some() {
        let mut limit = RateLimit::default();
        if let Some(records) = args.rate_records {
            limit = limit.with_records_per_second(records);
        }
        if let Some(bytes) = args.rate_bytes {
            limit = limit.with_bytes_per_second(bytes);
        }
        kinesis = kinesis.with_rate_limit(limit);
    }
    let sink = RandomFailSink::new(kinesis, args.fail_rate, args.seed);
    let config = ProducerConfig::default()
        .retry(
            RetryPolicy::waits(args.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)))
                .with_max_attempts(u32::MAX),
        )
        .linger(None);
    let producer = Producer::new(config, wal, sink);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed ^ args.start_id);
    for id in args.start_id..args.start_id + args.count {
        let record = MyRecord {
            id: id.to_string(),
            create_at: Utc::now(),
            value: rng.random_range(1..=100),
        };
        put_verbose(&producer, &record, args.verbose, || {}).await?;
        // A zero-length sleep still waits for the timer's next tick (1 ms):
        // `--interval-ms 0` means no wait at all.
        if args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    producer.flush().await?;
    eprintln!("done: {} records put to {}", args.count, args.stream);
    Ok(())
}

async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> unistream::Result<()> {
    let exists = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .is_ok();
    if !exists {
        client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send()
            .await
            .map_err(|e| {
                Error::backend(
                    "CreateStream",
                    aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
                )
            })?;
    }
    for _ in 0..100 {
        let active = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()
            .and_then(|d| d.stream_description_summary)
            .is_some_and(|s| s.stream_status == aws_sdk_kinesis::types::StreamStatus::Active);
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Config(format!(
        "stream {stream} did not become active"
    )))
}
