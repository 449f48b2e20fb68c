//! Redrive: reads the dead letters of an SQS queue and puts their records
//! back into a Kinesis stream through a producer (write-ahead log in
//! `--dir`), deleting each message only once its record was accepted.
//!
//! ```text
//! cargo run --release -p unistream-aws-examples --example aws_redrive -- --endpoint http://127.0.0.1:5000 --queue demo-dlq --stream demo
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use unistream::Error;
use unistream::buffer::BufferLimits;
use unistream::buffer::{FileBuffer, FileBufferConfig};
use unistream::kinesis::KinesisSink;
use unistream::local::Durability;
use unistream::producer::{Producer, ProducerConfig};
use unistream::sqs_dlq::{SqsDeadLetterQueue, redrive};
use unistream_aws_examples::aws_clients;
use unistream_examples::{exit_code, init_logging};

#[derive(Parser, Debug)]
#[command(about = "Put the records of an SQS dead-letter queue back into a Kinesis stream")]
struct Args {
    /// An emulator's endpoint (default: AWS, from the usual configuration).
    #[arg(long)]
    endpoint: Option<String>,
    /// The SQS queue name.
    #[arg(long)]
    queue: String,
    /// The stream to put the records into.
    #[arg(long)]
    stream: String,
    /// Redrive at most this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Where the producer's write-ahead log lives.
    #[arg(long, default_value = "aws_redrive_demo")]
    dir: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    init_logging(false);
    exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> unistream::Result<()> {
    let clients = aws_clients(args.endpoint.as_deref()).await;
    let sqs = clients.sqs();
    let url = sqs
        .get_queue_url()
        .queue_name(&args.queue)
        .send()
        .await
        .map_err(|e| {
            Error::backend(
                "GetQueueUrl",
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )
        })?
        .queue_url
        .ok_or_else(|| Error::Config(format!("queue {} has no URL", args.queue)))?;
    let dlq = SqsDeadLetterQueue::new(sqs, url);
    let wal = FileBuffer::open(
        args.dir.join("wal"),
        FileBufferConfig::new(BufferLimits::records(500), Durability::Process),
    )?;
    let producer = Producer::new(
        ProducerConfig::default(),
        wal,
        KinesisSink::new(clients.kinesis(), &args.stream),
    );
    let report = redrive(&dlq, &producer, args.max).await?;
    producer.flush().await?;
    eprintln!(
        "redriven: {} records into {}; {} messages left in the queue",
        report.redriven, args.stream, report.left
    );
    Ok(())
}
