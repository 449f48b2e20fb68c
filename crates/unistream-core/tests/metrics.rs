//! The consumer's metrics match what it did: a run over records where some
//! attempts fail and one record is dead-lettered, with a recorder installed
//! (metrics-util's debugging recorder; the only test of this binary, since
//! a recorder is global).

use std::collections::HashMap;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use unistream_core::BoxError;
use unistream_core::buffer::BufferLimits;
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryBuffer, MemorySink};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::EncodedRecord;

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
                DebugValue::Histogram(v) => sends = v.len(),
                _ => {}
            }
            continue;
        }
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_eq!(
            labels,
            vec![("consumer".to_owned(), "metrics-test".to_owned())],
            "{key:?}"
        );
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
