//! [`KinesisSink`]: the producer's sink over `PutRecords` (limits, per-key
//! ordering, partial failures; see `docs/kinesis.md`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};
use unistream_core::BoxError;
use unistream_core::ErrorInfo;
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::sink::{Delivery, EncodedRecord, Refusal, SetAside, Sink};

use crate::aggregation::AggregateBuilder;
use crate::rate::{RateLimit, ShardBuckets};
use crate::shards::ShardMap;

/// Most records in one `PutRecords` call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data and partition keys) in one `PutRecords` call.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Most bytes of one record (data and partition key), the Kinesis default.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The default most bytes of one aggregate (data and partition key), the
/// KPL's default `AggregationMaxSize`.
pub const DEFAULT_MAX_AGGREGATE_BYTES: usize = 51_200;

/// How a batch is split into `PutRecords` calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    /// No call holds two records of the same partition key, and after a
    /// record fails, later records of its key are held back: a later record
    /// of a key is never stored before an earlier one. Batches where one key
    /// repeats need more calls.
    #[default]
    PerKey,
    /// Calls as full as the limits allow; after a partial failure, a later
    /// record of a key may be stored before an earlier one that is retried.
    None,
}

/// How [`KinesisSink::with_aggregation`] packs user records into KPL
/// aggregates (see [`aggregation`](crate::aggregation)).
///
/// ```
/// use unistream_kinesis::Aggregation;
/// let small = Aggregation::default().with_max_bytes(25_600).with_max_records(100);
/// assert_eq!((small.max_bytes(), small.max_records()), (25_600, 100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregation {
    max_bytes: usize,
    max_records: usize,
}

impl Default for Aggregation {
    /// At most [`DEFAULT_MAX_AGGREGATE_BYTES`] (51,200) bytes and no limit
    /// on the number of user records but the size (the KPL's defaults).
    fn default() -> Self {
        Aggregation {
            max_bytes: DEFAULT_MAX_AGGREGATE_BYTES,
            max_records: usize::MAX,
        }
    }
}

impl Aggregation {
    /// The most bytes of one aggregate, counting its data (magic, protobuf,
    /// digest) and its partition key, as Kinesis counts a record's size:
    /// at most 1 MiB (a larger value is taken as 1 MiB), and never more than
    /// the sink's [`with_max_record_bytes`](KinesisSink::with_max_record_bytes).
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes.min(MAX_RECORD_BYTES);
        self
    }

    /// The most user records in one aggregate (at least 1; default no limit
    /// but the size).
    pub fn with_max_records(mut self, records: usize) -> Self {
        self.max_records = records.max(1);
        self
    }

    /// The most bytes of one aggregate.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The most user records of one aggregate.
    pub fn max_records(&self) -> usize {
        self.max_records
    }
}

