//! Faults of checkpoint writes that no emulator produces, against a fake
//! DynamoDB table and S3 bucket behind SDK clients mocked with
//! `aws-smithy-mocks` (`fake_aws/`): throttling (`ProvisionedThroughputExceeded`,
//! `ThrottlingException`) and internal errors on `PutObject`, `PutItem` and
//! `UpdateItem`, and a `ConditionalCheckFailedException` (another consumer
//! took the checkpoint over).
//!
//! The checks are behavioural: what a store opened afterwards loads, what the
//! fake table holds, which calls changed it — never the text of the
//! requests, so they hold whatever the item's layout.
//!
//! - A failed write is surfaced as an error (or retried by a store that
//!   retries) and changes nothing; the next successful write carries every
//!   change made before it.
//! - A conditional-check failure is `Error::CheckpointOwned`, and a consumer
//!   that gets it stops without writing or processing anything more.
//! - A consumer whose checkpoint write fails once — whichever write of the
//!   run it is — completes every record when run again: none lost, none
//!   over its attempts.

mod fake_aws;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fake_aws::{CHECKPOINT_WRITES, FakeAws, Fault, Op, Outcome};
use serde::{Deserialize, Serialize};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status, StoredCheckpoint};
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{
    Attempt, Consumer, ConsumerConfig, Outcome as Processed, Processor,
};
use unistream_core::memory::{MemoryDeadLetterQueue, MemorySource};
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{BoxError, Error, ErrorInfo};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;

const TABLE: &str = "checkpoints";
const BUCKET: &str = "checkpoint-bucket";
const CONSUMER: &str = "orders/shardId-000000000000";
const THROTTLES: [Fault; 3] = [
    Fault::ProvisionedThroughputExceeded,
    Fault::Throttling,
    Fault::InternalServerError,
];

fn store(fake: &FakeAws, client: &str) -> DynamoDbS3CheckpointStore {
    DynamoDbS3CheckpointStore::builder(fake.dynamodb(client), fake.s3(client))
        .table(TABLE)
        .key(CONSUMER)
        .bucket(BUCKET)
        .build()
        .expect("table, key and bucket are set")
}

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_781_446 + seconds, 0).expect("a valid time")
}

/// A checkpoint with a new batch of `n` records (ids `r0`...), starting at
/// `from`, and the batch's records.
fn batch(mut cp: Checkpoint, from: usize, n: usize) -> (Checkpoint, Vec<SourceRecord>) {
    cp.start_batch(
        (from..from + n).map(|i| format!("r{i}")),
        Some(Pointer::new((from + n).to_string())),
        t(from as i64),
    )
    .expect("a batch can start");
    let records = (from..from + n)
        .map(|i| {
            SourceRecord::new(
                Pointer::new(i.to_string()),
                format!("data {i}").into_bytes(),
            )
        })
        .collect();
    (cp, records)
}

fn first_batch(n: usize) -> (Checkpoint, Vec<SourceRecord>) {
    batch(
        Checkpoint::new(CONSUMER, Pointer::from("0"), 3, Duration::from_secs(60)),
        0,
        n,
    )
}

/// What must survive of each record: its id, status and attempts.
fn states(cp: &Checkpoint) -> Vec<(String, Status, u32)> {
    cp.trackers()
        .iter()
        .map(|t| (t.record_id.clone(), t.status, t.attempts))
        .collect()
}

/// The checkpoint as a store opened afresh (a restarted process) loads it.
async fn reopen(fake: &FakeAws) -> StoredCheckpoint {
    store(fake, "reader")
        .load()
        .await
        .expect("the checkpoint loads")
        .expect("there is a checkpoint")
}

fn assert_no_invalid_request(fake: &FakeAws) {
    let invalid = fake.invalid_requests();
    assert!(
        invalid.is_empty(),
        "requests DynamoDB would refuse: {invalid:#?}"
    );
}

