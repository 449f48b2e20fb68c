//! [`StreamConsumer`]: every shard of a stream, shared by workers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use unistream_core::checkpoint::CheckpointStore;
use unistream_core::clock::SharedClock;
use unistream_core::consumer::{Consumer, ConsumerConfig, Handler, RunSummary};
use unistream_core::dlq::DeadLetterQueue;
use unistream_core::record::{Codec, JsonCodec};
use unistream_core::{Error, Result};
use unistream_kinesis::{KinesisSource, StartingPosition};

use crate::coordinator::{Coordinator, chrono_duration};
use crate::error::LeaseError;
use crate::lease::{Lease, LeaseTable};

/// What a [`StreamConsumer`] did, as counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// Leases taken (free, expired or stolen).
    pub leases_taken: u64,
    /// Leases lost to other workers (or not renewed in time).
    pub leases_lost: u64,
    /// Shards read to their end and retired.
    pub shards_ended: u64,
    /// Shard consumers that stopped on an error (and were restarted).
    pub shard_errors: u64,
    /// Records processed (succeeded, ignored or dead-lettered).
    pub records: u64,
}

pub(crate) type Make<T> = Box<dyn FnMut(&str) -> Result<T> + Send>;
pub(crate) type OnChange = Box<dyn FnMut(&[String]) + Send>;

/// Consumes every shard of a Kinesis stream, sharing them with the other
/// workers of the same lease table: one consumer engine (with its own
/// per-record checkpoint) per shard this worker holds a lease for, each as
/// its own concurrent future, polled by the task that runs [`run`](Self::run).
///
/// - Shards are discovered with paged `ListShards` at start and every
///   `discover_every`; each gets a lease (with its parents).
/// - Leases are renewed on a timer of their own, independent of processing.
///   A lease lost (taken by another worker, or not renewed for `failover`)
///   stops that shard's consumer: it finishes the record in hand and stops.
///   Its checkpoint writes after the new owner loaded the checkpoint fail
///   their version condition (`Error::CheckpointOwned`), so a stale worker
///   can never overwrite the new owner's progress.
/// - A shard read to its end (after a split or merge) has its lease marked
///   ended; its children are processed only once every parent has ended.
/// - Shutdown (the token) stops every shard consumer gracefully, then
///   releases the leases, so another worker takes them at once.
///
/// The checkpoint store of each shard comes from `make_store`, given the
/// shard's consumer id (`<consumer_id>/<shard id>`): with the DynamoDB + S3
/// store, build it with `exclusive_by_lease()` so a new owner retries a
/// record left in progress at once.
///
/// Each shard's records are decoded with the codec `C`: JSON by default,
/// another one given to the builder's
/// [`codec`](crate::StreamConsumerBuilder::codec), as the single-shard
/// [`Consumer::with_codec`] takes it.
///
/// Built with [`StreamConsumer::builder`]:
///
/// ```no_run
/// # async fn demo(kinesis: aws_sdk_kinesis::Client, ddb: aws_sdk_dynamodb::Client) -> unistream_core::Result<()> {
/// use chrono::{DateTime, Utc};
/// use unistream_core::consumer::{Attempt, ConsumerConfig, Outcome, Processor};
/// use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue};
/// use unistream_core::record::{Record, iso8601};
/// use unistream_leases::{DynamoDbLeaseTable, StreamConsumer};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order {
///     id: String,
///     #[serde(with = "iso8601")]
///     create_at: DateTime<Utc>,
/// }
/// impl Record for Order {
///     fn id(&self) -> &str { &self.id }
///     fn create_at(&self) -> DateTime<Utc> { self.create_at }
/// }
/// struct Ship;
/// impl Processor for Ship {
///     type Record = Order;
///     async fn process(&self, _: &Order, _: &Attempt<'_>) -> Result<Outcome, unistream_core::BoxError> {
///         Ok(Outcome::Succeeded)
///     }
/// }
///
/// let leases = DynamoDbLeaseTable::new(ddb, "orders-leases");
/// let mut worker = StreamConsumer::builder(kinesis, leases)
///     .stream("orders")
///     .worker("worker-1")
///     .consumer(ConsumerConfig::new("orders-app"))
///     .build(
///         |_shard| Ok(Ship),
///         |_consumer_id| Ok(MemoryCheckpointStore::default()), // DynamoDB + S3 in production
///         |_shard| Ok(MemoryDeadLetterQueue::default()),
///     )?;
/// worker.run().await?;
/// # Ok(()) }
/// ```
pub struct StreamConsumer<T, P, K, D, C = JsonCodec> {
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) stream: String,
    pub(crate) coordinator: Coordinator<T>,
    pub(crate) config: ConsumerConfig,
    pub(crate) start: StartingPosition,
    pub(crate) make_processor: Make<P>,
    pub(crate) make_store: Make<K>,
    pub(crate) make_dlq: Make<D>,
    /// Cloned into each shard's consumer.
    pub(crate) codec: C,
    pub(crate) shutdown: CancellationToken,
    pub(crate) clock: SharedClock,
    pub(crate) get_records_interval: Option<Duration>,
    pub(crate) deaggregate: bool,
    /// The enhanced fan-out consumer's name, and its ARN once registered.
    pub(crate) fan_out: Option<String>,
    pub(crate) fan_out_arn: Option<String>,
    pub(crate) on_change: Option<OnChange>,
}

