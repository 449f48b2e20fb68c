//! The local consumer pipeline — a JSON-lines stream, per-record status in
//! the file checkpoint, a no-op processor — against a plain loop that reads
//! and decodes the same file, in one run.
//!
//! ```text
//! cargo bench -p unistream-core --bench consumer -- [--records N] [--reps R]
//! ```
//!
//! Rows: `limit` 100, 1000 and 10,000, with no failures and with 10 % of
//! records failing their first attempt (retried at once); records/s (median
//! of `--reps` interleaved runs), the ratio to the plain loop, and checkpoint
//! writes per record. Then the peak resident memory of a fresh consumer
//! process at each limit, and the time to reopen a consumer mid-batch at
//! `limit` 10,000. Then concurrency: a processor that awaits 10 ms per
//! record (a tokio timer, like a remote call) over records of 1,000
//! partition keys at `limit` 1000 (concurrency 1: one batch of 300), with
//! concurrency 1, 16 and 100, against the bound `concurrency / 10 ms` (one
//! run each: the timers bound it, not the CPU). Each row is also printed as
//! a `BENCH {json}` line for `cargo xtask bench`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::BoxError;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::MemoryDeadLetterQueue;
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_local::Durability;
use unistream_local::{FileCheckpointStore, FileSource};

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

/// A record of one of [`KEYS`] partition keys.
#[derive(Serialize, Deserialize)]
struct Keyed {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    key: String,
    value: u64,
}

