//! End-to-end tests of the consumer engine over the memory and local-file
//! backends, in virtual time (no test sleeps for real).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status, StoredCheckpoint};
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, OnExhausted, Outcome, Processor,
};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::source::SourceRecord;
use unistream_core::{BoxError, CancellationToken, Error};
use unistream_local::Durability;
use unistream_local::{FileCheckpointStore, FileDeadLetterQueue, FileSource};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
    value: i64,
}

impl Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

fn rec(i: usize) -> Vec<u8> {
    let r = Rec {
        id: i.to_string(),
        create_at: DateTime::from_timestamp(1_704_781_446 + i as i64, 0).unwrap(),
        value: i as i64,
    };
    JsonCodec::default().to_vec(&r).unwrap()
}

/// A processor whose failures are scripted per record id.
#[derive(Clone, Default)]
struct Scripted {
    /// id -> how many first attempts fail (u32::MAX: every attempt).
    failures: HashMap<String, u32>,
    /// ids to skip.
    ignore: Vec<String>,
    /// (id, attempt number) that never completes: simulates a crash mid-attempt.
    hang: Option<(String, u32)>,
    /// Cancel this token when an attempt of this id starts.
    cancel_on: Option<(String, CancellationToken)>,
    log: Arc<Mutex<Vec<(String, u32, bool)>>>,
}

impl Scripted {
    fn failing(pairs: &[(&str, u32)]) -> Self {
        Scripted {
            failures: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }
    fn log(&self) -> Vec<(String, u32, bool)> {
        self.log.lock().unwrap().clone()
    }
    fn attempts_of(&self, id: &str) -> Vec<u32> {
        self.log()
            .into_iter()
            .filter(|(i, _, _)| i == id)
            .map(|(_, n, _)| n)
            .collect()
    }
    fn succeeded(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|(_, _, ok)| *ok)
            .map(|(i, _, _)| i)
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("scripted failure of {0} at attempt {1}")]
struct ScriptedError(String, u32, #[source] std::io::Error);

impl Processor for Scripted {
    type Record = Rec;

    async fn process(&self, r: &Rec, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if let Some((id, token)) = &self.cancel_on
            && *id == r.id
        {
            token.cancel();
        }
        if self
            .hang
            .as_ref()
            .is_some_and(|(id, n)| *id == r.id && *n == attempt.number)
        {
            std::future::pending::<()>().await;
        }
        if self.ignore.contains(&r.id) {
            return Ok(Outcome::Ignored);
        }
        let fails = self.failures.get(&r.id).copied().unwrap_or(0);
        let ok = attempt.number > fails;
        self.log
            .lock()
            .unwrap()
            .push((r.id.clone(), attempt.number, ok));
        if ok {
            Ok(Outcome::Succeeded)
        } else {
            Err(ScriptedError(
                r.id.clone(),
                attempt.number,
                std::io::Error::other("disk on fire"),
            )
            .into())
        }
    }
}

fn config(limit: usize, waits_secs: &[u64], max_attempts: u32) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("test-consumer");
    c.limit = limit;
    c.retry = RetryPolicy::waits(waits_secs.iter().map(|s| Duration::from_secs(*s)))
        .with_max_attempts(max_attempts);
    c.dlq_retry = RetryPolicy::waits([Duration::from_secs(1)]).with_max_attempts(3);
    c.lock_expire = Duration::from_secs(60);
    c.stop_at_end = true;
    c
}

fn memory_source(n: usize) -> MemorySource {
    MemorySource::new((0..n).map(rec).collect())
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_exhausted_records_reach_the_dlq() {
    let clock = VirtualClock::default();
    let source = memory_source(6);
    source.push(b"{not json".to_vec());
    let store = MemoryCheckpointStore::default();
    let dlq = MemoryDeadLetterQueue::default();
    let p = Scripted::failing(&[("1", 1), ("2", 2), ("4", u32::MAX)]);
    let mut c = Consumer::new(
        config(3, &[1, 2], 3),
        source,
        p.clone(),
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(clock.clone());
    let summary = c.run().await.unwrap();

    assert_eq!(p.attempts_of("0"), vec![1]);
    assert_eq!(p.attempts_of("1"), vec![1, 2]);
    assert_eq!(p.attempts_of("2"), vec![1, 2, 3]);
    assert_eq!(p.attempts_of("4"), vec![1, 2, 3]);
    assert_eq!(p.succeeded(), vec!["0", "1", "2", "3", "5"]);
    // Waits: 1 (rec 1), 1+2 (rec 2), 1+2 (rec 4); the list's waits exactly.
    let secs: Vec<u64> = clock.sleeps().iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, vec![1, 1, 2, 1, 2]);

    let letters = dlq.letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].record_id, "4");
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].data, rec(4));
    assert_eq!(letters[0].pointer.as_str(), "4");
    let err = letters[0].error.as_ref().unwrap();
    assert_eq!(err.message, "scripted failure of 4 at attempt 3");
    assert_eq!(err.causes, vec!["disk on fire".to_string()]);
    assert!(letters[0].first_attempt_time.unwrap() < letters[0].last_attempt_time);
    // The undecodable record: no attempt, raw bytes and the decode error.
    assert_eq!(letters[1].record_id, "undecodable@6");
    assert_eq!(letters[1].attempts, 0);
    assert_eq!(letters[1].data, b"{not json");
    assert!(
        letters[1]
            .error
            .as_ref()
            .unwrap()
            .message
            .starts_with("cannot decode record")
    );

    assert_eq!(
        (summary.succeeded, summary.dead_lettered, summary.failures),
        (5, 2, 6)
    );
    let cp = store.checkpoint().unwrap();
    assert_eq!(cp.start_pointer().as_str(), "7");
    assert!(cp.is_committed());
}

