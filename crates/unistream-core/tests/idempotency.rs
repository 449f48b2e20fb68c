//! Idempotent processing over the memory backends: the store contract,
//! effects once per key across duplicates, retries and slices, failed
//! effects not stored, reused keys refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use unistream_core::BoxError;
use unistream_core::clock::{Clock, VirtualClock};
use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, Outcome, Processor, SliceItem, SliceProcessor, SliceResult,
    Slices,
};
use unistream_core::idempotency::{Idempotent, ItemStatus, MemoryIdempotencyStore, StoredOutcome};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::raw::{RawCodec, RawRecord};
use unistream_core::retry::RetryPolicy;

#[tokio::test]
async fn the_memory_store_passes_the_contract() {
    let store = MemoryIdempotencyStore::default();
    unistream_core::testing::idempotency::check_all(&store, "mem", VirtualClock::default().now())
        .await;
}

/// The effect: counts runs per record data; fails the first `fail_first`
/// runs of data listed.
#[derive(Clone, Default)]
struct Effect {
    runs: Arc<Mutex<HashMap<String, u32>>>,
    fail_first: HashMap<String, u32>,
}

impl Effect {
    fn run(&self, data: &[u8]) -> Result<Outcome, BoxError> {
        let d = String::from_utf8_lossy(data).into_owned();
        let mut runs = self.runs.lock().unwrap();
        let n = runs.entry(d.clone()).or_default();
        *n += 1;
        if self.fail_first.get(&d).is_some_and(|&f| *n <= f) {
            return Err(format!("effect of {d} failed").into());
        }
        Ok(Outcome::SucceededWith(serde_json::json!({ "run": *n })))
    }
    fn runs(&self, d: &str) -> u32 {
        self.runs.lock().unwrap().get(d).copied().unwrap_or(0)
    }
}

impl Processor for Effect {
    type Record = RawRecord;
    async fn process(&self, r: &RawRecord, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        self.run(&r.data)
    }
}

