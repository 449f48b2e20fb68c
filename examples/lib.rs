//! Shared pieces of the example programs: the seed's record type, its demo
//! processor, sink and dead-letter queue with their seed-style output, and
//! the demo output blocks; the failure-control flags ([`Controls`]).

mod controls;
pub use controls::{Controls, DemoSlices};

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use unistream::BoxError;
use unistream::buffer::Buffer;
use unistream::checkpoint::CheckpointStore;
use unistream::consumer::{Attempt, Consumer, Handler, Outcome, Processor};
use unistream::dlq::{DeadLetter, DeadLetterQueue};
use unistream::local::{AppendFile, FileDeadLetterQueue};
use unistream::producer::{Producer, SendStep};
use unistream::record::{Codec, JsonCodec, Record, iso8601};
use unistream::sink::{Delivery, EncodedRecord, Refusal, Sink};
use unistream::source::Source;

/// The seed's `MyRecord`: an id, a creation time and a random value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MyRecord {
    /// Unique id.
    pub id: String,
    /// Creation time, in the seed's shape.
    #[serde(with = "iso8601")]
    pub create_at: DateTime<Utc>,
    /// A value from 1 to 100.
    pub value: i64,
}

impl Record for MyRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

impl MyRecord {
    /// The record as one line of JSON in the seed's shape.
    pub fn to_json(&self) -> String {
        let bytes = JsonCodec::default().to_vec(self).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Writes `n` sample records with ids `start..start+n` as a JSON-lines file
/// at `path` (atomically: a temporary file renamed into place).
pub fn write_sample_stream(path: &Path, start: u64, n: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let t0 = Utc::now();
    let mut out = Vec::with_capacity(n as usize * 80);
    for i in 0..n {
        let r = MyRecord {
            id: (start + i).to_string(),
            create_at: t0 + chrono::Duration::milliseconds(i as i64),
            value: rng.random_range(1..=100),
        };
        out.extend_from_slice(r.to_json().as_bytes());
        out.push(b'\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

/// A seed-style 80-column banner line: `+----- <title> -----...+`.
pub fn banner(title: &str) -> String {
    let head = format!("+----- {title} ");
    let used = head.chars().count() + 1;
    format!("{head}{}+", "-".repeat(80usize.saturating_sub(used)))
}

/// Deterministic "random" number in `[0, 1)` from a seed and some keys, so
/// that a run restarted with the same seed makes the same choices.
pub fn chance(seed: u64, key: &str, n: u32) -> f64 {
    // FNV-1a over the key, mixed with seed and n by splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.rotate_left(17) ^ u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Logs the engine's events to stderr, filtered by `RUST_LOG` (a level such
/// as `debug`, or directives such as `unistream_core=debug,warn`), else
/// warnings — errors only when the demo output is on, since it already
/// shows the failures. Colours only when stderr is a terminal.
pub fn init_logging(verbose: bool) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    // RUST_LOG as usual (`debug`, `unistream_core=debug,warn`, ...); without
    // it, errors only with `--verbose` (the demo output), else warnings.
    let default = if verbose {
        LevelFilter::ERROR
    } else {
        LevelFilter::WARN
    };
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in a file or a pipe (`2> err.txt`).
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Serves the library's metrics for Prometheus at `http://ADDR/metrics`
/// (`--metrics-addr`): installs `metrics-exporter-prometheus` as the
/// process's recorder. Must run inside the tokio runtime, before the
/// producer or consumer is built.
///
/// # Errors
///
/// [`unistream::Error::Config`] if the listener cannot be started (address
/// in use) or a recorder is already installed.
pub fn init_metrics(addr: Option<std::net::SocketAddr>) -> unistream::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| unistream::Error::Config(format!("metrics endpoint on {addr}: {e}")))
}

/// The exit code of an example's run: 0 on success, 2 when a consumer
/// halted on an exhausted record (strict ordering), else 1 with the error
/// and its causes on stderr.
pub fn exit_code(result: unistream::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(unistream::Error::Halted {
            record_id,
            attempts,
        }) => {
            eprintln!(
                "halted: record {record_id} failed {attempts} attempts and is in the dead-letter queue"
            );
            std::process::ExitCode::from(2)
        }
        Err(e) => report(&e),
    }
}

/// Prints an error and its causes to stderr; returns exit code 1.
pub fn report(e: &unistream::Error) -> std::process::ExitCode {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    std::process::ExitCode::FAILURE
}

/// The error of a failed processing attempt.
#[derive(Debug, thiserror::Error)]
#[error("random error at record_id = {0}")]
pub struct RandomError(pub String);

/// The seed's consumer `process_record`: fails at random (or always, for a
/// poisoned id), else appends the record to a target file. Prints `❌`/`✅`
/// lines when verbose.
#[derive(Debug)]
pub struct DemoProcessor {
    /// Where processed records go, one JSON line each.
    pub target: AppendFile,
    /// If set, `"<id> <attempt>"` is appended here before each attempt.
    pub attempt_log: Option<AppendFile>,
    /// Ids that fail every attempt.
    pub poison: HashSet<String>,
    /// Probability that an attempt fails.
    pub fail_rate: f64,
    /// Seed of the failures.
    pub seed: u64,
    /// Print the seed's lines.
    pub verbose: bool,
    /// Failed attempts so far.
    pub failures: AtomicU64,
    /// Each attempt first awaits this long, like a remote call (`--work-ms`).
    pub work: Duration,
}

impl DemoProcessor {
    /// Whether attempt `number` of `record` fails (poisoned, or by chance).
    pub fn fails(&self, record: &MyRecord, number: u32) -> bool {
        self.poison.contains(&record.id) || chance(self.seed, &record.id, number) < self.fail_rate
    }
}

impl Processor for DemoProcessor {
    type Record = MyRecord;

    async fn process(&self, record: &MyRecord, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        if let Some(log) = &self.attempt_log {
            log.append(format!("{} {}\n", record.id, attempt.number).as_bytes())?;
        }
        let s = record.to_json();
        if self.fails(record, attempt.number) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if self.verbose {
                println!("❌ {s}");
            }
            return Err(RandomError(record.id.clone()).into());
        }
        self.target.append(format!("{s}\n").as_bytes())?;
        if self.verbose {
            println!("✅ {s}");
        }
        Ok(Outcome::Succeeded)
    }
}

/// A dead-letter queue (the file one by default), announcing each letter
/// like the seed's `process_failed_record` (`✅ DLQ: ...`) when verbose.
#[derive(Debug)]
pub struct AnnouncedDlq<D = FileDeadLetterQueue> {
    /// The queue.
    pub inner: D,
    /// Print the seed's line.
    pub verbose: bool,
}

impl<D: DeadLetterQueue> DeadLetterQueue for AnnouncedDlq<D> {
    async fn send(&self, letter: &DeadLetter) -> unistream::Result<()> {
        self.inner.send(letter).await?;
        if self.verbose {
            println!("✅ DLQ: {}", String::from_utf8_lossy(&letter.data));
        }
        Ok(())
    }
}

/// The seed's producer send error.
#[derive(Debug, thiserror::Error)]
#[error("SendError('randomly failed due to send error')")]
pub struct SendError;

/// A sink that fails each send with probability `fail_rate` (seeded), else
/// passes the batch on: the seed's `MyProducer.send`.
#[derive(Debug)]
pub struct RandomFailSink<S> {
    /// The real sink.
    pub inner: S,
    /// Probability that a send fails.
    pub fail_rate: f64,
    /// Seed of the failures.
    pub seed: u64,
    /// Sends so far (the failure choice depends on it).
    pub calls: AtomicU64,
    /// Sends that failed.
    pub failures: AtomicU64,
}

impl<S> RandomFailSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, fail_rate: f64, seed: u64) -> Self {
        RandomFailSink {
            inner,
            fail_rate,
            seed,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl<S: Sink> Sink for RandomFailSink<S> {
    fn validate(&self, record: &EncodedRecord) -> Result<(), Refusal> {
        self.inner.validate(record)
    }

    async fn send(&self, batch: &[EncodedRecord]) -> Result<Delivery, BoxError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if chance(self.seed, "send", n as u32) < self.fail_rate {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(SendError.into());
        }
        self.inner.send(batch).await
    }
}

/// What [`run_verbose`] did, in all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Records processed.
    pub succeeded: usize,
    /// Failed attempts.
    pub failures: u32,
    /// Records sent to the DLQ.
    pub dead_lettered: usize,
}

/// The seed's consumer "method 2": one block per pull, until the stream is
/// closed, shutdown is requested, or (with `until_end`) nothing new is left.
pub async fn run_verbose<S, P, K, D, C>(
    consumer: &mut Consumer<S, P, K, D, C>,
    until_end: bool,
    delay: Duration,
) -> unistream::Result<Totals>
where
    S: Source,
    P: Handler,
    K: CheckpointStore,
    D: DeadLetterQueue,
    C: Codec<P::Record>,
{
    let token = consumer.shutdown_token();
    let mut pull = 0u64;
    let mut totals = Totals::default();
    while !token.is_cancelled() {
        pull += 1;
        println!("--- {pull} th pull ---");
        println!("{}", banner("⏱ ⏳ Start 'process batch'"));
        println!("⏳");
        let started = Instant::now();
        let result = consumer.process_batch().await;
        println!("⏳");
        println!(
            "{}",
            banner(&format!(
                "⏰ ✅ ⏳ End 'process batch', elapsed = {:.2} sec",
                started.elapsed().as_secs_f64()
            ))
        );
        let report = result?;
        totals.succeeded += report.succeeded;
        totals.failures += report.failures;
        totals.dead_lettered += report.dead_lettered;
        if report.closed || report.interrupted || (report.caught_up && until_end) {
            break;
        }
        // A zero-length sleep still waits for the timer's next tick (1 ms).
        let delay = report.idle_delay.unwrap_or(delay);
        if report.caught_up && !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => {}
            }
        }
    }
    Ok(totals)
}

