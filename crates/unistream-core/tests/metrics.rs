//! The metrics match what the engines did, read from metrics-util's
//! debugging recorder: the consumer's counters after a run over records
//! where some attempts fail and one record is dead-lettered (a global
//! recorder: the only test of this binary that installs one); the
//! producer's records put, holds and backlog, and the consumer's checkpoint
//! writes and records in flight (each test with its own recorder, local to
//! its thread: `metrics::with_local_recorder` on a current-thread runtime).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use unistream_core::BoxError;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryBuffer, MemorySink};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::EncodedRecord;
use unistream_core::source::SourceRecord;

#[derive(serde::Serialize, serde::Deserialize)]
struct Rec {
    id: String,
}

impl unistream_core::record::Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::UNIX_EPOCH
    }
}

/// Fails the first attempt of every third record, every attempt of "7".
struct Flaky;

impl Processor for Flaky {
    type Record = Rec;
    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        let n: u32 = r.id.parse().unwrap_or(0);
        if r.id == "7" || (n.is_multiple_of(3) && a.number == 1) {
            return Err(format!("failure of {} at attempt {}", r.id, a.number).into());
        }
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
async fn the_counters_match_the_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    let source = MemorySource::new(
        (0..20)
            .map(|i| format!("{{\"id\": \"{i}\"}}").into_bytes())
            .collect(),
    );
    let mut config = ConsumerConfig::new("metrics-test");
    config.limit = 8;
    config.stop_at_end = true;
    config.retry = RetryPolicy::waits([std::time::Duration::ZERO]).with_max_attempts(3);
    let mut c = Consumer::new(
        config,
        source,
        Flaky,
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let run = c.run().await.unwrap();
    assert_eq!((run.succeeded, run.dead_lettered), (19, 1));

    // A producer whose sink fails one send and accepts part of another.
    let sink = MemorySink::default();
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(5)),
        sink.clone(),
    )
    .with_clock(VirtualClock::default());
    sink.fail_next(1);
    sink.reject_next(vec![0, 2]);
    for i in 0..20 {
        producer
            .put_encoded(EncodedRecord::new(i.to_string(), "k", b"{}".to_vec()))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(sink.ids().len(), 20);

    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut steps = 0;
    let mut sends = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        if name.starts_with("unistream_producer_") {
            match value {
                DebugValue::Counter(n) => {
                    counters.insert(name, n);
                }
                DebugValue::Histogram(v) if name == "unistream_producer_send_seconds" => {
                    sends = v.len();
                }
                _ => {}
            }
            continue;
        }
        let consumer: Vec<_> = key
            .key()
            .labels()
            .filter(|l| l.key() == "consumer")
            .map(|l| l.value().to_owned())
            .collect();
        assert_eq!(consumer, ["metrics-test"], "{key:?}");
        if name.starts_with("unistream_consumer_checkpoint_") {
            continue; // tested below, by kind
        }
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert(key.key().name().to_owned(), n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(v))
                if key.key().name() == "unistream_consumer_step_seconds" =>
            {
                steps = v.len() as u64;
            }
            _ => {}
        }
    }
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(get("unistream_consumer_records_fetched_total"), run.fetched);
    assert_eq!(
        get("unistream_consumer_records_succeeded_total"),
        run.succeeded
    );
    assert_eq!(
        get("unistream_consumer_records_dead_lettered_total"),
        run.dead_lettered
    );
    assert_eq!(get("unistream_consumer_attempts_total"), run.attempts);
    assert_eq!(
        get("unistream_consumer_failed_attempts_total"),
        run.failures
    );
    assert_eq!(get("unistream_consumer_step_errors_total"), 0);
    assert!(run.failures >= 9, "the test exercises failures: {run:?}");
    assert_eq!(steps, run.pulls, "one step duration per process_batch");

    assert_eq!(get("unistream_producer_records_sent_total"), 20);
    assert_eq!(get("unistream_producer_records_rejected_total"), 2);
    assert_eq!(get("unistream_producer_sends_failed_total"), 1);
    assert_eq!(sends as u64, sink.calls(), "one send duration per call");
}

/// What a debugging recorder holds, keyed `name{label=value,...}` (labels
/// in order). A snapshot of the debugging recorder resets what it reads, so
/// counters and histogram samples are added up across snapshots here, and a
/// gauge reads 0 unless it was set since the last snapshot: tests take
/// snapshots where a gauge's value is known to have been set.
#[derive(Clone)]
struct Recorded {
    snapshotter: Snapshotter,
    totals: Arc<Mutex<HashMap<String, Value>>>,
}

#[derive(Clone, Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

