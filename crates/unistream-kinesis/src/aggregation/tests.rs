//! Unit tests of the KPL aggregated record format.

use super::*;

fn sample() -> Vec<UserRecord> {
    vec![
        UserRecord::new("a", None, b"one".to_vec()),
        UserRecord::new("b", Some("12345".into()), b"two".to_vec()),
        UserRecord::new("a", Some("12345".into()), Vec::new()),
        UserRecord::new("", None, vec![0xF3, 0x89, 0x9A, 0xC2, 0]),
        UserRecord::new("c", Some("999".into()), vec![7u8; 300]),
    ]
}

#[test]
fn round_trip() {
    let records = sample();
    let bytes = encode(&records);
    assert!(bytes.starts_with(&MAGIC));
    assert_eq!(decode(&bytes).unwrap(), Some(records));
}

#[test]
fn keys_are_stored_once() {
    let mut b = AggregateBuilder::new();
    for i in 0..10 {
        b.push("same", Some("42"), vec![i]);
    }
    assert_eq!(b.message.partition_key_table, vec!["same".to_owned()]);
    assert_eq!(b.message.explicit_hash_key_table, vec!["42".to_owned()]);
    assert_eq!(b.first_partition_key(), Some("same"));
    assert_eq!(b.first_explicit_hash_key(), Some("42"));
    let decoded = decode(&b.to_bytes()).unwrap().unwrap();
    assert_eq!(decoded.len(), 10);
    assert!(decoded.iter().all(|r| r.partition_key == "same"));
}

#[test]
fn predicted_sizes_are_exact() {
    let mut b = AggregateBuilder::new();
    assert_eq!(b.to_bytes().len(), b.encoded_len());
    // Data lengths around varint boundaries, keys new and repeated.
    for (i, len) in [0usize, 1, 127, 128, 300, 16_383, 16_384, 200_000]
        .into_iter()
        .enumerate()
    {
        let pk = format!("key-{}", i % 3);
        let ehk = (i % 2 == 0).then(|| format!("{}", i * 1000));
        let predicted = b.encoded_len_with(&pk, ehk.as_deref(), len);
        b.push(&pk, ehk.as_deref(), vec![1u8; len]);
        assert_eq!(b.encoded_len(), predicted);
        assert_eq!(b.to_bytes().len(), predicted, "after record {i}");
    }
    // Past 127 entries a key index takes two bytes.
    let mut b = AggregateBuilder::new();
    for i in 0..200 {
        let pk = format!("k{i}");
        let predicted = b.encoded_len_with(&pk, Some(&pk), 10);
        b.push(&pk, Some(&pk), vec![0u8; 10]);
        assert_eq!(b.to_bytes().len(), predicted, "after record {i}");
    }
    // A key longer than 127 bytes.
    let long = "x".repeat(1000);
    let predicted = b.encoded_len_with(&long, None, 5);
    b.push(&long, None, vec![0u8; 5]);
    assert_eq!(b.to_bytes().len(), predicted);
}

#[test]
fn take_bytes_empties_the_builder() {
    let mut b = AggregateBuilder::new();
    b.push("k", None, b"x".to_vec());
    let bytes = b.take_bytes();
    assert!(b.is_empty());
    assert_eq!(b.encoded_len(), FRAMING_LEN);
    assert_eq!(b.first_partition_key(), None);
    assert_eq!(decode(&bytes).unwrap().unwrap().len(), 1);
    b.push("other", None, b"y".to_vec());
    assert_eq!(
        decode(&b.to_bytes()).unwrap().unwrap(),
        vec![UserRecord::new("other", None, b"y".to_vec())]
    );
}

#[test]
fn an_empty_aggregate_has_no_records() {
    assert_eq!(decode(&encode(&[])).unwrap(), Some(Vec::new()));
}

#[test]
fn no_magic_is_a_plain_record() {
    for plain in [
        &b""[..],
        b"{\"id\": 1}",
        &MAGIC[..3],
        &[0xF3, 0x89, 0x9A, 0xC3, 1],
    ] {
        assert_eq!(decode(plain).unwrap(), None);
        assert!(!is_aggregate(plain));
    }
}