/// A producer sink over Kinesis `PutRecords`.
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) {
/// use unistream_kinesis::{Aggregation, KinesisSink, RateLimit};
/// let plain = KinesisSink::new(client.clone(), "my-stream");
/// // Small records, many per shard: KPL aggregates, paced at each shard's quota.
/// let packed = KinesisSink::new(client, "my-stream")
///     .with_aggregation(Aggregation::default())
///     .with_rate_limit(RateLimit::default());
/// # }
/// ```
#[derive(Clone)]
pub struct KinesisSink {
    client: Client,
    stream: String,
    max_record_bytes: usize,
    ordering: Ordering,
    rejected: Option<Arc<dyn SetAside>>,
    aggregation: Option<Aggregation>,
    rate_limit: Option<RateLimit>,
    clock: SharedClock,
    shards: Arc<Mutex<ShardState>>,
}

impl std::fmt::Debug for KinesisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisSink")
            .field("stream", &self.stream)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("ordering", &self.ordering)
            .field("rejected", &self.rejected)
            .field("aggregation", &self.aggregation)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// What the sink knows of the stream's shards, shared by its clones.
#[derive(Debug, Default)]
struct ShardState {
    map: Option<Arc<ShardMap>>,
    /// A record went to another shard than predicted: list them again.
    stale: bool,
    /// Token buckets by shard id (kept across a refresh of the map).
    buckets: HashMap<String, ShardBuckets>,
}

/// One `PutRecords` entry: a user record alone, or an aggregate of several.
#[derive(Debug)]
struct Entry {
    /// Indexes into the batch, in order.
    members: Vec<usize>,
    /// The predicted shard (an index into the map).
    shard: Option<usize>,
    /// Data and partition key, as Kinesis counts them.
    size: usize,
    /// The aggregate's bytes; `None` for a record sent as it is.
    aggregate: Option<Vec<u8>>,
}

impl Entry {
    fn keys<'b>(&self, batch: &'b [EncodedRecord]) -> impl Iterator<Item = &'b str> + use<'b, '_> {
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
struct OpenAggregate {
    builder: AggregateBuilder,
    members: Vec<usize>,
    slot: usize,
}

/// The next call of a send.
#[derive(Debug, Default)]
struct Plan {
    call: Vec<Entry>,
    /// Entries left for later calls, in order.
    rest: Vec<Entry>,
    /// Entries of a key that failed in this send: not sent now.
    held: Vec<Entry>,
    /// With an empty call: how long until a shard's buckets let an entry go.
    wait: Option<Duration>,
}

impl KinesisSink {
    /// A sink into `stream` (a name or an ARN).
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        KinesisSink {
            client,
            stream: stream.into(),
            max_record_bytes: MAX_RECORD_BYTES,
            ordering: Ordering::PerKey,
            rejected: None,
            aggregation: None,
            rate_limit: None,
            clock: Arc::new(SystemClock),
            shards: Arc::default(),
        }
    }

    /// Where records too large for the stream go if they are already in the
    /// producer's buffer (`validate` refuses new ones at `put`; old ones can
    /// be there after the limit was lowered): one JSON line each, with the
    /// record's id, key, size and bytes (base64) — into a file with
    /// `unistream_local::AppendFile`. Without it, such a record makes `send`
    /// fail with an error naming it and this setting, so that nothing is
    /// dropped.
    pub fn with_rejected(mut self, target: impl SetAside + 'static) -> Self {
        self.rejected = Some(Arc::new(target));
        self
    }

    fn set_aside(&self, r: &EncodedRecord, size: usize) -> Result<(), BoxError> {
        let Some(file) = &self.rejected else {
            return Err(format!(
                "record {:?} is {size} bytes, over the stream's {} bytes; it can never be sent: \
                 configure KinesisSink::with_rejected to set such records aside",
                r.id, self.max_record_bytes
            )
            .into());
        };
        let line = serde_json::json!({
            "record_id": r.id,
            "partition_key": r.partition_key,
            "bytes": size,
            "max_record_bytes": self.max_record_bytes,
            "stream": self.stream,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&r.data),
        });
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        file.set_aside(&bytes)?;
        error!(record_id = %r.id, size, max = self.max_record_bytes, to = %file.location(), "record too large for the stream; set aside");
        Ok(())
    }

    /// The stream's maximum record size, if it is not the default 1 MiB.
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// How batches are split (default [`Ordering::PerKey`]).
    pub fn with_ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Packs user records into KPL aggregates (off by default): per
    /// predicted shard, in batch order, up to the [`Aggregation`]'s size and
    /// count. An aggregate is one `PutRecords` entry, accepted or retried
    /// whole, so its user records are delivered (and narrowed out of the
    /// producer's buffer) together. A user record alone, or too large for an
    /// aggregate, is sent as it is, as the KPL does. Readers must
    /// de-aggregate (`KinesisSource` does, as does the KCL); see
    /// `docs/kinesis.md` for when to aggregate. Needs `kinesis:ListShards`.
    pub fn with_aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }

    /// Paces sends per predicted shard with two token buckets, entries/s and
    /// bytes/s (off by default; [`RateLimit::default`] is the service's
    /// quota, 1,000 entries and 1 MiB per second), so that a backlog goes
    /// out at the shard's rate instead of provoking throttling. `send` waits
    /// (on the sink's clock) until a shard's buckets let its next entry go;
    /// throttling answers still fail the records, which the producer retries
    /// after its backoff. Needs `kinesis:ListShards`.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Uses another clock for the rate limit (virtual in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ShardState> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard map, listed (again) if it is missing or stale; `None` when
    /// neither aggregation nor rate limits need it.
    async fn shard_map(&self) -> Result<Option<Arc<ShardMap>>, BoxError> {
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
    fn entries(
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
    fn plan(
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
    fn settle(
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

    fn request_entry(
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
fn call_demands(
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

impl Sink for KinesisSink {
    /// Refuses a record whose partition key is not 1 to 256 characters,
    /// whose explicit hash key is not a decimal number from 0 to 2^128 - 1,
    /// or whose data and key are over the stream's record size. With
    /// aggregation the limit is the same: a record too large for an
    /// aggregate (its share of the aggregate's framing and key tables
    /// included) is sent alone, as it is.
    fn validate(&self, r: &EncodedRecord) -> Result<(), Refusal> {
        let key_chars = r.partition_key.chars().count();
        if !(1..=256).contains(&key_chars) {
            return Err(Refusal::PartitionKey(format!(
                "a Kinesis partition key has 1 to 256 characters; this one has {key_chars}"
            )));
        }
        if let Some(ehk) = &r.explicit_hash_key {
            // Kinesis takes `0|([1-9]\d{0,38})` up to 2^128 - 1; any other
            // fails its whole PutRecords call, again at every retry.
            let digits =
                ehk == "0" || (!ehk.starts_with('0') && ehk.bytes().all(|b| b.is_ascii_digit()));
            if !digits || ehk.parse::<u128>().is_err() {
                return Err(Refusal::Unrepresentable(format!(
                    "a Kinesis explicit hash key is a decimal number from 0 to 2^128 - 1 \
                     without leading zeros; this one is {ehk:?}"
                )));
            }
        }
        let size = r.data.len() + r.partition_key.len();
        if size > self.max_record_bytes {
            return Err(Refusal::TooLarge {
                bytes: size,
                max: self.max_record_bytes,
            });
        }
        Ok(())
    }

    async fn send(&self, batch: &[EncodedRecord]) -> Result<Delivery, BoxError> {
        let map = self.shard_map().await?;
        let mut rejected: Vec<usize> = Vec::new();
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let mut accepted = 0usize;
        let mut last_error: Option<String> = None;
        let mut misrouted = false;
        let mut sendable = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            let size = r.data.len() + r.partition_key.len();
            if size > self.max_record_bytes {
                self.set_aside(r, size)?;
                accepted += 1;
            } else {
                sendable.push(i);
            }
        }
        let mut queue = self.entries(batch, &sendable, map.as_deref());
        // A record in no listed range: the map was listed mid-reshard.
        misrouted |= map.is_some() && queue.iter().any(|e| e.shard.is_none());
        while !queue.is_empty() {
            let now = self.clock.now();
            let plan = {
                let mut st = self.state();
                self.plan(
                    batch,
                    queue,
                    &failed_keys,
                    map.as_deref(),
                    &mut st.buckets,
                    now,
                )
            };
            rejected.extend(plan.held.iter().flat_map(|e| e.members.iter().copied()));
            queue = plan.rest;
            let mut call = plan.call;
            if call.is_empty() {
                match plan.wait {
                    Some(wait) => {
                        debug!(stream = %self.stream, ?wait, "waiting for a shard's rate limit");
                        self.clock.sleep(wait).await;
                        continue;
                    }
                    None => {
                        // Nothing can go and nothing waits: report the rest.
                        rejected.extend(queue.iter().flat_map(|e| e.members.iter().copied()));
                        break;
                    }
                }
            }
            let entries = call
                .iter_mut()
                .map(|e| self.request_entry(batch, e))
                .collect::<Result<Vec<_>, _>>()?;
            let sent = self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await;
            self.settle(&call, sent.as_ref().ok(), map.as_deref());
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    let e = aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
                    if accepted == 0 {
                        return Err(format!("PutRecords into {}: {e}", self.stream).into());
                    }
                    // Something was stored already: report the rest as not accepted.
                    rejected.extend(
                        call.iter()
                            .chain(&queue)
                            .flat_map(|e| e.members.iter().copied()),
                    );
                    last_error = Some(e);
                    break;
                }
            };
            for (e, result) in call.iter().zip(out.records()) {
                if let Some(code) = result.error_code() {
                    rejected.extend(&e.members);
                    failed_keys.extend(e.keys(batch));
                    last_error = Some(format!(
                        "{code}: {}",
                        result.error_message().unwrap_or_default()
                    ));
                } else {
                    accepted += e.members.len();
                    let predicted = e.shard.and_then(|s| map.as_deref()?.shard_id(s));
                    if let (Some(p), Some(got)) = (predicted, result.shard_id())
                        && p != got
                    {
                        misrouted = true;
                    }
                }
            }
            if out.records().len() < call.len() {
                // A malformed answer: treat the entries without a result as failed.
                rejected.extend(
                    call[out.records().len()..]
                        .iter()
                        .flat_map(|e| e.members.iter().copied()),
                );
            }
            debug!(stream = %self.stream, entries = call.len(), failed = out.failed_record_count().unwrap_or(0), "PutRecords");
        }
        if misrouted {
            warn!(stream = %self.stream, "a record went to another shard than predicted (resharded?); the shards will be listed again");
            self.state().stale = true;
        }
        if rejected.is_empty() {
            return Ok(Delivery::All);
        }
        rejected.sort_unstable();
        rejected.dedup();
        if accepted == 0 && rejected.len() == batch.len() {
            return Err(last_error
                .unwrap_or_else(|| "every record failed".into())
                .into());
        }
        warn!(stream = %self.stream, rejected = rejected.len(), of = batch.len(), "PutRecords partly failed");
        Ok(Delivery::Partial {
            rejected,
            error: ErrorInfo::new(last_error.unwrap_or_else(|| "records failed".into())),
        })
    }
}

#[cfg(test)]
mod tests {
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
}