impl Record for Keyed {
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

/// Distinct partition keys of the concurrency rows.
const KEYS: u64 = 1_000;
/// What the concurrency rows' processor awaits per record.
const WORK: Duration = Duration::from_millis(10);

/// Awaits [`WORK`] per record, then succeeds.
struct Wait;

impl Processor for Wait {
    type Record = Keyed;
    async fn process(&self, _: &Keyed, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        tokio::time::sleep(WORK).await;
        Ok(Outcome::Succeeded)
    }
}

/// Fails the first attempt of one record in `every` (0: never).
struct Noop {
    every: u64,
    hang_at: Option<String>,
}

impl Processor for Noop {
    type Record = Rec;
    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if self.hang_at.as_deref() == Some(r.id.as_str()) {
            std::future::pending::<()>().await;
        }
        if self.every > 0 && a.number == 1 && r.value.is_multiple_of(self.every) {
            return Err("first attempt fails".into());
        }
        Ok(Outcome::Succeeded)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn config(limit: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("bench");
    c.limit = limit;
    c.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(3);
    c.stop_at_end = true;
    c
}

/// Runs the local consumer over `stream` with a fresh checkpoint in `dir`;
/// returns records/s and checkpoint writes per record.
fn consume(
    rt: &tokio::runtime::Runtime,
    stream: &Path,
    dir: &Path,
    limit: usize,
    every: u64,
    n: u64,
) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let mut c = local_consumer(stream, dir, limit, every, None);
    let t = Instant::now();
    let s = rt.block_on(c.run()).unwrap_or_else(|e| panic!("{e}"));
    let rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(s.succeeded, n);
    (rate, c.store().writes() as f64 / n as f64)
}

type LocalConsumer = Consumer<FileSource, Noop, FileCheckpointStore, MemoryDeadLetterQueue>;

/// One run of the local consumer at `concurrency`, no failures.
fn consume_with(
    rt: &tokio::runtime::Runtime,
    stream: &Path,
    dir: &Path,
    limit: usize,
    concurrency: usize,
    n: u64,
) {
    let _ = std::fs::remove_dir_all(dir);
    let store = FileCheckpointStore::open(dir, "bench", Durability::Process)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(limit);
    cfg.concurrency = concurrency;
    let noop = Noop {
        every: 0,
        hang_at: None,
    };
    let mut c = Consumer::new(
        cfg,
        FileSource::new(stream),
        noop,
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = rt.block_on(c.run()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.succeeded, n);
}

/// The local consumer over `stream`, its checkpoint in `dir`; the processor
/// fails the first attempt of one record in `every` and hangs on `hang_at`.
fn local_consumer(
    stream: &Path,
    dir: &Path,
    limit: usize,
    every: u64,
    hang_at: Option<String>,
) -> LocalConsumer {
    let store = FileCheckpointStore::open(dir, "bench", Durability::Process)
        .unwrap_or_else(|e| panic!("{e}"));
    Consumer::new(
        config(limit),
        FileSource::new(stream),
        Noop { every, hang_at },
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: one consumer run, then its peak resident memory.
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let stream = PathBuf::from(&args[i + 1]);
        let limit: usize = args[i + 2].parse().unwrap_or(1000);
        let n: u64 = args[i + 3].parse().unwrap_or(0);
        // Optional: the concurrency (1 unless given), for instruction
        // counts of the engine under `valgrind --tool=callgrind`.
        let concurrency: usize = args.get(i + 4).and_then(|c| c.parse().ok()).unwrap_or(1);
        let dir = stream.with_extension(format!("rss-{limit}-{concurrency}"));
        consume_with(&runtime(), &stream, &dir, limit, concurrency, n);
        println!("{}", rss_kib("VmHWM:"));
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let n = arg("--records", if smoke { 3_000 } else { 200_000 });
    let reps = arg("--reps", if smoke { 1 } else { 3 }).max(1) as usize;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let stream = tmp.path().join("stream.jsonl");
    {
        let codec = JsonCodec::default();
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&stream).unwrap_or_else(|e| panic!("{e}")),
        );
        for i in 0..n {
            let r = Rec {
                id: i.to_string(),
                create_at: DateTime::from_timestamp(1_704_781_446 + i as i64, 0)
                    .unwrap_or_default(),
                value: i,
                note: "lorem ipsum dolor sit".into(),
            };
            f.write_all(&codec.to_vec(&r).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
            f.write_all(b"\n").unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let rt = runtime();

    // Cases, each run `reps` times, interleaved so that a slow phase of a
    // shared machine hits all of them alike; medians are reported.
    let limits: &[usize] = if smoke {
        &[100, 1000]
    } else {
        &[100, 1000, 10_000]
    };
    let mut cases: Vec<(usize, u64)> = Vec::new();
    for &limit in limits {
        for every in [0u64, 10] {
            cases.push((limit, every));
        }
    }
    let mut base_runs = Vec::new();
    let mut case_runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        // Baseline: read and decode every line, nothing else.
        let t = Instant::now();
        let reader =
            std::io::BufReader::new(std::fs::File::open(&stream).unwrap_or_else(|e| panic!("{e}")));
        let mut count = 0u64;
        for line in reader.split(b'\n') {
            let line = line.unwrap_or_else(|e| panic!("{e}"));
            let _: Rec = serde_json::from_slice(&line).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
        assert_eq!(count, n);
        base_runs.push(n as f64 / t.elapsed().as_secs_f64());
        for (i, &(limit, every)) in cases.iter().enumerate() {
            let dir = tmp.path().join(format!("cp-{limit}-{every}"));
            case_runs[i].push(consume(&rt, &stream, &dir, limit, every, n));
        }
    }
    println!("{n} records of ~100 bytes; median of {reps} runs");
    println!(
        "{:<44} {:>9} {:>12} {:>8} {:>14}",
        "case", "records", "records/s", "vs base", "writes/record"
    );
    let base = median(base_runs);
    report("baseline: read + decode each line", n, base, 1.0, 0.0);
    for (&(limit, every), runs) in cases.iter().zip(case_runs) {
        let writes = runs[0].1;
        let rate = median(runs.into_iter().map(|r| r.0).collect());
        let percent = 100u64.checked_div(every).unwrap_or(0);
        let name = format!("consumer limit {limit}, {percent}% fail once");
        report(&name, n, rate, rate / base, writes);
    }

    // Memory: peak RSS of a fresh process running the consumer over the
    // whole stream, per limit.
    if let Ok(exe) = std::env::current_exe() {
        for &limit in limits {
            let out = std::process::Command::new(&exe)
                .arg("--rss-child")
                .arg(&stream)
                .arg(limit.to_string())
                .arg(n.to_string())
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let peak: u64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            println!("peak RSS of a consumer process at limit {limit}: {peak} KiB");
            println!(
                "BENCH {{\"bench\":\"consumer\",\"case\":\"peak rss limit {limit}\",\"peak_kib\":{peak}}}"
            );
        }
    }

    // Recovery: a consumer stopped mid-batch at limit 10,000, reopened.
    let limit = 10_000usize.min(n as usize);
    let dir = tmp.path().join("cp-recovery");
    let hang = (limit / 2).to_string();
    let mut c = local_consumer(&stream, &dir, limit, 0, Some(hang));
    let _ = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), c.process_batch()).await });
    drop(c);
    let t = Instant::now();
    let mut c = local_consumer(&stream, &dir, limit, 0, None);
    let r = rt
        .block_on(c.process_batch())
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.succeeded, limit - limit / 2);
    println!("reopen mid-batch at limit {limit} and finish the batch: {secs:.3} s");
    println!(
        "BENCH {{\"bench\":\"consumer\",\"case\":\"recovery limit {limit}\",\"seconds\":{secs:.4}}}"
    );

    concurrency_rows(&rt, tmp.path(), smoke);
}

