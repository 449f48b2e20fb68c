//! Enhanced fan-out: a registered stream consumer and `SubscribeToShard`
//! sessions read as pages, in a background task.
//!
//! A session lasts up to 5 minutes; the task subscribes again from the last
//! event's `ContinuationSequenceNumber` (`AFTER_SEQUENCE_NUMBER`), so a
//! checkpoint never holds anything but positions ([`Position`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::deregister_stream_consumer::DeregisterStreamConsumerError;
use aws_sdk_kinesis::operation::describe_stream_consumer::DescribeStreamConsumerError;
use aws_sdk_kinesis::operation::register_stream_consumer::RegisterStreamConsumerError;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition as SdkStartingPosition,
    SubscribeToShardEvent, SubscribeToShardEventStream,
};
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};
use unistream_core::Error;
use unistream_core::clock::{BoxFuture, SharedClock};
use unistream_core::retry::RetryPolicy;

use crate::error::KinesisError;
use crate::position::Position;
use crate::reader::{Page, PageSender, ShardRef};

/// A consumer registered on a stream for enhanced fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// The consumer's ARN (what `SubscribeToShard` takes).
    pub arn: String,
    /// `CREATING`, `ACTIVE` or `DELETING`.
    pub status: String,
    /// When it was registered.
    pub created: Option<DateTime<Utc>>,
}

impl StreamConsumerInfo {
    fn new(name: &str, arn: &str, status: &ConsumerStatus, created: AwsDateTime) -> Self {
        StreamConsumerInfo {
            name: name.to_owned(),
            arn: arn.to_owned(),
            status: status.as_str().to_owned(),
            created: DateTime::from_timestamp(created.secs(), created.subsec_nanos()),
        }
    }
}

fn api_error(
    operation: &'static str,
    stream: &str,
    shard: Option<&str>,
    source: impl Into<aws_sdk_kinesis::Error>,
) -> Error {
    KinesisError::Api {
        operation,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        source: Box::new(source.into()),
    }
    .into()
}

/// [`Error::Denied`] if the service refused the call, else [`KinesisError::Api`].
fn sdk_error<E>(operation: &'static str, stream: &str, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata,
    SdkError<E>: Into<aws_sdk_kinesis::Error>,
{
    unistream_aws::denied(&e, &format!("kinesis:{operation}"), || {
        format!("stream {stream}")
    })
    .unwrap_or_else(|| api_error(operation, stream, None, e))
}

/// The ARN of `stream` (a name or an ARN; a name is looked up with
/// `DescribeStreamSummary`).
pub(crate) async fn stream_arn(client: &Client, stream: &str) -> Result<String, Error> {
    if stream.starts_with("arn:") {
        return Ok(stream.to_owned());
    }
    let out = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| sdk_error("DescribeStreamSummary", stream, e))?;
    out.stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .filter(|arn| !arn.is_empty())
        .ok_or_else(|| {
            Error::backend(
                "Kinesis",
                format!("DescribeStreamSummary on stream {stream}: no stream ARN in the answer"),
            )
        })
}

/// What `DescribeStreamConsumer` said.
enum Described {
    Found(StreamConsumerInfo),
    Missing,
    /// `LimitExceededException` (20 calls per second per stream): ask again.
    Throttled,
}

async fn describe(
    client: &Client,
    stream: &str,
    arn: &str,
    name: &str,
) -> Result<Described, Error> {
    match client
        .describe_stream_consumer()
        .stream_arn(arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out.consumer_description().map_or(Described::Missing, |c| {
            let info = StreamConsumerInfo::new(
                c.consumer_name(),
                c.consumer_arn(),
                c.consumer_status(),
                *c.consumer_creation_timestamp(),
            );
            Described::Found(info)
        })),
        Err(e)
            if e.as_service_error()
                .is_some_and(DescribeStreamConsumerError::is_resource_not_found_exception) =>
        {
            Ok(Described::Missing)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(DescribeStreamConsumerError::is_limit_exceeded_exception) =>
        {
            Ok(Described::Throttled)
        }
        Err(e) => Err(sdk_error("DescribeStreamConsumer", stream, e)),
    }
}

