//! The producer side of shards, with the SDK client mocked by
//! `aws-smithy-mocks` (named as such): aggregates packed per predicted shard
//! (from `ListShards`), accepted or retried whole with their keys held back,
//! the producer's buffer narrowed by whole aggregates, the shards listed
//! again after a misroute, and the per-shard rate limit pacing a backlog in
//! virtual time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::put_records::{PutRecordsInput, PutRecordsOutput};
use aws_sdk_kinesis::types::{HashKeyRange, PutRecordsResultEntry, SequenceNumberRange, Shard};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::clock::VirtualClock;
use unistream_core::memory::MemoryBuffer;
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::sink::{Delivery, EncodedRecord, Sink};
use unistream_kinesis::aggregation::{self, UserRecord};
use unistream_kinesis::{Aggregation, KinesisSink, Ordering, RateLimit};

const HALF: u128 = 1 << 127;

fn shard(id: &str, start: u128, end: u128, closed: bool) -> Shard {
    let mut seq = SequenceNumberRange::builder().starting_sequence_number("0");
    if closed {
        seq = seq.ending_sequence_number("9");
    }
    Shard::builder()
        .shard_id(id)
        .hash_key_range(
            HashKeyRange::builder()
                .starting_hash_key(start.to_string())
                .ending_hash_key(end.to_string())
                .build()
                .unwrap(),
        )
        .sequence_number_range(seq.build().unwrap())
        .build()
        .unwrap()
}

/// Two open shards split at 2^127, and a closed parent that must be ignored.
fn two_shards() -> ListShardsOutput {
    ListShardsOutput::builder()
        .shards(shard("shardId-000000000000", 0, u128::MAX, true))
        .shards(shard("shardId-000000000001", 0, HALF - 1, false))
        .shards(shard("shardId-000000000002", HALF, u128::MAX, false))
        .build()
}

fn one_shard(id: &str) -> ListShardsOutput {
    ListShardsOutput::builder()
        .shards(shard(id, 0, u128::MAX, false))
        .build()
}

/// The hash Kinesis routes a key by (MD5 of its bytes, big-endian),
/// computed here with the md-5 crate.
fn md5_hash(key: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// Every PutRecords request seen, and the shard each entry is answered with.
#[derive(Debug, Default, Clone)]
struct Seen(Arc<Mutex<Vec<PutRecordsInput>>>);

impl Seen {
    fn record(&self, input: &PutRecordsInput) {
        self.0.lock().unwrap().push(input.clone());
    }
    fn calls(&self) -> Vec<PutRecordsInput> {
        self.0.lock().unwrap().clone()
    }
}

fn ok(shard: &str) -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .sequence_number("1")
        .shard_id(shard)
        .build()
}

fn throttled() -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .error_code("ProvisionedThroughputExceededException")
        .error_message("Rate exceeded for shard")
        .build()
}

fn rec(i: usize, key: &str) -> EncodedRecord {
    EncodedRecord::new(
        i.to_string(),
        key,
        format!("{{\"id\": \"{i}\"}}").into_bytes(),
    )
}

/// The user records of one request entry (a plain record is one).
fn users(entry: &aws_sdk_kinesis::types::PutRecordsRequestEntry) -> Vec<UserRecord> {
    let data = entry.data().as_ref();
    aggregation::decode(data).unwrap().unwrap_or_else(|| {
        vec![UserRecord::new(
            entry.partition_key().unwrap_or_default(),
            entry.explicit_hash_key().map(str::to_owned),
            data.to_vec(),
        )]
    })
}

