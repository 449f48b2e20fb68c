//! [`StreamConsumerBuilder`]: how a [`StreamConsumer`] is put together
//! (and [`StreamConsumer::builder`], which starts one). This module knows
//! the stream consumer; `stream.rs` does not know it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use unistream_core::checkpoint::CheckpointStore;
use unistream_core::clock::{Clock, SharedClock, SystemClock};
use unistream_core::consumer::{ConsumerConfig, Handler};
use unistream_core::dlq::DeadLetterQueue;
use unistream_core::record::{Codec, JsonCodec};
use unistream_core::{Error, Result};
use unistream_kinesis::StartingPosition;

use crate::coordinator::{Coordinator, LeaseConfig};
use crate::lease::LeaseTable;
use crate::stream::{OnChange, StreamConsumer};

/// Builds a [`StreamConsumer`]; from [`StreamConsumer::builder`]. `C` is
/// the records' codec, JSON unless [`codec`](Self::codec) gives another.
///
/// Required, checked by [`build`](Self::build): [`stream`](Self::stream),
/// [`worker`](Self::worker) and [`consumer`](Self::consumer). Everything
/// else has a default, named on its setter.
pub struct StreamConsumerBuilder<T, C = JsonCodec> {
    kinesis: aws_sdk_kinesis::Client,
    leases: T,
    stream: Option<String>,
    worker: Option<String>,
    consumer: Option<ConsumerConfig>,
    lease_config: LeaseConfig,
    start: StartingPosition,
    shutdown: CancellationToken,
    clock: SharedClock,
    get_records_interval: Option<Duration>,
    deaggregate: bool,
    fan_out: Option<String>,
    on_change: Option<OnChange>,
    codec: C,
}

impl<T, C> std::fmt::Debug for StreamConsumerBuilder<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StreamConsumerBuilder {{ stream: {:?}, worker: {:?}, .. }}",
            self.stream, self.worker
        )
    }
}

impl StreamConsumer<(), (), (), ()> {
    /// A builder of a worker consuming a stream through `kinesis`, sharing
    /// its shards through `leases` (see [`StreamConsumerBuilder`] for what is
    /// required and the defaults).
    pub fn builder<T: LeaseTable>(
        kinesis: aws_sdk_kinesis::Client,
        leases: T,
    ) -> StreamConsumerBuilder<T> {
        StreamConsumerBuilder::new(kinesis, leases)
    }
}

impl<T: LeaseTable> StreamConsumerBuilder<T> {
    fn new(kinesis: aws_sdk_kinesis::Client, leases: T) -> Self {
        StreamConsumerBuilder {
            kinesis,
            leases,
            stream: None,
            worker: None,
            consumer: None,
            lease_config: LeaseConfig::default(),
            start: StartingPosition::TrimHorizon,
            shutdown: CancellationToken::new(),
            clock: Arc::new(SystemClock),
            get_records_interval: None,
            deaggregate: true,
            fan_out: None,
            on_change: None,
            codec: JsonCodec::default(),
        }
    }
}

impl<T: LeaseTable, C> StreamConsumerBuilder<T, C> {
    /// The stream to consume (a name). Required.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// This worker's id, unique among the workers sharing the lease table.
    /// Required.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// The template of every shard consumer's configuration: its
    /// `consumer_id` (the application's name) is the prefix of theirs
    /// (`<consumer_id>/<shard id>`). Required.
    pub fn consumer(mut self, config: ConsumerConfig) -> Self {
        self.consumer = Some(config);
        self
    }

    /// Lease timing. Default: [`LeaseConfig::default`] (failover 10 s).
    pub fn lease_config(mut self, config: LeaseConfig) -> Self {
        self.lease_config = config;
        self
    }

    /// Where a shard with no checkpoint starts. Default: `TrimHorizon` (the
    /// oldest record kept).
    pub fn starting_position(mut self, start: StartingPosition) -> Self {
        self.start = start;
        self
    }

    /// Stops gracefully when `token` is cancelled. Default: a token of its
    /// own, never cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The clock of leases, renewals and waits. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The least time between two `GetRecords` calls of one shard. Default:
    /// the source's 200 ms (Kinesis allows 5 calls per second per shard).
    pub fn get_records_interval(mut self, interval: Duration) -> Self {
        self.get_records_interval = Some(interval);
        self
    }

    /// Whether each shard's source splits KPL aggregated records into their
    /// user records (see `KinesisSource::with_deaggregation`). Default: yes.
    pub fn deaggregate(mut self, on: bool) -> Self {
        self.deaggregate = on;
        self
    }

    /// Reads every shard by enhanced fan-out as the stream consumer
    /// `consumer_name` (registered at the start of [`run`] if missing; see
    /// `KinesisSource::with_fan_out`): each application gets its own 2 MiB/s
    /// per shard, records pushed as they arrive. Default: polling
    /// (`GetRecords`).
    ///
    /// [`run`]: crate::StreamConsumer::run
    pub fn fan_out(mut self, consumer_name: impl Into<String>) -> Self {
        self.fan_out = Some(consumer_name.into());
        self
    }

