//! [`KinesisSource`]: one shard read with `GetRecords`, a sequence number
//! as the pointer (see `docs/kinesis.md`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::retry::RetryPolicy;
use unistream_core::source::{Fetched, Pointer, Source, SourceRecord};
use unistream_core::{Error, Result};

use crate::aggregation;
use crate::error::KinesisError;
use crate::position::{Position, user_record};

/// Where a consumer without a checkpoint starts reading a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Records written after the first read (those written before a restart
    /// that found no checkpoint are not read).
    Latest,
    /// Records written at or after this time.
    AtTimestamp(DateTime<Utc>),
}

impl StartingPosition {
    /// As a checkpoint pointer (the text of its [`Position`]).
    pub fn to_pointer(self) -> Pointer {
        Position::from(self).to_pointer()
    }
}

/// What a [`KinesisSource`] has seen of its shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// `MillisBehindLatest` of the last `GetRecords`.
    pub millis_behind: Option<u64>,
    /// The shard ended (it was split or merged): nothing more to read.
    pub closed: bool,
    /// The children of a closed shard, to read next.
    pub child_shards: Vec<String>,
    /// `GetRecords` calls made.
    pub get_records_calls: u64,
    /// Iterators that had expired and were derived again.
    pub expired_iterators: u64,
    /// Calls throttled (`ProvisionedThroughputExceededException`).
    pub throttled: u64,
}

/// A consumer source reading one shard of a stream.
///
/// The pointer kept in the checkpoint is the sequence number of the last
/// record handed out (`TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP:<ms>` before
/// the first one) — never a shard iterator, which expires after 5 minutes.
/// The iterator for the next read is cached in memory; an expired one is
/// derived again from the pointer (`AFTER_SEQUENCE_NUMBER`), so nothing is
/// lost or repeated.
///
/// Records in the Kinesis Producer Library's aggregated format (see
/// [`aggregation`](crate::aggregation)) are de-aggregated by default: each
/// user record is handed out on its own, with its own partition key,
/// explicit hash key and pointer `<sequence number>:<sub-sequence number>`;
/// a fetch from such a pointer reads the aggregate again
/// (`AT_SEQUENCE_NUMBER`) and skips its user records up to that one. An
/// aggregate that cannot be read (bad digest, truncated) is handed out whole,
/// marked with the error ([`SourceRecord::error`]), for the consumer to send
/// to the dead-letter queue. A plain record keeps its sequence number as its
/// pointer.
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) {
/// use unistream_kinesis::{KinesisSource, StartingPosition};
/// let source = KinesisSource::new(client, "my-stream", "shardId-000000000000", StartingPosition::TrimHorizon);
/// # }
/// ```
pub struct KinesisSource {
    client: Client,
    stream: String,
    shard_id: String,
    start: StartingPosition,
    deaggregate: bool,
    cache: Option<Ahead>,
    last_call: Option<DateTime<Utc>>,
    min_interval: Duration,
    throttle_retry: RetryPolicy,
    clock: SharedClock,
    stats: ShardStats,
}

/// What a fetch read past the pointer it returned: the next fetch from that
/// pointer continues here.
struct Ahead {
    /// The pointer the last fetch returned.
    pointer: Pointer,
    /// User records read but not handed out yet (the fetch's limit cut the
    /// user records of aggregates short).
    pending: VecDeque<SourceRecord>,
    /// The iterator after the records read; `None` if the shard is closed
    /// after `pending`.
    iterator: Option<String>,
}

impl std::fmt::Debug for KinesisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cached iterator is left out: it is a credential-like token.
        let pointer = self.cache.as_ref().map(|a| a.pointer.as_str());
        write!(
            f,
            "KinesisSource {{ stream: {:?}, shard_id: {:?}, start: {:?}, deaggregate: {}, pointer: {pointer:?}, .. }}",
            self.stream, self.shard_id, self.start, self.deaggregate
        )
    }
}

