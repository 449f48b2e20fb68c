//! [`KinesisSource`]: one shard read ahead of the consumer — by
//! `GetRecords` (polling) or by `SubscribeToShard` (enhanced fan-out) — a
//! sequence number as the pointer (see `docs/kinesis.md`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};
use tracing::warn;
use unistream_core::Result;
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::retry::RetryPolicy;
use unistream_core::source::{Fetched, Pointer, Source, SourceRecord};

use crate::aggregation;
use crate::fanout::{FanOutSettings, Floor, Subscription, SubscriptionStats};
use crate::position::{Position, user_record};
use crate::reader::{self, Bound, Page, PollSettings, Reader, ShardRef};

/// The default `Limit` of a `GetRecords` call: the service's largest.
pub const DEFAULT_READ_LIMIT: usize = 10_000;

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
    /// `MillisBehindLatest` of the last page taken.
    pub millis_behind: Option<u64>,
    /// The shard ended (it was split or merged): nothing more to read.
    pub closed: bool,
    /// The children of a closed shard, to read next.
    pub child_shards: Vec<String>,
    /// `GetRecords` calls made (for the pages taken).
    pub get_records_calls: u64,
    /// Iterators that had expired and were derived again.
    pub expired_iterators: u64,
    /// Calls throttled (`ProvisionedThroughputExceededException`).
    pub throttled: u64,
    /// Pages taken: `GetRecords` answers or `SubscribeToShard` events.
    pub pages: u64,
    /// Readers started: the first, and one after each fetch from another
    /// place than where the last one stood (a restart from the checkpoint).
    pub readers: u64,
    /// Enhanced fan-out: `SubscribeToShard` sessions opened.
    pub subscriptions: u64,
    /// Enhanced fan-out: subscriptions again after a session ended, failed
    /// or went silent.
    pub resubscriptions: u64,
    /// Enhanced fan-out: `ResourceInUseException`s met.
    pub resource_in_use: u64,
}

/// How a [`KinesisSource`] reads.
#[derive(Debug, Clone)]
enum Mode {
    Poll(PollSettings),
    FanOut {
        consumer_arn: String,
        settings: FanOutSettings,
        stats: Arc<SubscriptionStats>,
    },
}

/// A consumer source reading one shard of a stream.
///
/// **Reading ahead.** A background reader keeps the next reads in flight
/// while the consumer works: up to 3 pages and 8 MiB of record data ahead
/// by default ([`with_prefetch`](Self::with_prefetch); the KCL's defaults).
/// Polling (the default), it calls `GetRecords` of up to 10,000 records
/// ([`with_read_limit`](Self::with_read_limit)), paced to the shard's read
/// quota — at most 5 calls and 2 MiB of data per second — backing off when
/// throttled, and waiting longer between reads that find nothing (200 ms
/// for the first five, then doubling up to 1 s:
/// [`with_max_idle_delay`](Self::with_max_idle_delay)). With enhanced
/// fan-out ([`with_fan_out`](Self::with_fan_out)) it reads a
/// `SubscribeToShard` subscription instead: its own 2 MiB/s per shard,
/// records pushed as they arrive, subscribed again when a session ends, the
/// connection drops or it goes silent. A fetch that finds nothing read yet
/// waits for the reader's next page (every read makes one, empty at the
/// tip) instead of returning at once, and tells the consumer not to sleep
/// its idle delay on top.
///
/// What is read ahead lives in memory only: a page becomes the consumer's
/// batch when the consumer takes it, and the checkpoint moves only with
/// what it took — a `kill -9` at any moment loses and skips nothing.
///
/// **The pointer** kept in the checkpoint is the sequence number of the
/// last record handed out (`TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP:<ms>`
/// before the first one) — never a shard iterator, which expires after 5
/// minutes. A fetch from another pointer than the one the reader stands at
/// (a restart from the checkpoint) starts a new reader there; an expired
/// iterator is derived again after the last record read.
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
    shard: ShardRef,
    start: StartingPosition,
    deaggregate: bool,
    mode: Mode,
    bound: Bound,
    cache: Option<Ahead>,
    reader: Option<Reader>,
    clock: SharedClock,
    stats: ShardStats,
}

/// Records of a page not handed out yet (the fetch's limit cut it short):
/// the next fetch from `pointer` continues with them.
struct Ahead {
    /// The pointer the last fetch returned.
    pointer: Pointer,
    pending: VecDeque<SourceRecord>,
    /// The shard is closed after `pending`.
    closed: bool,
}

