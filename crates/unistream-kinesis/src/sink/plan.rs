//! How a `PutRecords` call is planned: the shard map, each record's
//! predicted shard, per-shard KPL aggregates, rate-limit demands, which
//! records wait for a key that failed, and the settling of a call's answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use chrono::{DateTime, Utc};
use tracing::info;
use unistream_core::BoxError;
use unistream_core::clock::Clock;
use unistream_core::sink::EncodedRecord;

use crate::aggregation::AggregateBuilder;
use crate::rate::{RateLimit, ShardBuckets};
use crate::shards::ShardMap;

use super::{KinesisSink, MAX_RECORDS_PER_CALL, MAX_REQUEST_BYTES, Ordering};

/// What the sink knows of the stream's shards, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct ShardState {
    pub(super) map: Option<Arc<ShardMap>>,
    /// A record went to another shard than predicted: list them again.
    pub(super) stale: bool,
    /// Token buckets by shard id (kept across a refresh of the map).
    pub(super) buckets: HashMap<String, ShardBuckets>,
}

/// One `PutRecords` entry: a user record alone, or an aggregate of several.
#[derive(Debug)]
pub(super) struct Entry {
    /// Indexes into the batch, in order.
    pub(super) members: Vec<usize>,
    /// The predicted shard (an index into the map).
    pub(super) shard: Option<usize>,
    /// Data and partition key, as Kinesis counts them.
    pub(super) size: usize,
    /// The aggregate's bytes; `None` for a record sent as it is.
    pub(super) aggregate: Option<Vec<u8>>,
}

impl Entry {
    pub(super) fn keys<'b>(
        &self,
        batch: &'b [EncodedRecord],
    ) -> impl Iterator<Item = &'b str> + use<'b, '_> {
        self.members
            .iter()
            .map(move |&i| batch[i].partition_key.as_str())
    }

    fn plain(batch: &[EncodedRecord], i: usize, shard: Option<usize>) -> Self {
        Entry {
            members: vec![i],
            shard,
            size: batch[i].data.len() + batch[i].partition_key.len(),
            aggregate: None,
        }
    }
}

/// An aggregate being filled for one predicted shard.
pub(super) struct OpenAggregate {
    pub(super) builder: AggregateBuilder,
    pub(super) members: Vec<usize>,
    pub(super) slot: usize,
}

/// The next call of a send.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) call: Vec<Entry>,
    /// Entries left for later calls, in order.
    pub(super) rest: Vec<Entry>,
    /// Entries of a key that failed in this send: not sent now.
    pub(super) held: Vec<Entry>,
    /// With an empty call: how long until a shard's buckets let an entry go.
    pub(super) wait: Option<Duration>,
}

impl KinesisSink {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, ShardState> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard map, listed (again) if it is missing or stale; `None` when
    /// neither aggregation nor rate limits need it.
    pub(super) async fn shard_map(&self) -> Result<Option<Arc<ShardMap>>, BoxError> {
        if self.aggregation.is_none() && self.rate_limit.is_none() {
            return Ok(None);
        }
        {
            let st = self.state();
            if let Some(map) = &st.map
                && !st.stale
            {
                return Ok(Some(Arc::clone(map)));
            }
        }
        let map = Arc::new(ShardMap::list(&self.client, &self.stream).await?);
        info!(stream = %self.stream, shards = map.len(), "listed the stream's open shards");
        let mut st = self.state();
        st.map = Some(Arc::clone(&map));
        st.stale = false;
        Ok(Some(map))
    }