/// A failed write of `op` is surfaced as an error naming the fault, or
/// retried by the store; either way the fault was reached. Returns whether
/// it failed.
fn surfaced(result: unistream_core::Result<()>, op: Op, fault: Fault, fake: &FakeAws) -> bool {
    assert_eq!(
        fake.planned_faults(),
        0,
        "the planned {fault:?} was reached"
    );
    match result {
        Ok(()) => false,
        Err(e @ Error::Backend { .. }) => {
            let text = format!("{e:?}");
            let code = fault.code(op);
            assert!(
                text.contains(code),
                "the error names the fault {code}: {text}"
            );
            true
        }
        Err(e) => panic!("{fault:?} surfaced as {e:?}, not as a backend error"),
    }
}

/// The fake itself: the store keeps its contract over it, as over moto.
struct OnFake(FakeAws);

impl unistream_test_support::checkpoint_contract::StoreUnderTest for OnFake {
    type Store = DynamoDbS3CheckpointStore;
    async fn open(&mut self) -> unistream_core::Result<DynamoDbS3CheckpointStore> {
        Ok(store(&self.0, "contract"))
    }
    async fn corrupt(&mut self) -> bool {
        self.0.corrupt_items();
        true
    }
    fn excludes_owners(&self) -> bool {
        true
    }
    fn summarizes_done_records(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_store_keeps_its_contract_over_the_fake() {
    use unistream_test_support::checkpoint_contract::{Checked, check_all};
    let fakes = Arc::new(Mutex::new(Vec::new()));
    let checked = check_all(|| {
        let fake = FakeAws::new();
        fakes.lock().unwrap().push(fake.clone());
        OnFake(fake)
    })
    .await;
    assert_eq!(checked, [Checked::Passed; 4]);
    for fake in fakes.lock().unwrap().iter() {
        assert_no_invalid_request(fake);
    }
}

#[tokio::test]
async fn a_throttled_tracker_write_loses_nothing_the_next_sync_carries_it() {
    for fault in THROTTLES {
        let fake = FakeAws::new();
        let mut s = store(&fake, "consumer");
        assert!(s.load().await.unwrap().is_none());
        let (mut cp, records) = first_batch(4);
        s.save_batch(&cp, &records).await.unwrap();

        // Record 0 starts; the write of its start is throttled.
        cp.begin_attempt(0, "me-1", t(1)).unwrap();
        s.save_tracker(&cp, 0).await.unwrap();
        fake.fail_next(Op::UpdateItem, fault);
        let before = fake.items();
        let failed = surfaced(s.sync().await, Op::UpdateItem, fault, &fake);
        if failed {
            assert_eq!(
                fake.items(),
                before,
                "{fault:?}: a failed write changes nothing"
            );
        }

        // Record 1 starts, record 0 is not saved again: the next successful
        // sync must carry both.
        cp.begin_attempt(1, "me-2", t(2)).unwrap();
        s.save_tracker(&cp, 1).await.unwrap();
        s.sync().await.expect("the next sync succeeds");
        assert_no_invalid_request(&fake);

        let loaded = reopen(&fake).await;
        assert_eq!(
            states(&loaded.checkpoint),
            states(&cp),
            "{fault:?} (surfaced: {failed}): the checkpoint after the next sync"
        );
        assert_eq!(loaded.checkpoint.trackers()[0].status, Status::InProgress);
        assert_eq!(loaded.records, records);
    }
}

#[tokio::test]
async fn a_throttled_result_and_commit_lose_nothing() {
    for fault in THROTTLES {
        let fake = FakeAws::new();
        let mut s = store(&fake, "consumer");
        s.load().await.unwrap();
        let (mut cp, records) = first_batch(3);
        s.save_batch(&cp, &records).await.unwrap();
        for i in 0..3 {
            cp.begin_attempt(i, "me-1", t(1)).unwrap();
            s.save_tracker(&cp, i).await.unwrap();
        }
        s.sync().await.unwrap();

        // Results: 0 succeeds, 1 fails (retried later), 2 is exhausted
        // after its third attempt. Their write is throttled.
        cp.succeed(0, "me-1", None, t(2)).unwrap();
        cp.fail(1, "me-1", ErrorInfo::new("boom"), t(2)).unwrap();
        for n in 2..=3 {
            cp.fail(2, "me-1", ErrorInfo::new("boom"), t(n)).unwrap();
            cp.begin_attempt(2, "me-1", t(n)).unwrap();
        }
        cp.fail(2, "me-1", ErrorInfo::new("boom"), t(4)).unwrap();
        cp.mark_dead_lettered(2, t(4)).unwrap();
        for i in 0..3 {
            s.save_tracker(&cp, i).await.unwrap();
        }
        fake.fail_next(Op::UpdateItem, fault);
        let before = fake.items();
        if surfaced(s.sync().await, Op::UpdateItem, fault, &fake) {
            assert_eq!(
                fake.items(),
                before,
                "{fault:?}: a failed write changes nothing"
            );
        }
        s.sync().await.expect("the next sync succeeds");
        let loaded = reopen(&fake).await;
        assert_eq!(
            states(&loaded.checkpoint),
            states(&cp),
            "{fault:?}: results"
        );
        assert!(loaded.checkpoint.trackers()[2].dead_lettered);

        // The batch finishes; the commit is throttled, then written again.
        let mut s = store(&fake, "consumer-2");
        let mut cp = s.load().await.unwrap().expect("a checkpoint").checkpoint;
        cp.begin_attempt(1, "me-2", t(5)).unwrap();
        s.save_tracker(&cp, 1).await.unwrap();
        s.sync().await.unwrap();
        cp.succeed(1, "me-2", None, t(6)).unwrap();
        s.save_tracker(&cp, 1).await.unwrap();
        cp.commit().unwrap();
        fake.fail_next(Op::UpdateItem, fault);
        let before = fake.items();
        if surfaced(s.save_commit(&cp).await, Op::UpdateItem, fault, &fake) {
            assert_eq!(
                fake.items(),
                before,
                "{fault:?}: a failed commit changes nothing"
            );
            s.save_commit(&cp)
                .await
                .expect("the commit is written again");
        }
        assert_no_invalid_request(&fake);
        let loaded = reopen(&fake).await.checkpoint;
        assert!(loaded.is_committed(), "{fault:?}: the commit is on record");
        assert_eq!(loaded.start_pointer(), &Pointer::from("3"));
        assert_eq!(states(&loaded), states(&cp), "{fault:?}: committed batch");
    }
}

#[tokio::test]
async fn a_throttled_batch_write_leaves_the_previous_batch_and_is_written_again() {
    for fault in THROTTLES {
        for op in [Op::PutObject, Op::PutItem] {
            let fake = FakeAws::new();
            let mut s = store(&fake, "consumer");
            s.load().await.unwrap();

            // The first batch: a failed write leaves no checkpoint at all.
            let (mut cp, records) = first_batch(2);
            fake.fail_next(op, fault);
            if surfaced(s.save_batch(&cp, &records).await, op, fault, &fake) {
                assert!(fake.items().is_empty(), "{fault:?} on {op:?}: no item yet");
                s.save_batch(&cp, &records).await.expect("written again");
            }
            for i in 0..2 {
                cp.begin_attempt(i, "me-1", t(1)).unwrap();
                s.save_tracker(&cp, i).await.unwrap();
            }
            s.sync().await.unwrap();
            for i in 0..2 {
                cp.succeed(i, "me-1", None, t(2)).unwrap();
                s.save_tracker(&cp, i).await.unwrap();
            }
            cp.commit().unwrap();
            s.save_commit(&cp).await.unwrap();

            // The second batch: a failed write leaves the first, committed.
            let (mut cp, records) = batch(cp, 2, 3);
            fake.fail_next(op, fault);
            let before = fake.items();
            if surfaced(s.save_batch(&cp, &records).await, op, fault, &fake) {
                assert_eq!(
                    fake.items(),
                    before,
                    "{fault:?} on {op:?}: the first batch stays"
                );
                s.save_batch(&cp, &records).await.expect("written again");
            }
            cp.begin_attempt(0, "me-2", t(3)).unwrap();
            s.save_tracker(&cp, 0).await.unwrap();
            s.sync().await.unwrap();
            assert_no_invalid_request(&fake);

            let loaded = reopen(&fake).await;
            assert_eq!(loaded.checkpoint.batch_sequence(), 2, "{fault:?} on {op:?}");
            assert_eq!(loaded.checkpoint.start_pointer(), &Pointer::from("2"));
            assert_eq!(
                states(&loaded.checkpoint),
                states(&cp),
                "{fault:?} on {op:?}"
            );
            assert_eq!(
                loaded.records, records,
                "{fault:?} on {op:?}: the batch's records"
            );
        }
    }
}

#[tokio::test]
async fn a_conditional_check_failure_is_checkpoint_owned() {
    // Injected on each kind of item write.
    for op in [Op::PutItem, Op::UpdateItem] {
        let fake = FakeAws::new();
        let mut s = store(&fake, "consumer");
        s.load().await.unwrap();
        let (mut cp, records) = first_batch(2);
        cp.begin_attempt(0, "me-1", t(1)).unwrap();
        fake.fail_next(op, Fault::ConditionalCheckFailed);
        let result = match op {
            Op::PutItem => s.save_batch(&cp, &records).await,
            _ => {
                s.save_batch(&cp, &records).await.unwrap();
                s.save_tracker(&cp, 0).await.unwrap();
                s.sync().await
            }
        };
        assert_eq!(fake.planned_faults(), 0);
        assert!(
            matches!(result, Err(Error::CheckpointOwned { .. })),
            "a conditional check failure on {op:?} is CheckpointOwned: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_store_whose_checkpoint_was_taken_over_writes_nothing() {
    let fake = FakeAws::new();
    let mut a = store(&fake, "a");
    a.load().await.unwrap();
    let (mut cp, records) = first_batch(2);
    a.save_batch(&cp, &records).await.unwrap();

    // Another consumer loads the checkpoint: it owns it from now on.
    let mut b = store(&fake, "b");
    let taken = b.load().await.unwrap().expect("a checkpoint").checkpoint;
    let items = fake.items();
    let taken_at = fake.calls().len();

    cp.begin_attempt(0, "a-1", t(1)).unwrap();
    a.save_tracker(&cp, 0).await.unwrap();
    let sync = a.sync().await;
    assert!(
        matches!(sync, Err(Error::CheckpointOwned { .. })),
        "sync: {sync:?}"
    );
    cp.fail(0, "a-1", ErrorInfo::new("x"), t(2)).unwrap();
    a.save_tracker(&cp, 0).await.unwrap();
    cp.begin_attempt(0, "a-2", t(2)).unwrap();
    cp.succeed(0, "a-2", None, t(3)).unwrap();
    cp.begin_attempt(1, "a-2", t(3)).unwrap();
    cp.succeed(1, "a-2", None, t(3)).unwrap();
    cp.commit().unwrap();
    let commit = a.save_commit(&cp).await;
    assert!(
        matches!(commit, Err(Error::CheckpointOwned { .. })),
        "commit: {commit:?}"
    );
    let (cp2, records2) = batch(cp, 2, 2);
    let next = a.save_batch(&cp2, &records2).await;
    assert!(
        matches!(next, Err(Error::CheckpointOwned { .. })),
        "next batch: {next:?}"
    );

    let after: Vec<_> = fake.calls().split_off(taken_at);
    assert!(
        after
            .iter()
            .all(|c| !c.wrote() || !matches!(c.op, Op::PutItem | Op::UpdateItem)),
        "the displaced store changed the item: {after:?}"
    );
    assert_eq!(fake.items(), items, "the item is as the new owner left it");
    assert_no_invalid_request(&fake);
    // The new owner goes on from what it loaded.
    let mut cp = taken;
    cp.begin_attempt(0, "b-1", t(4)).unwrap();
    b.save_tracker(&cp, 0).await.unwrap();
    b.sync().await.expect("the new owner writes");
    assert_eq!(states(&reopen(&fake).await.checkpoint), states(&cp));
}

// ---------------------------------------------------------------------------
// The consumer over the store.

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ev {
    id: String,
    key: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
}

impl Record for Ev {
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

const RECORDS: usize = 14;
const MAX_ATTEMPTS: u32 = 3;
/// Fails every attempt: dead-lettered.
const POISON: &str = "7";

fn stream() -> MemorySource {
    let source = MemorySource::new(
        (0..RECORDS)
            .map(|i| {
                format!(
                    r#"{{"id": "{i}", "key": "k{}", "create_at": "2024-01-09T06:24:06.759449+00:00"}}"#,
                    i % 5
                )
                .into_bytes()
            })
            .collect(),
    );
    // Open: a run stops once it has caught up (`stop_at_end`).
    source
}

/// Another consumer's store, loaded (taking the checkpoint over) when the
/// processor starts this record.
type Takeover = (String, Arc<tokio::sync::Mutex<DynamoDbS3CheckpointStore>>);

#[derive(Default)]
struct Log {
    /// (id, attempt number, succeeded) of every attempt, in order.
    attempts: Vec<(String, u32, bool)>,
    /// How many attempts had started when the takeover happened.
    taken_over_after: Option<usize>,
}

/// Fails the first attempt of every third record and every attempt of
/// [`POISON`]; logs every attempt.
#[derive(Clone, Default)]
struct Proc {
    log: Arc<Mutex<Log>>,
    takeover: Option<Takeover>,
}

impl Processor for Proc {
    type Record = Ev;

    async fn process(&self, r: &Ev, a: &Attempt<'_>) -> Result<Processed, BoxError> {
        let not_yet = self.log.lock().unwrap().taken_over_after.is_none();
        if let Some((id, other)) = &self.takeover
            && *id == r.id
            && not_yet
        {
            let mut other = other.lock().await;
            // Its claim fails if this consumer wrote between its read and
            // its claim: it loads again, as a restarting consumer would.
            let mut tries = 0;
            while let Err(e) = other.load().await {
                tries += 1;
                assert!(tries < 5, "the other consumer cannot load: {e:?}");
            }
            let mut log = self.log.lock().unwrap();
            log.taken_over_after = Some(log.attempts.len());
        }
        let n: usize = r.id.parse()?;
        let ok = r.id != POISON && !(n % 3 == 1 && a.number == 1);
        self.log
            .lock()
            .unwrap()
            .attempts
            .push((r.id.clone(), a.number, ok));
        if ok {
            Ok(Processed::Succeeded)
        } else {
            Err(format!("record {} fails attempt {}", r.id, a.number).into())
        }
    }
}

fn config(concurrency: usize) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(CONSUMER);
    c.limit = 4;
    c.concurrency = concurrency;
    c.retry = RetryPolicy::waits([Duration::from_secs(1)]).with_max_attempts(MAX_ATTEMPTS);
    c.lock_expire = Duration::from_secs(60);
    c.stop_at_end = true;
    c
}

type TestConsumer = Consumer<MemorySource, Proc, DynamoDbS3CheckpointStore, MemoryDeadLetterQueue>;

fn consumer(
    fake: &FakeAws,
    proc: Proc,
    dlq: &MemoryDeadLetterQueue,
    concurrency: usize,
) -> TestConsumer {
    Consumer::new(
        config(concurrency),
        stream(),
        proc,
        store(fake, "consumer"),
        dlq.clone(),
    )
    .expect("a valid configuration")
    .with_clock(VirtualClock::default())
}

/// Every record succeeded or is in the DLQ; no attempt number ran twice,
/// none over the maximum; the poison record is dead-lettered.
fn assert_complete(what: &str, log: &Log, dlq: &MemoryDeadLetterQueue) {
    let succeeded: HashSet<&str> = log
        .attempts
        .iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(id, _, _)| id.as_str())
        .collect();
    let letters = dlq.letters();
    let dead: HashSet<&str> = letters.iter().map(|l| l.record_id.as_str()).collect();
    let lost: Vec<usize> = (0..RECORDS)
        .filter(|i| {
            let id = i.to_string();
            !succeeded.contains(id.as_str()) && !dead.contains(id.as_str())
        })
        .collect();
    assert!(lost.is_empty(), "{what}: records lost: {lost:?}");
    assert!(
        dead.contains(POISON),
        "{what}: the poison record is dead-lettered"
    );
    let mut seen = HashSet::new();
    let mut per_record: HashMap<&str, u32> = HashMap::new();
    for (id, n, _) in &log.attempts {
        assert!(
            seen.insert((id.as_str(), *n)),
            "{what}: attempt {n} of record {id} ran twice"
        );
        assert!(*n <= MAX_ATTEMPTS, "{what}: attempt {n} of record {id}");
        *per_record.entry(id).or_default() += 1;
    }
    assert!(
        per_record.values().all(|n| *n <= MAX_ATTEMPTS),
        "{what}: attempts per record {per_record:?}"
    );
}

/// The checkpoint is committed past the last record.
async fn assert_at_end(what: &str, fake: &FakeAws) {
    let last = reopen(fake).await.checkpoint;
    assert!(
        last.is_committed() && last.start_pointer() == &Pointer::new(RECORDS.to_string()),
        "{what}: the checkpoint is not at the end: {last:?}"
    );
}

#[tokio::test]
async fn a_consumer_whose_checkpoint_write_fails_once_completes_every_record_when_run_again() {
    for concurrency in [1, 4] {
        // A clean run: how many checkpoint writes a run makes.
        let fake = FakeAws::new();
        let dlq = MemoryDeadLetterQueue::default();
        let proc = Proc::default();
        let summary = consumer(&fake, proc.clone(), &dlq, concurrency)
            .run()
            .await
            .expect("a clean run");
        assert!(!summary.interrupted);
        assert_complete("clean run", &proc.log.lock().unwrap(), &dlq);
        assert_at_end("clean run", &fake).await;
        let writes = fake
            .calls()
            .iter()
            .filter(|c| c.client == "consumer" && CHECKPOINT_WRITES.contains(&c.op))
            .count();
        assert!(writes > RECORDS / 4, "{writes} checkpoint writes");

        // Each of those writes fails once, in a run of its own.
        for n in 1..=writes {
            for fault in [Fault::ProvisionedThroughputExceeded, Fault::Throttling] {
                let what = format!("concurrency {concurrency}, write {n} of {writes}: {fault:?}");
                let fake = FakeAws::new();
                let dlq = MemoryDeadLetterQueue::default();
                let proc = Proc::default();
                let mut c = consumer(&fake, proc.clone(), &dlq, concurrency);
                fake.fail_nth(CHECKPOINT_WRITES, n, fault);
                let first = c.run().await;
                assert_eq!(fake.planned_faults(), 0, "{what}: the fault was reached");
                match first {
                    Err(Error::Backend { .. }) => {
                        c.run()
                            .await
                            .unwrap_or_else(|e| panic!("{what}: run again: {e:?}"));
                    }
                    // A store that retried the write itself.
                    Ok(_) => {}
                    Err(e) => panic!("{what}: {e:?}"),
                }
                assert_no_invalid_request(&fake);
                assert_complete(&what, &proc.log.lock().unwrap(), &dlq);
                assert_at_end(&what, &fake).await;
            }
        }
    }
}

#[tokio::test]
async fn a_consumer_whose_checkpoint_is_taken_over_stops_without_writing() {
    for concurrency in [1, 4] {
        let fake = FakeAws::new();
        let dlq = MemoryDeadLetterQueue::default();
        let other = Arc::new(tokio::sync::Mutex::new(store(&fake, "other")));
        let proc = Proc {
            takeover: Some(("9".into(), other)),
            ..Proc::default()
        };
        let mut c = consumer(&fake, proc.clone(), &dlq, concurrency);
        let result = c.run().await;
        assert!(
            matches!(result, Err(Error::CheckpointOwned { .. })),
            "concurrency {concurrency}: {result:?}"
        );
        let calls = fake.calls();
        let claimed = calls
            .iter()
            .rposition(|c| c.client == "other" && c.op == Op::UpdateItem)
            .expect("the other consumer claimed the checkpoint");
        let after: Vec<_> = calls[claimed + 1..]
            .iter()
            .filter(|c| c.client == "consumer")
            .collect();
        assert!(
            after.iter().all(|c| !c.wrote()),
            "concurrency {concurrency}: written after the takeover: {after:?}"
        );
        assert_eq!(
            after.last().map(|c| &c.outcome),
            Some(&Outcome::ConditionFailed),
            "concurrency {concurrency}: it stops at its refused write"
        );
        // It starts nothing once its write is refused: only attempts in
        // flight at the takeover may finish.
        let log = proc.log.lock().unwrap();
        let at = log.taken_over_after.expect("the takeover happened");
        assert!(
            log.attempts.len() <= at + concurrency,
            "concurrency {concurrency}: {} attempts after the takeover",
            log.attempts.len() - at
        );
        assert_no_invalid_request(&fake);
    }
}
