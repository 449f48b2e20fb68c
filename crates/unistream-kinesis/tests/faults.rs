//! Fault cases the emulators cannot produce, with the SDK client mocked by
//! `aws-smithy-mocks` (named as such): partial `PutRecords` failures and
//! per-key order, throttling on put and get, expired iterators, the end of
//! a shard, the 5-calls-per-second pace, oversize records.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::error::{
    ExpiredIteratorException, ProvisionedThroughputExceededException,
};
use aws_sdk_kinesis::types::{
    ChildShard, HashKeyRange, PutRecordsResultEntry, Record, ShardIteratorType,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use unistream_core::Error;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::clock::VirtualClock;
use unistream_core::memory::MemoryBuffer;
use unistream_core::producer::{Producer, ProducerConfig, SendStep};
use unistream_core::sink::{Delivery, EncodedRecord, Sink};
use unistream_core::source::{Pointer, Source};
use unistream_kinesis::{KinesisSink, KinesisSource, StartingPosition};

fn ok_entry(seq: &str) -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .sequence_number(seq)
        .shard_id("shardId-000000000000")
        .build()
}

fn failed_entry() -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .error_code("ProvisionedThroughputExceededException")
        .error_message("Rate exceeded for shard")
        .build()
}

fn rec(id: &str, key: &str) -> EncodedRecord {
    EncodedRecord::new(id, key, format!("{{\"id\": \"{id}\"}}").into_bytes())
}

fn kinesis_record(seq: &str) -> Record {
    Record::builder()
        .sequence_number(seq)
        .partition_key("k")
        .data(Blob::new(format!("data-{seq}").into_bytes()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_partial_failure_reports_only_the_failed_records_and_holds_back_their_keys() {
    // [a0, b1, a2, c3] goes out as [a0, b1] then [a2, c3] (a key once per call).
    let first = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 2)
        .then_output(|| {
            PutRecordsOutput::builder()
                .failed_record_count(1)
                .records(failed_entry())
                .records(ok_entry("2"))
                .build()
                .unwrap()
        });
    // a2 is held back because a0 failed: only c3 is sent.
    let second = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 1 && r.records()[0].partition_key() == Some("c"))
        .then_output(|| {
            PutRecordsOutput::builder()
                .records(ok_entry("3"))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&first, &second]);
    let sink = KinesisSink::new(client, "s");
    let batch = [rec("0", "a"), rec("1", "b"), rec("2", "a"), rec("3", "c")];
    match sink.send(&batch).await.unwrap() {
        Delivery::Partial { rejected, error } => {
            assert_eq!(rejected, vec![0, 2]);
            assert!(
                error.message.contains("ProvisionedThroughputExceeded"),
                "{error}"
            );
        }
        other => panic!("expected a partial delivery, got {other:?}"),
    }
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn the_producer_narrows_its_batch_and_never_resends_accepted_records() {
    let first = mock!(Client::put_records).then_output(|| {
        PutRecordsOutput::builder()
            .failed_record_count(1)
            .records(ok_entry("1"))
            .records(failed_entry())
            .records(ok_entry("3"))
            .build()
            .unwrap()
    });
    let retry = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 1 && r.records()[0].partition_key() == Some("k2"))
        .then_output(|| {
            PutRecordsOutput::builder()
                .records(ok_entry("4"))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&first, &retry]);
    let clock = VirtualClock::default();
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(3)),
        KinesisSink::new(client, "s"),
    )
    .with_clock(clock.clone());
    for (id, key) in [("1", "k1"), ("2", "k2"), ("3", "k3")] {
        producer.put(&Rec::new(id, key)).await.unwrap();
    }
    assert_eq!(
        producer.buffer().stats().records,
        1,
        "only the failed record is left"
    );
    producer.flush().await.unwrap();
    assert_eq!(retry.num_calls(), 1);
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(1)],
        "the seed's first backoff"
    );
}

#[tokio::test]
async fn throttling_on_put_is_a_failed_send_that_keeps_the_batch() {
    let throttled = mock!(Client::put_records).then_error(|| {
        PutRecordsError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .message("Rate exceeded")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_kinesis, [&throttled]);
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(1)),
        KinesisSink::new(client, "s"),
    )
    .with_clock(VirtualClock::default());
    match producer.put(&Rec::new("1", "k")).await.unwrap() {
        SendStep::Failed { error, .. } => {
            assert!(error.to_string().contains("Rate exceeded"), "{error}")
        }
        other => panic!("expected a failed send, got {other:?}"),
    }
    assert_eq!(producer.buffer().stats().records, 1);
}

#[tokio::test]
async fn a_call_failing_after_an_accepted_one_reports_the_rest_as_rejected() {
    let ok = mock!(Client::put_records).then_output(|| {
        PutRecordsOutput::builder()
            .records(ok_entry("1"))
            .build()
            .unwrap()
    });
    let down = mock!(Client::put_records).then_error(|| {
        PutRecordsError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&ok, &down]);
    // Same key twice: two calls.
    let sink = KinesisSink::new(client, "s");
    let delivery = sink.send(&[rec("1", "a"), rec("2", "a")]).await.unwrap();
    assert!(
        matches!(delivery, Delivery::Partial { ref rejected, .. } if rejected == &vec![1]),
        "{delivery:?}"
    );
}

