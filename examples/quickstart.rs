//! The whole embedded pipeline in one program, verbose like the seed: a
//! producer puts records through its write-ahead log to a local stream file
//! while half of its sends fail (and are retried with backoff), then a
//! consumer processes the stream while half of its attempts fail (retried,
//! and sent to the dead-letter queue when they keep failing).
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Everything lands in `quickstart-demo/` (or `--dir`): `wal/`,
//! `stream.jsonl`, `checkpoint/`, `target.jsonl` and `dlq.jsonl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use rand::{Rng, SeedableRng};
use unistream::Error;
use unistream::buffer::BufferLimits;
use unistream::buffer::{FileBuffer, FileBufferConfig};
use unistream::consumer::{Consumer, ConsumerConfig};
use unistream::local::Durability;
use unistream::local::{
    AppendFile, FileCheckpointStore, FileDeadLetterQueue, FileSink, FileSource,
};
use unistream::producer::{Producer, ProducerConfig};
use unistream::retry::RetryPolicy;
use unistream_examples::{
    AnnouncedDlq, DemoProcessor, MyRecord, RandomFailSink, exit_code, init_logging, put_verbose,
    run_verbose,
};

#[derive(Parser, Debug)]
#[command(about = "Producer and consumer over local files, with simulated failures")]
struct Args {
    /// Working directory (emptied first).
    #[arg(long, default_value = "quickstart-demo")]
    dir: PathBuf,
    /// Records to produce.
    #[arg(long, default_value_t = 15)]
    count: u64,
    /// Probability that a send, and that a processing attempt, fails.
    #[arg(long, default_value_t = 0.5)]
    fail_rate: f64,
    /// Seed of the simulated failures and record values.
    #[arg(long, default_value_t = 9)]
    seed: u64,
}

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|m| Duration::from_millis(*m)).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    init_logging(true);
    exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> unistream::Result<()> {
    let dir = &args.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }

    println!(
        "=== producer: {} records, batches of 3, {:.0}% of sends fail ===",
        args.count,
        args.fail_rate * 100.0
    );
    let wal = FileBuffer::open(
        dir.join("wal"),
        FileBufferConfig::new(BufferLimits::records(3), Durability::Process),
    )?;
    let sink = RandomFailSink::new(
        FileSink::open(dir.join("stream.jsonl"), Durability::Process)?,
        args.fail_rate,
        args.seed,
    );
    let config = ProducerConfig::default()
        .retry(RetryPolicy::waits(ms(&[100, 200, 400])).with_max_attempts(u32::MAX))
        .linger(None);
    let producer = Producer::new(config, wal, sink);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    for id in 1..=args.count {
        let record = MyRecord {
            id: id.to_string(),
            create_at: Utc::now(),
            value: rng.random_range(1..=100),
        };
        put_verbose(&producer, &record, true, || {}).await?;
        // A record every 50 ms, so that backoffs expire between puts.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("📤 flush: sending what is still buffered ...");
    producer.flush().await?;
    let sends = producer.sink().calls.load(Ordering::Relaxed);
    let failed_sends = producer.sink().failures.load(Ordering::Relaxed);
    drop(producer);

    println!();
    println!(
        "=== consumer: batches of 3, {:.0}% of attempts fail, 3 attempts per record ===",
        args.fail_rate * 100.0
    );
    let config = ConsumerConfig::new("quickstart")
        .limit(3)
        .retry(RetryPolicy::waits(ms(&[100, 200])).with_max_attempts(3))
        .dlq_retry(RetryPolicy::waits(ms(&[100])).with_max_attempts(3))
        .stop_at_end(true);
    let processor = DemoProcessor {
        target: AppendFile::open(dir.join("target.jsonl"), Durability::Process)?,
        attempt_log: None,
        poison: Default::default(),
        fail_rate: args.fail_rate,
        seed: args.seed,
        verbose: true,
        failures: Default::default(),
        work: std::time::Duration::ZERO,
    };
    let dlq = AnnouncedDlq {
        inner: FileDeadLetterQueue::open(dir.join("dlq.jsonl"), Durability::Process)?,
        verbose: true,
    };
    let store =
        FileCheckpointStore::open(dir.join("checkpoint"), "quickstart", Durability::Process)?;
    let mut consumer = Consumer::new(
        config,
        FileSource::new(dir.join("stream.jsonl")),
        processor,
        store,
        dlq,
    )?;
    let totals = run_verbose(&mut consumer, true, Duration::from_millis(100)).await?;

    println!();
    println!("=== summary ===");
    println!(
        "produced:  {} records in {sends} sends ({failed_sends} failed and were retried)",
        args.count
    );
    println!(
        "delivered: {} records processed ({} failed attempts were retried)",
        totals.succeeded, totals.failures
    );
    println!(
        "in DLQ:    {} records (see {})",
        totals.dead_lettered,
        dir.join("dlq.jsonl").display()
    );
    Ok(())
}