    /// The entries for the records of `batch` at `indexes`, in order: one
    /// per record, or aggregates per predicted shard.
    pub(super) fn entries(
        &self,
        batch: &[EncodedRecord],
        indexes: &[usize],
        map: Option<&ShardMap>,
    ) -> Vec<Entry> {
        let predict = |r: &EncodedRecord| {
            map.and_then(|m| m.predict(&r.partition_key, r.explicit_hash_key.as_deref()))
        };
        let Some(agg) = self.aggregation else {
            return indexes
                .iter()
                .map(|&i| Entry::plain(batch, i, predict(&batch[i])))
                .collect();
        };
        let max = agg.max_bytes.min(self.max_record_bytes);
        let mut slots: Vec<Option<Entry>> = Vec::with_capacity(indexes.len());
        let mut open: HashMap<Option<usize>, OpenAggregate> = HashMap::new();
        let close = |slots: &mut Vec<Option<Entry>>, shard: Option<usize>, a: OpenAggregate| {
            let entry = if let [one] = a.members[..] {
                // One user record goes as it is, as the KPL sends it.
                Entry::plain(batch, one, shard)
            } else {
                let bytes = a.builder.to_bytes();
                Entry {
                    size: bytes.len() + batch[a.members[0]].partition_key.len(),
                    members: a.members,
                    shard,
                    aggregate: Some(bytes),
                }
            };
            slots[a.slot] = Some(entry);
        };
        for &i in indexes {
            let r = &batch[i];
            let shard = predict(r);
            let ehk = r.explicit_hash_key.as_deref();
            let alone = r.partition_key.len()
                + AggregateBuilder::new().encoded_len_with(&r.partition_key, ehk, r.data.len());
            if alone > max {
                // Too large for any aggregate: alone, after what its shard
                // has open (so a key's order holds).
                if let Some(a) = open.remove(&shard) {
                    close(&mut slots, shard, a);
                }
                slots.push(Some(Entry::plain(batch, i, shard)));
                continue;
            }
            if let Some(a) = open.get_mut(&shard) {
                let key_len = a
                    .builder
                    .first_partition_key()
                    .map_or(r.partition_key.len(), str::len);
                if a.members.len() < agg.max_records
                    && key_len
                        + a.builder
                            .encoded_len_with(&r.partition_key, ehk, r.data.len())
                        <= max
                {
                    a.builder.push(&r.partition_key, ehk, r.data.clone());
                    a.members.push(i);
                    continue;
                }
                if let Some(a) = open.remove(&shard) {
                    close(&mut slots, shard, a);
                }
            }
            let mut builder = AggregateBuilder::new();
            builder.push(&r.partition_key, ehk, r.data.clone());
            open.insert(
                shard,
                OpenAggregate {
                    builder,
                    members: vec![i],
                    slot: slots.len(),
                },
            );
            slots.push(None);
        }
        for (shard, a) in open {
            close(&mut slots, shard, a);
        }
        slots.into_iter().flatten().collect()
    }

    /// Picks the next call from `queue` (in order): within the call limits,
    /// a key once per call with [`Ordering::PerKey`], records of a key that
    /// failed held back, and — with a rate limit — only what the predicted
    /// shards' buckets allow now (their tokens are taken).
    pub(super) fn plan(
        &self,
        batch: &[EncodedRecord],
        queue: Vec<Entry>,
        failed: &HashSet<&str>,
        map: Option<&ShardMap>,
        buckets: &mut HashMap<String, ShardBuckets>,
        now: DateTime<Utc>,
    ) -> Plan {
        let per_key = self.ordering == Ordering::PerKey;
        let mut plan = Plan::default();
        let mut bytes = 0;
        let mut call_keys: HashSet<&str> = HashSet::new();
        let mut blocked_keys: HashSet<&str> = HashSet::new();
        let mut blocked_shards: HashSet<usize> = HashSet::new();
        let mut reserved: HashMap<usize, (f64, f64)> = HashMap::new();
        let mut full = false;
        // A shard goes only once its buckets hold what it has pending, up to
        // a full call: a backlog then goes out in full calls, not in a
        // trickle of the few tokens refilled during the previous call.
        let demands = match (self.rate_limit, map) {
            (Some(limit), Some(_)) => call_demands(batch, &queue, failed, per_key, limit),
            _ => HashMap::new(),
        };
        if let (Some(limit), Some(m)) = (self.rate_limit, map) {
            for (&s, &(entries, size)) in &demands {
                if let Some(id) = m.shard_id(s) {
                    let b = buckets
                        .entry(id.to_owned())
                        .or_insert_with(|| limit.buckets(now));
                    if !b.ready(now, entries, size) {
                        blocked_shards.insert(s);
                    }
                }
            }
        }
        for e in queue {
            if full {
                plan.rest.push(e);
                continue;
            }
            if per_key && e.keys(batch).any(|k| failed.contains(k)) {
                plan.held.push(e);
                continue;
            }
            if !plan.call.is_empty()
                && (plan.call.len() == MAX_RECORDS_PER_CALL
                    || bytes + e.size > MAX_REQUEST_BYTES
                    || (per_key && e.keys(batch).any(|k| call_keys.contains(k))))
            {
                full = true;
                plan.rest.push(e);
                continue;
            }
            let mut blocked = e.shard.is_some_and(|s| blocked_shards.contains(&s))
                || (per_key && e.keys(batch).any(|k| blocked_keys.contains(k)));
            if !blocked
                && let (Some(limit), Some(s), Some(m)) = (self.rate_limit, e.shard, map)
                && let Some(id) = m.shard_id(s)
            {
                let b = buckets
                    .entry(id.to_owned())
                    .or_insert_with(|| limit.buckets(now));
                if !b.allows(
                    now,
                    reserved.get(&s).copied().unwrap_or_default(),
                    e.size as f64,
                ) {
                    blocked_shards.insert(s);
                    blocked = true;
                }
            }
            if blocked {
                blocked_keys.extend(e.keys(batch));
                plan.rest.push(e);
                continue;
            }
            if let Some(s) = e.shard {
                let r = reserved.entry(s).or_default();
                r.0 += 1.0;
                r.1 += e.size as f64;
            }
            bytes += e.size;
            call_keys.extend(e.keys(batch));
            plan.call.push(e);
        }
        if let (Some(_), Some(m)) = (self.rate_limit, map) {
            if plan.call.is_empty() {
                plan.wait = blocked_shards
                    .iter()
                    .filter_map(|&s| {
                        let b = buckets.get_mut(m.shard_id(s)?)?;
                        let (entries, size) = demands.get(&s).copied().unwrap_or((1.0, 0.0));
                        Some(b.wait_for(now, entries, size))
                    })
                    .min();
            }
            for (s, (entries, size)) in reserved {
                if let Some(b) = m.shard_id(s).and_then(|id| buckets.get_mut(id)) {
                    b.take(now, entries, size);
                }
            }
        }
        plan
    }

