//! `unistream lag`: per shard, where the consumer's checkpoint is against
//! the stream's latest record.
//!
//! Kinesis has no call that returns a shard's latest sequence number, so
//! the shard is read from the checkpoint on (`GetRecords`, up to
//! `--max-read` records per shard, 10,000 per call) until the tip
//! (`MillisBehindLatest` 0, or the end of a closed shard): the records
//! behind are counted exactly when the tip is reached, and reported as "more
//! than N" when not. Each call counts against the shard's 5 reads a second,
//! shared with its consumer; the checkpoints are read with one `GetItem`
//! each, nothing from S3.

use std::fmt::Write as _;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::{Value, json};
use unistream_core::checkpoint::Checkpoint;
use unistream_core::{Error, Result};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_kinesis::aggregation;
use unistream_leases::{DynamoDbLeaseTable, LeaseTable};

use crate::Output;
use crate::aws::{AwsArgs, Clients};

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

struct ShardLag {
    shard: String,
    closed: bool,
    checkpoint: Option<Checkpoint>,
    owner: Option<String>,
    behind: usize,
    at_tip: bool,
    latest: Option<String>,
    millis_behind: Option<i64>,
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
    for (shard, closed) in shards {
        let key = match (&args.key, &args.shard) {
            (Some(k), Some(s)) if *s == shard => k.clone(),
            (Some(_), _) => continue,
            _ => format!("{app}/{shard}"),
        };
        let checkpoint = read_checkpoint(&clients, &args, &key).await?;
        let mut row = ShardLag {
            owner: owners.get(&shard).cloned().flatten(),
            shard,
            closed,
            checkpoint,
            behind: 0,
            at_tip: false,
            latest: None,
            millis_behind: None,
        };
        if row.checkpoint.as_ref().is_some_and(Checkpoint::is_closed) {
            // Finished: the consumer read the shard to its end.
            row.at_tip = true;
        } else {
            scan_to_tip(&kinesis, &args, &mut row).await?;
        }
        rows.push(row);
    }
    Ok(render(&args.stream, &rows))
}

async fn list_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, bool)>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = kinesis.list_shards();
        req = match token.take() {
            Some(t) => req.next_token(t),
            None => req.stream_name(stream),
        };
        let out = req
            .send()
            .await
            .map_err(|e| api("ListShards", stream, &e))?;
        for s in out.shards() {
            let closed = s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            shards.push((s.shard_id().to_owned(), closed));
        }
        match out.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(shards)
}

/// A failed Kinesis call: [`Error::Denied`] (naming the IAM action) when
/// AWS refused it for lack of permission or credentials, else the SDK's
/// error with its context.
fn api<E>(operation: &str, resource: &str, e: &SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    unistream_kinesis::denied(e, &format!("kinesis:{operation}"), || resource.to_owned())
        .unwrap_or_else(|| {
            Error::backend(
                format!("Kinesis {operation} on {resource}"),
                DisplayErrorContext(e).to_string(),
            )
        })
}

async fn read_checkpoint(clients: &Clients, args: &Args, key: &str) -> Result<Option<Checkpoint>> {
    // The bucket is not read by `peek_meta`; the builder wants a name.
    let mut store = DynamoDbS3CheckpointStore::builder(clients.dynamodb(), clients.s3())
        .table(&args.table)
        .key(key)
        .bucket("-")
        .key_attribute(&args.key_attribute)
        .build()?;
    store.peek_meta().await
}