/// Puts a record, printing the seed's block around it when `verbose`
/// (`Start 'put record'`, the record, what happened about sending, `End`).
/// `on_accepted` runs as soon as `put` has returned.
pub async fn put_verbose<B, S>(
    producer: &Producer<B, S>,
    record: &MyRecord,
    verbose: bool,
    on_accepted: impl FnOnce(),
) -> unistream::Result<SendStep>
where
    B: Buffer,
    S: Sink,
{
    let started = Instant::now();
    if verbose {
        println!("{}", banner("⏱ 📤 Start 'put record'"));
        println!("📤");
        println!("📤 record = {}", record.to_json());
    }
    let step = producer.put(record).await?;
    on_accepted();
    if verbose {
        print_send_step(&step);
        println!("📤");
        println!(
            "{}",
            banner(&format!(
                "⏰ ✅ 📤 End 'put record', elapsed = {:.2} sec",
                started.elapsed().as_secs_f64()
            ))
        );
    }
    Ok(step)
}

/// Prints the seed's lines for what a `put` did about sending.
pub fn print_send_step(step: &SendStep) {
    let ids = |ids: &[String]| {
        let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
        format!("[{}]", quoted.join(", "))
    };
    match step {
        SendStep::NotReady => println!("📤 🚫 we should not emit"),
        SendStep::OnHold { .. } => println!("📤 🚫 on hold due to exponential backoff"),
        SendStep::Busy => println!("📤 🚫 another task is sending"),
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
        SendStep::Partial {
            ids: sent,
            rejected,
            error,
            ..
        } => {
            println!("📤 📤 send records: {}", ids(sent));
            println!(
                "📤 🔴 partly failed ({} not accepted: {}), error: {error}",
                rejected.len(),
                ids(rejected)
            );
        }
        _ => println!("📤 {step:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_are_80_columns_like_the_seed() {
        assert_eq!(banner("⏱ ⏳ Start 'process batch'").chars().count(), 80);
        assert_eq!(
            banner("⏱ ⏳ Start 'process batch'"),
            "+----- ⏱ ⏳ Start 'process batch' ----------------------------------------------+"
        );
    }

    /// A `kill -9` can cut the write of the target's last line at any byte;
    /// the record is then processed again (its success was never recorded)
    /// and must land on a line of its own.
    #[tokio::test]
    async fn a_target_line_cut_at_every_offset_is_written_again_on_its_own_line() {
        use unistream::consumer::Attempt;
        use unistream::local::Durability;
        use unistream::source::Pointer;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.jsonl");
        let t = DateTime::from_timestamp(1_704_781_446, 0).unwrap();
        let records: Vec<MyRecord> = (1..=3)
            .map(|i| MyRecord {
                id: i.to_string(),
                create_at: t,
                value: i,
            })
            .collect();
        let accepted: String = records[..2].iter().map(|r| r.to_json() + "\n").collect();
        let last = records[2].to_json() + "\n";
        let pointer = Pointer::from("2@0");
        for cut in 0..last.len() {
            std::fs::write(&path, format!("{accepted}{}", &last[..cut])).unwrap();
            let processor = DemoProcessor {
                target: AppendFile::open(&path, Durability::Process).unwrap(),
                attempt_log: None,
                poison: HashSet::new(),
                fail_rate: 0.0,
                seed: 0,
                verbose: false,
                failures: AtomicU64::new(0),
                work: Duration::ZERO,
            };
            let outcome = processor
                .process(&records[2], &Attempt::new(2, 3, &pointer, 1))
                .await
                .unwrap();
            assert_eq!(outcome, Outcome::Succeeded);
            drop(processor);
            let text = std::fs::read_to_string(&path).unwrap();
            let got: Vec<MyRecord> = text
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("cut at {cut}: {l:?}: {e}"))
                })
                .collect();
            assert_eq!(got, records, "cut at {cut}");
        }
    }

    #[test]
    fn chance_is_deterministic_and_spread() {
        assert_eq!(chance(1, "a", 1), chance(1, "a", 1));
        let hits = (0..10_000)
            .filter(|i| chance(7, &i.to_string(), 1) < 0.3)
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