/// Registers `consumer_name` on `stream` (its name or ARN) for enhanced
/// fan-out, unless it is registered already, and waits until it is
/// `ACTIVE`, asking `DescribeStreamConsumer` every `poll`. Returns the
/// consumer's ARN. Another process registering the same name at the same
/// time is fine: both get the same consumer.
///
/// # Errors
///
/// [`Error::Denied`] if a call is not allowed, [`KinesisError::Api`] if one
/// fails (the stream does not exist, 20 consumers are registered already),
/// [`Error::Backend`] if the consumer is not `ACTIVE` within `within`.
pub async fn register_consumer(
    client: &Client,
    stream: &str,
    consumer_name: &str,
    poll: Duration,
    within: Duration,
) -> Result<String, Error> {
    let arn = stream_arn(client, stream).await?;
    let deadline = tokio::time::Instant::now() + within;
    let mut status = String::from("unknown");
    loop {
        match describe(client, stream, &arn, consumer_name).await? {
            Described::Found(c) if c.status == ConsumerStatus::Active.as_str() => {
                info!(stream, consumer = consumer_name, consumer_arn = %c.arn, "the stream consumer is ACTIVE");
                return Ok(c.arn);
            }
            Described::Found(c) => status = c.status,
            Described::Throttled => {}
            Described::Missing => {
                let sent = client
                    .register_stream_consumer()
                    .stream_arn(&arn)
                    .consumer_name(consumer_name)
                    .send()
                    .await;
                match sent {
                    Ok(_) => info!(
                        stream,
                        consumer = consumer_name,
                        "registered the stream consumer"
                    ),
                    // Registered by someone else meanwhile: described again below.
                    Err(e)
                        if e.as_service_error().is_some_and(
                            RegisterStreamConsumerError::is_resource_in_use_exception,
                        ) =>
                    {
                        debug!(
                            stream,
                            consumer = consumer_name,
                            "the stream consumer is being registered by another process"
                        );
                    }
                    Err(e) => return Err(sdk_error("RegisterStreamConsumer", stream, e)),
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::backend(
                "Kinesis",
                format!(
                    "stream consumer {consumer_name} of stream {stream} was not ACTIVE within {within:?} (last status: {status})"
                ),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Deregisters `consumer_name` from `stream` (its name or ARN); its
/// subscriptions end. A consumer that does not exist is not an error.
///
/// # Errors
///
/// [`Error::Denied`] if the call is not allowed, else [`KinesisError::Api`].
pub async fn deregister_consumer(
    client: &Client,
    stream: &str,
    consumer_name: &str,
) -> Result<(), Error> {
    let arn = stream_arn(client, stream).await?;
    match client
        .deregister_stream_consumer()
        .stream_arn(&arn)
        .consumer_name(consumer_name)
        .send()
        .await
    {
        Ok(_) => {
            info!(
                stream,
                consumer = consumer_name,
                "deregistered the stream consumer"
            );
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(DeregisterStreamConsumerError::is_resource_not_found_exception) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error("DeregisterStreamConsumer", stream, e)),
    }
}

/// The consumers registered on `stream` (its name or ARN), every page of
/// `ListStreamConsumers` read.
///
/// # Errors
///
/// [`Error::Denied`] if a call is not allowed, else [`KinesisError::Api`].
pub async fn list_consumers(
    client: &Client,
    stream: &str,
) -> Result<Vec<StreamConsumerInfo>, Error> {
    let arn = stream_arn(client, stream).await?;
    let mut consumers = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_stream_consumers()
            .stream_arn(&arn)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| sdk_error("ListStreamConsumers", stream, e))?;
        consumers.extend(out.consumers().iter().map(|c| {
            StreamConsumerInfo::new(
                c.consumer_name(),
                c.consumer_arn(),
                c.consumer_status(),
                *c.consumer_creation_timestamp(),
            )
        }));
        // A token equal to the last one would list the same page forever.
        match out.next_token().filter(|t| !t.is_empty()) {
            Some(t) if token.as_deref() != Some(t) => token = Some(t.to_owned()),
            _ => return Ok(consumers),
        }
    }
}

/// How a subscription retries and when it gives a silent session up.
#[derive(Debug, Clone)]
pub(crate) struct FanOutSettings {
    /// Waits between failed `SubscribeToShard` calls (another subscription
    /// of the consumer to the shard still open, throttling, a session that
    /// ended before any event); the error goes to the reader once it allows
    /// no more attempts.
    pub(crate) retry: RetryPolicy,
    /// A session without an event this long (or a `SubscribeToShard` call
    /// without an answer) is dropped and subscribed again. Zero turns the
    /// watchdog off: for tests on a virtual clock, whose sleeps end at once.
    pub(crate) silence: Duration,
}

impl Default for FanOutSettings {
    /// Waits of 1, 2, 4, 8, 16 s, then 30 s, 16 attempts (about 5.5
    /// minutes): AWS allows one `SubscribeToShard` per second per consumer
    /// and shard, so the first wait is 1 s; and a subscription left open by
    /// a process that did not close it (a lost lease) lasts at most its
    /// 5-minute session, which the attempts outlast. Silence: 15 s, three
    /// times the 5 s within which AWS sends an event even on an idle shard.
    fn default() -> Self {
        FanOutSettings {
            retry: RetryPolicy::waits([1, 2, 4, 8, 16, 30].map(Duration::from_secs))
                .with_max_attempts(16),
            silence: Duration::from_secs(15),
        }
    }
}

/// Counters of a subscription task, shared with its reader.
#[derive(Debug)]
pub(crate) struct SubscriptionStats {
    /// `SubscribeToShard` calls that opened a session.
    pub(crate) sessions: AtomicU64,
    /// Subscriptions again after a session ended, failed or went silent.
    pub(crate) resubscriptions: AtomicU64,
    /// Sessions dropped, or `SubscribeToShard` calls given up, for lack of
    /// an event or answer within `silence` (the watchdog).
    pub(crate) watchdog_resubscriptions: AtomicU64,
    /// `ResourceInUseException` answers.
    pub(crate) resource_in_use: AtomicU64,
    /// Events received (empty ones included).
    pub(crate) events: AtomicU64,
    /// `MillisBehindLatest` of the last event; `u64::MAX`: none yet.
    pub(crate) millis_behind: AtomicU64,
}

impl Default for SubscriptionStats {
    fn default() -> Self {
        SubscriptionStats {
            sessions: AtomicU64::new(0),
            resubscriptions: AtomicU64::new(0),
            watchdog_resubscriptions: AtomicU64::new(0),
            resource_in_use: AtomicU64::new(0),
            events: AtomicU64::new(0),
            millis_behind: AtomicU64::new(u64::MAX),
        }
    }
}

/// The counters of [`SubscriptionStats`] at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SubscriptionSnapshot {
    pub(crate) sessions: u64,
    pub(crate) resubscriptions: u64,
    pub(crate) watchdog_resubscriptions: u64,
    pub(crate) resource_in_use: u64,
    pub(crate) events: u64,
    pub(crate) millis_behind: Option<u64>,
}

impl SubscriptionStats {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> SubscriptionSnapshot {
        let millis_behind = self.millis_behind.load(Relaxed);
        SubscriptionSnapshot {
            sessions: self.sessions.load(Relaxed),
            resubscriptions: self.resubscriptions.load(Relaxed),
            watchdog_resubscriptions: self.watchdog_resubscriptions.load(Relaxed),
            resource_in_use: self.resource_in_use.load(Relaxed),
            events: self.events.load(Relaxed),
            millis_behind: (millis_behind != u64::MAX).then_some(millis_behind),
        }
    }
}

/// Where `SubscribeToShard` starts for a position: a user record's
/// aggregate is read again (`AT_SEQUENCE_NUMBER`; the source skips the user
/// records handed out), a whole record's successors `AFTER_SEQUENCE_NUMBER`.
pub(crate) fn starting_position(position: &Position) -> Result<SdkStartingPosition, BuildError> {
    let b = SdkStartingPosition::builder();
    let b = match position {
        Position::TrimHorizon => b.r#type(ShardIteratorType::TrimHorizon),
        Position::Latest => b.r#type(ShardIteratorType::Latest),
        Position::AtTimestamp(t) => b
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(AwsDateTime::from_millis(t.timestamp_millis())),
        Position::After(sequence) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(sequence),
        Position::InAggregate { sequence, .. } => b
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(sequence),
    };
    b.build()
}

/// Where a subscription starts again: AT the last event's continuation
/// sequence number (AWS: use it with `AT_SEQUENCE_NUMBER` or
/// `AFTER_SEQUENCE_NUMBER`; it is no record's number, and it moves on even
/// when nothing is written), else — before any event — at `start`, so that a
/// checkpoint inside an aggregate is still read AT its aggregate and a
/// `LATEST` start is not moved.
pub(crate) fn resume_position(
    start: &Position,
    continuation: Option<&str>,
) -> Result<SdkStartingPosition, BuildError> {
    match continuation {
        Some(c) if !c.is_empty() => SdkStartingPosition::builder()
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(c)
            .build(),
        _ => starting_position(start),
    }
}

/// The child shards if the shard ends with this event: AWS sends no
/// continuation then; ferrokinesis always sends one, and child shards with
/// every event of a closed shard, its last one without records.
fn shard_end(event: &SubscribeToShardEvent) -> Option<Vec<String>> {
    let children: Vec<String> = event
        .child_shards()
        .iter()
        .map(|c| c.shard_id().to_owned())
        .collect();
    let ended = event.continuation_sequence_number().is_empty()
        || (!children.is_empty() && event.records().is_empty());
    ended.then_some(children)
}

/// A subscription of a consumer to one shard, run by [`Subscription::run`].
pub(crate) struct Subscription {
    pub(crate) client: Client,
    pub(crate) consumer_arn: String,
    pub(crate) shard: ShardRef,
    pub(crate) start: Position,
    pub(crate) out: PageSender,
    pub(crate) settings: FanOutSettings,
    pub(crate) clock: SharedClock,
    pub(crate) stats: Arc<SubscriptionStats>,
    /// The last record handed on: records at or before it are dropped.
    pub(crate) floor: Mutex<Floor>,
}

/// The last record a subscription handed on (at first: the start's
/// sequence number). A session that starts from a sequence number must
/// send only records after it; one that sends older ones again (the
/// emulator ferrokinesis 0.7.0 replays the shard from its start for every
/// sequence-number starting position) has them dropped here, so that the
/// reader's pages never go back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Floor {
    sequence: Option<String>,
    /// The floor's own record is still to come (a start AT a sequence
    /// number: inside a KPL aggregate).
    inclusive: bool,
}

impl Floor {
    /// The floor of a subscription starting at `start`.
    pub(crate) fn at_start(start: &Position) -> Floor {
        match start {
            Position::After(sequence) => Floor {
                sequence: Some(sequence.clone()),
                inclusive: false,
            },
            Position::InAggregate { sequence, .. } => Floor {
                sequence: Some(sequence.clone()),
                inclusive: true,
            },
            _ => Floor::default(),
        }
    }

    /// Whether a record numbered `sequence` comes after the floor.
    fn keeps(&self, sequence: &str) -> bool {
        self.sequence.as_deref().is_none_or(|floor| {
            // Sequence numbers are decimal integers of up to 128 bits.
            let order = sequence
                .len()
                .cmp(&floor.len())
                .then_with(|| sequence.cmp(floor));
            order.is_gt() || (self.inclusive && order.is_eq())
        })
    }

    fn passed(&mut self, sequence: &str) {
        self.sequence = Some(sequence.to_owned());
        self.inclusive = false;
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Subscription {{ consumer_arn: {:?}, shard_id: {:?}, start: {:?}, .. }}",
            self.consumer_arn, self.shard.shard_id, self.start
        )
    }
}

/// How a session ended.
enum End {
    /// The shard ended, the receiver is gone, or an error was sent.
    Stop,
    /// The session ended, failed or went silent after `events` events.
    Over {
        events: u64,
        silent: bool,
        error: Error,
    },
    /// `SubscribeToShard` failed; `in_use`: `ResourceInUseException`.
    Refused { error: Error, in_use: bool },
}

impl Subscription {
    /// Subscribes, sends a page per event (waiting while the channel is
    /// full), subscribes again from the continuation when a session ends,
    /// fails or is silent for `settings.silence` — at once after a session
    /// that delivered events, else after the retry policy's wait, as after a
    /// refused call. Stops after the page of a closed shard, when the
    /// receiver is dropped, or after sending an error: at once if access is
    /// denied or the consumer or shard is not found, else when the policy
    /// allows no more attempts.
    pub(crate) async fn run(self) {
        debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, start = %self.start, "subscribing to the shard");
        let mut continuation: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let position = match resume_position(&self.start, continuation.as_deref()) {
                Ok(p) => p,
                Err(e) => return self.fail(Error::backend("Kinesis", e)).await,
            };
            let error = match self.session(position, &mut continuation).await {
                End::Stop => return,
                End::Over {
                    events,
                    silent,
                    error,
                } => {
                    self.stats.resubscriptions.fetch_add(1, Relaxed);
                    self.count("unistream_kinesis_resubscriptions_total");
                    if silent {
                        self.stats.watchdog_resubscriptions.fetch_add(1, Relaxed);
                        self.count("unistream_kinesis_silent_subscriptions_total");
                    }
                    debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, events, reason = %error, "subscribing again");
                    if events > 0 {
                        failures = 0;
                        continue;
                    }
                    error
                }
                End::Refused { error, in_use } => {
                    if in_use {
                        self.stats.resource_in_use.fetch_add(1, Relaxed);
                        self.count("unistream_kinesis_subscriptions_in_use_total");
                    }
                    error
                }
            };
            failures = failures.saturating_add(1);
            if !self.settings.retry.allows(failures.saturating_add(1)) {
                return self.fail(error).await;
            }
            let wait = self.settings.retry.delay_before(failures.saturating_add(1));
            warn!(stream = %self.shard.stream, shard = %self.shard.shard_id, ?wait, error = %error, "SubscribeToShard failed; backing off");
            let slept = tokio::select! {
                () = self.clock.sleep(wait) => true,
                () = self.out.closed() => false,
            };
            if !slept {
                return;
            }
        }
    }

    async fn fail(&self, error: Error) {
        warn!(stream = %self.shard.stream, shard = %self.shard.shard_id, error = %error, "the subscription stops");
        let _ = self.out.send_when_room(Err(error)).await;
    }

    /// Adds one to the counter `name` of this stream and shard (the
    /// `metrics` facade: whatever recorder the program installed).
    fn count(&self, name: &'static str) {
        metrics::counter!(name, "stream" => self.shard.stream.clone(), "shard" => self.shard.shard_id.clone())
            .increment(1);
    }

    fn stalled(&self, what: &str) -> Error {
        Error::backend(
            "Kinesis",
            format!(
                "SubscribeToShard on stream {}, shard {}: {what}",
                self.shard.stream, self.shard.shard_id
            ),
        )
    }

    fn api_error(&self, source: impl Into<aws_sdk_kinesis::Error>) -> Error {
        self.shard.api_error("SubscribeToShard", source)
    }

    /// Ends after `wait` on the clock; never if the watchdog is off.
    fn watchdog(&self, wait: Duration) -> BoxFuture<'static, ()> {
        if self.settings.silence.is_zero() {
            Box::pin(std::future::pending())
        } else {
            self.clock.sleep(wait)
        }
    }

    fn resource(&self) -> String {
        format!(
            "stream {}, shard {}, consumer {}",
            self.shard.stream, self.shard.shard_id, self.consumer_arn
        )
    }

    /// One session from `position`; `continuation` follows its events.
    async fn session(&self, start: SdkStartingPosition, continuation: &mut Option<String>) -> End {
        let position = format!(
            "{:?} {}",
            start.r#type(),
            start.sequence_number().unwrap_or("")
        );
        let call = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(&self.shard.shard_id)
            .starting_position(start)
            .send();
        let answer = tokio::select! {
            answer = call => answer,
            () = self.watchdog(self.settings.silence) => {
                self.stats.watchdog_resubscriptions.fetch_add(1, Relaxed);
                return End::Refused { error: self.stalled("no answer"), in_use: false };
            }
            () = self.out.closed() => return End::Stop,
        };
        let output = match answer {
            Ok(output) => output,
            Err(e) => {
                if let Some(denied) =
                    unistream_aws::denied(&e, "kinesis:SubscribeToShard", || self.resource())
                {
                    self.fail(denied).await;
                    return End::Stop;
                }
                let service = e.as_service_error();
                let fatal = service.is_some_and(|s| {
                    s.is_resource_not_found_exception() || s.is_invalid_argument_exception()
                });
                let in_use =
                    service.is_some_and(SubscribeToShardError::is_resource_in_use_exception);
                let error = self.api_error(e);
                if fatal {
                    self.fail(error).await;
                    return End::Stop;
                }
                return End::Refused { error, in_use };
            }
        };
        self.stats.sessions.fetch_add(1, Relaxed);
        self.count("unistream_kinesis_subscriptions_total");
        debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, %position, "SubscribeToShard session open");
        let mut events = output.event_stream;
        let mut delivered = 0u64;
        let mut last = self.clock.now();
        loop {
            let waited = (self.clock.now() - last).to_std().unwrap_or(Duration::ZERO);
            let received = tokio::select! {
                biased;
                received = events.recv() => received,
                () = self.watchdog(self.settings.silence.saturating_sub(waited)) => {
                    info!(stream = %self.shard.stream, shard = %self.shard.shard_id, silence = ?self.settings.silence, "no event from the subscription; subscribing again");
                    return End::Over { events: delivered, silent: true, error: self.stalled("no event") };
                }
                () = self.out.closed() => return End::Stop,
            };
            match received {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                    delivered += 1;
                    if !self.deliver(event, continuation).await {
                        return End::Stop;
                    }
                    last = self.clock.now();
                }
                Ok(Some(other)) => {
                    debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, event = ?other, "an unknown event; skipped")
                }
                Ok(None) => {
                    return End::Over {
                        events: delivered,
                        silent: false,
                        error: self.stalled("the session ended"),
                    };
                }
                Err(e) => {
                    let denied = unistream_aws::denial(e.code(), e.message(), None, None);
                    if let Some(message) = denied {
                        let action = "kinesis:SubscribeToShard".to_owned();
                        self.fail(Error::Denied {
                            action,
                            resource: self.resource(),
                            message,
                        })
                        .await;
                        return End::Stop;
                    }
                    let service = e.as_service_error();
                    if service
                        .is_some_and(SubscribeToShardEventStreamError::is_resource_in_use_exception)
                    {
                        self.stats.resource_in_use.fetch_add(1, Relaxed);
                    }
                    let gone = service.is_some_and(
                        SubscribeToShardEventStreamError::is_resource_not_found_exception,
                    );
                    let error = self.api_error(e);
                    if gone {
                        self.fail(error).await;
                        return End::Stop;
                    }
                    return End::Over {
                        events: delivered,
                        silent: false,
                        error,
                    };
                }
            }
        }
    }

    /// Sends an event's page; false if the task is to stop (the shard
    /// ended, or the receiver is gone).
    async fn deliver(
        &self,
        event: SubscribeToShardEvent,
        continuation: &mut Option<String>,
    ) -> bool {
        self.stats.events.fetch_add(1, Relaxed);
        let millis_behind = u64::try_from(event.millis_behind_latest).ok();
        self.stats
            .millis_behind
            .store(millis_behind.unwrap_or(u64::MAX), Relaxed);
        let closed = shard_end(&event);
        if !event.continuation_sequence_number.is_empty() {
            *continuation = Some(event.continuation_sequence_number);
        }
        debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, kinesis_records = event.records.len(), ?millis_behind, "SubscribeToShard event");
        if let Some(children) = &closed {
            info!(stream = %self.shard.stream, shard = %self.shard.shard_id, ?children, "the shard is closed");
        }
        let go_on = closed.is_none();
        let mut records = event.records;
        {
            let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
            let before = records.len();
            records.retain(|r| floor.keeps(r.sequence_number()));
            if let Some(last) = records.last() {
                floor.passed(last.sequence_number());
            }
            if records.len() < before {
                debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, dropped = before - records.len(), "records at or before the last one handed on, sent again by the service; dropped");
            }
        }
        let mut page = Page::new(records, millis_behind);
        page.closed = closed;
        if !self.out.send_when_room(Ok(page)).await {
            debug!(stream = %self.shard.stream, shard = %self.shard.shard_id, "the reader is gone; the subscription stops");
            return false;
        }
        go_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{ChildShard, Record};

    fn sp(p: &Position) -> SdkStartingPosition {
        starting_position(p).unwrap()
    }

    #[test]
    fn positions_map_to_starting_positions() {
        let t = sp(&Position::TrimHorizon);
        assert_eq!(
            (t.r#type(), t.sequence_number()),
            (&ShardIteratorType::TrimHorizon, None)
        );
        assert_eq!(sp(&Position::Latest).r#type(), &ShardIteratorType::Latest);
        let time = DateTime::from_timestamp_millis(1_704_781_446_123).unwrap();
        let at = sp(&Position::AtTimestamp(time));
        assert_eq!(at.r#type(), &ShardIteratorType::AtTimestamp);
        assert_eq!(
            at.timestamp().map(|t| t.to_millis().unwrap()),
            Some(1_704_781_446_123)
        );
        let after = sp(&Position::After("49590".into()));
        assert_eq!(
            (after.r#type(), after.sequence_number()),
            (&ShardIteratorType::AfterSequenceNumber, Some("49590"))
        );
        // Inside an aggregate: the aggregate is read again.
        let inside = sp(&Position::InAggregate {
            sequence: "49590".into(),
            sub_sequence: 3,
        });
        assert_eq!(
            (inside.r#type(), inside.sequence_number()),
            (&ShardIteratorType::AtSequenceNumber, Some("49590"))
        );
    }

    #[test]
    fn a_resubscription_starts_at_the_continuation_or_at_the_start() {
        let inside = Position::InAggregate {
            sequence: "7".into(),
            sub_sequence: 2,
        };
        for start in [
            Position::TrimHorizon,
            Position::Latest,
            Position::After("5".into()),
            inside.clone(),
        ] {
            assert_eq!(resume_position(&start, None).unwrap(), sp(&start));
            assert_eq!(resume_position(&start, Some("")).unwrap(), sp(&start));
            let again = resume_position(&start, Some("9")).unwrap();
            assert_eq!(again.r#type(), &ShardIteratorType::AtSequenceNumber);
            assert_eq!(again.sequence_number(), Some("9"));
        }
        // Before any event, still AT the aggregate (nothing skipped).
        assert_eq!(
            resume_position(&inside, None).unwrap().r#type(),
            &ShardIteratorType::AtSequenceNumber
        );
    }

    #[test]
    fn records_sent_again_at_or_before_the_floor_are_dropped() {
        let mut after = Floor::at_start(&Position::After("100".into()));
        assert!(!after.keeps("99") && !after.keeps("100"));
        assert!(after.keeps("101") && after.keeps("1000"));
        after.passed("1000");
        assert!(!after.keeps("999") && !after.keeps("1000") && after.keeps("1001"));
        let at = Floor::at_start(&Position::InAggregate {
            sequence: "100".into(),
            sub_sequence: 3,
        });
        assert!(!at.keeps("99") && at.keeps("100"));
        assert!(Floor::at_start(&Position::TrimHorizon).keeps("1"));
    }

    fn event(records: usize, continuation: &str, children: &[&str]) -> SubscribeToShardEvent {
        let records = (0..records)
            .map(|i| {
                Record::builder()
                    .sequence_number(i.to_string())
                    .data(aws_sdk_kinesis::primitives::Blob::new(vec![1]))
                    .partition_key("k")
                    .build()
                    .unwrap()
            })
            .collect();
        let children = children
            .iter()
            .map(|c| {
                ChildShard::builder()
                    .shard_id(*c)
                    .parent_shards("p")
                    .build()
                    .unwrap()
            })
            .collect();
        SubscribeToShardEvent::builder()
            .set_records(Some(records))
            .continuation_sequence_number(continuation)
            .millis_behind_latest(0)
            .set_child_shards(Some(children))
            .build()
            .unwrap()
    }

    #[test]
    fn the_shard_ends_without_a_continuation_or_with_children_and_no_records() {
        assert_eq!(shard_end(&event(2, "9", &[])), None);
        assert_eq!(shard_end(&event(0, "9", &[])), None);
        // AWS: no continuation at the end, records possibly with it.
        assert_eq!(
            shard_end(&event(2, "", &["c1", "c2"])),
            Some(vec!["c1".to_owned(), "c2".to_owned()])
        );
        // ferrokinesis: children with every event of a closed shard.
        assert_eq!(shard_end(&event(2, "9", &["c1"])), None);
        assert_eq!(
            shard_end(&event(0, "9", &["c1"])),
            Some(vec!["c1".to_owned()])
        );
    }

    #[test]
    fn stats_start_unknown() {
        let stats = SubscriptionStats::default();
        assert_eq!(stats.snapshot(), SubscriptionSnapshot::default());
        stats.millis_behind.store(5, Relaxed);
        assert_eq!(stats.snapshot().millis_behind, Some(5));
    }
}
