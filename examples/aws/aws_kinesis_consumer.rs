//! The seed's `aws_kinesis_consumer.py`: reads one shard of a Kinesis stream
//! (`limit` 3, 1 s between empty pulls), half of the processing attempts fail
//! at random and are retried with backoff; a record that keeps failing goes
//! to the dead-letter queue (a local file by default). The checkpoint (a
//! sequence number and the status of every record of the batch) is in local
//! files, so a restart resumes exactly where it stopped.
//!
//! ```text
//! cargo run --release -p unistream-aws-examples --example aws_kinesis_consumer -- --endpoint http://127.0.0.1:4566 \
//!     --stream demo --until-end --verbose
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use unistream::consumer::{Consumer, ConsumerConfig, cancel_on_signals};
use unistream::kinesis::{KinesisSource, StartingPosition};
use unistream::local::Durability;
use unistream::local::{AppendFile, FileCheckpointStore, FileDeadLetterQueue};
use unistream::retry::RetryPolicy;
use unistream_aws_examples::{first_shard, kinesis_client, with_efo};
use unistream_examples::{AnnouncedDlq, DemoProcessor, exit_code, init_logging, run_verbose};

/// `--start`: `trim-horizon`, `latest`, or `at-timestamp:<RFC 3339 time>`.
fn parse_start(s: &str) -> Result<StartingPosition, String> {
    match s {
        "trim-horizon" => Ok(StartingPosition::TrimHorizon),
        "latest" => Ok(StartingPosition::Latest),
        _ => {
            let t = s.strip_prefix("at-timestamp:").ok_or_else(|| {
                format!("{s:?}: expected trim-horizon, latest or at-timestamp:<RFC 3339 time>")
            })?;
            unistream::chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| StartingPosition::AtTimestamp(t.with_timezone(&unistream::chrono::Utc)))
                .map_err(|e| format!("{t:?}: {e}"))
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    about = "Consume one shard of a Kinesis stream reliably: retries, checkpoint, dead-letter queue"
)]
struct Args {
    /// An emulator's endpoint (default: AWS, from the usual configuration).
    #[arg(long)]
    endpoint: Option<String>,
    /// Read by enhanced fan-out (SubscribeToShard) as the stream consumer of
    /// this name, registered if missing (default: polling with GetRecords).
    #[arg(long, value_name = "NAME")]
    efo: Option<String>,
    /// The stream.
    #[arg(long)]
    stream: String,
    /// The shard (default: the stream's first shard).
    #[arg(long)]
    shard: Option<String>,
    /// Where a consumer without a checkpoint starts: `trim-horizon`,
    /// `latest`, or `at-timestamp:<RFC 3339 time>` (records written at or
    /// after it).
    #[arg(long, value_parser = parse_start, default_value = "trim-horizon")]
    start: StartingPosition,
    /// Records per batch (the seed's 3).
    #[arg(long, default_value_t = 3)]
    limit: usize,
    /// Attempts per record before the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Probability that a processing attempt fails (the seed's 50 %).
    #[arg(long, default_value_t = 0.5)]
    fail_rate: f64,
    /// Waits between attempts, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    backoff_ms: Vec<u64>,
    /// Milliseconds to wait after a pull that found nothing (the seed's 1 s).
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
    /// Exit once the shard has no more records (else keep polling).
    #[arg(long)]
    until_end: bool,
    /// Seed of the failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint, target and DLQ files.
    #[arg(long, default_value = "aws_kinesis_consumer_demo")]
    dir: PathBuf,
    /// Print the seed's demo output.
    #[arg(long)]
    verbose: bool,
    /// Records in flight at once (records of one partition key never
    /// overlap and keep their order); 1 processes strictly in stream order.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Each attempt first awaits this long, like a remote call.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Serve metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9898).
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
    let shard = match args.shard.clone() {
        Some(s) => s,
        None => first_shard(&client, &args.stream).await?,
    };
    let consumer_id = format!("{}-{shard}", args.stream);
    let start = args.start;
    let config = ConsumerConfig::new(&consumer_id)
        .limit(args.limit)
        .concurrency(args.concurrency)
        .retry(
            RetryPolicy::waits(args.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)))
                .with_max_attempts(args.max_attempts),
        )
        .delay(Duration::from_millis(args.delay_ms))
        .stop_at_end(args.until_end);
    let dir = &args.dir;
    let processor = DemoProcessor {
        target: AppendFile::open(
            dir.join(format!("{consumer_id}.target.jsonl")),
            Durability::Process,
        )?,
        attempt_log: None,
        poison: Default::default(),
        fail_rate: args.fail_rate,
        seed: args.seed,
        verbose: args.verbose,
        failures: Default::default(),
        work: std::time::Duration::from_millis(args.work_ms),
    };
    let dlq = AnnouncedDlq {
        inner: FileDeadLetterQueue::open(
            dir.join(format!("{consumer_id}.dlq.jsonl")),
            Durability::Process,
        )?,
        verbose: args.verbose,
    };
    let store =
        FileCheckpointStore::open(dir.join("checkpoint"), &consumer_id, Durability::Process)?;
    let source = KinesisSource::new(client.clone(), &args.stream, &shard, start);
    let source = with_efo(source, &client, &args.stream, args.efo.as_deref()).await?;
    let mut consumer = Consumer::new(config, source, processor, store, dlq)?;
    cancel_on_signals(consumer.shutdown_token());
    if args.verbose {
        run_verbose(
            &mut consumer,
            args.until_end,
            Duration::from_millis(args.delay_ms),
        )
        .await?;
    } else {
        let s = consumer.run().await?;
        eprintln!(
            "done: {} records fetched, {} succeeded, {} dead-lettered, {} failed attempts",
            s.fetched, s.succeeded, s.dead_lettered, s.failures
        );
    }
    Ok(())
}