#[tokio::test]
async fn ignored_records_are_final_and_not_dead_lettered() {
    let dlq = MemoryDeadLetterQueue::default();
    let p = Scripted {
        ignore: vec!["1".into()],
        ..Default::default()
    };
    let mut c = Consumer::new(
        config(10, &[0], 3),
        memory_source(3),
        p.clone(),
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let s = c.run().await.unwrap();
    assert_eq!((s.succeeded, s.ignored, s.dead_lettered), (2, 1, 0));
    assert_eq!(
        c.checkpoint().unwrap().trackers()[1].status,
        Status::Ignored
    );
}

#[tokio::test]
async fn halt_stops_after_the_first_exhausted_record_and_a_restart_goes_on() {
    let store = MemoryCheckpointStore::default();
    let dlq = MemoryDeadLetterQueue::default();
    let source = memory_source(4);
    let p = Scripted::failing(&[("1", u32::MAX)]);
    let mut cfg = config(10, &[0], 2);
    cfg.on_exhausted = OnExhausted::Halt;
    let mut c = Consumer::new(
        cfg.clone(),
        source.clone(),
        p.clone(),
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let err = c.run().await.unwrap_err();
    assert!(
        matches!(err, Error::Halted { ref record_id, attempts: 2 } if record_id == "1"),
        "{err}"
    );
    assert_eq!(p.succeeded(), vec!["0"]);
    assert_eq!(dlq.letters().len(), 1);

    // Restart: the halted record stays exhausted (not retried), the rest runs.
    let p2 = Scripted::default();
    let mut c = Consumer::new(cfg, source, p2.clone(), store, dlq.clone())
        .unwrap()
        .with_clock(VirtualClock::default());
    c.run().await.unwrap();
    assert_eq!(p2.succeeded(), vec!["2", "3"]);
    assert_eq!(dlq.letters().len(), 1);
}

#[tokio::test]
async fn a_failing_dlq_is_retried_then_reported_and_resent_on_the_next_call() {
    let dlq = MemoryDeadLetterQueue::default();
    let store = MemoryCheckpointStore::default();
    let clock = VirtualClock::default();
    let p = Scripted::failing(&[("0", u32::MAX)]);
    let mut c = Consumer::new(
        config(10, &[0], 1),
        memory_source(2),
        p.clone(),
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(clock.clone());
    dlq.fail_next(2);
    // Two failures are absorbed by the DLQ retry policy (3 attempts).
    c.process_batch().await.unwrap();
    assert_eq!(dlq.letters().len(), 1);
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(1), Duration::from_secs(1)]
    );

    // Now the queue is down for longer than the policy: a clear error, the
    // batch stays open, and the next call sends the letter.
    let dlq = MemoryDeadLetterQueue::default();
    let p = Scripted::failing(&[("0", u32::MAX)]);
    let store = MemoryCheckpointStore::default();
    let mut c = Consumer::new(
        config(10, &[0], 1),
        memory_source(2),
        p,
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    dlq.fail_next(3);
    let err = c.process_batch().await.unwrap_err();
    assert!(
        matches!(err, Error::DeadLetter { ref record_id, .. } if record_id == "0"),
        "{err}"
    );
    // After an error the consumer starts again from what the store holds.
    assert!(c.checkpoint().is_none());
    let saved = store.clone().load().await.unwrap().unwrap().checkpoint;
    assert!(!saved.is_batch_finished());
    assert_eq!(saved.trackers()[0].status, Status::Exhausted);
    let r = c.process_batch().await.unwrap();
    assert_eq!((r.dead_lettered, r.succeeded), (1, 1));
    assert_eq!(dlq.letters().len(), 1);
}

/// A consumer of records 0..3 with `max_attempts` that "crashes" (its
/// future is dropped) during the first attempt of record 1, on a memory
/// store; then the parts a restarted consumer gets.
async fn crash_during_record_1(
    max_attempts: u32,
) -> (
    MemoryCheckpointStore,
    MemoryDeadLetterQueue,
    MemorySource,
    VirtualClock,
) {
    let store = MemoryCheckpointStore::default();
    let dlq = MemoryDeadLetterQueue::default();
    let source = memory_source(3);
    let clock = VirtualClock::default();
    let p = Scripted {
        hang: Some(("1".into(), 1)),
        ..Default::default()
    };
    let mut c = Consumer::new(
        config(10, &[0], max_attempts),
        source.clone(),
        p,
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(clock.clone());
    let crashed = tokio::time::timeout(Duration::from_millis(50), c.process_batch()).await;
    assert!(crashed.is_err(), "the batch was still running");
    (store, dlq, source, clock)
}

/// A crash during a record's *last* attempt, and a restart before its lock
/// expired: once the lock expires the attempt counts, the record is
/// exhausted and dead-lettered, and the batch goes on (it used to stop the
/// run with "already had 1 of 1 attempts").
#[tokio::test]
async fn a_crash_in_the_last_attempt_is_dead_lettered_once_the_lock_expires() {
    let (store, dlq, source, clock) = crash_during_record_1(1).await;
    let p2 = Scripted::default();
    let mut c = Consumer::new(
        config(10, &[0], 1),
        source,
        p2.clone(),
        store.clone(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(clock.clone());
    let r = c.process_batch().await.unwrap();
    assert_eq!((r.succeeded, r.dead_lettered), (1, 1));
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(60)]);
    assert_eq!(
        p2.attempts_of("1"),
        Vec::<u32>::new(),
        "no attempt over the limit"
    );
    assert_eq!(dlq.letters().len(), 1);
    assert_eq!(dlq.letters()[0].attempts, 1);
    assert!(store.checkpoint().unwrap().is_committed());
}

#[tokio::test]
async fn a_crash_mid_attempt_is_retried_after_the_lock_expires_and_counts() {
    let (store, dlq, source, clock) = crash_during_record_1(2).await;
    let cp = store.checkpoint().unwrap();
    assert_eq!(cp.trackers()[1].status, Status::InProgress);
    assert_eq!(cp.trackers()[1].attempts, 1);

    // The memory store is not exclusive: a new owner waits for the lock to
    // expire (60 s, in seconds), then the attempt counts as the 2nd.
    let p2 = Scripted::default();
    let mut c = Consumer::new(config(10, &[0], 2), source, p2.clone(), store.clone(), dlq)
        .unwrap()
        .with_clock(clock.clone());
    c.process_batch().await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(60)]);
    assert_eq!(p2.attempts_of("1"), vec![2]);
    assert_eq!(p2.succeeded(), vec!["1", "2"]);
}

#[tokio::test]
async fn attempts_survive_restarts_so_max_attempts_holds() {
    let store = MemoryCheckpointStore::default();
    let dlq = MemoryDeadLetterQueue::default();
    let source = memory_source(1);
    let clock = VirtualClock::default();
    // Every run: fail once, then "crash" inside the next attempt.
    for run in 0..3u32 {
        let p = Scripted {
            failures: [("0".to_string(), u32::MAX)].into(),
            hang: Some(("0".into(), 2 * run + 2)),
            ..Default::default()
        };
        let mut c = Consumer::new(
            config(10, &[0], 4),
            source.clone(),
            p,
            store.clone(),
            dlq.clone(),
        )
        .unwrap()
        .with_clock(clock.clone());
        let _ = tokio::time::timeout(Duration::from_millis(20), c.process_batch()).await;
        clock.advance(Duration::from_secs(61));
    }
    let cp = store.checkpoint().unwrap();
    let t = &cp.trackers()[0];
    assert_eq!(t.attempts, 4);
    assert!(
        t.is_done(),
        "exhausted after 4 attempts in total and dead-lettered"
    );
    assert_eq!(dlq.letters()[0].attempts, 4);
}

#[tokio::test]
async fn shutdown_during_a_backoff_saves_state_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let source = memory_source(3);
    let dlq = MemoryDeadLetterQueue::default();
    let token = CancellationToken::new();
    let p = Scripted {
        failures: [("1".to_string(), 1)].into(),
        cancel_on: Some(("1".into(), token.clone())),
        ..Default::default()
    };
    let store =
        FileCheckpointStore::open(dir.path(), "test-consumer", Durability::Process).unwrap();
    let mut c = Consumer::new(
        config(10, &[3600], 3),
        source.clone(),
        p.clone(),
        store,
        dlq.clone(),
    )
    .unwrap()
    .with_shutdown(token);
    // Real clock and a one-hour backoff: only the shutdown can end this.
    let s = tokio::time::timeout(Duration::from_secs(10), c.run())
        .await
        .unwrap()
        .unwrap();
    assert!(s.interrupted);
    assert_eq!(p.attempts_of("1"), vec![1]);
    drop(c);

    let store =
        FileCheckpointStore::open(dir.path(), "test-consumer", Durability::Process).unwrap();
    let p2 = Scripted::default();
    let clock = VirtualClock::default();
    let mut c = Consumer::new(config(10, &[3600], 3), source, p2.clone(), store, dlq)
        .unwrap()
        .with_clock(clock.clone());
    c.run().await.unwrap();
    assert_eq!(
        p2.attempts_of("1"),
        vec![2],
        "the attempt count carried over"
    );
    assert_eq!(p2.succeeded(), vec!["1", "2"]);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3600)]);
}