/// Reads the shard from the checkpoint's position to the tip (or
/// `max_read` records).
async fn scan_to_tip(
    kinesis: &aws_sdk_kinesis::Client,
    args: &Args,
    row: &mut ShardLag,
) -> Result<()> {
    let from = row
        .checkpoint
        .as_ref()
        .map_or("TRIM_HORIZON".to_owned(), |c| {
            c.start_pointer().as_str().to_owned()
        });
    let resource = format!("stream {} shard {}", args.stream, row.shard);
    let mut req = kinesis
        .get_shard_iterator()
        .stream_name(&args.stream)
        .shard_id(&row.shard);
    // The pointer of a user record inside a KPL aggregate:
    // `<sequence>:<sub>`. The aggregate is read again (AT_SEQUENCE_NUMBER);
    // it counts as behind unless `sub` is its last user record.
    let mut inside: Option<(String, usize)> = None;
    let (kind, seq) = match from.as_str() {
        "TRIM_HORIZON" => (ShardIteratorType::TrimHorizon, None),
        "LATEST" => (ShardIteratorType::Latest, None),
        p if p.starts_with("AT_TIMESTAMP:") => {
            let ms: i64 = p["AT_TIMESTAMP:".len()..]
                .parse()
                .map_err(|_| Error::Config(format!("checkpoint pointer {p:?}: bad timestamp")))?;
            req = req.timestamp(AwsDateTime::from_millis(ms));
            (ShardIteratorType::AtTimestamp, None)
        }
        p => match p.split_once(':') {
            Some((seq, sub)) => {
                let sub = sub.parse().map_err(|_| {
                    Error::Config(format!("checkpoint pointer {p:?}: bad sub-sequence number"))
                })?;
                inside = Some((seq.to_owned(), sub));
                (ShardIteratorType::AtSequenceNumber, Some(seq.to_owned()))
            }
            None => (ShardIteratorType::AfterSequenceNumber, Some(p.to_owned())),
        },
    };
    if let Some(seq) = seq {
        req = req.starting_sequence_number(seq);
    }
    let out = req
        .shard_iterator_type(kind)
        .send()
        .await
        .map_err(|e| api("GetShardIterator", &resource, &e))?;
    let mut iterator = out.shard_iterator;
    // Empty pages are normal before the tip of a sparse shard; a bound on
    // calls keeps a lag check from walking a long empty shard forever.
    let max_calls = 10 + args.max_read / 10_000;
    let mut calls = 0;
    while let Some(it) = iterator.take() {
        if row.behind >= args.max_read || calls >= max_calls {
            return Ok(());
        }
        calls += 1;
        let limit = (args.max_read - row.behind).clamp(1, 10_000);
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .limit(i32::try_from(limit).unwrap_or(10_000))
            .send()
            .await
            .map_err(|e| api("GetRecords", &resource, &e))?;
        if row.millis_behind.is_none() {
            row.millis_behind = out.millis_behind_latest;
        }
        let mut behind = out.records().len();
        if let Some((seq, sub)) = inside.take()
            && let Some(first) = out.records().first()
            && first.sequence_number() == seq
            && aggregation::decode(first.data().as_ref())
                .ok()
                .flatten()
                .is_none_or(|users| sub + 1 >= users.len())
        {
            // The consumer is past the aggregate's last user record (or
            // past a record handed out whole).
            behind -= 1;
        }
        row.behind += behind;
        if let Some(last) = out.records().last() {
            row.latest = Some(last.sequence_number().to_owned());
        }
        // The tip: nothing after this page (`MillisBehindLatest` 0 is in
        // whole milliseconds, so a full page may still have records after
        // it: read once more), or the end of a closed shard.
        let short_page = out.records().len() < limit;
        if out.next_shard_iterator.is_none() || (out.millis_behind_latest == Some(0) && short_page)
        {
            row.at_tip = true;
            return Ok(());
        }
        iterator = out.next_shard_iterator;
    }
    row.at_tip = true;
    Ok(())
}

fn render(stream: &str, rows: &[ShardLag]) -> Output {
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
        let behind = if r.at_tip {
            r.behind.to_string()
        } else {
            format!(">{}", r.behind)
        };
        let latest = match (&r.latest, r.at_tip) {
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
            r.millis_behind.map_or("-".into(), |m| m.to_string()),
        );
        json_rows.push(json!({
            "shard_id": r.shard,
            "closed": r.closed,
            "owner": r.owner,
            "checkpoint": r.checkpoint.as_ref().map(|c| c.start_pointer().as_str().to_owned()),
            "checkpoint_batch_committed": r.checkpoint.as_ref().map(Checkpoint::is_committed),
            "finished": r.checkpoint.as_ref().is_some_and(Checkpoint::is_closed),
            "latest_sequence_number": if r.at_tip { r.latest.clone() } else { None },
            "records_behind": r.behind,
            "records_behind_exact": r.at_tip,
            "millis_behind_latest": r.millis_behind,
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
