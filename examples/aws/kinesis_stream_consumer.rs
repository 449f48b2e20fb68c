//! Consumes **every shard** of a Kinesis stream with as many worker
//! processes as you start, coordinated by leases in a DynamoDB table. Run
//! it in several terminals against one stream and watch the shards spread
//! across them; stop one (SIGTERM or Ctrl-C: it checkpoints and releases its leases)
//! or kill it (`kill -9`: its leases are taken over after the failover
//! time) and watch the others take its shards.
//!
//! ```text
//! # once: a stream with 4 shards and some records, tables and a bucket
//! cargo run -p unistream-aws-examples --example aws_kinesis_producer -- --endpoint http://127.0.0.1:5000 \
//!     --stream demo --create --shards 4 --count 1000 --interval-ms 0
//! # in each terminal:
//! cargo run -p unistream-aws-examples --example kinesis_stream_consumer -- --endpoint http://127.0.0.1:5000 \
//!     --stream demo --create --worker w1
//! ```
//!
//! Each worker prints the shards it holds whenever they change, and appends
//! one JSON line per processing attempt to `<dir>/<worker>.processed.jsonl`
//! (`worker`, `shard`, `id`, `attempt`, `ok`, `t` in ns); dead letters go to
//! `<dir>/<worker>.dlq.jsonl`. Checkpoints (per record) are in DynamoDB +
//! S3, so any worker can resume any shard.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use unistream::checkpoint::CheckpointStore;
use unistream::consumer::{Attempt, ConsumerConfig, Outcome, Processor, cancel_on_signals};
use unistream::dynamodb_s3::{DynamoDbIdempotencyStore, DynamoDbS3CheckpointStore};
use unistream::idempotency::{IdempotencyConfig, Idempotent};
use unistream::kinesis::StartingPosition;
use unistream::leases::{DynamoDbLeaseTable, LEASE_KEY, LeaseConfig, StreamConsumer};
use unistream::local::Durability;
use unistream::local::{AppendFile, FileCheckpointStore, FileDeadLetterQueue};
use unistream::retry::RetryPolicy;
use unistream::{BoxError, CancellationToken};
use unistream_aws_examples::{aws_clients, create_bucket_if_missing, create_table_if_missing};
use unistream_examples::{Controls, MyRecord, RandomError, chance, exit_code, init_logging};

#[derive(Parser, Debug)]
#[command(
    about = "Consume every shard of a Kinesis stream, shared by workers through DynamoDB leases"
)]
struct Args {
    /// An emulator's endpoint (default: AWS, from the usual configuration).
    #[arg(long)]
    endpoint: Option<String>,
    /// The stream.
    #[arg(long)]
    stream: String,
    /// This worker's id (unique among the workers of the stream).
    #[arg(long, default_value_t = format!("worker-{}", std::process::id()))]
    worker: String,
    /// The application: prefix of the checkpoint keys (default: the stream).
    #[arg(long)]
    app: Option<String>,
    /// DynamoDB table of the leases (partition key `lease_key`, a string).
    #[arg(long, default_value = "unistream-leases")]
    lease_table: String,
    /// DynamoDB table of the checkpoints (partition key `id`, a string).
    #[arg(long, default_value = "unistream-checkpoints")]
    checkpoint_table: String,
    /// S3 bucket for the batches' records.
    #[arg(long, default_value = "unistream-checkpoints")]
    bucket: String,
    /// Keep checkpoints in local files under this directory instead of
    /// DynamoDB + S3 (for workers on one machine sharing the directory).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Create the tables and the bucket if they do not exist.
    #[arg(long)]
    create: bool,
    /// A lease not renewed for this long is taken over (milliseconds).
    #[arg(long, default_value_t = 10_000)]
    failover_ms: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Attempts per record before the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Probability that a processing attempt fails.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Seed of the failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Milliseconds to wait after a pull that found nothing.
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
    /// Least milliseconds between two `GetRecords` of a shard.
    #[arg(long, default_value_t = 200)]
    get_interval_ms: u64,
    /// Where the processed and dead-letter files go.
    #[arg(long, default_value = "kinesis_stream_consumer_demo")]
    dir: PathBuf,
    /// Log what the engine does.
    #[arg(long)]
    verbose: bool,
    /// Records in flight at once (records of one partition key never
    /// overlap and keep their order); 1 processes strictly in stream order.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Each attempt first awaits this long, like a remote call.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Serve metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9898).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Lambda's failure controls (one record per call here: no
    /// `--slice-size`); `--idempotent` keeps its keys in the checkpoint
    /// table (items `<app>#<record id>`).
    #[command(flatten)]
    controls: Controls,
}

/// Appends one line per attempt; fails at random.
struct Recorder {
    work: Duration,
    worker: String,
    shard: String,
    out: AppendFile,
    fail_rate: f64,
    seed: u64,
}

impl Processor for Recorder {
    type Record = MyRecord;

    async fn process(&self, r: &MyRecord, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        let ok = chance(self.seed, &r.id, a.number) >= self.fail_rate;
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let line = format!(
            "{{\"worker\":{:?},\"shard\":{:?},\"id\":{:?},\"attempt\":{},\"ok\":{ok},\"t\":{t}}}\n",
            self.worker, self.shard, r.id, a.number
        );
        self.out.append(line.as_bytes())?;
        if ok {
            Ok(Outcome::Succeeded)
        } else {
            Err(RandomError(r.id.clone()).into())
        }
    }
}

