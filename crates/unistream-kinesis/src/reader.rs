//! Reading a shard ahead of the consumer: a background task that turns
//! `GetRecords` calls (or, with enhanced fan-out, a subscription's events)
//! into [`Page`]s, in order, into a bounded channel that the
//! [`KinesisSource`](crate::KinesisSource) takes from when the consumer asks.
//!
//! What is read ahead lives only in memory: a page becomes a checkpoint's
//! batch only when the consumer takes it, so a `kill -9` at any moment loses
//! nothing (the next run reads again from the checkpoint) and skips nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::types::Record;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};
use unistream_core::clock::SharedClock;
use unistream_core::retry::RetryPolicy;
use unistream_core::source::Pointer;
use unistream_core::{Error, Result};

use crate::error::KinesisError;
use crate::position::Position;

/// The shard a reader reads, for calls and messages.
#[derive(Debug, Clone)]
pub(crate) struct ShardRef {
    pub(crate) stream: String,
    pub(crate) shard_id: String,
}

impl ShardRef {
    /// [`Error::Denied`] if the service refused the call, else an API error.
    pub(crate) fn sdk_error<E>(
        &self,
        operation: &'static str,
        e: aws_sdk_kinesis::error::SdkError<E>,
    ) -> Error
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata,
        aws_sdk_kinesis::error::SdkError<E>: Into<aws_sdk_kinesis::Error>,
    {
        self.denied(&e, operation)
            .unwrap_or_else(|| self.api_error(operation, e))
    }

    /// [`Error::Denied`] if the service refused the call for a missing
    /// permission.
    pub(crate) fn denied<E: aws_sdk_kinesis::error::ProvideErrorMetadata>(
        &self,
        e: &aws_sdk_kinesis::error::SdkError<E>,
        operation: &str,
    ) -> Option<Error> {
        unistream_aws::denied(e, &format!("kinesis:{operation}"), || {
            format!("stream {}, shard {}", self.stream, self.shard_id)
        })
    }

    pub(crate) fn api_error(
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

    pub(crate) fn invalid(&self, from: &Pointer, reason: &str) -> Error {
        Error::InvalidPointer {
            pointer: from.to_string(),
            source_name: format!("Kinesis stream {} shard {}", self.stream, self.shard_id),
            reason: reason.into(),
        }
    }

    /// A shard iterator at `position`.
    pub(crate) async fn iterator(&self, client: &Client, position: &Position) -> Result<String> {
        let req = client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let out = position
            .iterator_request(req)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetShardIterator", e))?;
        out.shard_iterator.ok_or_else(|| {
            KinesisError::Malformed {
                operation: "GetShardIterator",
                stream: self.stream.clone(),
                shard: self.shard_id.clone(),
                what: "no iterator in the answer",
            }
            .into()
        })
    }
}

/// What one read of a shard produced: a `GetRecords` answer, or a
/// `SubscribeToShard` event.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// The Kinesis records, in order.
    pub(crate) records: Vec<Record>,
    /// How far behind the shard's tip the read was.
    pub(crate) millis_behind: Option<u64>,
    /// `Some(children)` when the shard is closed after these records.
    pub(crate) closed: Option<Vec<String>>,
    /// The record data bytes in `records` (what the prefetch bound counts).
    pub(crate) bytes: usize,
    /// Calls, throttled calls and expired iterators since the last page.
    pub(crate) calls: u64,
    pub(crate) throttled: u64,
    pub(crate) expired: u64,
}

impl Page {
    pub(crate) fn new(records: Vec<Record>, millis_behind: Option<u64>) -> Page {
        let bytes = records.iter().map(|r| r.data().as_ref().len()).sum();
        Page {
            records,
            millis_behind,
            bytes,
            ..Page::default()
        }
    }
}

/// How a polling reader reads (the [`KinesisSource`](crate::KinesisSource)
/// settings it was given).
#[derive(Debug, Clone)]
pub(crate) struct PollSettings {
    /// `Limit` of each `GetRecords` (at most 10,000).
    pub(crate) read_limit: usize,
    /// The least time between two calls (200 ms: 5 calls/s per shard).
    pub(crate) min_interval: Duration,
    /// The longest wait between two calls that found nothing.
    pub(crate) max_idle: Duration,
    /// Record bytes per second the reader keeps to (the shard's 2 MiB/s).
    pub(crate) bytes_per_second: f64,
    /// Waits after throttling.
    pub(crate) throttle_retry: RetryPolicy,
}