impl KinesisSource {
    /// A source for `shard_id` of `stream`, starting at `start` when there is
    /// no checkpoint.
    pub fn new(
        client: Client,
        stream: impl Into<String>,
        shard_id: impl Into<String>,
        start: StartingPosition,
    ) -> Self {
        KinesisSource {
            client,
            stream: stream.into(),
            shard_id: shard_id.into(),
            start,
            deaggregate: true,
            cache: None,
            last_call: None,
            min_interval: Duration::from_millis(200),
            throttle_retry: RetryPolicy::waits([1, 2, 4, 8].map(Duration::from_secs))
                .with_max_attempts(8),
            clock: Arc::new(SystemClock),
            stats: ShardStats::default(),
        }
    }

    /// Uses another clock (for the rate limit and backoffs; virtual in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Waits after throttling (default: 1, 2, 4, 8 s; 8 attempts).
    pub fn with_throttle_retry(mut self, policy: RetryPolicy) -> Self {
        self.throttle_retry = policy;
        self
    }

    /// The least time between two `GetRecords` calls (default 200 ms: the
    /// Kinesis quota of 5 calls per second per shard).
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// Whether records in the KPL aggregated format are split into their
    /// user records (default: yes). Turned off, an aggregate is handed out
    /// as one record of its raw bytes, like any other; a checkpoint taken
    /// inside an aggregate (`<sequence number>:<sub-sequence number>`) then
    /// resumes at the whole aggregate (its user records are read again,
    /// never skipped).
    pub fn with_deaggregation(mut self, on: bool) -> Self {
        self.deaggregate = on;
        self
    }