impl std::fmt::Debug for KinesisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = self.reader.as_ref().map(|r| r.at.as_str());
        let mode = match &self.mode {
            Mode::Poll(_) => "GetRecords",
            Mode::FanOut { .. } => "SubscribeToShard",
        };
        write!(
            f,
            "KinesisSource {{ stream: {:?}, shard_id: {:?}, start: {:?}, deaggregate: {}, mode: {mode}, reader_at: {pointer:?}, .. }}",
            self.shard.stream, self.shard.shard_id, self.start, self.deaggregate
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
            shard: ShardRef {
                stream: stream.into(),
                shard_id: shard_id.into(),
            },
            start,
            deaggregate: true,
            mode: Mode::Poll(PollSettings {
                read_limit: DEFAULT_READ_LIMIT,
                min_interval: Duration::from_millis(200),
                max_idle: Duration::from_secs(1),
                bytes_per_second: crate::SHARD_READ_BYTES_PER_SECOND as f64,
                throttle_retry: RetryPolicy::waits([1, 2, 4, 8].map(Duration::from_secs))
                    .with_max_attempts(8),
            }),
            bound: Bound {
                pages: 3,
                bytes: 8 * 1024 * 1024,
            },
            cache: None,
            reader: None,
            clock: Arc::new(SystemClock),
            stats: ShardStats::default(),
        }
    }

    /// Uses another clock (for the pacing and backoffs; virtual in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn poll_settings(&mut self) -> Option<&mut PollSettings> {
        match &mut self.mode {
            Mode::Poll(s) => Some(s),
            Mode::FanOut { .. } => None,
        }
    }

    /// Waits after throttling (default: 1, 2, 4, 8 s; 8 attempts).
    pub fn with_throttle_retry(mut self, policy: RetryPolicy) -> Self {
        if let Some(s) = self.poll_settings() {
            s.throttle_retry = policy;
        }
        self
    }

    /// The least time between two `GetRecords` calls (default 200 ms: the
    /// Kinesis quota of 5 calls per second per shard).
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        if let Some(s) = self.poll_settings() {
            s.min_interval = interval;
        }
        self
    }

    /// The longest wait between two `GetRecords` calls that find nothing
    /// (default 1 s). The wait stays at the least interval for five empty
    /// reads in a row, then doubles up to this.
    pub fn with_max_idle_delay(mut self, delay: Duration) -> Self {
        if let Some(s) = self.poll_settings() {
            s.max_idle = delay;
        }
        self
    }

    /// The `Limit` of each `GetRecords` call (default and largest: 10,000).
    /// The consumer's own `limit` (records per batch) is separate: a page
    /// larger than it is handed out over several fetches.
    pub fn with_read_limit(mut self, limit: usize) -> Self {
        if let Some(s) = self.poll_settings() {
            s.read_limit = limit.clamp(1, DEFAULT_READ_LIMIT);
        }
        self
    }

    /// How much is read ahead of the consumer: at most `pages` pages
    /// (`GetRecords` answers or subscription events) and about `bytes` of
    /// record data (a read starts only while less is held). Default: 3
    /// pages, 8 MiB.
    pub fn with_prefetch(mut self, pages: usize, bytes: usize) -> Self {
        self.bound = Bound {
            pages: pages.max(1),
            bytes: bytes.max(1),
        };
        self
    }

    /// Reads by enhanced fan-out: `SubscribeToShard` as the registered
    /// stream consumer `consumer_arn` (see
    /// [`register_consumer`](crate::register_consumer)), with its own read
    /// throughput of 2 MiB/s per shard, instead of `GetRecords`.
    pub fn with_fan_out(mut self, consumer_arn: impl Into<String>) -> Self {
        self.mode = Mode::FanOut {
            consumer_arn: consumer_arn.into(),
            settings: FanOutSettings::default(),
            stats: Arc::new(SubscriptionStats::default()),
        };
        self
    }

    /// With enhanced fan-out: a subscription without an event this long is
    /// dropped and subscribed again (default 15 s; AWS sends an event at
    /// least every 5 s), and the waits between refused subscriptions.
    pub fn with_fan_out_settings(mut self, silence: Duration, retry: RetryPolicy) -> Self {
        if let Mode::FanOut { settings, .. } = &mut self.mode {
            settings.silence = silence;
            settings.retry = retry;
        }
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
                warn!(stream = %self.shard.stream, shard = %self.shard.shard_id, sequence_number = seq, "a KPL aggregate of no user records; it goes to the dead-letter queue");
                out.push_back(
                    SourceRecord::new(Pointer::from(seq), data.to_vec())
                        .with_keys(key, None)
                        .with_error(format!(
                            "Kinesis record {seq} of stream {}, shard {}: a KPL aggregate of no user records",
                            self.shard.stream, self.shard.shard_id
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
                warn!(stream = %self.shard.stream, shard = %self.shard.shard_id, sequence_number = seq, error = %e, "an unreadable KPL aggregate; it goes to the dead-letter queue whole");
                out.push_back(
                    SourceRecord::new(Pointer::from(seq), data.to_vec())
                        .with_keys(key, None)
                        .with_error(format!(
                            "Kinesis record {seq} of stream {}, shard {}: {e}",
                            self.shard.stream, self.shard.shard_id
                        )),
                );
            }
        }
    }

    /// Hands out up to `limit` of `pending`, keeping the rest for the next
    /// fetch.
    fn hand_out(
        &mut self,
        from: &Pointer,
        mut pending: VecDeque<SourceRecord>,
        closed: bool,
        limit: usize,
    ) -> Fetched {
        let take = pending.len().min(limit.max(1));
        let records: Vec<SourceRecord> = pending.drain(..take).collect();
        let next_pointer = records
            .last()
            .map_or_else(|| from.clone(), |r| r.pointer.clone());
        let mut fetched = if pending.is_empty() && closed {
            Fetched::new(records, None)
        } else {
            if !pending.is_empty() {
                self.cache = Some(Ahead {
                    pointer: next_pointer.clone(),
                    pending,
                    closed,
                });
            }
            Fetched::new(records, Some(next_pointer))
        };
        fetched.millis_behind = self.stats.millis_behind;
        // The reader waits for records itself: no idle delay on top.
        fetched.idle_delay = Some(Duration::ZERO);
        fetched
    }

    /// A reader from `position`, standing at `at`.
    fn start_reader(&mut self, at: Pointer, position: Position) -> Reader {
        self.stats.readers += 1;
        let (client, shard, clock) = (self.client.clone(), self.shard.clone(), self.clock.clone());
        match &self.mode {
            Mode::Poll(settings) => {
                let settings = settings.clone();
                Reader::start(at, self.bound, move |out| {
                    reader::poll(client, shard, position, settings, clock, out)
                })
            }
            Mode::FanOut {
                consumer_arn,
                settings,
                stats,
            } => {
                let (consumer_arn, settings, stats) =
                    (consumer_arn.clone(), settings.clone(), Arc::clone(stats));
                Reader::start(at, self.bound, move |out| {
                    Subscription {
                        client,
                        consumer_arn,
                        shard,
                        floor: std::sync::Mutex::new(Floor::at_start(&position)),
                        start: position,
                        out,
                        settings,
                        clock,
                        stats,
                    }
                    .run()
                })
            }
        }
    }

    /// Counts what a page says about the shard.
    fn note(&mut self, page: &Page) {
        let s = &mut self.stats;
        s.pages += 1;
        s.get_records_calls += page.calls;
        s.throttled += page.throttled;
        s.expired_iterators += page.expired;
        s.millis_behind = page.millis_behind;
        if let Some(children) = &page.closed {
            s.closed = true;
            s.child_shards.clone_from(children);
        }
        if let Mode::FanOut { stats, .. } = &self.mode {
            let snapshot = stats.snapshot();
            s.subscriptions = snapshot.sessions;
            s.resubscriptions = snapshot.resubscriptions;
            s.resource_in_use = snapshot.resource_in_use;
        }
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
                    record.pointer, self.shard.stream, self.shard.shard_id
                );
                record.with_error(reason)
            }
            Ok(_) => record,
            Err(e) => {
                let reason = format!(
                    "Kinesis record {} of stream {}, shard {}: {e}",
                    record.pointer, self.shard.stream, self.shard.shard_id
                );
                record.with_error(reason)
            }
        }
    }

    async fn fetch(&mut self, from: &Pointer, limit: usize) -> Result<Fetched> {
        if let Some(ahead) = self.cache.take()
            && ahead.pointer == *from
        {
            return Ok(self.hand_out(from, ahead.pending, ahead.closed, limit));
        }
        if self.reader.as_ref().is_some_and(|r| r.at != *from) {
            // The consumer went back to its checkpoint: read from there.
            self.reader = None;
        }
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let position =
                    Position::from_pointer(from).map_err(|e| self.shard.invalid(from, e.reason))?;
                let reader = self.start_reader(from.clone(), position);
                self.reader.insert(reader)
            }
        };
        let page = match reader.next().await {
            Err(e) => {
                self.reader = None;
                return Err(e);
            }
            Ok(page) => page,
        };
        // A fetch from a user record's pointer starts at its aggregate:
        // the user records up to it were handed out before.
        let resume = user_record(from.as_str());
        let mut records = VecDeque::with_capacity(page.records.len());
        let mut page = page;
        // The pages already read ahead join this one, up to `limit`: a
        // backlog makes batches of the consumer's size, not of the
        // service's page (fewer checkpoint writes per record).
        loop {
            for r in &page.records {
                let skip_through = resume
                    .filter(|(seq, _)| *seq == r.sequence_number())
                    .map(|(_, sub)| sub);
                self.expand(r, skip_through, &mut records);
            }
            if let (Some(reader), Some(last)) = (self.reader.as_mut(), records.back()) {
                reader.at = last.pointer.clone();
            }
            self.note(&page);
            if page.closed.is_some() || records.len() >= limit {
                break;
            }
            match self.reader.as_mut().and_then(Reader::ready) {
                Some(more) => page = more,
                None => break,
            }
        }
        let closed = page.closed.is_some();
        if closed {
            self.reader = None;
        }
        Ok(self.hand_out(from, records, closed, limit))
    }
}
