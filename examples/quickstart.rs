//! The whole embedded pipeline in one program, verbose like the seed: a
//! producer puts records through its write-ahead log to a local stream file
//! while half of its sends fail (and are retried with backoff), then a
//! consumer processes the stream while half of its attempts fail (retried,
//! and sent to the dead-letter queue when they keep failing).
//!
//! ```text
//! cargo run --release --example quickstart [-- --dir D --count N --fail-rate F --seed S]
//! ```
//!
//! Everything lands in `quickstart-demo/` (or `--dir`): `wal/`,
//! `stream.jsonl`, `checkpoint/`, `target.jsonl` and `dlq.jsonl`.
//!
//! Self-contained: copy this file into a new project whose dependencies
//! are `unistream` and `tokio` (features `macros`, `rt`, `time`) only —
//! `serde` and `chrono` come through `unistream`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use unistream::chrono::{DateTime, Utc};
use unistream::dlq::DeadLetterQueue;
use unistream::producer::SendStep;
use unistream::serde::{Deserialize, Serialize};
use unistream::sink::{Delivery, EncodedRecord, Refusal, Sink};
use unistream::{
    Attempt, BoxError, Consumer, ConsumerConfig, DeadLetter, Durability, FileBuffer,
    FileBufferConfig, FileCheckpointStore, FileDeadLetterQueue, FileSink, FileSource, JsonCodec,
    Outcome, Processor, Producer, ProducerConfig, Record, RetryPolicy,
};

/// The seed's record: an id, a creation time and a random value.
#[derive(Serialize, Deserialize)]
#[serde(crate = "unistream::serde")]
struct MyRecord {
    id: String,
    #[serde(with = "unistream::record::iso8601")]
    create_at: DateTime<Utc>,
    value: u64,
}

impl Record for MyRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

fn json(r: &MyRecord) -> String {
    String::from_utf8_lossy(&JsonCodec::default().to_vec(r).unwrap_or_default()).into_owned()
}

/// A deterministic "random" number in `[0, 1)` (splitmix64 of the inputs).
fn chance(seed: u64, key: &str, n: u64) -> f64 {
    let mut z = key.bytes().fold(seed ^ n.rotate_left(29), |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// An 80-column banner, like the seed's.
fn banner(title: &str) -> String {
    let head = format!("+----- {title} ");
    let used = head.chars().count() + 1;
    format!("{head}{}+", "-".repeat(80usize.saturating_sub(used)))
}

/// The seed's `MyProducer.send`: a file sink whose sends fail at random.
struct FlakySink {
    inner: FileSink,
    fail_rate: f64,
    seed: u64,
    calls: AtomicU64,
    failures: AtomicU64,
}

/// The seed's send error.
#[derive(Debug)]
struct SendError;

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendError('randomly failed due to send error')")
    }
}

impl std::error::Error for SendError {}

impl Sink for FlakySink {
    fn validate(&self, record: &EncodedRecord) -> Result<(), Refusal> {
        self.inner.validate(record)
    }

    async fn send(&self, batch: &[EncodedRecord]) -> Result<Delivery, BoxError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if chance(self.seed, "send", n) < self.fail_rate {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(SendError.into());
        }
        self.inner.send(batch).await
    }
}

/// The seed's `process_record`: fails at random, else appends the record
/// to the target file.
struct Demo {
    target: unistream::local::AppendFile,
    fail_rate: f64,
    seed: u64,
}

impl Processor for Demo {
    type Record = MyRecord;

    async fn process(&self, r: &MyRecord, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        let line = json(r);
        if chance(self.seed, &r.id, u64::from(attempt.number)) < self.fail_rate {
            println!("❌ {line}");
            return Err(format!("randomly failed to process record {}", r.id).into());
        }
        self.target.append(format!("{line}\n").as_bytes())?;
        println!("✅ {line}");
        Ok(Outcome::Succeeded)
    }
}

/// The dead-letter file, announcing each letter like the seed.
struct AnnouncedDlq(FileDeadLetterQueue);

impl DeadLetterQueue for AnnouncedDlq {
    async fn send(&self, letter: &DeadLetter) -> unistream::Result<()> {
        self.0.send(letter).await?;
        println!("✅ DLQ: {}", String::from_utf8_lossy(&letter.data));
        Ok(())
    }
}

/// Prints what a `put` did about sending, like the seed.
fn print_step(step: &SendStep) {
    let ids = |ids: &[String]| {
        let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
        format!("[{}]", quoted.join(", "))
    };
    match step {
        SendStep::NotReady => println!("📤 🚫 we should not emit"),
        SendStep::OnHold { .. } => println!("📤 🚫 on hold due to exponential backoff"),
        SendStep::Sent { ids: sent } => {
            println!("📤 📤 send records: {}", ids(sent));
            println!("📤 🟢 succeeded");
        }
        SendStep::Failed {
            ids: sent, error, ..
        } => {
            println!("📤 📤 send records: {}", ids(sent));
            println!("📤 🔴 failed, error: {error}");
        }
        other => println!("📤 {other:?}"),
    }
}

