//! `unistream lag`: per shard, where the consumer's checkpoint is against
//! the stream's latest record.
//!
//! Presentation over the library: the shards from
//! `unistream_kinesis::list_shards`, each checkpoint's position from
//! `DynamoDbS3CheckpointStore::peek_meta` (one `GetItem`, nothing from S3),
//! the owners from the lease table, and the records behind from
//! `unistream_kinesis::shard_lag` (up to `--max-read` records per shard;
//! "more than N" when the tip was not reached).

use std::fmt::Write as _;

use serde_json::{Value, json};
use unistream_aws::Aws;
use unistream_core::checkpoint::Checkpoint;
use unistream_core::{Error, Result};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_kinesis::{Position, ShardLag, list_shards, shard_lag};
use unistream_leases::{DynamoDbLeaseTable, LeaseTable, checkpoint_key};

use crate::Output;
use crate::aws::AwsArgs;

/// `unistream lag`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The Kinesis stream.
    #[arg(long)]
    stream: String,
    /// The DynamoDB table of the checkpoints (DynamoDB + S3 store).
    #[arg(long)]
    table: String,
    /// The consumer group: each shard's checkpoint key is `<app>/<shard
    /// id>` (as the lease-coordinated consumer writes them). Default: the
    /// stream's name.
    #[arg(long, conflicts_with = "key")]
    app: Option<String>,
    /// One consumer's checkpoint key instead (a single-shard consumer), with
    /// `--shard`.
    #[arg(long, requires = "shard")]
    key: Option<String>,
    /// The shard of `--key`.
    #[arg(long, requires = "key")]
    shard: Option<String>,
    /// The table's partition key attribute.
    #[arg(long, default_value = "id")]
    key_attribute: String,
    /// The lease table, to show each shard's owner.
    #[arg(long)]
    lease_table: Option<String>,
    /// Records read at most per shard to find its tip.
    #[arg(long, default_value_t = 10_000)]
    max_read: usize,
}

struct Row {
    shard: String,
    closed: bool,
    checkpoint: Option<Checkpoint>,
    owner: Option<String>,
    lag: ShardLag,
}

pub(crate) async fn run(args: Args, aws: &AwsArgs) -> Result<Output> {
    let clients = aws.clients().await;
    let kinesis = clients.kinesis();
    let shards = list_shards(&kinesis, &args.stream).await?;
    let owners = match &args.lease_table {
        Some(t) => DynamoDbLeaseTable::new(clients.dynamodb(), t)
            .list()
            .await?
            .into_iter()
            .map(|l| (l.shard_id, l.owner))
            .collect(),
        None => std::collections::HashMap::new(),
    };
    let app = args.app.clone().unwrap_or_else(|| args.stream.clone());
    let mut rows = Vec::new();
    for shard in &shards {
        let shard_id = shard.shard_id().to_owned();
        let closed = shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some();
        let key = match (&args.key, &args.shard) {
            (Some(k), Some(s)) if *s == shard_id => k.clone(),
            (Some(_), _) => continue,
            _ => checkpoint_key(&app, &shard_id),
        };
        let checkpoint = read_checkpoint(&clients, &args, &key).await?;
        let lag = match &checkpoint {
            // Finished: the consumer read the shard to its end.
            Some(c) if c.is_closed() => ShardLag::caught_up(),
            _ => {
                let from = match &checkpoint {
                    Some(c) => Position::from_pointer(c.start_pointer())
                        .map_err(|e| Error::Config(format!("checkpoint {key:?}: {e}")))?,
                    None => Position::TrimHorizon,
                };
                shard_lag(&kinesis, &args.stream, &shard_id, &from, args.max_read).await?
            }
        };
        rows.push(Row {
            owner: owners.get(&shard_id).cloned().flatten(),
            shard: shard_id,
            closed,
            checkpoint,
            lag,
        });
    }
    Ok(render(&args.stream, &rows))
}

async fn read_checkpoint(clients: &Aws, args: &Args, key: &str) -> Result<Option<Checkpoint>> {
    // The bucket is not read by `peek_meta`; the builder wants a name.
    let mut store = DynamoDbS3CheckpointStore::builder(clients.dynamodb(), clients.s3())
        .table(&args.table)
        .key(key)
        .bucket("-")
        .key_attribute(&args.key_attribute)
        .build()?;
    store.peek_meta().await
}

fn render(stream: &str, rows: &[Row]) -> Output {
    // Writing to a String cannot fail.
    let mut text = format!("stream {stream}: {} shards\n\n", rows.len());
    let _ = writeln!(
        text,
        "{:<24} {:<7} {:<28} {:<34} {:<34} {:>10} {:>12}",
        "shard", "state", "owner", "checkpoint", "latest", "behind", "ms behind"
    );
    let mut json_rows: Vec<Value> = Vec::new();
    for r in rows {
        let checkpoint = r.checkpoint.as_ref().map_or("(none)".to_owned(), |c| {
            if c.is_closed() {
                "(shard finished)".to_owned()
            } else {
                c.start_pointer().as_str().to_owned()
            }
        });
        let behind = if r.lag.at_tip {
            r.lag.records_behind.to_string()
        } else {
            format!(">{}", r.lag.records_behind)
        };
        let latest = match (&r.lag.latest_sequence, r.lag.at_tip) {
            (Some(l), true) => l.clone(),
            (None, true) => "(= checkpoint)".to_owned(),
            (_, false) => "(not reached)".to_owned(),
        };
        let _ = writeln!(
            text,
            "{:<24} {:<7} {:<28} {:<34} {:<34} {:>10} {:>12}",
            r.shard,
            if r.closed { "closed" } else { "open" },
            r.owner.as_deref().unwrap_or("-"),
            checkpoint,
            latest,
            behind,
            r.lag.millis_behind.map_or("-".into(), |m| m.to_string()),
        );
        json_rows.push(json!({
            "shard_id": r.shard,
            "closed": r.closed,
            "owner": r.owner,
            "checkpoint": r.checkpoint.as_ref().map(|c| c.start_pointer().as_str().to_owned()),
            "checkpoint_batch_committed": r.checkpoint.as_ref().map(Checkpoint::is_committed),
            "finished": r.checkpoint.as_ref().is_some_and(Checkpoint::is_closed),
            "latest_sequence_number": if r.lag.at_tip { r.lag.latest_sequence.clone() } else { None },
            "records_behind": r.lag.records_behind,
            "records_behind_exact": r.lag.at_tip,
            "millis_behind_latest": r.lag.millis_behind,
        }));
    }
    let _ = writeln!(
        text,
        "\nbehind: Kinesis records after the checkpoint (an aggregate counts once); \">N\": the tip was not reached within --max-read"
    );
    Output {
        text,
        json: json!({"stream": stream, "shards": json_rows}),
        ..Default::default()
    }
}