    /// What the source has seen so far.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    fn invalid(&self, from: &Pointer, reason: &str) -> Error {
        Error::InvalidPointer {
            pointer: from.to_string(),
            source_name: format!("Kinesis stream {} shard {}", self.stream, self.shard_id),
            reason: reason.into(),
        }
    }

    async fn derive(&mut self, from: &Pointer) -> Result<String> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let position = Position::from_pointer(from).map_err(|e| self.invalid(from, e.reason))?;
        let req = position.iterator_request(req);
        let out = req
            .send()
            .await
            .map_err(|e| self.sdk_error("GetShardIterator", e))?;
        out.shard_iterator.ok_or_else(|| self.no_iterator())
    }

    fn no_iterator(&self) -> Error {
        KinesisError::Malformed {
            operation: "GetShardIterator",
            stream: self.stream.clone(),
            shard: self.shard_id.clone(),
            what: "no iterator in the answer",
        }
        .into()
    }

    /// The records one Kinesis record stands for, appended to `out`: itself,
    /// or its user records after sub-sequence `skip_through` (those up to it
    /// were handed out before), or itself marked unreadable.
    fn expand(
        &self,
        record: &aws_sdk_kinesis::types::Record,
        skip_through: Option<u64>,
        out: &mut VecDeque<SourceRecord>,
    ) {
        let seq = record.sequence_number();
        let data = record.data().as_ref();
        let key = record.partition_key().map(str::to_owned);
        let arrival = record
            .approximate_arrival_timestamp()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
        if !self.deaggregate {
            out.push_back(
                SourceRecord::new(Pointer::from(seq), data.to_vec())
                    .with_keys(key, None)
                    .with_arrival_time(arrival),
            );
            return;
        }
        match aggregation::decode(data) {
            Ok(None) => {
                out.push_back(
                    SourceRecord::new(Pointer::from(seq), data.to_vec())
                        .with_keys(key, None)
                        .with_arrival_time(arrival),
                );
            }
            Ok(Some(users)) if users.is_empty() => {
                warn!(stream = %self.stream, shard = %self.shard_id, sequence_number = seq, "a KPL aggregate of no user records; it goes to the dead-letter queue");
                out.push_back(
                    SourceRecord::new(Pointer::from(seq), data.to_vec())
                        .with_keys(key, None)
                        .with_error(format!(
                            "Kinesis record {seq} of stream {}, shard {}: a KPL aggregate of no user records",
                            self.stream, self.shard_id
                        )),
                );
            }
            Ok(Some(users)) => {
                for (sub, user) in (0u64..).zip(users) {
                    if skip_through.is_some_and(|done| sub <= done) {
                        continue;
                    }
                    out.push_back(
                        SourceRecord::new(Pointer::new(format!("{seq}:{sub}")), user.data)
                            .with_keys(Some(user.partition_key), user.explicit_hash_key)
                            .with_arrival_time(arrival),
                    );
                }
            }
            Err(e) => {
                warn!(stream = %self.stream, shard = %self.shard_id, sequence_number = seq, error = %e, "an unreadable KPL aggregate; it goes to the dead-letter queue whole");
                out.push_back(
                    SourceRecord::new(Pointer::from(seq), data.to_vec())
                        .with_keys(key, None)
                        .with_error(format!(
                            "Kinesis record {seq} of stream {}, shard {}: {e}",
                            self.stream, self.shard_id
                        )),
                );
            }
        }
    }

    /// Hands out up to `limit` of `pending`, keeping the rest (and the
    /// iterator after them) for the next fetch.
    fn hand_out(
        &mut self,
        from: &Pointer,
        mut pending: VecDeque<SourceRecord>,
        iterator: Option<String>,
        limit: usize,
    ) -> Fetched {
        let take = pending.len().min(limit.max(1));
        let records: Vec<SourceRecord> = pending.drain(..take).collect();
        let next_pointer = records
            .last()
            .map_or_else(|| from.clone(), |r| r.pointer.clone());
        let mut fetched = if pending.is_empty() && iterator.is_none() {
            Fetched::new(records, None)
        } else {
            self.cache = Some(Ahead {
                pointer: next_pointer.clone(),
                pending,
                iterator,
            });
            Fetched::new(records, Some(next_pointer))
        };
        fetched.millis_behind = self.stats.millis_behind;
        fetched
    }

    /// [`Error::Denied`] if the service refused the call, else
    /// [`api_error`](Self::api_error).
    fn sdk_error<E>(&self, operation: &'static str, e: aws_sdk_kinesis::error::SdkError<E>) -> Error
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata,
        aws_sdk_kinesis::error::SdkError<E>: Into<aws_sdk_kinesis::Error>,
    {
        self.denied(&e, operation)
            .unwrap_or_else(|| self.api_error(operation, e))
    }

    fn denied<E: aws_sdk_kinesis::error::ProvideErrorMetadata>(
        &self,
        e: &aws_sdk_kinesis::error::SdkError<E>,
        operation: &str,
    ) -> Option<Error> {
        unistream_aws::denied(e, &format!("kinesis:{operation}"), || {
            format!("stream {}, shard {}", self.stream, self.shard_id)
        })
    }

    fn api_error(
        &self,
        operation: &'static str,
        source: impl Into<aws_sdk_kinesis::Error>,
    ) -> Error {
        KinesisError::Api {
            operation,
            stream: self.stream.clone(),
            shard: Some(self.shard_id.clone()),
            source: Box::new(source.into()),
        }
        .into()
    }

    /// Keeps to 5 `GetRecords` per second on the shard.
    async fn pace(&mut self) {
        if let Some(last) = self.last_call {
            let since = (self.clock.now() - last).to_std().unwrap_or(Duration::ZERO);
            if since < self.min_interval {
                self.clock.sleep(self.min_interval - since).await;
            }
        }
        self.last_call = Some(self.clock.now());
    }
}

impl Source for KinesisSource {
    fn initial_pointer(&self) -> Pointer {
        self.start.to_pointer()
    }

