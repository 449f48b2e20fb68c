//! The seed's producer demo on local files: puts records through the
//! write-ahead log in `DIR/wal/` and sends them in batches to the stream file
//! `DIR/stream.jsonl` (the file `simple_consumer` reads), retrying failed
//! sends with exponential backoff.
//!
//! ```text
//! cargo run --release --example simple_producer -- --dir demo --count 15 \
//!     --fail-rate 0.5 --backoff-ms 100,200,400 --verbose
//! ```
//!
//! It prints `ACK <id>` once `put` has accepted a record. Kill it at any
//! moment (`kill -9` included) and start it again on the same directory:
//! every acknowledged record reaches the stream (`--count 0` only drains).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use rand::{Rng, SeedableRng};
use unistream::Error;
use unistream::buffer::{Buffer, BufferLimits};
use unistream::buffer::{FileBuffer, FileBufferConfig};
use unistream::local::Durability;
use unistream::local::FileSink;
use unistream::producer::{Producer, ProducerConfig};
use unistream::retry::RetryPolicy;
use unistream_examples::{MyRecord, RandomFailSink, exit_code, init_logging, put_verbose};

#[derive(Parser, Debug)]
#[command(about = "Produce records reliably to DIR/stream.jsonl through a write-ahead log")]
struct Args {
    /// Working directory: wal/ and stream.jsonl.
    #[arg(long)]
    dir: PathBuf,
    /// How many records to put (0: only deliver what an earlier run left).
    #[arg(long)]
    count: u64,
    /// Id of the first record.
    #[arg(long, default_value_t = 1)]
    start_id: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 3)]
    max_records: usize,
    /// Probability that a send fails.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Seed of the failures and of the record values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Waits after failed sends, in milliseconds (the last one repeats).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,15000,30000,60000"
    )]
    backoff_ms: Vec<u64>,
    /// Power-loss durability: `put` returns once the record is on disk.
    #[arg(long)]
    fsync: bool,
    /// Print the seed's demo output.
    #[arg(long)]
    verbose: bool,
    /// Seal a non-full batch after this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    linger_ms: u64,
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
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(Error::Config("--fail-rate must be between 0 and 1".into()));
    }
    let durability = if args.fsync {
        Durability::PowerLoss
    } else {
        Durability::Process
    };
    let wal = FileBuffer::open(
        args.dir.join("wal"),
        FileBufferConfig::new(BufferLimits::records(args.max_records), durability),
    )?;
    let sink = RandomFailSink::new(
        FileSink::open(args.dir.join("stream.jsonl"), durability)?,
        args.fail_rate,
        args.seed,
    );
    let config = ProducerConfig::default()
        .retry(
            RetryPolicy::waits(args.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)))
                .with_max_attempts(u32::MAX),
        )
        .linger(Duration::from_millis(args.linger_ms));
    let producer = Producer::new(config, wal, sink);

    let leftover = producer.buffer().stats().records;
    if leftover > 0 {
        eprintln!(
            "recovered {leftover} unsent records from {}",
            args.dir.join("wal").display()
        );
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed ^ args.start_id);
    let stdout = std::io::stdout();
    let started = Instant::now();
    for id in args.start_id..args.start_id + args.count {
        let record = MyRecord {
            id: id.to_string(),
            create_at: Utc::now(),
            value: rng.random_range(1..=100),
        };
        put_verbose(&producer, &record, args.verbose, || {
            let mut out = stdout.lock();
            let _ = writeln!(out, "ACK {id}");
            let _ = out.flush();
        })
        .await?;
    }
    producer.flush().await?;
    let calls = producer
        .sink()
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "done: {} records put, {} left over from an earlier run, {} sends; {:.3} s",
        args.count,
        leftover,
        calls,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