/// Empty reads in a row before the wait between reads grows: records
/// arriving a few times a second never see a longer wait than
/// `min_interval`.
const EMPTY_READS_BEFORE_IDLE: u32 = 5;

/// The least wait after a read that found nothing.
const MIN_IDLE: Duration = Duration::from_millis(50);

/// The longest a `GetRecords` or `GetShardIterator` call may take before it
/// is given up and made again (the SDK's client sets no timeout; a
/// half-open connection would otherwise stall the shard for good).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl PollSettings {
    /// The wait before the next call, after one that returned `bytes` and
    /// followed `empties` empty reads in a row (this one included).
    pub(crate) fn interval(&self, bytes: usize, empties: u32) -> Duration {
        let quota = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second.max(1.0));
        // After an empty read, never less than 50 ms (a zero least interval
        // must not poll an idle shard in a busy loop).
        let base = if empties == 0 {
            self.min_interval
        } else {
            self.min_interval.max(MIN_IDLE)
        };
        let idle = match empties.checked_sub(EMPTY_READS_BEFORE_IDLE) {
            None | Some(0) => base,
            Some(n) => base
                .saturating_mul(1u32 << n.min(16))
                .min(self.max_idle.max(base)),
        };
        quota.max(idle)
    }
}

/// How much a reader may hold ahead of the consumer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    /// Pages read but not taken.
    pub(crate) pages: usize,
    /// Record bytes in those pages.
    pub(crate) bytes: usize,
}

/// The record bytes a reader holds ahead, and a wake-up when they drop.
#[derive(Debug, Default)]
pub(crate) struct Held {
    bytes: AtomicUsize,
    taken: Notify,
}

impl Held {
    /// Waits until fewer than `limit` bytes are held.
    pub(crate) async fn room(&self, limit: usize) {
        loop {
            let taken = self.taken.notified();
            if self.bytes.load(Ordering::Acquire) < limit {
                return;
            }
            taken.await;
        }
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn take(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.taken.notify_waiters();
    }
}

/// The consumer's end of a reader: the pages, and where the next page
/// starts.
#[derive(Debug)]
pub(crate) struct Reader {
    pages: mpsc::Receiver<Result<Page>>,
    /// An error [`ready`](Self::ready) took from the channel.
    failed: Option<Error>,
    held: Arc<Held>,
    task: tokio::task::JoinHandle<()>,
    /// The pointer after the pages taken so far: a fetch from it continues
    /// with the next page; a fetch from anywhere else starts a new reader.
    pub(crate) at: Pointer,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The producing end given to a reader task.
#[derive(Debug, Clone)]
pub(crate) struct PageSender {
    tx: mpsc::Sender<Result<Page>>,
    held: Arc<Held>,
    max_bytes: usize,
}

impl PageSender {
    /// Waits for room (in pages and bytes) for one more page; `None` when
    /// the reader was dropped.
    pub(crate) async fn reserve(&self) -> Option<mpsc::Permit<'_, Result<Page>>> {
        self.held.room(self.max_bytes).await;
        self.tx.reserve().await.ok()
    }

    /// Sends a page through a permit.
    pub(crate) fn send(&self, permit: mpsc::Permit<'_, Result<Page>>, page: Result<Page>) {
        if let Ok(p) = &page {
            self.held.add(p.bytes);
        }
        permit.send(page);
    }