/// The recorder, or the recorder whose effect runs once per record id.
enum Shard {
    Plain(Recorder),
    Idempotent(Idempotent<Recorder, DynamoDbIdempotencyStore, MyRecord>),
}

impl Processor for Shard {
    type Record = MyRecord;

    async fn process(&self, r: &MyRecord, a: &Attempt<'_>) -> Result<Outcome, BoxError> {
        match self {
            Shard::Plain(p) => p.process(r, a).await,
            Shard::Idempotent(p) => p.process(r, a).await,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    exit_code(run(args).await)
}

async fn run(args: Args) -> unistream::Result<()> {
    unistream_examples::init_metrics(args.metrics_addr)?;
    let clients = aws_clients(args.endpoint.as_deref()).await;
    let kinesis = clients.kinesis();
    let ddb = clients.dynamodb();
    let s3 = clients.s3();
    if args.create {
        create_resources(&ddb, &s3, &args).await?;
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| unistream::Error::io(&args.dir, e))?;
    let app = args.app.clone().unwrap_or_else(|| args.stream.clone());
    let consumer = ConsumerConfig::new(&app)
        .limit(args.limit)
        .concurrency(args.concurrency)
        .retry(RetryPolicy::waits([Duration::ZERO]).with_max_attempts(args.max_attempts))
        .delay(Duration::from_millis(args.delay_ms));
    if args.controls.slice_size > 0 {
        return Err(unistream::Error::Config(
            "--slice-size: this example's processor takes one record per call".into(),
        ));
    }
    let consumer = args.controls.apply(consumer)?;
    let keys = args.controls.idempotent.then(|| {
        (
            DynamoDbIdempotencyStore::new(ddb.clone(), &args.checkpoint_table),
            IdempotencyConfig::default().namespace(&app),
        )
    });
    let (table, bucket) = (args.checkpoint_table.clone(), args.bucket.clone());
    let leases = DynamoDbLeaseTable::new(ddb.clone(), &args.lease_table);
    let worker_setup = Worker {
        args: &args,
        kinesis,
        leases,
        consumer,
        keys,
    };
    match args.checkpoint_dir.clone() {
        Some(dir) => {
            worker_setup
                .run(move |consumer_id| {
                    FileCheckpointStore::open(&dir, consumer_id, Durability::Process)
                })
                .await
        }
        None => {
            worker_setup
                .run(move |consumer_id| {
                    DynamoDbS3CheckpointStore::builder(ddb.clone(), s3.clone())
                        .table(&table)
                        .key(consumer_id)
                        .bucket(&bucket)
                        .exclusive_by_lease()
                        .build()
                })
                .await
        }
    }
}

/// What a worker needs besides its checkpoint store.
struct Worker<'a> {
    args: &'a Args,
    kinesis: aws_sdk_kinesis::Client,
    leases: DynamoDbLeaseTable,
    consumer: ConsumerConfig,
    /// The idempotency keys, with `--idempotent`.
    keys: Option<(DynamoDbIdempotencyStore, IdempotencyConfig)>,
}

impl Worker<'_> {
    async fn run<K: CheckpointStore + 'static>(
        self,
        make_store: impl FnMut(&str) -> unistream::Result<K> + Send + 'static,
    ) -> unistream::Result<()> {
        let args = self.args;
        let worker = args.worker.clone();
        let out_path = args.dir.join(format!("{worker}.processed.jsonl"));
        let dlq_path = args.dir.join(format!("{worker}.dlq.jsonl"));
        let (fail_rate, seed) = (args.fail_rate, args.seed);
        let work = Duration::from_millis(args.work_ms);
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        let name = worker.clone();
        let me = worker.clone();
        let keys = self.keys;
        let mut stream = StreamConsumer::builder(self.kinesis, self.leases)
            .stream(&args.stream)
            .worker(&worker)
            .consumer(self.consumer)
            .lease_config(LeaseConfig::new(Duration::from_millis(args.failover_ms)))
            .starting_position(StartingPosition::TrimHorizon)
            .shutdown(shutdown)
            .get_records_interval(Duration::from_millis(args.get_interval_ms))
            .on_change(move |held| println!("{me} holds {held:?}"))
            .build(
                move |shard| {
                    let recorder = Recorder {
                        work,
                        worker: name.clone(),
                        shard: shard.to_owned(),
                        out: AppendFile::open(&out_path, Durability::Process)?,
                        fail_rate,
                        seed,
                    };
                    Ok(match &keys {
                        Some((store, config)) => Shard::Idempotent(
                            Idempotent::new(recorder, store.clone()).with_config(config.clone()),
                        ),
                        None => Shard::Plain(recorder),
                    })
                },
                make_store,
                move |_shard| FileDeadLetterQueue::open(&dlq_path, Durability::Process),
            )?;
        println!("{worker} started on stream {}", args.stream);
        let s = stream.run().await?;
        println!(
            "{worker} stopped: {} leases taken, {} lost, {} shards ended, {} records",
            s.leases_taken, s.leases_lost, s.shards_ended, s.records
        );
        Ok(())
    }
}

/// Creates the lease and checkpoint tables and the bucket, when missing.
async fn create_resources(
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    args: &Args,
) -> unistream::Result<()> {
    create_table_if_missing(ddb, &args.lease_table, LEASE_KEY).await?;
    create_table_if_missing(ddb, &args.checkpoint_table, "id").await?;
    create_bucket_if_missing(s3, &args.bucket).await
}
