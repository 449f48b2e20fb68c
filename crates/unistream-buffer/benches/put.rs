//! `put` throughput of the write-ahead log against a plain `write()` loop,
//! in one run on one machine, and memory with a large backlog.
//!
//! ```text
//! cargo bench -p unistream-buffer --bench put -- [--records N] [--fsync-records N] [--reps R] [--backlog N]
//! ```
//!
//! Records are ~100 bytes of JSON. Rows:
//! - `baseline write()/record`: the same bytes, one `write(2)` per record;
//! - `wal put (process)`: `FileBuffer::put`, process-crash durability;
//! - `wal put_many 500 (process)`;
//! - `producer put -> wal -> file sink (process)`: the whole local
//!   pipeline: JSON encoding, the WAL, batches of 500 written to a
//!   `FileSink`; the same with batches of 100 and 5000, and with `put_many`
//!   of 500;
//! - `baseline write()+fdatasync/500`, `wal put_many 500 (power loss)` and
//!   the pipeline with `put_many` in power-loss mode;
//! - `wal put, 64 tasks (power loss)`: group commit;
//! - `wal put, 1 task (power loss)`: one fdatasync per record, for scale.
//!
//! First, the resident memory of a log holding `--backlog` unsent records
//! (at a tenth, half and all of them), and the time to reopen it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;
use unistream_local::FileSink;

#[derive(Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    value: u32,
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

fn rec(i: u64) -> Rec {
    Rec {
        id: i.to_string(),
        create_at: DateTime::from_timestamp(1_704_781_446 + i as i64, 0).unwrap_or_default(),
        value: (i % 100) as u32,
        note: "lorem ipsum dolor".into(),
    }
}

fn encoded(n: u64) -> Vec<EncodedRecord> {
    let codec = JsonCodec::default();
    (0..n)
        .map(|i| {
            let r = rec(i);
            EncodedRecord::new(
                r.id.clone(),
                r.id.clone(),
                codec.to_vec(&r).unwrap_or_default(),
            )
        })
        .collect()
}

/// The producer of the local pipeline: JSON encoding, the WAL in `dir()`,
/// batches of `batch` records sent to a [`FileSink`] (the path returned).
fn pipeline(
    dir: &mut impl FnMut() -> PathBuf,
    durability: Durability,
    batch: usize,
) -> (Producer<FileBuffer, FileSink>, PathBuf) {
    let d = dir();
    let mut config = ProducerConfig::default();
    config.linger = None;
    let out = d.join("sink.jsonl");
    let wal =
        FileBuffer::open(d.join("wal"), opts(batch, durability)).unwrap_or_else(|e| panic!("{e}"));
    let sink = FileSink::open(&out, durability).unwrap_or_else(|e| panic!("{e}"));
    (Producer::new(config, wal, sink), out)
}

/// The sink file holds `n` lines: the bench measured work that was done.
fn check_sink(path: &Path, n: u64) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, n, "records in {}", path.display());
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

struct Row {
    name: String,
    records: u64,
    secs: f64,
    bytes: u64,
}

