//! Shard prediction: which open shard of a stream a record goes to.
//!
//! Kinesis maps a record to the shard whose hash-key range holds the
//! record's hash key: its explicit hash key if it has one, else the MD5 of
//! its partition key read as a 128-bit big-endian integer. [`ShardMap`]
//! holds the open shards' ranges (from paged `ListShards`) and does the same
//! computation, so that a producer can pack and pace records per shard
//! before sending them. A map can be stale (the stream was resharded since
//! it was listed): the sink then sees a `PutRecords` result from another
//! shard than predicted (a *misroute*) and lists the shards again.

use aws_sdk_kinesis::Client;
use md5::{Digest, Md5};

use crate::error::KinesisError;

/// One open shard's hash-key range (both ends included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardRange {
    pub(crate) shard_id: String,
    pub(crate) start: u128,
    pub(crate) end: u128,
}

/// The open shards of a stream by hash-key range, sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShardMap {
    ranges: Vec<ShardRange>,
}

/// The hash key Kinesis routes a record by: the explicit hash key (a decimal
/// 128-bit number) if it has a valid one, else the MD5 of the partition key
/// as a big-endian integer.
pub(crate) fn hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> u128 {
    if let Some(k) = explicit_hash_key.and_then(|k| k.parse::<u128>().ok()) {
        return k;
    }
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Every shard of `stream` (its name or its ARN), open and closed, in the
/// order `ListShards` gives them (paged: every page is read).
///
/// A closed shard has an ending sequence number
/// (`shard.sequence_number_range()`); a child names its parents.
///
/// # Errors
///
/// [`unistream_core::Error::Denied`] if `kinesis:ListShards` is not allowed,
/// else [`KinesisError::Api`].
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) -> unistream_core::Result<()> {
/// for shard in unistream_kinesis::list_shards(&client, "orders").await? {
///     let closed = shard
///         .sequence_number_range()
///         .is_some_and(|r| r.ending_sequence_number().is_some());
///     println!("{} closed={closed}", shard.shard_id());
/// }
/// # Ok(())
/// # }
/// ```
pub async fn list_shards(
    client: &Client,
    stream: &str,
) -> Result<Vec<aws_sdk_kinesis::types::Shard>, unistream_core::Error> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_shards();
        req = match token.take() {
            Some(t) => req.next_token(t),
            None if stream.starts_with("arn:") => req.stream_arn(stream),
            None => req.stream_name(stream),
        };
        let out = req.send().await.map_err(|e| {
            unistream_aws::denied(&e, "kinesis:ListShards", || format!("stream {stream}"))
                .unwrap_or_else(|| {
                    KinesisError::Api {
                        operation: "ListShards",
                        stream: stream.to_owned(),
                        shard: None,
                        source: Box::new(e.into()),
                    }
                    .into()
                })
        })?;
        let next = out.next_token.filter(|t| !t.is_empty());
        shards.extend(out.shards.unwrap_or_default());
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(shards)
}

impl ShardMap {
    /// A map of these ranges (any order).
    pub(crate) fn new(mut ranges: Vec<ShardRange>) -> Self {
        ranges.sort_by_key(|r| r.start);
        ShardMap { ranges }
    }

    /// Lists the stream's open shards ([`list_shards`]; a shard with an
    /// ending sequence number is closed and left out).
    pub(crate) async fn list(client: &Client, stream: &str) -> Result<Self, unistream_core::Error> {
        let mut ranges = Vec::new();
        for shard in list_shards(client, stream).await? {
            let open = shard
                .sequence_number_range()
                .is_none_or(|r| r.ending_sequence_number().is_none());
            let range = shard.hash_key_range();
            let (Some(start), Some(end)) = (
                range.and_then(|r| r.starting_hash_key().parse::<u128>().ok()),
                range.and_then(|r| r.ending_hash_key().parse::<u128>().ok()),
            ) else {
                return Err(KinesisError::Malformed {
                    operation: "ListShards",
                    stream: stream.to_owned(),
                    shard: shard.shard_id().to_owned(),
                    what: "a hash-key range of two decimal 128-bit numbers",
                }
                .into());
            };
            if open {
                ranges.push(ShardRange {
                    shard_id: shard.shard_id().to_owned(),
                    start,
                    end,
                });
            }
        }
        Ok(ShardMap::new(ranges))
    }