#[tokio::test]
async fn shutdown_during_processing_finishes_and_saves_the_record_in_hand() {
    let store = MemoryCheckpointStore::default();
    let token = CancellationToken::new();
    let p = Scripted {
        cancel_on: Some(("1".into(), token.clone())),
        ..Default::default()
    };
    let mut c = Consumer::new(
        config(10, &[0], 3),
        memory_source(4),
        p.clone(),
        store.clone(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default())
    .with_shutdown(token);
    let r = c.process_batch().await.unwrap();
    assert!(r.interrupted);
    assert_eq!(
        p.succeeded(),
        vec!["0", "1"],
        "the record in hand was finished, no other started"
    );
    let cp = store.checkpoint().unwrap();
    let statuses: Vec<Status> = cp.trackers().iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        vec![
            Status::Succeeded,
            Status::Succeeded,
            Status::Pending,
            Status::Pending
        ]
    );
    assert!(!cp.is_committed());
}

/// A record still running when the shutdown grace is over is dropped: the
/// batch stops with its attempt on record (in progress, counted), and no
/// other record starts.
#[tokio::test]
async fn a_record_running_past_the_shutdown_grace_is_dropped_with_its_attempt_counted() {
    let store = MemoryCheckpointStore::default();
    let token = CancellationToken::new();
    let p = Scripted {
        cancel_on: Some(("1".into(), token.clone())),
        hang: Some(("1".into(), 1)),
        ..Default::default()
    };
    let clock = VirtualClock::default();
    let mut cfg = config(10, &[0], 3);
    cfg.shutdown_grace = Duration::from_secs(30);
    let mut c = Consumer::new(
        cfg,
        memory_source(4),
        p.clone(),
        store.clone(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(clock.clone())
    .with_shutdown(token);
    let r = c.process_batch().await.unwrap();
    assert!(r.interrupted);
    assert_eq!(p.succeeded(), vec!["0"]);
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(30)],
        "the grace, waited once"
    );
    let cp = store.checkpoint().unwrap();
    let got: Vec<(Status, u32)> = cp
        .trackers()
        .iter()
        .map(|t| (t.status, t.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            (Status::Succeeded, 1),
            (Status::InProgress, 1),
            (Status::Pending, 0),
            (Status::Pending, 0)
        ]
    );
}