impl<T, P, K, D, C> std::fmt::Debug for StreamConsumer<T, P, K, D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("stream", &self.stream)
            .field("coordinator", &self.coordinator)
            .field("config", &self.config)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// A shard consumer's run, polled by the worker's task. (Spawning each as a
/// tokio task would need its future to be provably `Send` for any
/// processor, which rustc cannot show for these generic engines today;
/// shard consumers wait on I/O, so one task polling them all loses little.)
type ShardRun = Pin<Box<dyn Future<Output = (String, Result<RunSummary>)>>>;

struct Running {
    token: CancellationToken,
    /// Why it was stopped, if it was.
    stopping: Option<Stop>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Lost,
    Shutdown,
}

impl<T, P, K, D, C> StreamConsumer<T, P, K, D, C>
where
    T: LeaseTable,
    P: Handler + 'static,
    K: CheckpointStore + 'static,
    D: DeadLetterQueue + 'static,
    C: Codec<P::Record> + Clone,
{
    /// The lease coordinator (e.g. for the shards held).
    pub fn coordinator(&self) -> &Coordinator<T> {
        &self.coordinator
    }

    /// Lists the stream's shards ([`unistream_kinesis::list_shards`]) and
    /// creates a lease for each shard that has none; returns how many were
    /// created.
    ///
    /// # Errors
    ///
    /// The listing's error ([`unistream_kinesis::KinesisError::Api`], or
    /// `Denied`), or the lease table's error.
    pub async fn discover(&self) -> Result<usize> {
        let mut created = 0;
        for shard in unistream_kinesis::list_shards(&self.kinesis, &self.stream).await? {
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            let lease = Lease::new(shard.shard_id(), parents);
            if self.coordinator.table().create(&lease).await? {
                info!(stream = %self.stream, shard = %lease.shard_id, parents = ?lease.parents, "new shard: lease created");
                created += 1;
            }
        }
        Ok(created)
    }

    fn spawn_shard(
        &mut self,
        tasks: &mut FuturesUnordered<ShardRun>,
        running: &mut HashMap<String, Running>,
        shard: &str,
    ) -> Result<()> {
        let consumer_id = crate::checkpoint_key(&self.config.consumer_id, shard);
        let mut config = self.config.clone();
        config.consumer_id = consumer_id.clone();
        config.stop_at_end = false;
        let mut source = KinesisSource::new(self.kinesis.clone(), &self.stream, shard, self.start)
            .with_clock(self.clock.clone())
            .with_deaggregation(self.deaggregate);
        if let Some(i) = self.get_records_interval {
            source = source.with_min_interval(i);
        }
        if let Some(arn) = &self.fan_out_arn {
            source = source.with_fan_out(arn);
        }
        let token = self.shutdown.child_token();
        let consumer = Consumer::new(
            config,
            source,
            (self.make_processor)(shard)?,
            (self.make_store)(&consumer_id)?,
            (self.make_dlq)(shard)?,
        )?
        .with_codec(self.codec.clone())
        .with_clock(self.clock.clone())
        .with_shutdown(token.clone());
        let name = shard.to_owned();
        tasks.push(Box::pin(async move {
            let mut consumer = consumer;
            // A panic in user code stops this shard's consumer only.
            let result = match AssertUnwindSafe(consumer.run()).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(LeaseError::ProcessorPanicked {
                    shard: name.clone(),
                }
                .into()),
            };
            (name, result)
        }));
        running.insert(
            shard.to_owned(),
            Running {
                token,
                stopping: None,
            },
        );
        info!(worker = %self.coordinator.worker(), %shard, "shard consumer started");
        Ok(())
    }

    /// Calls the `on_change` callback if the shards held changed.
    fn notify(&mut self, last: &mut Vec<String>) {
        let held = self.coordinator.held();
        if held != *last {
            if let Some(f) = self.on_change.as_mut() {
                f(&held);
            }
            *last = held;
        }
    }

    /// Runs until the shutdown token is cancelled: discovers shards, keeps
    /// leases, runs a shard consumer per held lease. On shutdown, stops
    /// them, waits for them, and releases their leases.
    ///
    /// # Errors
    ///
    /// The lease table's or `ListShards`' error at start; afterwards a shard
    /// consumer's error stops only that shard (it is counted and the shard
    /// started again). A call the service denies ([`Error::Denied`]: a
    /// missing permission, credentials it does not accept) is never
    /// retried: the worker stops as on shutdown (its shard consumers stop,
    /// its leases are released if it may) and returns it.
    pub async fn run(&mut self) -> Result<StreamSummary> {
        if let (Some(name), None) = (&self.fan_out, &self.fan_out_arn) {
            let arn = unistream_kinesis::register_consumer(
                &self.kinesis,
                &self.stream,
                name,
                Duration::from_millis(500),
                Duration::from_secs(120),
            )
            .await?;
            info!(stream = %self.stream, consumer = %name, %arn, "reading by enhanced fan-out");
            self.fan_out_arn = Some(arn);
        }
        let mut summary = StreamSummary::default();
        let mut tasks: FuturesUnordered<ShardRun> = FuturesUnordered::new();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut restart_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut announced: Vec<String> = Vec::new();
        let lease_config = self.coordinator.config().clone();
        let now = self.clock.now();
        let (mut next_renew, mut next_balance, mut next_discover) = (now, now, now);
        // A denied call: retrying cannot help; stop and return it.
        let mut fatal: Option<Error> = None;
        while !self.shutdown.is_cancelled() && fatal.is_none() {
            let now = self.clock.now();
            let mut changed = false;
            if now >= next_discover {
                if let Err(e) = self.discover().await {
                    warn!(stream = %self.stream, error = %e, "could not list the stream's shards");
                    fatal = Error::denied_in(&e);
                }
                next_discover = now + chrono_duration(lease_config.discover_every);
            }
            if now >= next_renew {
                for shard in self.coordinator.renew().await {
                    summary.leases_lost += 1;
                    changed = true;
                    if let Some(r) = running.get_mut(&shard) {
                        r.stopping = Some(Stop::Lost);
                        r.token.cancel();
                    }
                }
                next_renew = now + chrono_duration(lease_config.renew_every);
            }
            if now >= next_balance {
                match self.coordinator.balance().await {
                    Ok(b) => {
                        for shard in b.lost {
                            summary.leases_lost += 1;
                            changed = true;
                            if let Some(r) = running.get_mut(&shard) {
                                r.stopping = Some(Stop::Lost);
                                r.token.cancel();
                            }
                        }
                        for lease in b.taken {
                            summary.leases_taken += 1;
                            changed = true;
                            if running.contains_key(&lease.shard_id) {
                                // Its old consumer is still stopping: start
                                // the new one once it has.
                                restart_at.insert(lease.shard_id.clone(), now);
                            } else if let Err(e) =
                                self.spawn_shard(&mut tasks, &mut running, &lease.shard_id)
                            {
                                // E.g. the previous owner's consumer still
                                // holds a file checkpoint's lock: it stops at
                                // its next renewal. Keep the lease, retry.
                                warn!(shard = %lease.shard_id, error = %e, "could not start a shard consumer yet; retrying");
                                restart_at.insert(
                                    lease.shard_id.clone(),
                                    now + chrono_duration(lease_config.renew_every),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "could not read the lease table");
                        fatal = fatal.or(Error::denied_in(&e));
                    }
                }
                next_balance = now + chrono_duration(lease_config.balance_every);
            }
            let due: Vec<String> = restart_at
                .iter()
                .filter(|(s, at)| **at <= now && !running.contains_key(*s))
                .map(|(s, _)| s.clone())
                .collect();
            for shard in due {
                restart_at.remove(&shard);
                if self.coordinator.holds(&shard)
                    && let Err(e) = self.spawn_shard(&mut tasks, &mut running, &shard)
                {
                    warn!(%shard, error = %e, "could not start a shard consumer yet; retrying");
                    restart_at.insert(shard, now + chrono_duration(lease_config.renew_every));
                }
            }
            if changed {
                self.notify(&mut announced);
            }
            if fatal.is_some() {
                break;
            }
            let next = next_renew.min(next_balance).min(next_discover);
            let wait = (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                _ = self.shutdown.cancelled() => {}
                Some(done) = tasks.next() => {
                    let ended = self.finished(done, &mut running, &mut restart_at, &mut summary, &mut fatal).await?;
                    if ended {
                        // Children may be ready now.
                        next_balance = self.clock.now();
                    }
                    self.notify(&mut announced);
                }
            }
        }
        // Shutdown: stop every shard consumer, wait, release their leases.
        for r in running.values_mut() {
            r.stopping.get_or_insert(Stop::Shutdown);
            r.token.cancel();
        }
        while let Some(done) = tasks.next().await {
            self.finished(
                done,
                &mut running,
                &mut restart_at,
                &mut summary,
                &mut fatal,
            )
            .await?;
        }
        for shard in self.coordinator.held() {
            match self.coordinator.release(&shard).await {
                Ok(_) => info!(worker = %self.coordinator.worker(), %shard, "lease released"),
                // Stopping on a denial: it may deny this too; the lease
                // expires after the failover time.
                Err(e) if fatal.is_some() => {
                    warn!(worker = %self.coordinator.worker(), %shard, error = %e, "could not release the lease");
                }
                Err(e) => return Err(e),
            }
        }
        self.notify(&mut announced);
        match fatal {
            Some(e) => {
                error!(worker = %self.coordinator.worker(), error = %e, "stopped: a call was denied");
                Err(e)
            }
            None => Ok(summary),
        }
    }

    /// Handles a shard consumer that stopped; `true` if its shard ended.
    async fn finished(
        &mut self,
        done: (String, Result<RunSummary>),
        running: &mut HashMap<String, Running>,
        restart_at: &mut BTreeMap<String, DateTime<Utc>>,
        summary: &mut StreamSummary,
        fatal: &mut Option<Error>,
    ) -> Result<bool> {
        let (shard, result) = done;
        let stop = running.remove(&shard).and_then(|r| r.stopping);
        match result {
            Ok(s) => {
                summary.records += s.succeeded + s.ignored + s.dead_lettered;
                if s.closed && stop != Some(Stop::Lost) {
                    summary.shards_ended += u64::from(self.coordinator.end(&shard).await?);
                    return Ok(true);
                }
                info!(%shard, ?stop, "shard consumer stopped");
            }
            Err(Error::CheckpointOwned { detail, .. }) if stop.is_some() => {
                info!(%shard, %detail, "another worker owns this shard's checkpoint now; stopped");
            }
            Err(e) if Error::denied_in(&e).is_some() => {
                summary.shard_errors += 1;
                warn!(%shard, error = %e, "shard consumer stopped: a call was denied; the worker stops");
                fatal.get_or_insert(e);
            }
            Err(e) => {
                // Also `CheckpointOwned` while the lease is still ours: the
                // previous owner wrote as we loaded; loading again fences
                // it. A lease lost meanwhile is not restarted (see `run`).
                summary.shard_errors += 1;
                let delay = self.coordinator.config().renew_every;
                warn!(%shard, error = %e, ?delay, "shard consumer stopped on an error; restarting it while the lease is held");
                if stop.is_none() && !self.shutdown.is_cancelled() {
                    restart_at.insert(shard, self.clock.now() + chrono_duration(delay));
                }
            }
        }
        Ok(false)
    }
}