/// Concurrency rows: the waiting processor over `n` records of 1,000 keys
/// per concurrency, against `concurrency / 10 ms`.
fn concurrency_rows(rt: &tokio::runtime::Runtime, dir: &Path, smoke: bool) {
    let cases: &[(usize, u64)] = if smoke {
        &[(1, 20), (16, 200), (100, 1_000)]
    } else {
        &[(1, 300), (16, 3_000), (100, 10_000)]
    };
    let n_max = cases.iter().map(|c| c.1).max().unwrap_or(0);
    let stream = dir.join("keyed.jsonl");
    {
        let codec = JsonCodec::default();
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&stream).unwrap_or_else(|e| panic!("{e}")),
        );
        for i in 0..n_max {
            let r = Keyed {
                id: i.to_string(),
                create_at: DateTime::from_timestamp(1_704_781_446 + i as i64, 0)
                    .unwrap_or_default(),
                key: format!("key-{}", i % KEYS),
                value: i,
            };
            f.write_all(&codec.to_vec(&r).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
            f.write_all(b"\n").unwrap_or_else(|e| panic!("{e}"));
        }
    }
    println!();
    println!(
        "processor awaiting {} ms per record, {KEYS} partition keys, file checkpoint",
        WORK.as_millis()
    );
    println!(
        "{:<44} {:>9} {:>12} {:>8} {:>8} {:>14}",
        "case", "records", "records/s", "bound", "vs bound", "writes/record"
    );
    for &(concurrency, n) in cases {
        let cp = dir.join(format!("cp-wait-{concurrency}"));
        let store = FileCheckpointStore::open(&cp, "bench", Durability::Process)
            .unwrap_or_else(|e| panic!("{e}"));
        // Only the first `n` records (the stream holds as many as the
        // largest case), in batches of 1000 or one batch of `n`.
        let limit = n.min(1000) as usize;
        let mut c = config(limit);
        c.concurrency = concurrency;
        let mut consumer = Consumer::new(
            c,
            FileSource::new(&stream),
            Wait,
            store,
            MemoryDeadLetterQueue::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let mut done = 0u64;
        while done < n {
            let r = rt
                .block_on(consumer.process_batch())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!r.caught_up, "the stream ran out after {done} records");
            done += r.succeeded as u64;
        }
        let rate = done as f64 / t.elapsed().as_secs_f64();
        let bound = concurrency as f64 / WORK.as_secs_f64();
        let ratio = rate / bound;
        let writes = consumer.store().writes() as f64 / done as f64;
        let name = format!("wait 10 ms, limit {limit}, concurrency {concurrency}");
        println!("{name:<44} {done:>9} {rate:>12.0} {bound:>8.0} {ratio:>8.2} {writes:>14.3}");
        println!(
            "BENCH {{\"bench\":\"consumer\",\"case\":\"{name}\",\"records\":{done},\"records_per_s\":{rate:.0},\"bound_per_s\":{bound:.0},\"ratio\":{ratio:.3},\"writes_per_record\":{writes:.3}}}"
        );
    }
}

fn report(name: &str, n: u64, rate: f64, ratio: f64, writes: f64) {
    println!("{name:<44} {n:>9} {rate:>12.0} {ratio:>8.2} {writes:>14.3}");
    println!(
        "BENCH {{\"bench\":\"consumer\",\"case\":\"{name}\",\"records\":{n},\"records_per_s\":{rate:.0},\"ratio\":{ratio:.3},\"writes_per_record\":{writes:.3}}}"
    );
}