/// One snapshot: counters and histograms since the start, gauges as set
/// since the previous snapshot.
struct Taken {
    values: HashMap<String, Value>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Recorded {
            snapshotter: recorder.snapshotter(),
            totals: Arc::default(),
        }
    }

    fn take(&self) -> Taken {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.key().name().to_owned()
            } else {
                format!("{}{{{}}}", key.key().name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => Value::Counter(n),
                DebugValue::Gauge(v) => Value::Gauge(v.into_inner()),
                DebugValue::Histogram(v) => {
                    Value::Histogram(v.into_iter().map(|f| f.into_inner()).collect())
                }
            };
            match (totals.get_mut(&name), value) {
                (Some(Value::Counter(total)), Value::Counter(n)) => *total += n,
                (Some(Value::Histogram(total)), Value::Histogram(v)) => total.extend(v),
                (_, value) => {
                    totals.insert(name, value);
                }
            }
        }
        Taken {
            values: totals.clone(),
        }
    }
}

impl Taken {
    fn counter(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(Value::Counter(n)) => Some(*n),
            _ => None,
        }
    }

    fn gauge(&self, name: &str) -> Option<f64> {
        match self.values.get(name) {
            Some(Value::Gauge(v)) => Some(*v),
            _ => None,
        }
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        match self.values.get(name) {
            Some(Value::Histogram(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// Runs `f` on a current-thread runtime, so on this thread: a recorder set
/// with `metrics::with_local_recorder` sees everything it records.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_producer_counts_puts_holds_and_its_backlog() {
    let recorder = DebuggingRecorder::new();
    let m = Recorded::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        block_on(async {
            let sink = MemorySink::default();
            let mut config = ProducerConfig::default();
            config.linger = None;
            // A hold after the first failure lasts 3 s, after the second 5 s.
            config.retry = RetryPolicy::waits([Duration::from_secs(3), Duration::from_secs(5)]);
            let clock = VirtualClock::default();
            let producer = Producer::new(
                config,
                MemoryBuffer::new(BufferLimits::records(4)),
                sink.clone(),
            )
            .with_clock(clock.clone());
            sink.fail_next(2);
            let mut bytes = 0;
            for i in 0..10 {
                let data = vec![b'x'; 10 + i];
                bytes += data.len();
                let record = EncodedRecord::new(i.to_string(), "k", data);
                producer.put_encoded(record).await.unwrap();
            }
            // The first batch (4 records) failed at the 4th put; the
            // producer has been on hold since: nothing left the buffer.
            let t = m.take();
            assert_eq!(t.counter("unistream_producer_records_put_total"), Some(10));
            assert_eq!(t.counter("unistream_producer_sends_failed_total"), Some(1));
            assert_eq!(t.histogram("unistream_producer_hold_seconds"), [3.0]);
            assert_eq!(t.gauge("unistream_producer_backlog_records"), Some(10.0));
            assert_eq!(
                t.gauge("unistream_producer_backlog_bytes"),
                Some(bytes as f64)
            );
            // A memory buffer has no segment files.
            assert_eq!(t.gauge("unistream_producer_backlog_segments"), None);
            assert_eq!(producer.buffer().stats().bytes, bytes as u64);

            // put_many counts every record it accepted (the gauge: 13).
            let many: Vec<Rec> = (10..13).map(|i| Rec { id: i.to_string() }).collect();
            producer.put_many(&many).await.unwrap();
            producer.flush().await.unwrap();
            assert_eq!(sink.ids().len(), 13);
            assert_eq!(clock.total_slept(), Duration::from_secs(8), "held 3 + 5 s");
            let t = m.take();
            assert_eq!(t.histogram("unistream_producer_hold_seconds"), [3.0, 5.0]);
            assert_eq!(t.counter("unistream_producer_records_put_total"), Some(13));
            assert_eq!(t.counter("unistream_producer_records_sent_total"), Some(13));
            assert_eq!(t.counter("unistream_producer_sends_failed_total"), Some(2));
            // Set to 0 by the sends (it was 13 after the last put, and no
            // snapshot was taken since).
            assert_eq!(t.gauge("unistream_producer_backlog_records"), Some(0.0));
            assert_eq!(t.gauge("unistream_producer_backlog_bytes"), Some(0.0));
        });
    });
}

/// A memory checkpoint store counting the calls of each write method; its
/// commits take 3 ms.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryCheckpointStore,
    /// save_batch, save_tracker, sync, save_commit.
    calls: Arc<Mutex<[u64; 4]>>,
}

impl CountingStore {
    fn count(&self, i: usize) {
        self.calls.lock().unwrap()[i] += 1;
    }
}

impl CheckpointStore for CountingStore {
    async fn load(&mut self) -> unistream_core::Result<Option<StoredCheckpoint>> {
        self.inner.load().await
    }
    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> unistream_core::Result<()> {
        self.count(0);
        self.inner.save_batch(checkpoint, records).await
    }
    async fn save_tracker(
        &mut self,
        checkpoint: &Checkpoint,
        index: usize,
    ) -> unistream_core::Result<()> {
        self.count(1);
        self.inner.save_tracker(checkpoint, index).await
    }
    async fn sync(&mut self) -> unistream_core::Result<()> {
        self.count(2);
        self.inner.sync().await
    }
    async fn save_commit(&mut self, checkpoint: &Checkpoint) -> unistream_core::Result<()> {
        self.count(3);
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.inner.save_commit(checkpoint).await
    }
}