/// A store whose next commit write fails (a fault injection).
#[derive(Clone, Default)]
struct CommitFailsOnce {
    inner: MemoryCheckpointStore,
    failed: Arc<Mutex<bool>>,
}

impl CheckpointStore for CommitFailsOnce {
    async fn load(&mut self) -> unistream_core::Result<Option<StoredCheckpoint>> {
        self.inner.load().await
    }
    async fn save_batch(
        &mut self,
        cp: &Checkpoint,
        records: &[SourceRecord],
    ) -> unistream_core::Result<()> {
        self.inner.save_batch(cp, records).await
    }
    async fn save_tracker(&mut self, cp: &Checkpoint, i: usize) -> unistream_core::Result<()> {
        self.inner.save_tracker(cp, i).await
    }
    async fn sync(&mut self) -> unistream_core::Result<()> {
        self.inner.sync().await
    }
    async fn save_commit(&mut self, cp: &Checkpoint) -> unistream_core::Result<()> {
        let first = !std::mem::replace(&mut *self.failed.lock().unwrap(), true);
        if first {
            return Err(Error::backend("test store", "injected commit failure"));
        }
        self.inner.save_commit(cp).await
    }
}

/// The commit of a closed stream's last batch fails: the next call writes
/// it and reports the stream closed (it used to fail once more, trying to
/// start a batch after the end).
#[tokio::test]
async fn a_failed_last_commit_of_a_closed_stream_is_written_by_the_next_call() {
    let source = memory_source(2);
    source.close();
    let store = CommitFailsOnce::default();
    let mut cfg = config(10, &[0], 3);
    cfg.stop_at_end = false;
    let p = Scripted::default();
    let mut c = Consumer::new(
        cfg,
        source,
        p.clone(),
        store.clone(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    assert!(c.process_batch().await.is_err(), "the commit write failed");
    let r = c.process_batch().await.unwrap();
    assert!(r.closed, "{r:?}");
    assert!(store.inner.checkpoint().unwrap().is_closed());
    assert_eq!(p.succeeded(), vec!["0", "1"], "nothing processed twice");
}

#[tokio::test]
async fn a_closed_stream_ends_run_and_stays_closed() {
    let source = memory_source(5);
    source.close();
    let store = MemoryCheckpointStore::default();
    let mut cfg = config(2, &[0], 3);
    cfg.stop_at_end = false;
    let mut c = Consumer::new(
        cfg.clone(),
        source.clone(),
        Scripted::default(),
        store.clone(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let s = c.run().await.unwrap();
    assert!(s.closed);
    assert_eq!(s.succeeded, 5);
    let fetches = source.fetches();
    let mut c = Consumer::new(
        cfg,
        source.clone(),
        Scripted::default(),
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let r = c.process_batch().await.unwrap();
    assert!(r.closed);
    assert_eq!(
        source.fetches(),
        fetches,
        "a closed stream is not fetched again"
    );
}

#[tokio::test]
async fn run_polls_with_delay_until_shutdown_when_not_stopping_at_end() {
    let source = memory_source(1);
    let clock = VirtualClock::default();
    let token = CancellationToken::new();
    let mut cfg = config(10, &[0], 3);
    cfg.stop_at_end = false;
    cfg.delay = Duration::from_secs(1);
    let mut c = Consumer::new(
        cfg,
        source.clone(),
        Scripted::default(),
        MemoryCheckpointStore::default(),
        MemoryDeadLetterQueue::default(),
    )
    .unwrap()
    .with_clock(clock.clone())
    .with_shutdown(token.clone());
    let watcher = {
        let clock = clock.clone();
        let source = source.clone();
        tokio::spawn(async move {
            while clock.sleeps().len() < 3 {
                tokio::task::yield_now().await;
            }
            source.push(rec(1));
            while clock.sleeps().len() < 6 {
                tokio::task::yield_now().await;
            }
            token.cancel();
        })
    };
    let s = c.run().await.unwrap();
    watcher.await.unwrap();
    assert!(s.interrupted);
    assert_eq!(
        s.succeeded, 2,
        "the record appended while polling was consumed"
    );
    assert!(clock.sleeps().iter().all(|d| *d == Duration::from_secs(1)));
}

#[tokio::test]
async fn local_files_end_to_end_with_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.jsonl");
    let mut body = Vec::new();
    for i in 0..25 {
        body.extend_from_slice(&rec(i));
        body.push(b'\n');
    }
    body.extend_from_slice(b"garbage line\n");
    std::fs::write(&stream, &body).unwrap();
    let dlq_path = dir.path().join("dlq.jsonl");
    let open = |p: Scripted| {
        let store = FileCheckpointStore::open(
            dir.path().join("checkpoint"),
            "test-consumer",
            Durability::Process,
        )
        .unwrap();
        let dlq = FileDeadLetterQueue::open(&dlq_path, Durability::Process).unwrap();
        Consumer::new(config(4, &[0], 3), FileSource::new(&stream), p, store, dlq)
            .unwrap()
            .with_clock(VirtualClock::default())
    };
    // First run stops in the middle (hang = crash) on record 10.
    let p = Scripted {
        failures: [("3".to_string(), u32::MAX), ("10".to_string(), 1)].into(),
        hang: Some(("10".into(), 2)),
        ..Default::default()
    };
    let mut c = open(p.clone());
    let _ = tokio::time::timeout(Duration::from_millis(100), c.run()).await;
    drop(c);
    let p2 = Scripted::default();
    let mut c = open(p2.clone());
    let s = c.run().await.unwrap();
    assert_eq!(
        p2.attempts_of("10"),
        vec![3],
        "third attempt after 2 across the crash"
    );
    let mut all: Vec<String> = p.succeeded().into_iter().chain(p2.succeeded()).collect();
    all.sort_by_key(|s| s.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..25).filter(|i| *i != 3).map(|i| i.to_string()).collect();
    assert_eq!(
        all, expected,
        "every record exactly once here (no crash between result and save)"
    );
    let dlq_lines: Vec<serde_json::Value> = std::fs::read_to_string(&dlq_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dlq_lines.len(), 2);
    assert_eq!(dlq_lines[0]["record"]["id"], "3");
    assert_eq!(dlq_lines[0]["attempts"], 3);
    assert_eq!(dlq_lines[1]["record"], "garbage line");
    assert_eq!(
        dlq_lines[1]["pointer"],
        "25@".to_string() + &(body.len() - 13).to_string()
    );
    assert_eq!(s.dead_lettered, 1);
}