    /// The index of the shard whose range holds `hash`, if any (a map with
    /// gaps, e.g. listed in the middle of a reshard, may hold none).
    pub(crate) fn shard_of(&self, hash: u128) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.start <= hash);
        let i = i.checked_sub(1)?;
        (hash <= self.ranges[i].end).then_some(i)
    }

    /// The predicted shard of a record.
    pub(crate) fn predict(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
    ) -> Option<usize> {
        self.shard_of(hash_key(partition_key, explicit_hash_key))
    }

    /// The shard id at `index`.
    pub(crate) fn shard_id(&self, index: usize) -> Option<&str> {
        self.ranges.get(index).map(|r| r.shard_id.as_str())
    }

    /// How many open shards.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_shards() -> ShardMap {
        let half = 1u128 << 127;
        ShardMap::new(vec![
            ShardRange {
                shard_id: "shardId-000000000001".into(),
                start: half,
                end: u128::MAX,
            },
            ShardRange {
                shard_id: "shardId-000000000000".into(),
                start: 0,
                end: half - 1,
            },
        ])
    }

    #[test]
    fn the_hash_key_is_the_md5_of_the_partition_key_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e.
        assert_eq!(hash_key("", None), 0xd41d8cd98f00b204e9800998ecf8427e);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(hash_key("a", None), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn partition_keys_land_in_the_range_that_holds_their_md5() {
        let map = two_shards();
        // 0x0cc1... < 2^127: the first shard; 0xd41d... >= 2^127: the second.
        assert_eq!(
            map.shard_id(map.predict("a", None).unwrap()),
            Some("shardId-000000000000")
        );
        assert_eq!(
            map.shard_id(map.predict("", None).unwrap()),
            Some("shardId-000000000001")
        );
        for key in (0..200).map(|i| format!("key-{i}")) {
            let hash = hash_key(&key, None);
            let want = if hash < 1u128 << 127 {
                "shardId-000000000000"
            } else {
                "shardId-000000000001"
            };
            assert_eq!(
                map.shard_id(map.predict(&key, None).unwrap()),
                Some(want),
                "{key}"
            );
        }
    }

    #[test]
    fn an_explicit_hash_key_overrides_the_partition_key() {
        let map = two_shards();
        // "a" alone goes to the first shard; its explicit hash key moves it.
        let top = u128::MAX.to_string();
        assert_eq!(
            map.shard_id(map.predict("a", Some(&top)).unwrap()),
            Some("shardId-000000000001")
        );
        assert_eq!(
            map.shard_id(map.predict("", Some("0")).unwrap()),
            Some("shardId-000000000000")
        );
        let edge = ((1u128 << 127) - 1).to_string();
        assert_eq!(
            map.shard_id(map.predict("", Some(&edge)).unwrap()),
            Some("shardId-000000000000")
        );
        // Not a number: Kinesis refuses it; the prediction falls back to the key.
        assert_eq!(map.predict("a", Some("x")), map.predict("a", None));
    }

    #[test]
    fn a_gap_in_the_ranges_predicts_no_shard() {
        let map = ShardMap::new(vec![ShardRange {
            shard_id: "s".into(),
            start: 10,
            end: 20,
        }]);
        assert_eq!(map.shard_of(9), None);
        assert_eq!(map.shard_of(10), Some(0));
        assert_eq!(map.shard_of(20), Some(0));
        assert_eq!(map.shard_of(21), None);
        assert_eq!(ShardMap::default().shard_of(0), None);
    }
}