    /// Resolves when the reader was dropped.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Sends a page once there is room; false if the reader was dropped.
    pub(crate) async fn send_when_room(&self, page: Result<Page>) -> bool {
        match self.reserve().await {
            Some(permit) => {
                self.send(permit, page);
                true
            }
            None => false,
        }
    }
}

impl Reader {
    /// A reader at `at` whose pages come from the task `run` builds.
    pub(crate) fn start<F, Fut>(at: Pointer, bound: Bound, run: F) -> Reader
    where
        F: FnOnce(PageSender) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, pages) = mpsc::channel(bound.pages.max(1));
        let held = Arc::new(Held::default());
        let sender = PageSender {
            tx,
            held: Arc::clone(&held),
            max_bytes: bound.bytes.max(1),
        };
        let task = tokio::spawn(run(sender));
        Reader {
            pages,
            failed: None,
            held,
            task,
            at,
        }
    }

    /// The next page if one is ready now (records only: an error, or the
    /// end of the task, is left for [`next`](Self::next) to report).
    pub(crate) fn ready(&mut self) -> Option<Page> {
        if self.failed.is_some() {
            return None;
        }
        match self.pages.try_recv() {
            Ok(Ok(page)) => {
                self.held.take(page.bytes);
                Some(page)
            }
            Ok(Err(e)) => {
                self.failed = Some(e);
                None
            }
            Err(_) => None,
        }
    }

    /// The next page, waiting for it: a reader sends one after every read
    /// (an empty one when it found nothing), so this returns within a read
    /// and the idle wait (polling: at most `max_idle` plus the call), or an
    /// event's interval (fan-out: AWS sends one at least every 5 s; the
    /// watchdog ends a silent subscription). Cancel-safe: dropping it loses
    /// no page.
    pub(crate) async fn next(&mut self) -> Result<Page> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let page = self.pages.recv().await;
        match page {
            Some(Ok(page)) => {
                self.held.take(page.bytes);
                Ok(page)
            }
            Some(Err(e)) => Err(e),
            // The task ended without a closing page or an error (it was
            // aborted): say so rather than wait forever.
            None => Err(Error::InvalidPointer {
                pointer: self.at.to_string(),
                source_name: "Kinesis reader".into(),
                reason: "the reader stopped".into(),
            }),
        }
    }
}