impl SliceProcessor for Effect {
    type Record = RawRecord;
    async fn process_slice(&self, slice: &[SliceItem<'_, RawRecord>]) -> SliceResult {
        Ok(slice.iter().map(|i| self.run(&i.record.data)).collect())
    }
}

/// Keys by the record's data (`key:payload`: the part before the colon).
fn key_of(r: &RawRecord) -> String {
    let d = String::from_utf8_lossy(&r.data);
    d.split(':').next().unwrap_or_default().to_owned()
}

fn source(records: &[&str]) -> MemorySource {
    let s = MemorySource::new(records.iter().map(|r| r.as_bytes().to_vec()).collect());
    s.close();
    s
}

fn config(concurrency: usize) -> ConsumerConfig {
    ConsumerConfig::new("idem")
        .stop_at_end(true)
        .concurrency(concurrency)
        .retry(RetryPolicy::waits([1, 1, 1].map(Duration::from_secs)))
}

#[tokio::test]
async fn an_effect_runs_once_per_key_across_duplicates_retries_and_concurrency() {
    let clock = VirtualClock::default();
    let keys = MemoryIdempotencyStore::default();
    let effect = Effect {
        fail_first: HashMap::from([("b:2".to_owned(), 2)]),
        ..Effect::default()
    };
    let idem = Idempotent::new(effect.clone(), keys.clone())
        .with_key(key_of)
        .with_clock(clock.clone());
    let dlq = MemoryDeadLetterQueue::default();
    // (Raw records from a source without keys share one partition key:
    // they run in stream order.)
    let mut c = Consumer::new(
        config(8),
        source(&["a:1", "b:2", "a:1", "c:3", "a:1", "b:2"]),
        idem,
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_codec(RawCodec)
    .with_clock(clock.clone());
    let summary = c.run().await.unwrap();
    assert_eq!(
        (summary.succeeded, summary.dead_lettered),
        (6, 0),
        "{summary:?}"
    );
    assert_eq!(
        effect.runs("a:1"),
        1,
        "a duplicate in the stream runs nothing"
    );
    // b:2 failed twice (claims released, not completed), then ran once.
    assert_eq!(effect.runs("b:2"), 3);
    assert_eq!(effect.runs("c:3"), 1);
    let items = keys.items();
    assert!(items.values().all(|i| i.status == ItemStatus::Completed));
    assert_eq!(
        items["a"].outcome,
        Some(StoredOutcome::SucceededWith(serde_json::json!({"run": 1})))
    );
    // The checkpoint keeps the stored outcome for the duplicates too.
    let cp = c.checkpoint().unwrap();
    assert!(cp.trackers().iter().all(|t| t.data.is_some()));
}

#[tokio::test]
async fn a_key_reused_with_other_data_is_refused_and_dead_lettered() {
    let clock = VirtualClock::default();
    let keys = MemoryIdempotencyStore::default();
    let effect = Effect::default();
    let idem = Idempotent::new(effect.clone(), keys)
        .with_key(key_of)
        .with_clock(clock.clone());
    let dlq = MemoryDeadLetterQueue::default();
    let mut c = Consumer::new(
        config(1),
        source(&["k:first", "k:second"]),
        idem,
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_codec(RawCodec)
    .with_clock(clock);
    let summary = c.run().await.unwrap();
    assert_eq!((summary.succeeded, summary.dead_lettered), (1, 1));
    assert_eq!(effect.runs("k:second"), 0);
    let letters = dlq.letters();
    let reason = &letters[0].error.as_ref().unwrap().message;
    assert!(reason.contains("other data"), "{reason}");
}

#[tokio::test]
async fn a_slice_claims_concurrently_and_completes_in_two_writes_per_record() {
    let clock = VirtualClock::default();
    let keys = MemoryIdempotencyStore::default();
    let effect = Effect {
        fail_first: HashMap::from([("k7:7".to_owned(), 1)]),
        ..Effect::default()
    };
    let idem = Idempotent::new(effect.clone(), keys.clone())
        .with_key(key_of)
        .with_clock(clock.clone());
    let records: Vec<String> = (0..50).map(|n| format!("k{n}:{n}")).collect();
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    let mut c = Consumer::new(
        config(50).limit(50).slice_size(50),
        source(&refs),
        Slices(idem),
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_codec(RawCodec)
    .with_clock(clock);
    let summary = c.run().await.unwrap();
    assert_eq!(summary.succeeded, 50);
    assert!(
        records
            .iter()
            .all(|r| effect.runs(r) == if r == "k7:7" { 2 } else { 1 })
    );
    // 49 records: claim + completion; k7: claim, release, claim, completion.
    assert_eq!(keys.writes(), 49 * 2 + 4);
}

/// Hangs inside its effect on the first attempt of `hang`.
#[derive(Clone, Default)]
struct Hangs {
    runs: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Processor for Hangs {
    type Record = RawRecord;
    async fn process(&self, r: &RawRecord, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        let d = String::from_utf8_lossy(&r.data).into_owned();
        self.runs.lock().unwrap().push((d.clone(), a.number));
        if d == "hang" && a.number == 1 {
            std::future::pending::<()>().await;
        }
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
async fn a_timed_out_effect_leaves_its_claim_to_the_next_attempt_at_once() {
    let clock = VirtualClock::default();
    let keys = MemoryIdempotencyStore::default();
    let hangs = Hangs::default();
    // Claims would hold for the whole 15-minute lock; the next attempt of
    // the same record takes the claim over without waiting for it.
    let idem = Idempotent::new(hangs.clone(), keys.clone()).with_clock(clock.clone());
    let t0 = clock.now();
    let mut c = Consumer::new(
        config(1).attempt_timeout(Duration::from_secs(10)),
        source(&["hang", "next"]),
        idem,
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_codec(RawCodec)
    .with_clock(clock.clone());
    let summary = c.run().await.unwrap();
    assert_eq!((summary.succeeded, summary.failures), (2, 1), "{summary:?}");
    let runs = hangs.runs.lock().unwrap().clone();
    assert_eq!(runs[..2], [("hang".to_owned(), 1), ("hang".to_owned(), 2)]);
    assert!(
        keys.items()
            .values()
            .all(|i| i.status == ItemStatus::Completed)
    );
    let took = clock.now() - t0;
    assert!(
        took < chrono::Duration::minutes(1),
        "waited {took} for the claim"
    );
}