struct Args {
    dir: PathBuf,
    count: u64,
    fail_rate: f64,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from("quickstart-demo"),
        count: 15,
        fail_rate: 0.5,
        seed: 9,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(&value),
            "--count" => {
                a.count = value
                    .parse()
                    .map_err(|_| format!("{flag}: bad value {value:?}"))?
            }
            "--fail-rate" => {
                a.fail_rate = value
                    .parse()
                    .map_err(|_| format!("{flag}: bad value {value:?}"))?
            }
            "--seed" => {
                a.seed = value
                    .parse()
                    .map_err(|_| format!("{flag}: bad value {value:?}"))?
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--dir, --count, --fail-rate, --seed)"
                ));
            }
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let result = match args() {
        Ok(a) => run(a).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> unistream::Result<()> {
    let dir = &args.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| unistream::Error::io(dir, e))?;
    }
    let ms = |list: &[u64]| {
        list.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };

    println!(
        "=== producer: {} records, batches of 3, {:.0}% of sends fail ===",
        args.count,
        args.fail_rate * 100.0
    );
    let wal = FileBuffer::open(
        dir.join("wal"),
        FileBufferConfig::new(
            unistream::buffer::BufferLimits::records(3),
            Durability::Process,
        ),
    )?;
    let sink = FlakySink {
        inner: FileSink::open(dir.join("stream.jsonl"), Durability::Process)?,
        fail_rate: args.fail_rate,
        seed: args.seed,
        calls: AtomicU64::new(0),
        failures: AtomicU64::new(0),
    };
    let config = ProducerConfig::default()
        .retry(RetryPolicy::waits(ms(&[100, 200, 400])).with_max_attempts(u32::MAX))
        .linger(None);
    let producer = Producer::new(config, wal, sink);
    for id in 1..=args.count {
        let record = MyRecord {
            id: id.to_string(),
            create_at: Utc::now(),
            value: 1 + (chance(args.seed, "value", id) * 100.0) as u64,
        };
        let started = Instant::now();
        println!("{}", banner("⏱ 📤 Start 'put record'"));
        println!("📤");
        println!("📤 record = {}", json(&record));
        let step = producer.put(&record).await?; // durable once it returns
        print_step(&step);
        println!("📤");
        let took = started.elapsed().as_secs_f64();
        println!(
            "{}",
            banner(&format!(
                "⏰ ✅ 📤 End 'put record', elapsed = {took:.2} sec"
            ))
        );
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
        .dlq_retry(RetryPolicy::waits(ms(&[100])).with_max_attempts(3));
    let processor = Demo {
        target: unistream::local::AppendFile::open(dir.join("target.jsonl"), Durability::Process)?,
        fail_rate: args.fail_rate,
        seed: args.seed,
    };
    let dlq = AnnouncedDlq(FileDeadLetterQueue::open(
        dir.join("dlq.jsonl"),
        Durability::Process,
    )?);
    let store =
        FileCheckpointStore::open(dir.join("checkpoint"), "quickstart", Durability::Process)?;
    let source = FileSource::new(dir.join("stream.jsonl"));
    let mut consumer = Consumer::new(config, source, processor, store, dlq)?;
    // The seed's "method 2": one block per pull, until nothing new is left.
    let (mut succeeded, mut failures, mut dead_lettered) = (0, 0, 0);
    for pull in 1.. {
        println!("--- {pull} th pull ---");
        println!("{}", banner("⏱ ⏳ Start 'process batch'"));
        println!("⏳");
        let started = Instant::now();
        let report = consumer.process_batch().await;
        println!("⏳");
        let took = started.elapsed().as_secs_f64();
        println!(
            "{}",
            banner(&format!(
                "⏰ ✅ ⏳ End 'process batch', elapsed = {took:.2} sec"
            ))
        );
        let report = report?;
        succeeded += report.succeeded;
        failures += report.failures;
        dead_lettered += report.dead_lettered;
        if report.caught_up || report.closed || report.interrupted {
            break;
        }
    }

    println!();
    println!("=== summary ===");
    println!(
        "produced:  {} records in {sends} sends ({failed_sends} failed and were retried)",
        args.count
    );
    println!("delivered: {succeeded} records processed ({failures} failed attempts were retried)");
    println!(
        "in DLQ:    {dead_lettered} records (see {})",
        dir.join("dlq.jsonl").display()
    );
    Ok(())
}
