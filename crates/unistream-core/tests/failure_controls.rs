//! Lambda's failure controls, done in the consumer, over the memory
//! backends in virtual time: max record age, attempt timeout, bisect on
//! error, filters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::checkpoint::Status;
use unistream_core::clock::{Clock, VirtualClock};
use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, Outcome, Processor, SliceItem, SliceProcessor, SliceResult,
    Slices,
};
use unistream_core::filter::FilterCriteria;
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::{BoxError, CancellationToken};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
    key: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    #[serde(default)]
    kind: String,
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

fn rec(id: &str, key: &str, at: DateTime<Utc>, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&Rec {
        id: id.into(),
        key: key.into(),
        create_at: at,
        kind: kind.into(),
    })
    .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Fails the records whose id is in `fail` (every attempt), hangs forever
/// on the attempts listed in `hang` (id → attempt numbers), succeeds
/// otherwise; counts calls per record.
#[derive(Clone, Default)]
struct Script {
    fail: Vec<String>,
    hang: HashMap<String, Vec<u32>>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
    order: Arc<Mutex<Vec<String>>>,
}

impl Processor for Script {
    type Record = Rec;
    async fn process(&self, r: &Rec, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        *self.calls.lock().unwrap().entry(r.id.clone()).or_default() += 1;
        self.order.lock().unwrap().push(r.id.clone());
        if self.hang.get(&r.id).is_some_and(|n| n.contains(&a.number)) {
            std::future::pending::<()>().await;
        }
        if self.fail.contains(&r.id) {
            return Err(format!("{} is poison", r.id).into());
        }
        Ok(Outcome::Succeeded)
    }
}

