//! De-aggregation of KPL aggregated records by `KinesisSource`, with the SDK
//! client mocked by `aws-smithy-mocks` (named as such): user records with
//! their own pointers and keys, a fetch limit that cuts an aggregate, a
//! resume from inside an aggregate, a corrupted aggregate sent whole to the
//! dead-letter queue by the consumer, de-aggregation turned off.

use std::sync::Mutex;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use unistream_core::BoxError;
use unistream_core::clock::VirtualClock;
use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue};
use unistream_core::record::iso8601;
use unistream_core::source::{Pointer, Source};
use unistream_kinesis::aggregation::{self, UserRecord};
use unistream_kinesis::{KinesisSource, StartingPosition};

fn json(id: &str) -> Vec<u8> {
    format!(r#"{{"id": "{id}", "create_at": "2024-01-09T06:24:06.759449+00:00"}}"#).into_bytes()
}

fn plain(seq: &str, key: &str, data: Vec<u8>) -> Record {
    Record::builder()
        .sequence_number(seq)
        .partition_key(key)
        .data(Blob::new(data))
        .build()
        .unwrap()
}

/// Five user records u0..u4, keys ka, kb, ka, kb, ka; u1 with an explicit
/// hash key.
fn users() -> Vec<UserRecord> {
    (0..5)
        .map(|i| {
            let key = if i % 2 == 0 { "ka" } else { "kb" };
            let ehk = (i == 1).then(|| "170141183460469231731687303715884105728".to_owned());
            UserRecord::new(key, ehk, json(&format!("u{i}")))
        })
        .collect()
}

fn aggregate_record(seq: &str) -> Record {
    plain(seq, "ka", aggregation::encode(&users()))
}

fn corrupted_bytes() -> Vec<u8> {
    let mut bytes = aggregation::encode(&users());
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    bytes
}

fn source(client: Client) -> KinesisSource {
    KinesisSource::new(
        client,
        "s",
        "shardId-000000000000",
        StartingPosition::TrimHorizon,
    )
    .with_clock(VirtualClock::default())
}

fn pointers(f: &unistream_core::source::Fetched) -> Vec<&str> {
    f.records.iter().map(|r| r.pointer.as_str()).collect()
}

#[tokio::test]
async fn each_user_record_has_its_own_pointer_and_keys_and_plain_records_keep_theirs() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let records = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(plain("1", "p", json("p1")))
            .records(aggregate_record("2"))
            .records(plain("3", "q", json("p3")))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &records]);
    let mut source = source(client);
    let f = source.fetch(&Pointer::from("0"), 100).await.unwrap();
    assert_eq!(pointers(&f), ["1", "2:0", "2:1", "2:2", "2:3", "2:4", "3"]);
    assert_eq!(f.next_pointer.unwrap().as_str(), "3");
    let keys: Vec<_> = f
        .records
        .iter()
        .map(|r| r.partition_key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, ["p", "ka", "kb", "ka", "kb", "ka", "q"]);
    assert_eq!(
        f.records[2].explicit_hash_key.as_deref(),
        Some("170141183460469231731687303715884105728")
    );
    assert_eq!(f.records[1].explicit_hash_key, None);
    for (r, i) in f.records[1..6].iter().zip(0..) {
        assert_eq!(r.data, json(&format!("u{i}")));
        assert_eq!(r.error, None);
    }
    assert_eq!(f.records[0].data, json("p1"));
}

