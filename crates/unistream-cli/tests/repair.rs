//! `unistream checkpoint reset` and `retry` on a file checkpoint made by the
//! library, then a consumer run over it: the repair is what the consumer
//! does next.

use std::path::Path;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status};
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryDeadLetterQueue, MemorySource};
use unistream_core::record::{JsonCodec, Record, iso8601};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{BoxError, ErrorInfo};
use unistream_local::{Durability, FileCheckpointStore};

mod tool;
use tool::{text, unistream};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
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
}

fn rec(id: &str) -> Vec<u8> {
    let r = Rec {
        id: id.to_owned(),
        create_at: DateTime::from_timestamp(1_704_781_446, 0).unwrap(),
    };
    JsonCodec::default().to_vec(&r).unwrap()
}

/// Succeeds on every record, noting its id.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Processor for Seen {
    type Record = Rec;
    async fn process(&self, r: &Rec, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
        self.0.lock().unwrap().push(r.id.clone());
        Ok(Outcome::Succeeded)
    }
}

/// Runs a consumer over the checkpoint in `dir` and a stream of records
/// `s0`..`s4` to its end; the ids it processed, in order.
async fn consume(dir: &Path) -> Vec<String> {
    let source = MemorySource::new((0..5).map(|i| rec(&format!("s{i}"))).collect());
    source.close();
    let mut config = ConsumerConfig::new("c1");
    config.stop_at_end = true;
    let store = FileCheckpointStore::open(dir, "c1", Durability::Process).unwrap();
    let seen = Seen::default();
    let mut consumer = Consumer::new(
        config,
        source,
        seen.clone(),
        store,
        MemoryDeadLetterQueue::default(),
    )
    .unwrap();
    consumer.run().await.unwrap();
    seen.0.lock().unwrap().clone()
}

/// Batch 1 of three records: `a` succeeded, `b` exhausted (1 attempt
/// allowed) and dead-lettered, `c` exhausted and not yet dead-lettered.
async fn halted_batch(dir: &Path) {
    let now = Utc::now();
    let mut store = FileCheckpointStore::open(dir, "c1", Durability::Process).unwrap();
    store.load().await.unwrap();
    let mut cp = Checkpoint::new("c1", Pointer::from("0"), 1, Duration::from_secs(60));
    cp.start_batch(
        ["a".to_string(), "b".to_string(), "c".to_string()],
        Some(Pointer::from("3")),
        now,
    )
    .unwrap();
    let records: Vec<SourceRecord> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, id)| SourceRecord::new(Pointer::new(i.to_string()), rec(id)))
        .collect();
    store.save_batch(&cp, &records).await.unwrap();
    cp.begin_attempt(0, "L", now).unwrap();
    cp.succeed(0, "L", None, now).unwrap();
    for i in 1..3 {
        cp.begin_attempt(i, "L", now).unwrap();
        cp.fail(i, "L", ErrorInfo::new("the payment service said no"), now)
            .unwrap();
    }
    cp.mark_dead_lettered(1, now).unwrap();
    for i in 0..3 {
        store.save_tracker(&cp, i).await.unwrap();
    }
    store.sync().await.unwrap();
}

async fn load(dir: &Path) -> Checkpoint {
    let mut store = FileCheckpointStore::open(dir, "c1", Durability::Process).unwrap();
    store.load().await.unwrap().unwrap().checkpoint
}

#[tokio::test]
async fn retry_gives_an_exhausted_record_every_attempt_again_only_with_yes() {
    let dir = tempfile::tempdir().unwrap();
    halted_batch(dir.path()).await;
    let d = dir.path().to_str().unwrap();
    let base = ["checkpoint", "retry", "--dir", d, "--consumer", "c1"];

    // Without --yes: what it would do, exit 1, nothing changed.
    let out = unistream(&[&base[..], &["c"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("add --yes"), "{}", text(&out));
    assert_eq!(
        load(dir.path()).await.trackers()[2].status,
        Status::Exhausted
    );

    let out = unistream(&[&base[..], &["c", "--yes"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("gets 1 attempts again"),
        "{}",
        text(&out)
    );
    let cp = load(dir.path()).await;
    let c = &cp.trackers()[2];
    assert_eq!(
        (c.status, c.attempts, c.errors.is_none()),
        (Status::Pending, 0, true)
    );
    assert_eq!(cp.trackers()[1].status, Status::Exhausted, "b untouched");
    assert!(!cp.is_committed());

    // A dead-lettered record can be retried too; the output warns that its
    // letter is still in the queue.
    let out = unistream(&[&base[..], &["b", "--yes", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["dead_lettered"], true);
    assert_eq!(j["applied"], true);

    // A succeeded record, an unknown one: refused with the reason.
    let out = unistream(&[&base[..], &["a", "--yes"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("only a failed or exhausted record"),
        "{}",
        text(&out)
    );
    let out = unistream(&[&base[..], &["nope", "--yes"]].concat());
    assert!(text(&out).contains("no record \"nope\""), "{}", text(&out));

    // What the consumer does next: the two retried records, then the
    // stream from the batch's next pointer (3).
    assert_eq!(consume(dir.path()).await, ["b", "c", "s3", "s4"]);

    // Held by a running consumer: refused.
    halted_batch(dir.path()).await;
    let _held = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
    let out = unistream(&[&base[..], &["c", "--yes"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("locked by a running process"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn reset_drops_the_batch_and_the_next_one_starts_at_the_pointer() {
    let dir = tempfile::tempdir().unwrap();
    halted_batch(dir.path()).await;
    let d = dir.path().to_str().unwrap();
    let base = [
        "checkpoint",
        "reset",
        "--dir",
        d,
        "--consumer",
        "c1",
        "--to",
        "1",
    ];
    let out = unistream(&base);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("add --yes"), "{}", text(&out));
    assert!(!load(dir.path()).await.is_committed());

    let out = unistream(&[&base[..], &["--yes"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 of its 3 records not done"),
        "{}",
        text(&out)
    );
    let cp = load(dir.path()).await;
    assert!(cp.is_committed() && cp.trackers().is_empty());
    assert_eq!(cp.start_pointer().as_str(), "1");
    assert_eq!(cp.next_pointer().map(Pointer::as_str), Some("1"));
    assert_eq!(cp.batch_sequence(), 1);

    // `show` agrees.
    let out = unistream(&[
        "checkpoint",
        "show",
        "--dir",
        d,
        "--consumer",
        "c1",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["start_pointer"], "1");
    assert_eq!(j["records"], 0);

    // What the consumer does next: the stream from record 1 on.
    assert_eq!(consume(dir.path()).await, ["s1", "s2", "s3", "s4"]);

    // No checkpoint: nothing to reset.
    let out = unistream(&[
        "checkpoint",
        "reset",
        "--dir",
        d,
        "--consumer",
        "c2",
        "--to",
        "1",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no checkpoint"), "{}", text(&out));
}