#[test]
fn a_bad_digest_is_an_error() {
    let mut bytes = encode(&sample());
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, AggregationError::BadDigest { .. }), "{err}");
    assert!(err.to_string().contains("bad MD5 digest"), "{err}");
    // A flipped bit in the protobuf bytes as well.
    let mut bytes = encode(&sample());
    bytes[10] ^= 0x40;
    assert!(matches!(
        decode(&bytes).unwrap_err(),
        AggregationError::BadDigest { .. }
    ));
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let bytes = encode(&sample());
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        match decode(cut) {
            Ok(None) => assert!(len < MAGIC.len(), "cut at {len} taken for a plain record"),
            Ok(Some(r)) => panic!("cut at {len} decoded to {r:?}"),
            Err(AggregationError::Truncated { len: l }) => {
                assert_eq!(l, len);
                assert!(len < FRAMING_LEN);
            }
            Err(AggregationError::BadDigest { .. }) => assert!(len >= FRAMING_LEN),
            Err(e) => panic!("cut at {len}: unexpected {e}"),
        }
    }
}

/// An aggregate whose digest is right around whatever protobuf bytes.
fn framed(protobuf: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(protobuf);
    out.extend_from_slice(&Md5::digest(protobuf));
    out
}

#[test]
fn a_truncated_protobuf_with_a_good_digest_is_an_error() {
    let mut message = Vec::new();
    AggregatedRecord {
        partition_key_table: vec!["k".into()],
        explicit_hash_key_table: Vec::new(),
        records: vec![Record {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data: b"hello".to_vec(),
            tags: Vec::new(),
        }],
    }
    .encode_raw(&mut message);
    // The partition key table entry is 3 bytes: a cut right after it is
    // a valid message of no records (protobuf has no end marker; only the
    // digest tells a cut). Every other cut is inside a field.
    for len in 1..message.len() {
        match decode(&framed(&message[..len])) {
            Err(AggregationError::Protobuf { reason }) => assert!(!reason.is_empty()),
            Ok(Some(records)) if len == 3 => assert!(records.is_empty()),
            other => panic!("protobuf cut at {len}: {other:?}"),
        }
    }
    let err = decode(&framed(&[0xFF, 0xFF])).unwrap_err();
    assert!(err.to_string().contains("protobuf"), "{err}");
}

#[test]
fn mutated_protobuf_bytes_never_panic() {
    // Digest made right around damaged protobuf bytes, so that the
    // protobuf decoder and the key lookups see them (a plain xorshift:
    // deterministic, no dependency).
    let mut message = Vec::new();
    let mut b = AggregateBuilder::new();
    for r in sample() {
        b.push(&r.partition_key, r.explicit_hash_key.as_deref(), r.data);
    }
    b.message.encode_raw(&mut message);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5_000 {
        let mut bytes = message.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        // Any answer but a panic; a decoded record has keys from the
        // tables.
        if let Ok(Some(records)) = decode(&framed(&bytes)) {
            assert!(records.len() <= bytes.len());
        }
    }
}

#[test]
fn key_indexes_out_of_range_are_errors() {
    let message = |pk: u64, ehk: Option<u64>| {
        let mut out = Vec::new();
        AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec!["1".into()],
            records: vec![
                Record {
                    partition_key_index: 0,
                    explicit_hash_key_index: Some(0),
                    data: b"ok".to_vec(),
                    tags: vec![Tag {
                        key: "t".into(),
                        value: Some("v".into()),
                    }],
                },
                Record {
                    partition_key_index: pk,
                    explicit_hash_key_index: ehk,
                    data: b"bad".to_vec(),
                    tags: Vec::new(),
                },
            ],
        }
        .encode_raw(&mut out);
        framed(&out)
    };
    assert_eq!(
        decode(&message(1, None)).unwrap_err(),
        AggregationError::PartitionKeyIndexOutOfRange {
            record: 1,
            index: 1,
            table_len: 1
        }
    );
    assert_eq!(
        decode(&message(u64::MAX, None)).unwrap_err(),
        AggregationError::PartitionKeyIndexOutOfRange {
            record: 1,
            index: u64::MAX,
            table_len: 1
        }
    );
    let err = decode(&message(0, Some(3))).unwrap_err();
    assert_eq!(
        err,
        AggregationError::ExplicitHashKeyIndexOutOfRange {
            record: 1,
            index: 3,
            table_len: 1
        }
    );
    assert!(
        err.to_string().contains("explicit hash key index 3"),
        "{err}"
    );
    // Tags are read and ignored.
    let ok = decode(&message(0, Some(0))).unwrap().unwrap();
    assert_eq!(
        ok[0],
        UserRecord::new("k", Some("1".into()), b"ok".to_vec())
    );
}