#[tokio::test]
async fn oversize_records_are_refused_by_put_with_their_id() {
    let client = mock_client!(aws_sdk_kinesis, []);
    let sink = KinesisSink::new(client, "s").with_max_record_bytes(50);
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(1)),
        sink,
    );
    let mut big = Rec::new("big-1", "k");
    big.pad = "x".repeat(100);
    let err = producer.put(&big).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidRecord { ref record_id, .. } if record_id == "big-1"),
        "{err}"
    );
    assert_eq!(
        producer.buffer().stats().records,
        0,
        "never buffered, cannot jam"
    );
}

#[tokio::test]
async fn an_expired_iterator_is_derived_again_from_the_checkpoint() {
    let first_iterator = mock!(Client::get_shard_iterator)
        .match_requests(|r| {
            r.shard_iterator_type() == Some(&ShardIteratorType::AfterSequenceNumber)
                && r.starting_sequence_number() == Some("4")
        })
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-1")
                .build()
        });
    let expired = mock!(Client::get_records).then_error(|| {
        GetRecordsError::ExpiredIteratorException(ExpiredIteratorException::builder().build())
    });
    let again = mock!(Client::get_shard_iterator)
        .match_requests(|r| r.starting_sequence_number() == Some("4"))
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-2")
                .build()
        });
    let records = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-2"))
        .then_output(|| {
            GetRecordsOutput::builder()
                .records(kinesis_record("5"))
                .records(kinesis_record("6"))
                .next_shard_iterator("it-3")
                .millis_behind_latest(1500)
                .build()
                .unwrap()
        });
    let client = mock_client!(
        aws_sdk_kinesis,
        RuleMode::Sequential,
        [&first_iterator, &expired, &again, &records]
    );
    let mut source = KinesisSource::new(
        client,
        "s",
        "shardId-000000000000",
        StartingPosition::TrimHorizon,
    )
    .with_clock(VirtualClock::default());
    let f = source.fetch(&Pointer::from("4"), 10).await.unwrap();
    let seqs: Vec<&str> = f.records.iter().map(|r| r.pointer.as_str()).collect();
    assert_eq!(seqs, ["5", "6"], "nothing lost, nothing repeated");
    assert_eq!(f.records[0].data, b"data-5");
    assert_eq!(f.next_pointer.unwrap().as_str(), "6");
    assert_eq!(f.millis_behind, Some(1500));
    assert_eq!(source.stats().expired_iterators, 1);
    assert_eq!(source.stats().millis_behind, Some(1500));
}

#[tokio::test]
async fn throttled_reads_back_off_and_calls_are_paced() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let throttled = mock!(Client::get_records).then_error(|| {
        GetRecordsError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    let ok = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .set_records(Some(vec![]))
            .next_shard_iterator("it-2")
            .build()
            .unwrap()
    });
    let ok_again = mock!(Client::get_records)
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
        [&iterator, &throttled, &ok, &ok_again]
    );
    let clock = VirtualClock::default();
    let mut source = KinesisSource::new(
        client,
        "s",
        "shardId-000000000000",
        StartingPosition::TrimHorizon,
    )
    .with_clock(clock.clone());
    let start = source.initial_pointer();
    let f = source.fetch(&start, 10).await.unwrap();
    assert!(f.records.is_empty());
    assert_eq!(
        f.next_pointer.as_ref(),
        Some(&start),
        "nothing read: the pointer stays"
    );
    // The next iterator is used for the next read, 200 ms after the last
    // (the reader reads ahead: what it does after that is its next read,
    // paced the same).
    source.fetch(&start, 10).await.unwrap();
    let sleeps = clock.sleeps();
    assert_eq!(
        sleeps[..2],
        [Duration::from_secs(1), Duration::from_millis(200)]
    );
    assert!(
        sleeps[2..].iter().all(|s| *s >= Duration::from_millis(200)),
        "{sleeps:?}"
    );
    assert_eq!(source.stats().throttled, 1);
    assert_eq!(iterator.num_calls(), 1);
}

