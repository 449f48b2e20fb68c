//! Concurrency in key order and slice processing, over the memory backends,
//! in virtual time: many seeds of random keys, failures, dead letters and
//! restarts; every key's records reach the processor in stream order and
//! never two at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, Handler, Outcome, Processor, RunSummary, SliceItem,
    SliceProcessor, SliceResult, Slices,
};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::{BoxError, CancellationToken};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
    key: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
}

impl Record for Rec {
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

#[derive(Default)]
struct Log {
    /// (key, index) of every start, in order.
    starts: Vec<(String, usize)>,
    running: HashMap<String, usize>,
    overlap: Vec<String>,
    max_in_flight: usize,
    in_flight: usize,
}

#[derive(Clone)]
struct Checker {
    log: Arc<Mutex<Log>>,
    seed: u64,
    fail_rate: u64,
    stop_after: Option<(usize, CancellationToken)>,
}

impl Checker {
    fn begin(&self, r: &Rec) -> usize {
        let mut log = self.log.lock().unwrap();
        let i: usize = r.id.parse().unwrap();
        log.starts.push((r.key.clone(), i));
        if let Some(other) = log.running.insert(r.key.clone(), i) {
            log.overlap
                .push(format!("{} and {} of key {}", other, i, r.key));
        }
        log.in_flight += 1;
        log.max_in_flight = log.max_in_flight.max(log.in_flight);
        if let Some((n, token)) = &self.stop_after
            && log.starts.len() == *n
        {
            token.cancel();
        }
        i
    }
    fn end(&self, r: &Rec) {
        let mut log = self.log.lock().unwrap();
        log.running.remove(&r.key);
        log.in_flight -= 1;
    }
    fn fails(&self, i: usize, attempt: u32) -> bool {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.seed ^ u64::from(attempt);
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) % 100 < self.fail_rate
    }
}

/// Ends a record's run when dropped: an attempt dropped at the end of the
/// shutdown grace is no longer running either.
struct Running<'a>(&'a Checker, &'a Rec);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}

impl Processor for Checker {
    type Record = Rec;
    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        let i = self.begin(r);
        let running = Running(self, r);
        for _ in 0..(i % 4) {
            tokio::task::yield_now().await;
        }
        drop(running);
        if self.fails(i, a.number) {
            return Err(format!("record {i} failed attempt {}", a.number).into());
        }
        Ok(Outcome::Succeeded)
    }
}