/// [`Flaky`], reading the in-flight gauge during the attempts of records
/// 0 to 14 (not after: so that a gauge left up at the end would show);
/// each attempt yields once first, so that a concurrent consumer starts
/// others meanwhile.
struct Watching {
    metrics: Recorded,
    gauge: String,
    seen: Arc<Mutex<Vec<f64>>>,
}

impl Processor for Watching {
    type Record = Rec;
    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        tokio::task::yield_now().await;
        if r.id.parse::<u32>().is_ok_and(|n| n < 15) {
            let in_flight = self.metrics.take().gauge(&self.gauge).unwrap_or(-1.0);
            self.seen.lock().unwrap().push(in_flight);
        }
        Flaky.process(r, a).await
    }
}

/// Runs consumer `id` with `concurrency` over 20 records (limit 8: three
/// batches; failures and a dead letter as [`Flaky`]); returns the store's
/// calls per method and the in-flight values the processor read.
fn run_watched(concurrency: usize, m: &Recorded, id: &str) -> ([u64; 4], Vec<f64>) {
    let source = MemorySource::new(
        (0..20)
            .map(|i| format!("{{\"id\": \"{i}\"}}").into_bytes())
            .collect(),
    );
    let mut config = ConsumerConfig::new(id);
    config.limit = 8;
    config.stop_at_end = true;
    config.concurrency = concurrency;
    config.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(3);
    let store = CountingStore::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let processor = Watching {
        metrics: m.clone(),
        gauge: format!("unistream_consumer_records_in_flight{{consumer={id}}}"),
        seen: seen.clone(),
    };
    let mut c = Consumer::new(
        config,
        source,
        processor,
        store.clone(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let run = block_on(c.run()).unwrap();
    assert_eq!((run.succeeded, run.dead_lettered), (19, 1));
    let calls = *store.calls.lock().unwrap();
    let seen = seen.lock().unwrap().clone();
    (calls, seen)
}

/// Checks the checkpoint-write metrics of consumer `id` against the store's
/// own count of its calls.
fn check_writes(t: &Taken, id: &str, calls: [u64; 4]) {
    let name = |metric: &str, kind: &str| format!("{metric}{{consumer={id},kind={kind}}}");
    for (i, kind) in ["batch", "tracker", "sync", "commit"]
        .into_iter()
        .enumerate()
    {
        assert!(calls[i] > 0, "the run calls {kind}");
        let counted = t.counter(&name("unistream_consumer_checkpoint_writes_total", kind));
        assert_eq!(counted, Some(calls[i]), "{kind} calls");
        let samples = t.histogram(&name("unistream_consumer_checkpoint_write_seconds", kind));
        if kind == "tracker" {
            // One sample per group of tracker saves made for one write.
            assert!(
                !samples.is_empty() && samples.len() as u64 <= calls[i],
                "{} tracker samples for {} calls",
                samples.len(),
                calls[i]
            );
        } else {
            assert_eq!(samples.len() as u64, calls[i], "one {kind} sample per call");
        }
        if kind == "commit" {
            // The store's commits take 3 ms: the samples time the call.
            assert!(samples.iter().all(|&s| s >= 0.003), "{samples:?}");
        }
    }
}

#[test]
fn a_sequential_consumer_counts_its_checkpoint_writes_and_one_record_in_flight() {
    let recorder = DebuggingRecorder::new();
    let m = Recorded::new(&recorder);
    let (calls, seen) = metrics::with_local_recorder(&recorder, || run_watched(1, &m, "seq"));
    let t = m.take();
    check_writes(&t, "seq", calls);
    // Read first after it was set, each time: the one attempt running.
    assert!(seen.len() >= 15, "{seen:?}");
    assert!(seen.iter().all(|&v| v == 1.0), "{seen:?}");
    // Set back to 0 after the attempts no one read (15 to 19).
    assert_eq!(
        t.gauge("unistream_consumer_records_in_flight{consumer=seq}"),
        Some(0.0)
    );
}

#[test]
fn a_concurrent_consumer_counts_its_checkpoint_writes_and_records_in_flight() {
    let recorder = DebuggingRecorder::new();
    let m = Recorded::new(&recorder);
    let (calls, seen) = metrics::with_local_recorder(&recorder, || run_watched(4, &m, "conc"));
    let t = m.take();
    check_writes(&t, "conc", calls);
    // The first reader after the engine started 4 sees 4; a later one may
    // read 0 (the previous read reset the gauge), never more than 4.
    assert!(seen.contains(&4.0), "{seen:?}");
    assert!(seen.iter().all(|&v| (0.0..=4.0).contains(&v)), "{seen:?}");
    assert_eq!(
        t.gauge("unistream_consumer_records_in_flight{consumer=conc}"),
        Some(0.0)
    );
}