fn consumer<P: unistream_core::consumer::Handler<Record = Rec>>(
    config: ConsumerConfig,
    source: MemorySource,
    processor: P,
    store: &MemoryCheckpointStore,
    dlq: &MemoryDeadLetterQueue,
    clock: &VirtualClock,
) -> Consumer<MemorySource, P, MemoryCheckpointStore, MemoryDeadLetterQueue> {
    Consumer::new(
        config.stop_at_end(true),
        source,
        processor,
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(clock.clone())
}

fn tracker_of(store: &MemoryCheckpointStore, id: &str) -> unistream_core::checkpoint::Tracker {
    store
        .checkpoint()
        .unwrap()
        .trackers()
        .iter()
        .find(|t| t.record_id == id)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_record_in_backoff_ages_out_at_its_limit_not_after_the_wait() {
    let clock = VirtualClock::default();
    let t0 = clock.now();
    let source = MemorySource::new(vec![
        rec("ok-1", "a", t0, ""),
        rec("poison", "b", t0, ""),
        // Behind the poison record on its key; young enough to outlive it.
        rec("ok-2", "b", t0 + chrono::Duration::seconds(50), ""),
        // Already older than the limit when read: no attempt at all.
        rec("stale", "c", t0 - chrono::Duration::hours(1), ""),
    ]);
    source.close();
    let script = Script {
        fail: vec!["poison".into()],
        ..Script::default()
    };
    let (store, dlq) = (
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    );
    let config = ConsumerConfig::new("age")
        .concurrency(4)
        .retry(RetryPolicy::waits([10, 60, 600, 600].map(secs)))
        .max_record_age(secs(100));
    let summary = consumer(config, source, script.clone(), &store, &dlq, &clock)
        .run()
        .await
        .unwrap();

    assert_eq!(summary.aged_out, 2, "{summary:?}");
    assert_eq!(summary.succeeded, 2);
    let letters = dlq.letters();
    let poison = letters.iter().find(|l| l.record_id == "poison").unwrap();
    // Attempts at 0 s, 10 s and 70 s; the 600 s wait ends at the 100 s limit.
    assert_eq!(poison.attempts, 3);
    let reason = &poison.error.as_ref().unwrap().message;
    assert!(reason.contains("max record age"), "{reason}");
    assert_eq!(
        poison.data,
        rec("poison", "b", t0, ""),
        "the payload is kept"
    );
    let stale = letters.iter().find(|l| l.record_id == "stale").unwrap();
    assert_eq!(
        stale.attempts, 0,
        "a record too old when read is never attempted"
    );
    assert!(!script.calls.lock().unwrap().contains_key("stale"));
    // The key went on after the aged-out record, and not after 670 s.
    let waited = clock.now() - t0;
    assert!(waited <= chrono::Duration::seconds(101), "took {waited}");
    assert_eq!(tracker_of(&store, "ok-2").status, Status::Succeeded);
}

#[tokio::test]
async fn a_hung_attempt_is_cut_at_its_timeout_and_its_key_goes_on() {
    let clock = VirtualClock::default();
    let t0 = clock.now();
    let source = MemorySource::new(vec![
        rec("hangs-once", "a", t0, ""),
        rec("after", "a", t0, ""),
        rec("hangs-always", "b", t0, ""),
        rec("other", "c", t0, ""),
    ]);
    source.close();
    let script = Script {
        hang: HashMap::from([
            ("hangs-once".to_owned(), vec![1]),
            ("hangs-always".to_owned(), vec![1, 2, 3]),
        ]),
        ..Script::default()
    };
    let (store, dlq) = (
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    );
    let config = ConsumerConfig::new("timeout")
        .concurrency(2)
        .retry(RetryPolicy::waits([1, 1].map(secs)))
        .attempt_timeout(secs(5));
    let summary = consumer(config, source, script.clone(), &store, &dlq, &clock)
        .run()
        .await
        .unwrap();

    assert_eq!(
        (summary.succeeded, summary.dead_lettered),
        (3, 1),
        "{summary:?}"
    );
    assert_eq!(tracker_of(&store, "hangs-once").attempts, 2);
    let letters = dlq.letters();
    let letter = &letters[0];
    assert_eq!(
        (letter.record_id.as_str(), letter.attempts),
        ("hangs-always", 3)
    );
    let reason = &letter.error.as_ref().unwrap().message;
    assert!(reason.contains("attempt timeout"), "{reason}");
    // Key order held: `after` ran once `hangs-once` was done.
    let order = script.order.lock().unwrap().clone();
    let pos = |id: &str| order.iter().rposition(|x| x == id).unwrap();
    assert!(pos("hangs-once") < pos("after"), "{order:?}");
}

#[test]
fn an_attempt_timeout_beyond_the_lock_is_refused() {
    let config = ConsumerConfig::new("x")
        .lock_expire(secs(60))
        .attempt_timeout(secs(61));
    let err = Consumer::new(
        config,
        MemorySource::default(),
        Script::default(),
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lock_expire"), "{err}");
}

/// Fails a whole call when it holds one of `poison`; counts calls.
#[derive(Clone, Default)]
struct Bulk {
    poison: Vec<String>,
    calls: Arc<AtomicU32>,
    /// Cancels this token at the call numbered so (a crash mid-bisection).
    stop_at: Option<(u32, CancellationToken)>,
}

impl SliceProcessor for Bulk {
    type Record = Rec;
    async fn process_slice(&self, slice: &[SliceItem<'_, Rec>]) -> SliceResult {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, token)) = &self.stop_at
            && n == *at
        {
            token.cancel();
            std::future::pending::<()>().await;
        }
        if slice.iter().any(|i| self.poison.contains(&i.record.id)) {
            return Err("the bulk insert failed".into());
        }
        Ok(slice.iter().map(|_| Ok(Outcome::Succeeded)).collect())
    }
}

fn many(n: usize, t0: DateTime<Utc>) -> MemorySource {
    let source = MemorySource::new(
        (0..n)
            .map(|i| rec(&i.to_string(), &format!("k{i}"), t0, ""))
            .collect(),
    );
    source.close();
    source
}

#[tokio::test]
async fn one_poison_record_in_a_slice_of_10000_is_isolated_in_at_most_15_extra_calls() {
    for poison in [0usize, 1, 4_999, 5_000, 7_321, 9_999] {
        let clock = VirtualClock::default();
        let bulk = Bulk {
            poison: vec![poison.to_string()],
            ..Bulk::default()
        };
        let (store, dlq) = (
            MemoryCheckpointStore::default(),
            MemoryDeadLetterQueue::default(),
        );
        let config = ConsumerConfig::new("bisect")
            .limit(10_000)
            .slice_size(10_000)
            .concurrency(10_000)
            .retry(RetryPolicy::waits([]))
            .bisect_on_error(true);
        let summary = consumer(
            config,
            many(10_000, clock.now()),
            Slices(bulk.clone()),
            &store,
            &dlq,
            &clock,
        )
        .run()
        .await
        .unwrap();
        let extra = bulk.calls.load(Ordering::SeqCst) - 1;
        eprintln!("poison at {poison}: {extra} extra calls");
        assert!(extra <= 15, "poison {poison}: {extra} extra calls");
        assert_eq!((summary.succeeded, summary.dead_lettered), (9_999, 1));
        assert_eq!(summary.attempts, 10_000, "one counted attempt per record");
        let cp = store.checkpoint().unwrap();
        assert!(cp.trackers().iter().all(|t| t.attempts == 1));
        let letters = dlq.letters();
        assert_eq!(letters[0].record_id, poison.to_string());
        let reason = &letters[0].error.as_ref().unwrap().message;
        assert!(reason.contains("the bulk insert failed"), "{reason}");
    }
}

#[tokio::test]
async fn bisection_finds_several_poison_records_and_off_it_fails_the_slice() {
    let poison: Vec<String> = [3, 40, 41, 99].map(|i: usize| i.to_string()).to_vec();
    for bisect in [true, false] {
        let clock = VirtualClock::default();
        let bulk = Bulk {
            poison: poison.clone(),
            ..Bulk::default()
        };
        let (store, dlq) = (
            MemoryCheckpointStore::default(),
            MemoryDeadLetterQueue::default(),
        );
        let config = ConsumerConfig::new("bisect")
            .limit(100)
            .slice_size(100)
            .concurrency(100)
            .retry(RetryPolicy::waits([]))
            .bisect_on_error(bisect);
        let summary = consumer(
            config,
            many(100, clock.now()),
            Slices(bulk),
            &store,
            &dlq,
            &clock,
        )
        .run()
        .await
        .unwrap();
        let mut dead: Vec<String> = dlq.letters().into_iter().map(|l| l.record_id).collect();
        dead.sort();
        if bisect {
            assert_eq!(dead, poison);
            assert_eq!(summary.succeeded, 96);
        } else {
            assert_eq!((dead.len(), summary.succeeded), (100, 0));
        }
    }
}

#[tokio::test]
async fn attempts_and_max_attempts_hold_across_a_crash_mid_bisection() {
    let clock = VirtualClock::default();
    let t0 = clock.now();
    let (store, dlq) = (
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    );
    let config = ConsumerConfig::new("crash")
        .limit(64)
        .slice_size(64)
        .concurrency(64)
        .retry(RetryPolicy::waits([secs(1)]))
        .lock_expire(secs(60))
        .shutdown_grace(Duration::ZERO)
        .bisect_on_error(true);
    // First life: the 4th call (inside the bisection) never returns and the
    // process stops with no grace: the slice is dropped mid-bisection, as
    // with `kill -9` after the attempts were saved.
    let token = CancellationToken::new();
    let first = Bulk {
        poison: vec!["17".into()],
        stop_at: Some((4, token.clone())),
        ..Bulk::default()
    };
    let summary = consumer(
        config.clone(),
        many(64, t0),
        Slices(first),
        &store,
        &dlq,
        &clock,
    )
    .with_shutdown(token)
    .run()
    .await
    .unwrap();
    assert!(summary.interrupted);
    let cp = store.checkpoint().unwrap();
    let unfinished = cp.trackers().iter().filter(|t| !t.is_done()).count();
    assert!(
        unfinished > 1,
        "the crash left records of the bisection unfinished"
    );
    assert!(cp.trackers().iter().all(|t| t.attempts == 1));

    // Second life (another process): waits out the dead owner's locks; the
    // cut attempt counts, so the poison record has its 2nd and last one.
    let second = Bulk {
        poison: vec!["17".into()],
        ..Bulk::default()
    };
    let summary = consumer(config, many(64, t0), Slices(second), &store, &dlq, &clock)
        .run()
        .await
        .unwrap();
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");
    let cp = store.checkpoint().unwrap();
    for t in cp.trackers() {
        assert!(t.is_done(), "{t:?}");
        assert!(t.attempts <= 2, "{t:?}");
        let cut = t.attempts == 2;
        assert!(cut || t.status == Status::Succeeded, "{t:?}");
    }
    let letters = dlq.letters();
    assert_eq!(
        (letters[0].record_id.as_str(), letters[0].attempts),
        ("17", 2)
    );
}

#[tokio::test]
async fn filtered_records_cost_no_call_and_no_attempt() {
    let clock = VirtualClock::default();
    let t0 = clock.now();
    let source = MemorySource::new(vec![
        rec("1", "a", t0, "order"),
        rec("2", "b", t0, "noise"),
        rec("3", "c", t0, "order"),
        b"not json".to_vec(),
        rec("5", "e", t0, "refund"),
    ]);
    source.close();
    let script = Script::default();
    let (store, dlq) = (
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    );
    // As moved over from a Lambda event source mapping.
    let criteria = FilterCriteria::from_json(
        r#"{"Filters": [{"Pattern": "{\"data\": {\"kind\": [\"order\", \"refund\"]}}"}]}"#,
    )
    .unwrap();
    let config = ConsumerConfig::new("filter")
        .concurrency(4)
        .filter(criteria);
    let summary = consumer(config, source, script.clone(), &store, &dlq, &clock)
        // And a predicate on the typed record: both must keep it.
        .with_filter(|r: &Rec, _| r.id != "5")
        .run()
        .await
        .unwrap();
    assert_eq!(
        (
            summary.succeeded,
            summary.filtered,
            summary.dead_lettered,
            summary.attempts
        ),
        (2, 2, 1, 2),
        "{summary:?}"
    );
    let calls = script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for id in ["2", "5"] {
        let t = tracker_of(&store, id);
        assert_eq!((t.status, t.attempts), (Status::Ignored, 0), "{id}");
    }
    // The filtered records cost no write of their own: the same writes as
    // a stream without them.
    let without = MemorySource::new(vec![
        rec("1", "a", t0, "order"),
        rec("3", "c", t0, "order"),
        b"not json".to_vec(),
    ]);
    without.close();
    let plain = MemoryCheckpointStore::default();
    let config = ConsumerConfig::new("filter").concurrency(4);
    consumer(config, without, Script::default(), &plain, &dlq, &clock)
        .run()
        .await
        .unwrap();
    assert_eq!(store.writes(), plain.writes());
}