fn opts(max_records: usize, durability: Durability) -> FileBufferConfig {
    FileBufferConfig::new(
        BufferLimits::records(max_records).with_max_total_bytes(u64::MAX),
        durability,
    )
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    records: &[EncodedRecord],
    nf: u64,
    dir: &mut impl FnMut() -> std::path::PathBuf,
) -> Vec<Row> {
    let n = records.len() as u64;
    let bytes: u64 = records.iter().map(|r| r.data.len() as u64 + 1).sum();
    let mut rows = Vec::new();
    // Baseline: one write() per record.
    {
        let d = dir();
        std::fs::create_dir_all(&d).unwrap_or_default();
        let mut f = std::fs::File::create(d.join("raw")).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let mut line = Vec::with_capacity(256);
        for r in records {
            line.clear();
            line.extend_from_slice(&r.data);
            line.push(b'\n');
            f.write_all(&line).unwrap_or_else(|e| panic!("{e}"));
        }
        rows.push(Row {
            name: "baseline write()/record".into(),
            records: n,
            secs: t.elapsed().as_secs_f64(),
            bytes,
        });
    }
    rt.block_on(async {
        let wal = FileBuffer::open(dir(), opts(500, Durability::Process))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for r in records {
            wal.put(r).await.unwrap_or_else(|e| panic!("{e}"));
        }
        rows.push(Row {
            name: "wal put (process)".into(),
            records: n,
            secs: t.elapsed().as_secs_f64(),
            bytes,
        });

        let wal = FileBuffer::open(dir(), opts(500, Durability::Process))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for chunk in records.chunks(500) {
            wal.put_many(chunk).await.unwrap_or_else(|e| panic!("{e}"));
        }
        rows.push(Row {
            name: "wal put_many 500 (process)".into(),
            records: n,
            secs: t.elapsed().as_secs_f64(),
            bytes,
        });

        for (name, batch, many) in [
            (
                "producer put -> wal -> file sink, batches of 100 (process)",
                100,
                1,
            ),
            ("producer put -> wal -> file sink (process)", 500, 1),
            (
                "producer put -> wal -> file sink, batches of 5000 (process)",
                5000,
                1,
            ),
            (
                "producer put_many 500 -> wal -> file sink (process)",
                500,
                500,
            ),
        ] {
            let (producer, out) = pipeline(&mut *dir, Durability::Process, batch);
            let recs: Vec<Rec> = (0..n).map(rec).collect();
            let t = Instant::now();
            if many == 1 {
                for r in &recs {
                    producer.put(r).await.unwrap_or_else(|e| panic!("{e}"));
                }
            } else {
                for chunk in recs.chunks(many) {
                    producer
                        .put_many(chunk)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
            producer.flush().await.unwrap_or_else(|e| panic!("{e}"));
            let secs = t.elapsed().as_secs_f64();
            check_sink(&out, n);
            rows.push(Row {
                name: name.into(),
                records: n,
                secs,
                bytes,
            });
        }
    });

    // Power loss: baseline write + fdatasync per 500 records.
    let fbytes: u64 = records[..nf as usize]
        .iter()
        .map(|r| r.data.len() as u64 + 1)
        .sum();
    {
        let d = dir();
        std::fs::create_dir_all(&d).unwrap_or_default();
        let mut f = std::fs::File::create(d.join("raw")).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let mut buf = Vec::new();
        for chunk in records[..nf as usize].chunks(500) {
            buf.clear();
            for r in chunk {
                buf.extend_from_slice(&r.data);
                buf.push(b'\n');
            }
            f.write_all(&buf).unwrap_or_else(|e| panic!("{e}"));
            f.sync_data().unwrap_or_else(|e| panic!("{e}"));
        }
        rows.push(Row {
            name: "baseline write()+fdatasync/500".into(),
            records: nf,
            secs: t.elapsed().as_secs_f64(),
            bytes: fbytes,
        });
    }
    rt.block_on(async {
        let wal = FileBuffer::open(dir(), opts(500, Durability::PowerLoss))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for chunk in records[..nf as usize].chunks(500) {
            wal.put_many(chunk).await.unwrap_or_else(|e| panic!("{e}"));
        }
        rows.push(Row {
            name: "wal put_many 500 (power loss)".into(),
            records: nf,
            secs: t.elapsed().as_secs_f64(),
            bytes: fbytes,
        });

        let (producer, out) = pipeline(&mut *dir, Durability::PowerLoss, 500);
        let recs: Vec<Rec> = (0..nf).map(rec).collect();
        let t = Instant::now();
        for chunk in recs.chunks(500) {
            producer
                .put_many(chunk)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        producer.flush().await.unwrap_or_else(|e| panic!("{e}"));
        let secs = t.elapsed().as_secs_f64();
        check_sink(&out, nf);
        rows.push(Row {
            name: "producer put_many 500 -> wal -> file sink (power loss)".into(),
            records: nf,
            secs,
            bytes: fbytes,
        });

        let wal = FileBuffer::open(dir(), opts(500, Durability::PowerLoss))
            .unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(records[..nf as usize].to_vec());
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|k| {
                let wal = wal.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    for r in shared.iter().skip(k).step_by(64) {
                        wal.put(r).await.unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let secs = t.elapsed().as_secs_f64();
        rows.push(Row {
            name: format!(
                "wal put, 64 tasks (power loss; {} syncs)",
                wal.group_syncs()
            ),
            records: nf,
            secs,
            bytes: fbytes,
        });

        let one = (nf / 20).max(100);
        let wal = FileBuffer::open(dir(), opts(500, Durability::PowerLoss))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        for r in &records[..one as usize] {
            wal.put(r).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let obytes = records[..one as usize]
            .iter()
            .map(|r| r.data.len() as u64 + 1)
            .sum();
        rows.push(Row {
            name: "wal put, 1 task (power loss)".into(),
            records: one,
            secs: t.elapsed().as_secs_f64(),
            bytes: obytes,
        });
    });

    rows
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not:
    // then run a small smoke version, so the bench stays working but CI does
    // not spend minutes timing a debug build.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = arg("--records", if smoke { 2_000 } else { 1_000_000 });
    let nf = arg("--fsync-records", if smoke { 500 } else { 20_000 });
    let reps = arg("--reps", if smoke { 1 } else { 3 }).max(1);
    let backlog = arg("--backlog", if smoke { 2_000 } else { 1_000_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut case = 0;
    let mut dir = || {
        case += 1;
        tmp.path().join(format!("case{case}"))
    };

    // Memory with a backlog: nothing is sent, everything stays in the log.
    rt.block_on(async {
        let d = tmp.path().join("backlog");
        let wal =
            FileBuffer::open(&d, opts(500, Durability::Process)).unwrap_or_else(|e| panic!("{e}"));
        let before = rss_kib("VmRSS:");
        let mut marks = vec![backlog / 10, backlog / 2, backlog];
        marks.reverse();
        let mut next_mark = marks.pop();
        let codec = JsonCodec::default();
        for i in 0..backlog / 1000 {
            let chunk: Vec<EncodedRecord> = (i * 1000..(i + 1) * 1000)
                .map(|j| {
                    let r = rec(j);
                    EncodedRecord::new(
                        r.id.clone(),
                        r.id.clone(),
                        codec.to_vec(&r).unwrap_or_default(),
                    )
                })
                .collect();
            wal.put_many(&chunk).await.unwrap_or_else(|e| panic!("{e}"));
            let done = (i + 1) * 1000;
            if next_mark.is_some_and(|m| done >= m) {
                println!(
                    "BENCH {{\"bench\":\"producer\",\"case\":\"backlog {done}\",\"rss_kib\":{},\"peak_kib\":{}}}",
                    rss_kib("VmRSS:"),
                    rss_kib("VmHWM:")
                );
                println!(
                    "backlog {done:>9} records: RSS {:>7} KiB (+{} KiB over the empty log), peak {} KiB",
                    rss_kib("VmRSS:"),
                    rss_kib("VmRSS:").saturating_sub(before),
                    rss_kib("VmHWM:")
                );
                next_mark = marks.pop();
            }
        }
        std::mem::drop(wal);
        let t = Instant::now();
        let wal =
            FileBuffer::open(&d, opts(500, Durability::Process)).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "BENCH {{\"bench\":\"producer\",\"case\":\"reopen\",\"records\":{},\"seconds\":{:.4}}}",
            wal.stats().records,
            t.elapsed().as_secs_f64()
        );
        println!(
            "reopen with {} unsent records: {:.3} s, RSS {} KiB, peak {} KiB",
            wal.stats().records,
            t.elapsed().as_secs_f64(),
            rss_kib("VmRSS:"),
            rss_kib("VmHWM:")
        );
    });

    let records = encoded(n);
    let avg = records
        .iter()
        .map(|r| r.data.len() as f64 + 1.0)
        .sum::<f64>()
        / n as f64;
    let runs: Vec<Vec<Row>> = (0..reps)
        .map(|_| run_once(&rt, &records, nf, &mut dir))
        .collect();
    println!(
        "records of {avg:.0} bytes; {n} records ({nf} in power-loss rows); median of {reps} runs"
    );
    println!(
        "{:<48} {:>10} {:>14} {:>9} {:>8}",
        "case", "records", "records/s", "MB/s", "vs base"
    );
    let mut base = 0.0;
    for i in 0..runs[0].len() {
        let mut secs: Vec<f64> = runs.iter().map(|r| r[i].secs).collect();
        secs.sort_by(f64::total_cmp);
        let r = &runs[runs.len() / 2][i];
        let med = secs[secs.len() / 2];
        let rate = r.records as f64 / med;
        if r.name.starts_with("baseline") {
            base = rate;
        }
        println!(
            "{:<48} {:>10} {:>14.0} {:>9.1} {:>8.2}",
            r.name,
            r.records,
            rate,
            r.bytes as f64 / med / 1e6,
            rate / base
        );
        println!(
            "BENCH {{\"bench\":\"producer\",\"case\":{:?},\"records\":{},\"records_per_s\":{:.0},\"mb_per_s\":{:.2},\"ratio\":{:.3}}}",
            r.name,
            r.records,
            rate,
            r.bytes as f64 / med / 1e6,
            rate / base
        );
    }
}
