//! The local consumer pipeline — a JSON-lines stream, per-record status in
//! the file checkpoint, a no-op processor — against a plain loop that reads
//! and decodes the same file, in one run.
//!
//! ```text
//! cargo bench -p unistream-core --bench consumer -- [--records N]
//! ```
//!
//! Rows: `limit` 100 and 1000, with no failures and with 10 % of records
//! failing their first attempt (retried at once); records/s, the ratio to
//! the plain loop, and checkpoint writes per record. Then the time to reopen
//! a consumer mid-batch at `limit` 10,000 and its resident memory. Each row
//! is also printed as a `BENCH {json}` line for `cargo xtask bench`.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::local::{FileCheckpointStore, FileSource};
use unistream_core::memory::MemoryDeadLetterQueue;
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::{BoxError, Durability};

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

/// Fails the first attempt of one record in `every` (0: never).
struct Noop {
    every: u64,
    hang_at: Option<String>,
}

impl Processor for Noop {
    type Record = Rec;
    async fn process(&mut self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
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

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = arg("--records", if smoke { 3_000 } else { 200_000 });
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{:<44} {:>9} {:>12} {:>8} {:>14}",
        "case", "records", "records/s", "vs base", "writes/record"
    );

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
    let base = n as f64 / t.elapsed().as_secs_f64();
    report("baseline: read + decode each line", n, base, 1.0, 0.0);

    for limit in [100usize, 1000] {
        for every in [0u64, 10] {
            let dir = tmp.path().join(format!("cp-{limit}-{every}"));
            let store = FileCheckpointStore::open(&dir, "bench", Durability::Process)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut c = Consumer::new(
                config(limit),
                FileSource::new(&stream),
                Noop {
                    every,
                    hang_at: None,
                },
                store,
                MemoryDeadLetterQueue::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let t = Instant::now();
            let s = rt.block_on(c.run()).unwrap_or_else(|e| panic!("{e}"));
            let rate = n as f64 / t.elapsed().as_secs_f64();
            assert_eq!(s.succeeded, n);
            let writes = c.store().writes() as f64 / n as f64;
            let percent = 100u64.checked_div(every).unwrap_or(0);
            let name = format!("consumer limit {limit}, {percent}% fail once");
            report(&name, n, rate, rate / base, writes);
        }
    }

    // Recovery: a consumer stopped mid-batch at limit 10,000, reopened.
    let limit = 10_000usize.min(n as usize);
    let dir = tmp.path().join("cp-recovery");
    let hang = (limit / 2).to_string();
    let store = FileCheckpointStore::open(&dir, "bench", Durability::Process)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Consumer::new(
        config(limit),
        FileSource::new(&stream),
        Noop {
            every: 0,
            hang_at: Some(hang),
        },
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), c.process_batch()).await });
    let rss = rss_kib();
    drop(c);
    let t = Instant::now();
    let store = FileCheckpointStore::open(&dir, "bench", Durability::Process)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Consumer::new(
        config(limit),
        FileSource::new(&stream),
        Noop {
            every: 0,
            hang_at: None,
        },
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = rt
        .block_on(c.process_batch())
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.succeeded, limit - limit / 2);
    println!(
        "reopen mid-batch at limit {limit} and finish the batch: {secs:.3} s; RSS at limit {limit}: {rss} KiB"
    );
    println!(
        "BENCH {{\"bench\":\"consumer\",\"case\":\"recovery limit {limit}\",\"seconds\":{secs:.4},\"rss_kib\":{rss}}}"
    );
}

fn report(name: &str, n: u64, rate: f64, ratio: f64, writes: f64) {
    println!("{name:<44} {n:>9} {rate:>12.0} {ratio:>8.2} {writes:>14.3}");
    println!(
        "BENCH {{\"bench\":\"consumer\",\"case\":\"{name}\",\"records\":{n},\"records_per_s\":{rate:.0},\"ratio\":{ratio:.3},\"writes_per_record\":{writes:.3}}}"
    );
}