impl SliceProcessor for Checker {
    type Record = Rec;
    async fn process_slice(&self, slice: &[SliceItem<'_, Rec>]) -> SliceResult {
        let ids: Vec<usize> = slice.iter().map(|item| self.begin(item.record)).collect();
        let running: Vec<Running<'_>> = slice
            .iter()
            .map(|item| Running(self, item.record))
            .collect();
        tokio::task::yield_now().await;
        drop(running);
        Ok(slice
            .iter()
            .zip(ids)
            .map(|(item, i)| {
                if self.fails(i, item.attempt.number) {
                    Err(format!("record {i} failed").into())
                } else {
                    Ok(Outcome::Succeeded)
                }
            })
            .collect())
    }
}

fn stream(n: usize, keys: usize, seed: u64) -> (MemorySource, Vec<String>) {
    let t = DateTime::from_timestamp(1_704_781_446, 0).unwrap();
    let mut key_of = Vec::new();
    let records = (0..n)
        .map(|i| {
            let h = ((i as u64) ^ seed.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let k = ((h >> 29) % keys as u64).to_string();
            key_of.push(k.clone());
            JsonCodec::default()
                .to_vec(&Rec {
                    id: i.to_string(),
                    key: k,
                    create_at: t,
                })
                .unwrap()
        })
        .collect();
    let source = MemorySource::new(records);
    source.close();
    (source, key_of)
}

fn config(concurrency: usize, limit: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("concurrent");
    c.limit = limit;
    c.concurrency = concurrency;
    c.slice_size = 7;
    c.retry =
        RetryPolicy::waits([Duration::from_secs(1), Duration::from_secs(2)]).with_max_attempts(3);
    c.dlq_retry = RetryPolicy::waits([Duration::from_secs(1)]);
    c.lock_expire = Duration::from_secs(60);
    c.stop_at_end = true;
    c
}

/// Runs a consumer in virtual time until it stops.
async fn run<H: Handler<Record = Rec>>(
    consumer: unistream_core::Result<
        Consumer<MemorySource, H, MemoryCheckpointStore, MemoryDeadLetterQueue>,
    >,
    token: CancellationToken,
) -> RunSummary {
    consumer
        .unwrap()
        .with_clock(VirtualClock::default())
        .with_shutdown(token)
        .run()
        .await
        .unwrap()
}

/// Runs to the end with `restarts` shutdowns on the way; checks the order.
async fn check(seed: u64, concurrency: usize, slices: bool, restarts: usize) {
    check_with(seed, concurrency, slices, restarts, None).await;
}

/// [`check`] with a checkpoint interval of `interval` records per write
/// (more than run at once: records are marked ahead, behind their key's
/// front).
async fn check_with(
    seed: u64,
    concurrency: usize,
    slices: bool,
    restarts: usize,
    interval: Option<usize>,
) {
    let (n, keys) = (120, 9);
    let (source, key_of) = stream(n, keys, seed);
    let store = MemoryCheckpointStore::default();
    let dlq = MemoryDeadLetterQueue::default();
    let log = Arc::new(Mutex::new(Log::default()));
    for round in 0..=restarts {
        let token = CancellationToken::new();
        let checker = Checker {
            log: log.clone(),
            seed,
            fail_rate: 25,
            stop_after: (round < restarts)
                .then(|| (log.lock().unwrap().starts.len() + 30, token.clone())),
        };
        let cfg = config(concurrency, 50).checkpoint_interval(
            interval.map(unistream_core::consumer::CheckpointInterval::records),
        );
        let (source, store, dlq) = (source.clone(), store.clone(), dlq.clone());
        let summary = if slices {
            run(
                Consumer::new(cfg, source, Slices(checker), store, dlq),
                token,
            )
            .await
        } else {
            run(Consumer::new(cfg, source, checker, store, dlq), token).await
        };
        if round == restarts {
            assert!(summary.closed, "seed {seed}: the last run reaches the end");
        }
    }
    let log = log.lock().unwrap();
    assert!(
        log.overlap.is_empty(),
        "seed {seed}: overlapping records of one key: {:?}",
        log.overlap
    );
    assert!(log.max_in_flight <= concurrency.max(if slices { 7 } else { 1 }));
    if concurrency > 1 {
        assert!(
            log.max_in_flight > 1,
            "seed {seed}: nothing ran concurrently"
        );
    }
    // Per key, starts never go back to an earlier record than one already
    // started, except to repeat the one in hand (a retry or a replay).
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (k, i) in &log.starts {
        assert_eq!(&key_of[*i], k);
        if let Some(&prev) = last.get(k.as_str()) {
            assert!(*i >= prev, "seed {seed}: key {k} ran {i} after {prev}");
        }
        last.insert(k, *i);
    }
    // Every record succeeded or is in the dead-letter queue.
    let succeeded: std::collections::HashSet<usize> = log.starts.iter().map(|(_, i)| *i).collect();
    assert_eq!(
        succeeded.len(),
        n,
        "seed {seed}: every record was attempted"
    );
    for l in dlq.letters() {
        assert!(l.attempts <= 3);
    }
}

#[tokio::test]
async fn concurrent_records_keep_key_order_across_retries_dlq_and_restarts() {
    for seed in 0..40 {
        check(seed, 8, false, (seed % 3) as usize).await;
    }
}

#[tokio::test]
async fn records_marked_ahead_keep_key_order_across_retries_dlq_and_restarts() {
    for seed in 0..40 {
        check_with(seed, 8, false, (seed % 3) as usize, Some(40)).await;
        check_with(seed, 1, false, (seed % 3) as usize, Some(40)).await;
    }
}

#[tokio::test]
async fn sequential_consumer_runs_in_stream_order() {
    for seed in 0..10 {
        check(seed, 1, false, 1).await;
    }
}

#[tokio::test]
async fn slices_keep_key_order_and_retry_failed_records_alone() {
    for seed in 0..40 {
        check(seed, 1, true, (seed % 3) as usize).await;
    }
}

#[tokio::test]
async fn halt_stops_starting_at_the_first_exhausted_record() {
    let (source, _) = stream(60, 9, 5);
    let dlq = MemoryDeadLetterQueue::default();
    let log = Arc::new(Mutex::new(Log::default()));
    let checker = Checker {
        log: log.clone(),
        seed: 5,
        fail_rate: 100,
        stop_after: None,
    };
    let mut cfg = config(4, 60);
    cfg.on_exhausted = unistream_core::consumer::OnExhausted::Halt;
    cfg.retry = RetryPolicy::waits([Duration::ZERO]).with_max_attempts(1);
    let err = Consumer::new(
        cfg,
        source,
        checker,
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default())
    .run()
    .await
    .unwrap_err();
    assert!(matches!(err, unistream_core::Error::Halted { .. }), "{err}");
    // The first group (4 in flight) ran; nothing started after the first
    // exhaustion; the exhausted records in hand went to the DLQ.
    let starts = log.lock().unwrap().starts.len();
    assert_eq!(starts, 4);
    assert_eq!(dlq.letters().len(), 4);
}