#[tokio::test]
async fn a_limit_inside_an_aggregate_hands_out_the_rest_next_without_reading_again() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let first = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-1"))
        .then_output(|| {
            GetRecordsOutput::builder()
                .records(plain("1", "p", json("p1")))
                .records(aggregate_record("2"))
                .records(plain("3", "q", json("p3")))
                .next_shard_iterator("it-2")
                .build()
                .unwrap()
        });
    let next = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-2"))
        .then_output(|| {
            GetRecordsOutput::builder()
                .set_records(Some(vec![]))
                .next_shard_iterator("it-3")
                .build()
                .unwrap()
        });
    let client = mock_client!(
        aws_sdk_kinesis,
        RuleMode::Sequential,
        [&iterator, &first, &next]
    );
    let mut source = source(client);
    let a = source.fetch(&Pointer::from("0"), 3).await.unwrap();
    assert_eq!(pointers(&a), ["1", "2:0", "2:1"]);
    let from = a.next_pointer.unwrap();
    assert_eq!(from.as_str(), "2:1");
    let b = source.fetch(&from, 3).await.unwrap();
    assert_eq!(pointers(&b), ["2:2", "2:3", "2:4"]);
    let c = source
        .fetch(b.next_pointer.as_ref().unwrap(), 3)
        .await
        .unwrap();
    assert_eq!(pointers(&c), ["3"]);
    assert_eq!(first.num_calls(), 1, "the aggregate was read once");
    // The iterator after the first read is used once the records are out.
    let d = source
        .fetch(c.next_pointer.as_ref().unwrap(), 3)
        .await
        .unwrap();
    assert!(d.records.is_empty());
    assert_eq!(d.next_pointer.unwrap().as_str(), "3");
    assert_eq!((iterator.num_calls(), next.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_restart_inside_an_aggregate_resumes_at_the_next_user_record() {
    let iterator = mock!(Client::get_shard_iterator)
        .match_requests(|r| {
            r.shard_iterator_type() == Some(&ShardIteratorType::AtSequenceNumber)
                && r.starting_sequence_number() == Some("2")
        })
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-at-2")
                .build()
        });
    let records = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-at-2"))
        .then_output(|| {
            GetRecordsOutput::builder()
                .records(aggregate_record("2"))
                .records(plain("3", "q", json("p3")))
                .next_shard_iterator("it-2")
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &records]);
    // A new source (a restart) from the checkpoint "2:2": u0..u2 were done.
    let mut source = source(client);
    let f = source.fetch(&Pointer::from("2:2"), 100).await.unwrap();
    assert_eq!(pointers(&f), ["2:3", "2:4", "3"]);
    assert_eq!(f.records[0].data, json("u3"));
    assert_eq!(iterator.num_calls(), 1);
}

#[tokio::test]
async fn a_restart_after_the_last_user_record_of_an_aggregate_skips_it_whole() {
    let iterator = mock!(Client::get_shard_iterator)
        .match_requests(|r| {
            r.shard_iterator_type() == Some(&ShardIteratorType::AtSequenceNumber)
                && r.starting_sequence_number() == Some("2")
        })
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-at-2")
                .build()
        });
    let records = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(aggregate_record("2"))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &records]);
    let mut source = source(client);
    let f = source.fetch(&Pointer::from("2:4"), 100).await.unwrap();
    assert!(f.records.is_empty(), "{:?}", pointers(&f));
    assert_eq!(f.next_pointer.unwrap().as_str(), "2:4");
}

#[tokio::test]
async fn a_corrupted_aggregate_is_handed_out_whole_with_its_error() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let records = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(plain("7", "kc", corrupted_bytes()))
            .records(plain(
                "8",
                "kd",
                aggregation::encode(&users())[..30].to_vec(),
            ))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &records]);
    let mut source = source(client);
    let f = source.fetch(&Pointer::from("6"), 100).await.unwrap();
    assert_eq!(pointers(&f), ["7", "8"]);
    assert_eq!(f.records[0].data, corrupted_bytes());
    assert_eq!(f.records[0].partition_key.as_deref(), Some("kc"));
    let error = f.records[0].error.as_deref().unwrap();
    assert!(error.contains("bad MD5 digest"), "{error}");
    assert!(error.contains("Kinesis record 7"), "{error}");
    let error = f.records[1].error.as_deref().unwrap();
    assert!(
        error.contains("corrupted or truncated KPL aggregate"),
        "{error}"
    );
}