#[tokio::test]
async fn aggregates_are_packed_per_predicted_shard_with_their_keys() {
    let list = mock!(Client::list_shards).then_output(two_shards);
    let seen = Seen::default();
    let s2 = seen.clone();
    let put = mock!(Client::put_records).then_compute_output(move |input| {
        s2.record(input);
        let mut out = PutRecordsOutput::builder();
        for e in input.records() {
            let hash = e
                .explicit_hash_key()
                .map(|k| k.parse::<u128>().unwrap())
                .unwrap_or_else(|| md5_hash(e.partition_key().unwrap_or_default()));
            out = out.records(ok(if hash < HALF {
                "shardId-000000000001"
            } else {
                "shardId-000000000002"
            }));
        }
        out.build().unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s").with_aggregation(Aggregation::default());
    let mut batch: Vec<EncodedRecord> = (0..40).map(|i| rec(i, &format!("key-{i}"))).collect();
    // An explicit hash key puts a record on the upper shard whatever its key.
    batch[5] = rec(5, "key-5").with_explicit_hash_key(Some(u128::MAX.to_string()));
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(list.num_calls(), 1);
    let calls = seen.calls();
    assert_eq!(calls.len(), 1, "distinct keys: both aggregates in one call");
    let entries = calls[0].records();
    assert_eq!(entries.len(), 2, "one aggregate per shard");
    let mut all = Vec::new();
    for e in entries {
        let users = users(e);
        assert_eq!(
            e.partition_key(),
            Some(users[0].partition_key.as_str()),
            "an aggregate goes with its first key"
        );
        let upper = |u: &UserRecord| {
            u.explicit_hash_key
                .as_deref()
                .map(|k| k.parse::<u128>().unwrap())
                .unwrap_or_else(|| md5_hash(&u.partition_key))
                >= HALF
        };
        let first_upper = upper(&users[0]);
        assert!(
            users.iter().all(|u| upper(u) == first_upper),
            "one shard per aggregate"
        );
        all.extend(users);
    }
    all.sort_by(|a, b| a.data.cmp(&b.data));
    let mut want: Vec<UserRecord> = batch
        .iter()
        .map(|r| {
            UserRecord::new(
                r.partition_key.clone(),
                r.explicit_hash_key.clone(),
                r.data.clone(),
            )
        })
        .collect();
    want.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(all, want, "every user record, with its keys, exactly once");
}

#[tokio::test]
async fn a_failed_aggregate_is_rejected_whole_and_later_records_of_its_keys_wait() {
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    // [a0 b1 c2] [d3 e4 f5] go in one call, [a6 g7 h8] waits for the next
    // (key a). The first aggregate is throttled: the third is held back.
    let first = mock!(Client::put_records)
        .match_requests(|r| r.records().len() == 2)
        .then_output(|| {
            PutRecordsOutput::builder()
                .failed_record_count(1)
                .records(throttled())
                .records(ok("shardId-000000000000"))
                .build()
                .unwrap()
        });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&list, &first]);
    let sink =
        KinesisSink::new(client, "s").with_aggregation(Aggregation::default().with_max_records(3));
    let keys = ["a", "b", "c", "d", "e", "f", "a", "g", "h"];
    let batch: Vec<_> = keys.iter().enumerate().map(|(i, k)| rec(i, k)).collect();
    match sink.send(&batch).await.unwrap() {
        Delivery::Partial { rejected, error } => {
            assert_eq!(rejected, vec![0, 1, 2, 6, 7, 8]);
            assert!(
                error.message.contains("ProvisionedThroughputExceeded"),
                "{error}"
            );
        }
        other => panic!("expected a partial delivery, got {other:?}"),
    }
    assert_eq!(first.num_calls(), 1, "nothing else was sent");
}