    /// A whole Kinesis record (a plain pointer) that is an unreadable
    /// aggregate gets its error again, so that it still goes to the
    /// dead-letter queue, undecoded, after a restart.
    fn restore(&self, record: SourceRecord) -> SourceRecord {
        if !self.deaggregate
            || record.error.is_some()
            || user_record(record.pointer.as_str()).is_some()
        {
            return record;
        }
        match aggregation::decode(&record.data) {
            Ok(Some(users)) if users.is_empty() => {
                let reason = format!(
                    "Kinesis record {} of stream {}, shard {}: a KPL aggregate of no user records",
                    record.pointer, self.stream, self.shard_id
                );
                record.with_error(reason)
            }
            Ok(_) => record,
            Err(e) => {
                let reason = format!(
                    "Kinesis record {} of stream {}, shard {}: {e}",
                    record.pointer, self.stream, self.shard_id
                );
                record.with_error(reason)
            }
        }
    }

    async fn fetch(&mut self, from: &Pointer, limit: usize) -> Result<Fetched> {
        let mut throttled = 0u32;
        let mut expired = 0u32;
        loop {
            let iterator = match self.cache.take() {
                Some(ahead) if ahead.pointer == *from => {
                    if !ahead.pending.is_empty() {
                        return Ok(self.hand_out(from, ahead.pending, ahead.iterator, limit));
                    }
                    match ahead.iterator {
                        Some(it) => it,
                        None => self.derive(from).await?,
                    }
                }
                _ => self.derive(from).await?,
            };
            self.pace().await;
            self.stats.get_records_calls += 1;
            let read_limit = i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
            let out = match self
                .client
                .get_records()
                .shard_iterator(&iterator)
                .limit(read_limit)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if self.denied(&e, "GetRecords").is_some() => {
                    return Err(self.sdk_error("GetRecords", e));
                }
                Err(e) => match e.into_service_error() {
                    GetRecordsError::ExpiredIteratorException(_) if expired < 3 => {
                        expired += 1;
                        self.stats.expired_iterators += 1;
                        info!(stream = %self.stream, shard = %self.shard_id, pointer = %from, "shard iterator expired; deriving it again from the checkpoint");
                        continue;
                    }
                    GetRecordsError::ProvisionedThroughputExceededException(_)
                        if self.throttle_retry.allows(throttled + 2) =>
                    {
                        throttled += 1;
                        self.stats.throttled += 1;
                        let wait = self.throttle_retry.delay_before(throttled + 1);
                        warn!(stream = %self.stream, shard = %self.shard_id, ?wait, "GetRecords throttled; backing off");
                        self.cache = Some(Ahead {
                            pointer: from.clone(),
                            pending: VecDeque::new(),
                            iterator: Some(iterator),
                        });
                        self.clock.sleep(wait).await;
                        continue;
                    }
                    e => {
                        return Err(self.api_error("GetRecords", e));
                    }
                },
            };
            let millis_behind = out
                .millis_behind_latest()
                .and_then(|m| u64::try_from(m).ok());
            self.stats.millis_behind = millis_behind;
            // A fetch from a user record's pointer starts at its aggregate:
            // the user records up to it were handed out before.
            let resume = user_record(from.as_str());
            let mut records = VecDeque::with_capacity(out.records().len());
            for r in out.records() {
                let skip_through = resume
                    .filter(|(seq, _)| *seq == r.sequence_number())
                    .map(|(_, sub)| sub);
                self.expand(r, skip_through, &mut records);
            }
            debug!(stream = %self.stream, shard = %self.shard_id, kinesis_records = out.records().len(), records = records.len(), ?millis_behind, "GetRecords");
            let next = out.next_shard_iterator().map(str::to_owned);
            if next.is_none() {
                self.stats.closed = true;
                self.stats.child_shards = out
                    .child_shards()
                    .iter()
                    .map(|c| c.shard_id().to_owned())
                    .collect();
                info!(stream = %self.stream, shard = %self.shard_id, children = ?self.stats.child_shards, "the shard is closed");
            }
            return Ok(self.hand_out(from, records, next, limit));
        }
    }
}