#[tokio::test]
async fn with_deaggregation_off_an_aggregate_is_one_record() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let records = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(aggregate_record("2"))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &records]);
    let mut source = source(client).with_deaggregation(false);
    let f = source.fetch(&Pointer::from("1"), 100).await.unwrap();
    assert_eq!(pointers(&f), ["2"]);
    assert_eq!(f.records[0].data, aggregation::encode(&users()));
    assert_eq!(f.records[0].error, None);
}

#[tokio::test]
async fn the_end_of_a_shard_comes_after_the_last_user_record() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let end = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(aggregate_record("2"))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &end]);
    let mut source = source(client);
    let a = source.fetch(&Pointer::from("1"), 4).await.unwrap();
    assert_eq!(pointers(&a), ["2:0", "2:1", "2:2", "2:3"]);
    assert_eq!(a.next_pointer.as_ref().unwrap().as_str(), "2:3");
    let b = source
        .fetch(a.next_pointer.as_ref().unwrap(), 4)
        .await
        .unwrap();
    assert_eq!(pointers(&b), ["2:4"]);
    assert_eq!(b.next_pointer, None, "closed after the last user record");
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Event {
    id: String,
    #[serde(with = "iso8601")]
    create_at: chrono::DateTime<chrono::Utc>,
}

impl unistream_core::record::Record for Event {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.create_at
    }
}

/// (id, pointer, partition key, explicit hash key) of a processed record.
type Sighting = (String, String, Option<String>, Option<String>);

/// Remembers each record processed.
#[derive(Default)]
struct Seen(Mutex<Vec<Sighting>>);

impl Processor for Seen {
    type Record = Event;
    async fn process(&self, e: &Event, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        self.0.lock().unwrap().push((
            e.id.clone(),
            attempt.pointer.to_string(),
            attempt.partition_key.map(str::to_owned),
            attempt.explicit_hash_key.map(str::to_owned),
        ));
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
async fn the_consumer_processes_user_records_and_dead_letters_a_corrupted_aggregate_whole() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let end = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(plain("1", "p", json("p1")))
            .records(aggregate_record("2"))
            .records(plain("3", "kc", corrupted_bytes()))
            .records(plain("4", "q", json("p4")))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &end]);
    let dlq = MemoryDeadLetterQueue::default();
    let mut consumer = Consumer::new(
        ConsumerConfig::new("c"),
        source(client),
        Seen::default(),
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let summary = consumer.run().await.unwrap();
    assert!(summary.closed);
    assert_eq!((summary.succeeded, summary.dead_lettered), (7, 1));
    let seen = consumer.processor().0.lock().unwrap().clone();
    let ids: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, ["p1", "u0", "u1", "u2", "u3", "u4", "p4"]);
    assert_eq!(seen[2].1, "2:1");
    assert_eq!(seen[2].2.as_deref(), Some("kb"));
    assert_eq!(
        seen[2].3.as_deref(),
        Some("170141183460469231731687303715884105728")
    );
    assert_eq!(seen[0].2.as_deref(), Some("p"));
    let letters = dlq.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].data, corrupted_bytes(), "the raw bytes, whole");
    assert_eq!(letters[0].pointer.as_str(), "3");
    assert_eq!(letters[0].partition_key.as_deref(), Some("kc"));
    let error = letters[0].error.as_ref().unwrap();
    assert!(error.message.contains("bad MD5 digest"), "{error:?}");
    assert_eq!(letters[0].attempts, 0, "never given to the processor");
}

#[tokio::test]
async fn a_corrupted_aggregate_restored_from_a_checkpoint_gets_its_error_again() {
    use unistream_core::source::SourceRecord;
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, []);
    let source = source(client);
    let restored = source.restore(SourceRecord::new(Pointer::from("7"), corrupted_bytes()));
    let error = restored.error.as_deref().unwrap();
    assert!(error.contains("bad MD5 digest"), "{error}");
    assert!(error.contains("Kinesis record 7"), "{error}");
    // A user record, a plain record: as they were.
    for r in [
        SourceRecord::new(Pointer::from("2:1"), json("u1")),
        SourceRecord::new(Pointer::from("3"), json("p3")),
        SourceRecord::new(Pointer::from("2"), aggregation::encode(&users())),
    ] {
        assert_eq!(source.restore(r.clone()), r);
    }
    let off = source_off();
    let r = SourceRecord::new(Pointer::from("7"), corrupted_bytes());
    assert_eq!(off.restore(r.clone()), r, "de-aggregation off: as it was");
}