#[tokio::test]
async fn the_end_of_a_shard_closes_the_source_and_names_its_children() {
    let iterator = mock!(Client::get_shard_iterator).then_output(|| {
        GetShardIteratorOutput::builder()
            .shard_iterator("it-1")
            .build()
    });
    let end = mock!(Client::get_records).then_output(|| {
        let range = HashKeyRange::builder()
            .starting_hash_key("0")
            .ending_hash_key("1")
            .build()
            .unwrap();
        let child = ChildShard::builder()
            .shard_id("shardId-000000000001")
            .parent_shards("shardId-000000000000")
            .hash_key_range(range)
            .build()
            .unwrap();
        GetRecordsOutput::builder()
            .records(kinesis_record("9"))
            .child_shards(child)
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&iterator, &end]);
    let mut source = KinesisSource::new(
        client,
        "s",
        "shardId-000000000000",
        StartingPosition::TrimHorizon,
    )
    .with_clock(VirtualClock::default());
    let f = source.fetch(&Pointer::from("8"), 10).await.unwrap();
    assert_eq!(f.records.len(), 1);
    assert_eq!(f.next_pointer, None, "closed after these records");
    assert!(source.stats().closed);
    assert_eq!(
        source.stats().child_shards,
        vec!["shardId-000000000001".to_string()]
    );
}

/// A record type for the producer tests.
#[derive(serde::Serialize, serde::Deserialize)]
struct Rec {
    id: String,
    #[serde(skip)]
    key: String,
    #[serde(with = "unistream_core::record::iso8601")]
    create_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pad: String,
}

impl Rec {
    fn new(id: &str, key: &str) -> Self {
        Rec {
            id: id.into(),
            key: key.into(),
            create_at: chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap(),
            pad: String::new(),
        }
    }
}

impl unistream_core::record::Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.create_at
    }
    fn partition_key(&self) -> &str {
        &self.key
    }
}

#[tokio::test]
async fn oversize_records_already_buffered_are_set_aside_not_jammed() {
    let ok = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 1)
        .then_output(|| {
            PutRecordsOutput::builder()
                .records(ok_entry("1"))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, [&ok]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejected.jsonl");
    let file =
        unistream_local::AppendFile::open(&path, unistream_local::Durability::Process).unwrap();
    let small = rec("1", "a");
    let big = EncodedRecord::new("big", "b", vec![b'x'; 200]);
    // Without a rejected file: a clear error naming the record, nothing dropped.
    let strict = KinesisSink::new(client.clone(), "s").with_max_record_bytes(100);
    let err = strict
        .send(&[small.clone(), big.clone()])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"big\"") && err.contains("with_rejected"),
        "{err}"
    );
    // With one: set aside, the rest sent, the batch done.
    let sink = KinesisSink::new(client, "s")
        .with_max_record_bytes(100)
        .with_rejected(file);
    assert_eq!(sink.send(&[small, big]).await.unwrap(), Delivery::All);
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
    assert_eq!(line["record_id"], "big");
    assert_eq!(line["bytes"], 201);
    assert_eq!(ok.num_calls(), 1);
}

/// A `kill -9` can cut the write of a set-aside record at any byte; the
/// batch is then sent again from the producer's log, and the record must be
/// set aside again on a line of its own.
#[tokio::test]
async fn a_rejected_line_cut_at_every_offset_is_written_again_on_its_own_line() {
    let ok = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 1)
        .sequence()
        .output(|| {
            PutRecordsOutput::builder()
                .records(ok_entry("1"))
                .build()
                .unwrap()
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_kinesis, [&ok]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejected.jsonl");
    let open = || {
        let file =
            unistream_local::AppendFile::open(&path, unistream_local::Durability::Process).unwrap();
        KinesisSink::new(client.clone(), "s")
            .with_max_record_bytes(100)
            .with_rejected(file)
    };
    let big = |id: &str| EncodedRecord::new(id, "b", vec![b'x'; 200]);
    let sink = open();
    for id in ["big1", "big2", "big3"] {
        assert_eq!(sink.send(&[big(id)]).await.unwrap(), Delivery::All);
    }
    drop(sink);
    let full = std::fs::read(&path).unwrap();
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    for cut in last_start..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let sink = open();
        assert_eq!(
            sink.send(&[rec("1", "a"), big("big3")]).await.unwrap(),
            Delivery::All
        );
        drop(sink);
        let ids: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("cut at {cut}: {l:?}: {e}"));
                v["record_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(ids, ["big1", "big2", "big3"], "cut at {cut}");
        assert_eq!(std::fs::read(&path).unwrap(), full, "cut at {cut}");
    }
}

#[tokio::test]
async fn each_record_keeps_its_partition_key_and_explicit_hash_key() {
    let put = mock!(Client::put_records)
        .match_requests(|r| {
            let rs = r.records();
            rs.len() == 2
                && rs[0].partition_key() == Some("k1")
                && rs[0].explicit_hash_key().is_none()
                && rs[1].partition_key() == Some("k2")
                && rs[1].explicit_hash_key() == Some("12345")
                && rs[1].data().as_ref() == &b"{\"id\": \"2\"}"[..]
        })
        .then_output(|| {
            PutRecordsOutput::builder()
                .records(ok_entry("1"))
                .records(ok_entry("2"))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, [&put]);
    let sink = KinesisSink::new(client, "s");
    let batch = [
        rec("1", "k1"),
        rec("2", "k2").with_explicit_hash_key(Some("12345".into())),
    ];
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(put.num_calls(), 1);
}
