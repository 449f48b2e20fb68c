//! [`KinesisSink`]: the producer's sink over `PutRecords` (limits, per-key
//! ordering, partial failures; see `docs/kinesis.md`). The planning of a
//! call — per-shard aggregates, rate-limit demands, which records wait — is
//! in `plan.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use aws_sdk_kinesis::Client;
use tracing::{debug, error, warn};
use unistream_core::BoxError;
use unistream_core::ErrorInfo;
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::sink::{Delivery, EncodedRecord, Refusal, SetAside, Sink};

use crate::rate::RateLimit;
use plan::ShardState;

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
                    if accepted == 0
                        && let Some(denied) =
                            unistream_aws::denied(&e, "kinesis:PutRecords", || {
                                format!("stream {}", self.stream)
                            })
                    {
                        // Not a failure to retry: the producer stops on it.
                        return Err(denied.into());
                    }
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

mod plan;

#[cfg(test)]
mod tests;