/// The polling reader: `GetRecords` from `start`, paced to the shard's
/// quota, waiting longer between empty reads, backing off when throttled,
/// deriving an expired iterator again after the last record read.
pub(crate) async fn poll(
    client: Client,
    shard: ShardRef,
    start: Position,
    settings: PollSettings,
    clock: SharedClock,
    out: PageSender,
) {
    let mut at = start;
    let mut iterator: Option<String> = None;
    let mut next_call: Option<chrono::DateTime<chrono::Utc>> = None;
    let (mut empties, mut throttled, mut expired) = (0u32, 0u32, 0u32);
    let mut counts = Page::default();
    loop {
        let Some(permit) = out.reserve().await else {
            return;
        };
        let it = match iterator.take() {
            Some(it) => it,
            None => match tokio::time::timeout(CALL_TIMEOUT, shard.iterator(&client, &at)).await {
                Ok(Ok(it)) => it,
                Ok(Err(e)) => return out.send(permit, Err(e)),
                Err(_) => {
                    warn!(stream = %shard.stream, shard = %shard.shard_id, timeout = ?CALL_TIMEOUT, "GetShardIterator did not answer; calling again");
                    continue;
                }
            },
        };
        if let Some(due) = next_call {
            let wait = (due - clock.now()).to_std().unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                clock.sleep(wait).await;
            }
        }
        let called = clock.now();
        counts.calls += 1;
        let read_limit = i32::try_from(settings.read_limit.clamp(1, 10_000)).unwrap_or(10_000);
        let call = client
            .get_records()
            .shard_iterator(&it)
            .limit(read_limit)
            .send();
        let Ok(answer) = tokio::time::timeout(CALL_TIMEOUT, call).await else {
            warn!(stream = %shard.stream, shard = %shard.shard_id, timeout = ?CALL_TIMEOUT, "GetRecords did not answer; calling again");
            iterator = Some(it);
            next_call = Some(clock.now());
            continue;
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) if shard.denied(&e, "GetRecords").is_some() => {
                return out.send(permit, Err(shard.sdk_error("GetRecords", e)));
            }
            Err(e) => match e.into_service_error() {
                GetRecordsError::ExpiredIteratorException(_) if expired < 3 => {
                    expired += 1;
                    counts.expired += 1;
                    info!(stream = %shard.stream, shard = %shard.shard_id, position = %at, "shard iterator expired; deriving it again");
                    continue;
                }
                GetRecordsError::ProvisionedThroughputExceededException(_)
                    if settings.throttle_retry.allows(throttled + 2) =>
                {
                    throttled += 1;
                    counts.throttled += 1;
                    let wait = settings.throttle_retry.delay_before(throttled + 1);
                    warn!(stream = %shard.stream, shard = %shard.shard_id, ?wait, "GetRecords throttled; backing off");
                    iterator = Some(it);
                    next_call =
                        Some(clock.now() + chrono::Duration::from_std(wait).unwrap_or_default());
                    continue;
                }
                e => return out.send(permit, Err(shard.api_error("GetRecords", e))),
            },
        };
        (throttled, expired) = (0, 0);
        let millis_behind = answer
            .millis_behind_latest()
            .and_then(|m| u64::try_from(m).ok());
        let next = answer.next_shard_iterator().map(str::to_owned);
        let closed = next.is_none().then(|| {
            answer
                .child_shards()
                .iter()
                .map(|c| c.shard_id().to_owned())
                .collect::<Vec<_>>()
        });
        let records = answer.records;
        if let Some(last) = records.last() {
            at = Position::After(last.sequence_number().to_owned());
        }
        // An empty read behind the tip (an iterator walking through a
        // sparse stretch of the shard) is no idleness: catch up at full pace.
        let at_tip = millis_behind.is_none_or(|m| m == 0);
        empties = if records.is_empty() && at_tip {
            empties.saturating_add(1)
        } else {
            0
        };
        let mut page = Page::new(records, millis_behind);
        debug!(stream = %shard.stream, shard = %shard.shard_id, records = page.records.len(), bytes = page.bytes, ?millis_behind, "GetRecords");
        next_call = Some(
            called
                + chrono::Duration::from_std(settings.interval(page.bytes, empties))
                    .unwrap_or_default(),
        );
        page.calls = std::mem::take(&mut counts.calls);
        page.throttled = std::mem::take(&mut counts.throttled);
        page.expired = std::mem::take(&mut counts.expired);
        let done = closed.is_some();
        if let Some(children) = &closed {
            info!(stream = %shard.stream, shard = %shard.shard_id, ?children, "the shard is closed");
        }
        page.closed = closed;
        out.send(permit, Ok(page));
        if done {
            return;
        }
        iterator = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PollSettings {
        PollSettings {
            read_limit: 10_000,
            min_interval: Duration::from_millis(200),
            max_idle: Duration::from_secs(1),
            bytes_per_second: 2.0 * 1024.0 * 1024.0,
            throttle_retry: RetryPolicy::waits([Duration::from_secs(1)]),
        }
    }

    #[test]
    fn reads_are_paced_by_calls_bytes_and_idleness() {
        let s = settings();
        assert_eq!(s.interval(0, 0), Duration::from_millis(200));
        // A few empty reads keep the short interval (records arriving a few
        // times a second wait no longer) ...
        for empties in 1..=EMPTY_READS_BEFORE_IDLE {
            assert_eq!(s.interval(0, empties), Duration::from_millis(200));
        }
        // ... then it doubles up to the longest idle wait.
        assert_eq!(s.interval(0, 6), Duration::from_millis(400));
        assert_eq!(s.interval(0, 7), Duration::from_millis(800));
        assert_eq!(s.interval(0, 8), Duration::from_secs(1));
        assert_eq!(s.interval(0, 1000), Duration::from_secs(1));
        // A page of 1 MiB waits half a second: 2 MiB/s.
        assert_eq!(s.interval(1024 * 1024, 0), Duration::from_millis(500));
        // A zero least interval still waits after empty reads.
        let fast = PollSettings {
            min_interval: Duration::ZERO,
            ..settings()
        };
        assert_eq!(fast.interval(0, 0), Duration::ZERO);
        assert_eq!(fast.interval(0, 1), MIN_IDLE);
        assert_eq!(fast.interval(0, 7), MIN_IDLE * 4);
    }
}