    /// After a call's answer: a shard's buckets that the call took from full
    /// refill from now on (see `TokenBucket::answered`: the sink never runs
    /// ahead of the service by a call's latency), and a shard that throttled
    /// an entry has its buckets emptied.
    pub(super) fn settle(
        &self,
        call: &[Entry],
        out: Option<&aws_sdk_kinesis::operation::put_records::PutRecordsOutput>,
        map: Option<&ShardMap>,
    ) {
        let (Some(_), Some(m)) = (self.rate_limit, map) else {
            return;
        };
        let now = self.clock.now();
        let results = out.map(|o| o.records()).unwrap_or_default();
        let mut st = self.state();
        for (n, e) in call.iter().enumerate() {
            let Some(b) = e
                .shard
                .and_then(|s| m.shard_id(s))
                .and_then(|id| st.buckets.get_mut(id))
            else {
                continue;
            };
            b.answered(now);
            let throttled = results.get(n).and_then(|r| r.error_code())
                == Some("ProvisionedThroughputExceededException");
            if throttled {
                b.drain(now);
            }
        }
    }

    pub(super) fn request_entry(
        &self,
        batch: &[EncodedRecord],
        e: &mut Entry,
    ) -> Result<PutRecordsRequestEntry, BoxError> {
        let first = &batch[e.members[0]];
        let data = e.aggregate.take().unwrap_or_else(|| first.data.clone());
        Ok(PutRecordsRequestEntry::builder()
            .data(Blob::new(data))
            .partition_key(&first.partition_key)
            .set_explicit_hash_key(first.explicit_hash_key.clone())
            .build()?)
    }
}

/// What each shard waits for before its next call: its entries in the call
/// that would go without a rate limit (the same limits, keys and held-back
/// records as [`KinesisSink::plan`]), up to one second of its rate (entries,
/// bytes). A hot key with [`Ordering::PerKey`] goes one entry per call, so
/// its shard waits for one entry's tokens, not for a full call's.
pub(super) fn call_demands(
    batch: &[EncodedRecord],
    queue: &[Entry],
    failed: &HashSet<&str>,
    per_key: bool,
    limit: RateLimit,
) -> HashMap<usize, (f64, f64)> {
    let max_entries = limit.records_per_second() as usize;
    let max_bytes = limit.bytes_per_second() as usize;
    let mut demands: HashMap<usize, (usize, usize)> = HashMap::new();
    let (mut entries, mut bytes) = (0usize, 0usize);
    let mut keys: HashSet<&str> = HashSet::new();
    for e in queue {
        if per_key && e.keys(batch).any(|k| failed.contains(k)) {
            continue;
        }
        if entries > 0
            && (entries == MAX_RECORDS_PER_CALL
                || bytes + e.size > MAX_REQUEST_BYTES
                || (per_key && e.keys(batch).any(|k| keys.contains(k))))
        {
            break;
        }
        entries += 1;
        bytes += e.size;
        keys.extend(e.keys(batch));
        if let Some(s) = e.shard {
            let d = demands.entry(s).or_default();
            if d.0 == 0 || (d.0 < max_entries && d.1 + e.size <= max_bytes) {
                d.0 += 1;
                d.1 += e.size;
            }
        }
    }
    demands
        .into_iter()
        .map(|(s, (n, b))| (s, (n as f64, b as f64)))
        .collect()
}