#[tokio::test]
async fn the_producer_narrows_by_whole_aggregates_and_resends_them_in_key_order() {
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    let seen = Seen::default();
    let s2 = seen.clone();
    let fail_first = Arc::new(Mutex::new(true));
    let put = mock!(Client::put_records).then_compute_output(move |input| {
        s2.record(input);
        let mut first = fail_first.lock().unwrap();
        let mut out = PutRecordsOutput::builder();
        for (n, _) in input.records().iter().enumerate() {
            out = out.records(if *first && n == 0 {
                throttled()
            } else {
                ok("shardId-000000000000")
            });
        }
        *first = false;
        out.build().unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let clock = VirtualClock::default();
    let producer = Producer::new(
        ProducerConfig::default(),
        MemoryBuffer::new(BufferLimits::records(9)),
        KinesisSink::new(client, "s").with_aggregation(Aggregation::default().with_max_records(3)),
    )
    .with_clock(clock.clone());
    let keys = ["a", "b", "c", "d", "e", "f", "a", "g", "h"];
    for (i, k) in keys.iter().enumerate() {
        producer.put(&Rec::new(&i.to_string(), k)).await.unwrap();
    }
    assert_eq!(
        producer.buffer().stats().records,
        6,
        "the accepted aggregate [d e f] is out of the buffer; [a b c] and [a g h] stay"
    );
    producer.flush().await.unwrap();
    assert_eq!(producer.buffer().stats().records, 0);
    let ids: Vec<Vec<String>> = seen
        .calls()
        .iter()
        .map(|c| {
            c.records()
                .iter()
                .flat_map(users)
                .map(|u| {
                    let v: serde_json::Value = serde_json::from_slice(&u.data).unwrap();
                    v["id"].as_str().unwrap().to_owned()
                })
                .collect()
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            vec!["0", "1", "2", "3", "4", "5"],
            vec!["0", "1", "2"],
            vec!["6", "7", "8"],
        ],
        "a6 after a0, in its own call; accepted ones never again"
    );
}

#[tokio::test]
async fn a_misroute_lists_the_shards_again() {
    // The first listing is stale (one shard); the stream now answers from a
    // child shard, so the next send lists the shards again.
    let list = mock!(Client::list_shards)
        .sequence()
        .output(|| one_shard("shardId-000000000000"))
        .output(|| one_shard("shardId-000000000003"))
        .build();
    let put = mock!(Client::put_records).then_compute_output(|input| {
        let mut out = PutRecordsOutput::builder();
        for _ in input.records() {
            out = out.records(ok("shardId-000000000003"));
        }
        out.build().unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s").with_rate_limit(RateLimit::default());
    let batch = [rec(0, "a"), rec(1, "b")];
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(list.num_calls(), 1);
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(list.num_calls(), 2, "listed again after the misroute");
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(list.num_calls(), 2, "predictions hold now: no listing");
    assert_eq!(put.num_calls(), 3);
}

/// Accepts every entry; each call takes `latency` on `clock`.
fn all_ok(seen: &Seen, clock: &VirtualClock, latency: Duration) -> aws_smithy_mocks::Rule {
    let s2 = seen.clone();
    let clock = clock.clone();
    mock!(Client::put_records).then_compute_output(move |input| {
        s2.record(input);
        clock.advance(latency);
        let mut out = PutRecordsOutput::builder();
        for _ in input.records() {
            out = out.records(ok("shardId-000000000000"));
        }
        out.build().unwrap()
    })
}

#[tokio::test]
async fn the_rate_limit_paces_a_backlog_of_entries_in_virtual_time() {
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    let seen = Seen::default();
    let clock = VirtualClock::default();
    // Each call takes 10 ms: the few tokens refilled meanwhile do not make a
    // trickle of small calls.
    let put = all_ok(&seen, &clock, Duration::from_millis(10));
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s")
        .with_ordering(Ordering::None)
        .with_rate_limit(RateLimit::default())
        .with_clock(clock.clone());
    let batch: Vec<_> = (0..3000).map(|i| rec(i, &format!("k{i}"))).collect();
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    let sizes: Vec<usize> = seen.calls().iter().map(|c| c.records().len()).collect();
    assert_eq!(sizes, vec![500; 6]);
    // A full bucket of 1,000 (the first call, taken from the full bucket,
    // anchors the refill at its answer, 10 ms later), then 1,000 entries per
    // second: 4 waits of 490 ms (500 ms less the call's 10 ms) for 2,000 more.
    let slept = clock.total_slept();
    assert!(
        slept >= Duration::from_millis(1960) && slept < Duration::from_millis(1970),
        "{slept:?}"
    );
}

#[tokio::test]
async fn the_rate_limit_paces_bytes_too() {
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    let seen = Seen::default();
    let clock = VirtualClock::default();
    let put = all_ok(&seen, &clock, Duration::ZERO);
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s")
        .with_rate_limit(RateLimit::default().with_bytes_per_second(100_000))
        .with_clock(clock.clone());
    // 30 records of 10,000 bytes: 10 per second after a full bucket of 10.
    let batch: Vec<_> = (0..30)
        .map(|i| EncodedRecord::new(i.to_string(), format!("k{i:03}"), vec![b'x'; 9_996]))
        .collect();
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    let sent: usize = seen.calls().iter().map(|c| c.records().len()).sum();
    assert_eq!(sent, 30);
    assert!(seen.calls().iter().all(|c| c.records().len() <= 10));
    let slept = clock.total_slept();
    assert!(
        slept >= Duration::from_millis(2000) && slept < Duration::from_millis(2010),
        "{slept:?}"
    );
}

#[tokio::test]
async fn a_record_too_large_for_an_aggregate_goes_alone_and_is_valid_at_put() {
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    let seen = Seen::default();
    let put = all_ok(&seen, &VirtualClock::default(), Duration::ZERO);
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s").with_aggregation(Aggregation::default());
    // Exactly the record limit: no room for the aggregate's framing.
    let big = EncodedRecord::new("big", "k", vec![b'x'; 1024 * 1024 - 1]);
    assert!(sink.validate(&big).is_ok());
    let batch = [
        rec(0, "a"),
        rec(1, "b"),
        big.clone(),
        rec(3, "c"),
        rec(4, "k"),
    ];
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    let entries: Vec<Vec<UserRecord>> = seen
        .calls()
        .iter()
        .flat_map(|c| c.records().iter().map(users).collect::<Vec<_>>())
        .collect();
    let plain: Vec<_> = seen
        .calls()
        .iter()
        .flat_map(|c| c.records().to_vec())
        .filter(|e| !aggregation::is_aggregate(e.data().as_ref()))
        .collect();
    assert_eq!(plain.len(), 1, "the large record goes as it is");
    assert_eq!(plain[0].data().as_ref(), &big.data[..]);
    let order: Vec<String> = entries
        .iter()
        .flatten()
        .map(|u| u.partition_key.clone())
        .collect();
    assert_eq!(
        order,
        ["a", "b", "k", "c", "k"],
        "the aggregate before it is closed: key order holds"
    );
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Rec {
    id: String,
    #[serde(skip, default)]
    key: String,
    #[serde(with = "unistream_core::record::iso8601")]
    create_at: chrono::DateTime<chrono::Utc>,
}

impl Rec {
    fn new(id: &str, key: &str) -> Self {
        Rec {
            id: id.into(),
            key: key.into(),
            create_at: chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap(),
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
async fn a_record_in_no_listed_range_lists_the_shards_again() {
    // Listed mid-reshard: only the lower half of the hash space is open.
    // "" hashes to 0xd41d... (upper half): no predicted shard.
    let list = mock!(Client::list_shards)
        .sequence()
        .output(|| {
            ListShardsOutput::builder()
                .shards(shard("shardId-000000000000", 0, HALF - 1, false))
                .build()
        })
        .output(|| one_shard("shardId-000000000000"))
        .build();
    let seen = Seen::default();
    let put = all_ok(&seen, &VirtualClock::default(), Duration::ZERO);
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s").with_rate_limit(RateLimit::default());
    let batch = [rec(0, "a"), EncodedRecord::new("1", "", b"{}".to_vec())];
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(
        list.num_calls(),
        2,
        "listed again after a record of no shard"
    );
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(list.num_calls(), 2);
}

#[tokio::test]
async fn a_hot_key_goes_one_entry_per_call_at_the_shards_rate() {
    // Per-key order puts one record of a key in a call: the shard waits for
    // one entry's tokens each time, not for a full call's.
    let list = mock!(Client::list_shards).then_output(|| one_shard("shardId-000000000000"));
    let seen = Seen::default();
    let clock = VirtualClock::default();
    let put = all_ok(&seen, &clock, Duration::ZERO);
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&list, &put]);
    let sink = KinesisSink::new(client, "s")
        .with_rate_limit(RateLimit::default())
        .with_clock(clock.clone());
    let batch: Vec<_> = (0..1500).map(|i| rec(i, "hot")).collect();
    assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
    assert_eq!(seen.calls().len(), 1500);
    // 1,000 at once from the full bucket, then one per millisecond.
    let slept = clock.total_slept();
    assert!(
        slept >= Duration::from_millis(499) && slept < Duration::from_millis(502),
        "{slept:?}"
    );
}
