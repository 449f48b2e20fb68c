//! The seed's production wiring: a Kinesis shard consumer whose checkpoint
//! is in DynamoDB (metadata, per-record status) + S3 (the batch's records),
//! with failed records sent to an SQS dead-letter queue.
//!
//! ```text
//! cargo run --release -p unistream-aws-examples --example aws_production_consumer -- --endpoint http://127.0.0.1:5000 \
//!     --stream demo --table checkpoints --bucket unistream-demo --queue demo-dlq --create --until-end --verbose
//! ```
//!
//! `--create` makes the table (partition key `id`), the bucket and the queue
//! if they are missing. See docs/production.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use unistream::Error;
use unistream::checkpoint::CheckpointStore;
use unistream::consumer::{Consumer, ConsumerConfig, cancel_on_signals};
use unistream::consumer::{Handler, Slices};
use unistream::dlq::DeadLetterQueue;
use unistream::dynamodb_s3::DynamoDbIdempotencyStore;
use unistream::dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream::idempotency::{IdempotencyConfig, Idempotent};
use unistream::kinesis::{KinesisSource, StartingPosition};
use unistream::local::AppendFile;
use unistream::local::Durability;
use unistream::retry::RetryPolicy;
use unistream::source::Source;
use unistream::sqs_dlq::SqsDeadLetterQueue;
use unistream_aws_examples::{
    aws_clients, create_bucket_if_missing, create_table_if_missing, first_shard, with_efo,
};
use unistream_examples::{
    AnnouncedDlq, Controls, DemoProcessor, DemoSlices, exit_code, init_logging, run_verbose,
};

#[derive(Parser, Debug)]
#[command(about = "Kinesis consumer with a DynamoDB + S3 checkpoint and an SQS dead-letter queue")]
struct Args {
    /// An emulator's endpoint (default: AWS, from the usual configuration).
    #[arg(long)]
    endpoint: Option<String>,
    /// Read by enhanced fan-out (SubscribeToShard) as the stream consumer of
    /// this name, registered if missing (default: polling with GetRecords).
    #[arg(long, value_name = "NAME")]
    efo: Option<String>,
    /// Kinesis at another endpoint than the other services (e.g. a Kinesis
    /// emulator next to moto; as `AWS_ENDPOINT_URL_KINESIS`).
    #[arg(long, value_name = "URL")]
    kinesis_endpoint: Option<String>,
    /// The stream (its first shard is read).
    #[arg(long)]
    stream: String,
    /// DynamoDB table of checkpoints (partition key `id`).
    #[arg(long)]
    table: String,
    /// S3 bucket for the batches' records.
    #[arg(long)]
    bucket: String,
    /// SQS queue name for the dead letters (ends in `.fifo` for a FIFO queue).
    #[arg(long)]
    queue: String,
    /// Create the table, bucket and queue if missing.
    #[arg(long)]
    create: bool,
    /// Records per batch.
    #[arg(long, default_value_t = 3)]
    limit: usize,
    /// Attempts per record before the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Probability that a processing attempt fails.
    #[arg(long, default_value_t = 0.5)]
    fail_rate: f64,
    /// Waits between attempts, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    backoff_ms: Vec<u64>,
    /// Seconds a record's lock lives (a restarted consumer waits this long
    /// for a record its dead predecessor was processing).
    #[arg(long, default_value_t = 60)]
    lock_expire_s: u64,
    /// Exit once the shard has no more records.
    #[arg(long)]
    until_end: bool,
    /// Seed of the failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where processed records are appended (target.jsonl).
    #[arg(long, default_value = "aws_production_consumer_demo")]
    dir: PathBuf,
    /// Print the seed's demo output.
    #[arg(long)]
    verbose: bool,
    /// Records in flight at once (records of one partition key never
    /// overlap and keep their order); 1 processes strictly in stream order.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Each attempt first awaits this long, like a remote call.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Append "<id> <attempt>" to this file before each attempt.
    #[arg(long)]
    attempt_log: Option<PathBuf>,
    /// Serve metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9898).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Lambda's failure controls; `--idempotent` keeps its keys in `--table`
    /// (items `<consumer id>#<record id>`).
    #[command(flatten)]
    controls: Controls,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    exit_code(run(args).await)
}

fn aws(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(what.to_owned(), e.to_string())
}