fn source_off() -> KinesisSource {
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, []);
    source(client).with_deaggregation(false)
}

/// Hangs on the first attempt of record `p1` (a crash), succeeds otherwise.
struct HangOnP1;

impl Processor for HangOnP1 {
    type Record = Event;
    async fn process(&self, e: &Event, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if e.id == "p1" && attempt.number == 1 {
            std::future::pending::<()>().await;
        }
        Ok(Outcome::Succeeded)
    }
}

#[tokio::test]
async fn after_a_restart_mid_batch_a_corrupted_aggregate_still_goes_to_the_dlq_with_its_error() {
    use unistream_local::{Durability, FileCheckpointStore};
    let dir = tempfile::tempdir().unwrap();
    let open = || FileCheckpointStore::open(dir.path(), "c", Durability::Process).unwrap();
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let batch = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(plain("1", "p", json("p1")))
            .records(plain("3", "kc", corrupted_bytes()))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &batch]);
    let dlq = MemoryDeadLetterQueue::default();
    let mut consumer = Consumer::new(
        ConsumerConfig::new("c"),
        source(client),
        HangOnP1,
        open(),
        dlq.clone(),
    )
    .unwrap();
    let crashed = tokio::time::timeout(std::time::Duration::from_secs(2), consumer.run()).await;
    assert!(crashed.is_err(), "hangs on p1");
    drop(consumer);
    assert!(dlq.letters().is_empty(), "the crash came first");

    // The restart: the batch comes from the checkpoint, then the shard ends.
    let after = mock!(Client::get_shard_iterator)
        .match_requests(|r| r.starting_sequence_number() == Some("3"))
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-3")
                .build()
        });
    let end = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .set_records(Some(vec![]))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&after, &end]);
    let mut consumer = Consumer::new(
        ConsumerConfig::new("c"),
        source(client),
        HangOnP1,
        open(),
        dlq.clone(),
    )
    .unwrap();
    let summary = consumer.run().await.unwrap();
    assert!(summary.closed);
    let letters = dlq.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].data, corrupted_bytes());
    let error = &letters[0].error.as_ref().unwrap().message;
    assert!(error.contains("bad MD5 digest"), "{error}");
}

#[tokio::test]
async fn an_undecodable_user_record_goes_to_the_dlq_alone_with_its_own_key_and_pointer() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let end = mock!(Client::get_records).then_output(|| {
        let users = vec![
            UserRecord::new("ka", None, json("u0")),
            UserRecord::new("kbad", None, b"not json".to_vec()),
            UserRecord::new("ka", None, json("u2")),
        ];
        GetRecordsOutput::builder()
            .records(plain("5", "outer", aggregation::encode(&users)))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &end]);
    let dlq = MemoryDeadLetterQueue::default();
    let mut consumer = Consumer::new(
        ConsumerConfig::new("c"),
        source(client),
        Seen::default(),
        MemoryCheckpointStore::default(),
        dlq.clone(),
    )
    .unwrap()
    .with_clock(VirtualClock::default());
    let summary = consumer.run().await.unwrap();
    assert_eq!((summary.succeeded, summary.dead_lettered), (2, 1));
    let letters = dlq.letters();
    assert_eq!(letters[0].data, b"not json", "the user record's data only");
    assert_eq!(letters[0].pointer.as_str(), "5:1");
    assert_eq!(letters[0].partition_key.as_deref(), Some("kbad"));
    let error = &letters[0].error.as_ref().unwrap().message;
    assert!(error.starts_with("cannot decode record"), "{error}");
}