    /// Calls `f` with the shards held whenever they change. Default: none.
    pub fn on_change(mut self, f: impl FnMut(&[String]) + Send + 'static) -> Self {
        self.on_change = Some(Box::new(f));
        self
    }

    /// The codec of the records, cloned into each shard's consumer (as
    /// [`Consumer::with_codec`](unistream_core::consumer::Consumer::with_codec)).
    /// Default: [`JsonCodec`].
    ///
    /// ```no_run
    /// # fn demo(kinesis: aws_sdk_kinesis::Client, ddb: aws_sdk_dynamodb::Client) -> unistream_core::Result<()> {
    /// use chrono::{DateTime, Utc};
    /// use unistream_core::consumer::{Attempt, ConsumerConfig, Outcome, Processor};
    /// use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue};
    /// use unistream_core::record::{Codec, CodecError, Record};
    /// use unistream_leases::{DynamoDbLeaseTable, StreamConsumer};
    ///
    /// #[derive(Clone)]
    /// struct Text; // a record's bytes are its id, as text
    /// struct Tick(String);
    /// impl Record for Tick {
    ///     fn id(&self) -> &str { &self.0 }
    ///     fn create_at(&self) -> DateTime<Utc> { DateTime::UNIX_EPOCH }
    /// }
    /// impl Codec<Tick> for Text {
    ///     fn encode(&self, t: &Tick) -> Result<Vec<u8>, CodecError> { Ok(t.0.clone().into_bytes()) }
    ///     fn decode(&self, b: &[u8]) -> Result<Tick, CodecError> {
    ///         String::from_utf8(b.to_vec()).map(Tick).map_err(CodecError::decode)
    ///     }
    /// }
    /// struct Count;
    /// impl Processor for Count {
    ///     type Record = Tick;
    ///     async fn process(&self, _: &Tick, _: &Attempt<'_>) -> Result<Outcome, unistream_core::BoxError> {
    ///         Ok(Outcome::Succeeded)
    ///     }
    /// }
    ///
    /// let worker = StreamConsumer::builder(kinesis, DynamoDbLeaseTable::new(ddb, "ticks-leases"))
    ///     .stream("ticks")
    ///     .worker("worker-1")
    ///     .consumer(ConsumerConfig::new("ticks-app"))
    ///     .codec(Text)
    ///     .build(
    ///         |_shard| Ok(Count),
    ///         |_consumer_id| Ok(MemoryCheckpointStore::default()),
    ///         |_shard| Ok(MemoryDeadLetterQueue::default()),
    ///     )?;
    /// # let _ = worker; Ok(()) }
    /// ```
    pub fn codec<C2>(self, codec: C2) -> StreamConsumerBuilder<T, C2> {
        StreamConsumerBuilder {
            kinesis: self.kinesis,
            leases: self.leases,
            stream: self.stream,
            worker: self.worker,
            consumer: self.consumer,
            lease_config: self.lease_config,
            start: self.start,
            shutdown: self.shutdown,
            clock: self.clock,
            get_records_interval: self.get_records_interval,
            deaggregate: self.deaggregate,
            fan_out: self.fan_out,
            on_change: self.on_change,
            codec,
        }
    }

    /// The worker, making each shard's processor (a `Processor`, or
    /// `Slices` of a `SliceProcessor`), checkpoint store and
    /// dead-letter queue with these (given the shard id, the shard
    /// consumer's id, and the shard id).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the stream, the worker or the consumer
    /// configuration is missing or empty.
    pub fn build<P, K, D>(
        self,
        make_processor: impl FnMut(&str) -> Result<P> + Send + 'static,
        make_store: impl FnMut(&str) -> Result<K> + Send + 'static,
        make_dlq: impl FnMut(&str) -> Result<D> + Send + 'static,
    ) -> Result<StreamConsumer<T, P, K, D, C>>
    where
        P: Handler + 'static,
        K: CheckpointStore + 'static,
        D: DeadLetterQueue + 'static,
        C: Codec<P::Record> + Clone,
    {
        let stream = Error::required(self.stream, "StreamConsumerBuilder::stream")?;
        let worker = Error::required(self.worker, "StreamConsumerBuilder::worker")?;
        let config = self
            .consumer
            .ok_or_else(|| Error::Config("StreamConsumerBuilder::consumer is required".into()))?;
        let coordinator =
            Coordinator::new(self.leases, worker, self.lease_config).with_clock(self.clock.clone());
        Ok(StreamConsumer {
            kinesis: self.kinesis,
            stream,
            coordinator,
            config,
            start: self.start,
            make_processor: Box::new(make_processor),
            make_store: Box::new(make_store),
            make_dlq: Box::new(make_dlq),
            codec: self.codec,
            shutdown: self.shutdown,
            clock: self.clock,
            get_records_interval: self.get_records_interval,
            deaggregate: self.deaggregate,
            fan_out: self.fan_out,
            fan_out_arn: None,
            on_change: self.on_change,
        })
    }
}