async fn run(args: Args) -> unistream::Result<()> {
    unistream_examples::init_metrics(args.metrics_addr)?;
    let clients = aws_clients(args.endpoint.as_deref()).await;
    let kinesis = match &args.kinesis_endpoint {
        Some(url) => unistream_aws_examples::kinesis_client(Some(url)).await,
        None => clients.kinesis(),
    };
    let ddb = clients.dynamodb();
    let s3 = clients.s3();
    let sqs = clients.sqs();
    if args.create {
        create_resources(&args, &ddb, &s3, &sqs).await?;
    }
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&args.queue)
        .send()
        .await
        .map_err(|e| aws("GetQueueUrl", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .ok_or_else(|| Error::Config(format!("queue {} has no URL", args.queue)))?;
    let shard = first_shard(&kinesis, &args.stream).await?;
    let consumer_id = format!("{}-{shard}", args.stream);

    let cfg = ConsumerConfig::new(&consumer_id)
        .limit(args.limit)
        .concurrency(args.concurrency)
        .retry(
            RetryPolicy::waits(args.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)))
                .with_max_attempts(args.max_attempts),
        )
        .lock_expire(Duration::from_secs(args.lock_expire_s))
        .stop_at_end(args.until_end);
    let cfg = args.controls.apply(cfg)?;
    let keys = DynamoDbIdempotencyStore::new(ddb.clone(), &args.table);
    let keys_config = IdempotencyConfig::default().namespace(&consumer_id);
    let store = DynamoDbS3CheckpointStore::builder(ddb.clone(), s3)
        .table(&args.table)
        .key(&consumer_id)
        .bucket(&args.bucket)
        .build()?;
    let dlq = AnnouncedDlq {
        inner: SqsDeadLetterQueue::new(sqs, queue_url),
        verbose: args.verbose,
    };
    let processor = DemoProcessor {
        target: AppendFile::open(args.dir.join("target.jsonl"), Durability::Process)?,
        attempt_log: match &args.attempt_log {
            Some(path) => Some(AppendFile::open(path, Durability::Process)?),
            None => None,
        },
        poison: Default::default(),
        fail_rate: args.fail_rate,
        seed: args.seed,
        verbose: args.verbose,
        failures: Default::default(),
        work: std::time::Duration::from_millis(args.work_ms),
    };
    let source = KinesisSource::new(
        kinesis.clone(),
        &args.stream,
        &shard,
        StartingPosition::TrimHorizon,
    );
    let source = with_efo(source, &kinesis, &args.stream, args.efo.as_deref()).await?;
    let c = &args.controls;
    match (c.slice_size > 0, c.idempotent) {
        (false, false) => drive(&args, Consumer::new(cfg, source, processor, store, dlq)?).await,
        (false, true) => {
            let p = Idempotent::new(processor, keys).with_config(keys_config);
            drive(&args, Consumer::new(cfg, source, p, store, dlq)?).await
        }
        (true, false) => {
            let p = Slices(DemoSlices(processor));
            drive(&args, Consumer::new(cfg, source, p, store, dlq)?).await
        }
        (true, true) => {
            let p = Idempotent::new(DemoSlices(processor), keys).with_config(keys_config);
            drive(&args, Consumer::new(cfg, source, Slices(p), store, dlq)?).await
        }
    }
}

/// Runs the consumer until the end (or a signal), printing as asked.
async fn drive<S, H, K, D>(args: &Args, mut consumer: Consumer<S, H, K, D>) -> unistream::Result<()>
where
    S: Source,
    H: Handler<Record = unistream_examples::MyRecord>,
    K: CheckpointStore,
    D: DeadLetterQueue,
{
    cancel_on_signals(consumer.shutdown_token());
    if args.verbose {
        run_verbose(&mut consumer, args.until_end, Duration::from_secs(1)).await?;
    } else {
        let s = consumer.run().await?;
        eprintln!(
            "done: {} records fetched, {} succeeded, {} dead-lettered ({} aged out), {} filtered, {} failed attempts",
            s.fetched, s.succeeded, s.dead_lettered, s.aged_out, s.filtered, s.failures
        );
    }
    Ok(())
}

async fn create_resources(
    args: &Args,
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
) -> unistream::Result<()> {
    create_table_if_missing(ddb, &args.table, "id").await?;
    create_bucket_if_missing(s3, &args.bucket).await?;
    let mut create = sqs.create_queue().queue_name(&args.queue);
    if args.queue.ends_with(".fifo") {
        create = create.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    create
        .send()
        .await
        .map_err(|e| aws("CreateQueue", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(())
}
