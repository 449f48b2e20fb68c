//! Unit tests of the sink's call planning.

use std::collections::HashMap;

use chrono::Utc;

use super::*;

fn sink(ordering: Ordering) -> KinesisSink {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .build();
    KinesisSink::new(Client::from_conf(config), "s").with_ordering(ordering)
}

/// The calls a batch goes out in, without a rate limit and no failures.
fn split(s: &KinesisSink, batch: &[EncodedRecord], indexes: &[usize]) -> Vec<Vec<usize>> {
    let mut queue = s.entries(batch, indexes, None);
    let mut buckets = HashMap::new();
    let mut out = Vec::new();
    while !queue.is_empty() {
        let plan = s.plan(
            batch,
            queue,
            &HashSet::new(),
            None,
            &mut buckets,
            Utc::now(),
        );
        queue = plan.rest;
        out.push(plan.call.iter().flat_map(|e| e.members.clone()).collect());
    }
    out
}

fn rec(id: usize, key: &str, size: usize) -> EncodedRecord {
    EncodedRecord::new(id.to_string(), key, vec![b'x'; size])
}

#[test]
fn calls_respect_the_record_and_byte_limits() {
    let s = sink(Ordering::None);
    let batch: Vec<_> = (0..1200).map(|i| rec(i, &i.to_string(), 10)).collect();
    let calls = split(&s, &batch, &(0..batch.len()).collect::<Vec<_>>());
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let big: Vec<_> = (0..12).map(|i| rec(i, "k", 1_000_000)).collect();
    let calls = split(&s, &big, &(0..big.len()).collect::<Vec<_>>());
    assert!(calls.iter().all(|c| c.len() <= 5), "{calls:?}");
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 12);
}

#[test]
fn per_key_ordering_never_puts_a_key_twice_in_a_call() {
    let s = sink(Ordering::PerKey);
    let batch = vec![
        rec(0, "a", 1),
        rec(1, "b", 1),
        rec(2, "a", 1),
        rec(3, "c", 1),
        rec(4, "a", 1),
    ];
    assert_eq!(
        split(&s, &batch, &[0, 1, 2, 3, 4]),
        vec![vec![0, 1], vec![2, 3], vec![4]]
    );
}

#[test]
fn validate_checks_size_and_key() {
    let s = sink(Ordering::PerKey).with_max_record_bytes(100);
    assert!(s.validate(&rec(1, "k", 99)).is_ok());
    assert!(
        s.validate(&rec(1, "k", 100))
            .unwrap_err()
            .to_string()
            .contains("101 bytes")
    );
    assert!(s.validate(&rec(1, "", 1)).is_err());
    let ehk = |k: &str| rec(1, "k", 1).with_explicit_hash_key(Some(k.into()));
    for good in ["0", "7", &u128::MAX.to_string()] {
        assert!(s.validate(&ehk(good)).is_ok(), "{good}");
    }
    let too_big = "340282366920938463463374607431768211456"; // 2^128
    for bad in ["", "07", "+7", "-1", "1.5", "x", too_big] {
        assert!(s.validate(&ehk(bad)).is_err(), "{bad:?}");
    }
    assert!(s.validate(&rec(1, &"k".repeat(257), 1)).is_err());
}
