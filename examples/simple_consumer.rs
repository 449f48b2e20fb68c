//! The seed's consumer demo on local files: reads `DIR/stream.jsonl`, keeps
//! its checkpoint in `DIR/checkpoint/`, appends processed records to
//! `DIR/target.jsonl` and exhausted ones to `DIR/dlq.jsonl`.
//!
//! ```text
//! cargo run --release --example simple_consumer -- --dir demo --sample 18 \
//!     --fail-rate 0.5 --poison 17 --backoff-ms 100,200 --until-end --verbose
//! ```
//!
//! Kill it at any moment (`kill -9` included) and start it again with the
//! same arguments: it resumes where it stopped, retries the record it was
//! processing, and never exceeds `--max-attempts` attempts per record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use unistream::Error;
use unistream::checkpoint::CheckpointStore;
use unistream::consumer::{Consumer, ConsumerConfig, OnExhausted, cancel_on_signals};
use unistream::consumer::{Handler, Slices};
use unistream::dlq::DeadLetterQueue;
use unistream::idempotency::Idempotent;
use unistream::local::Durability;
use unistream::local::FileIdempotencyStore;
use unistream::local::{AppendFile, FileCheckpointStore, FileDeadLetterQueue, FileSource};
use unistream::retry::RetryPolicy;
use unistream::source::Source;
use unistream_examples::{
    AnnouncedDlq, Controls, DemoProcessor, DemoSlices, MyRecord, exit_code, init_logging,
    run_verbose, write_sample_stream,
};

#[derive(Parser, Debug)]
#[command(about = "Consume DIR/stream.jsonl reliably: retries, checkpoint, dead-letter queue")]
struct Args {
    /// Working directory: stream.jsonl, checkpoint/, target.jsonl, dlq.jsonl.
    #[arg(long)]
    dir: PathBuf,
    /// Consumer id (names the checkpoint).
    #[arg(long, default_value = "simple_consumer")]
    consumer_id: String,
    /// Records per batch.
    #[arg(long, default_value_t = 3)]
    limit: usize,
    /// Attempts per record before it goes to the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Probability that a processing attempt fails.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Record ids that fail every attempt (comma-separated).
    #[arg(long, value_delimiter = ',')]
    poison: Vec<String>,
    /// Seed of the random failures (and of --sample values).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Waits between attempts, in milliseconds (the last one repeats).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    backoff_ms: Vec<u64>,
    /// Strict ordering: exit non-zero after the first exhausted record.
    #[arg(long)]
    halt: bool,
    /// Exit 0 once the stream has no more records (else keep polling).
    #[arg(long)]
    until_end: bool,
    /// Print the seed's demo output.
    #[arg(long)]
    verbose: bool,
    /// Milliseconds to wait before polling again when there is nothing new.
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
    /// Create DIR/stream.jsonl with this many sample records if it is missing.
    #[arg(long)]
    sample: Option<u64>,
    /// Delete DIR before starting.
    #[arg(long)]
    reset: bool,
    /// Power-loss durability (fsync) for checkpoint, target and DLQ.
    #[arg(long)]
    fsync: bool,
    /// Append "<id> <attempt>" to DIR/attempts.log before each attempt.
    #[arg(long)]
    attempt_log: bool,
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
    /// Lambda's failure controls; `--idempotent` keeps its keys in
    /// DIR/idempotency/.
    #[command(flatten)]
    controls: Controls,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    exit_code(run(args).await)
}

async fn run(args: Args) -> unistream::Result<()> {
    unistream_examples::init_metrics(args.metrics_addr)?;
    let dir = &args.dir;
    if args.reset && dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let stream = dir.join("stream.jsonl");
    if let Some(n) = args.sample
        && !stream.exists()
    {
        write_sample_stream(&stream, 1, n, args.seed).map_err(|e| Error::io(&stream, e))?;
    }
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(Error::Config("--fail-rate must be between 0 and 1".into()));
    }
    let durability = if args.fsync {
        Durability::PowerLoss
    } else {
        Durability::Process
    };

    let config = ConsumerConfig::new(&args.consumer_id)
        .limit(args.limit)
        .concurrency(args.concurrency)
        .retry(
            RetryPolicy::waits(args.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)))
                .with_max_attempts(args.max_attempts),
        )
        .dlq_retry(
            RetryPolicy::waits([Duration::from_millis(100), Duration::from_millis(500)])
                .with_max_attempts(5),
        )
        .delay(Duration::from_millis(args.delay_ms))
        .on_exhausted(if args.halt {
            OnExhausted::Halt
        } else {
            OnExhausted::Continue
        })
        .stop_at_end(args.until_end);
    let config = args.controls.apply(config)?;

    let processor = DemoProcessor {
        target: AppendFile::open(dir.join("target.jsonl"), durability)?,
        attempt_log: if args.attempt_log {
            Some(AppendFile::open(dir.join("attempts.log"), durability)?)
        } else {
            None
        },
        poison: args.poison.iter().cloned().collect(),
        fail_rate: args.fail_rate,
        seed: args.seed,
        verbose: args.verbose,
        failures: Default::default(),
        work: std::time::Duration::from_millis(args.work_ms),
    };
    let dlq = AnnouncedDlq {
        inner: FileDeadLetterQueue::open(dir.join("dlq.jsonl"), durability)?,
        verbose: args.verbose,
    };
    let store = FileCheckpointStore::open(dir.join("checkpoint"), &args.consumer_id, durability)?;
    let source = FileSource::new(&stream);
    let c = &args.controls;
    let keys = || FileIdempotencyStore::open(dir.join("idempotency"), durability);
    match (c.slice_size > 0, c.idempotent) {
        (false, false) => drive(&args, Consumer::new(config, source, processor, store, dlq)?).await,
        (false, true) => {
            let p = Idempotent::new(processor, keys()?);
            drive(&args, Consumer::new(config, source, p, store, dlq)?).await
        }
        (true, false) => {
            let p = Slices(DemoSlices(processor));
            drive(&args, Consumer::new(config, source, p, store, dlq)?).await
        }
        (true, true) => {
            let p = Slices(Idempotent::new(DemoSlices(processor), keys()?));
            drive(&args, Consumer::new(config, source, p, store, dlq)?).await
        }
    }
}

/// Runs the consumer until the end (or a signal), printing as asked.
async fn drive<S, H, K, D>(args: &Args, mut consumer: Consumer<S, H, K, D>) -> unistream::Result<()>
where
    S: Source,
    H: Handler<Record = MyRecord>,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    cancel_on_signals(consumer.shutdown_token());
    if !args.verbose {
        let started = Instant::now();
        let s = consumer.run().await?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "done: {} records fetched in {} pulls, {} succeeded, {} ignored, {} filtered, {} dead-lettered ({} aged out), {} failed attempts; {:.3} s ({:.0} records/s)",
            s.fetched,
            s.pulls,
            s.succeeded,
            s.ignored,
            s.filtered,
            s.dead_lettered,
            s.aged_out,
            s.failures,
            secs,
            s.fetched as f64 / secs.max(1e-9)
        );
        return Ok(());
    }

    // The seed's "method 2": one block per pull.
    run_verbose(
        &mut consumer,
        args.until_end,
        Duration::from_millis(args.delay_ms),
    )
    .await?;
    Ok(())
}
