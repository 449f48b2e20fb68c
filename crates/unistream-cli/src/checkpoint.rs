//! `unistream checkpoint show | reset | retry`, for a file checkpoint store
//! or a DynamoDB + S3 one.
//!
//! `show` on DynamoDB + S3 reads the item without taking it over
//! ([`DynamoDbS3CheckpointStore::peek`]): a running consumer goes on
//! undisturbed. On a file store it takes the store's lock for the time of
//! the read, so it is refused while a consumer runs on it.
//!
//! `reset` and `retry` change the checkpoint, so they need `--yes` (without
//! it they say what they would do and exit 1), and are refused while another
//! process holds the checkpoint: the file store's lock; for DynamoDB + S3 the
//! shard's lease (`--lease-table`) or a record in progress under a lock that
//! has not expired. Their write takes the DynamoDB item over (a conditional
//! write on its version), so a consumer that was running all the same, idle
//! between two writes, stops at its next write with `CheckpointOwned` instead
//! of overwriting the repair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::Utc;
use serde_json::{Value, json};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Status};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, Result};
use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
use unistream_kinesis::Position;
use unistream_leases::{DynamoDbLeaseTable, ensure_not_held, shard_of_key};
use unistream_local::{Durability, FileCheckpointStore, FilePosition};

use crate::Output;
use crate::aws::AwsArgs;

/// Where the checkpoint is.
#[derive(clap::Args, Debug)]
#[group(id = "store", required = true, multiple = true)]
pub(crate) struct StoreArgs {
    /// A file checkpoint store's directory.
    #[arg(long, requires = "consumer", conflicts_with = "table")]
    dir: Option<PathBuf>,
    /// The consumer id (file store).
    #[arg(long, requires = "dir")]
    consumer: Option<String>,
    /// The DynamoDB table of a DynamoDB + S3 store.
    #[arg(long, requires_all = ["key", "bucket"])]
    table: Option<String>,
    /// The item's partition key value: the consumer id (a lease-coordinated
    /// consumer's is `<app>/<shard id>`).
    #[arg(long, requires = "table")]
    key: Option<String>,
    /// The S3 bucket of the batches' records (the item keeps only their
    /// statuses; the record ids are in S3).
    #[arg(long, requires = "table")]
    bucket: Option<String>,
    /// The table's partition key attribute.
    #[arg(long, default_value = "id", requires = "table")]
    key_attribute: String,
    /// The prefix of the records objects' keys.
    #[arg(long, default_value = "unistream/", requires = "table")]
    prefix: String,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// The batch, its pointers, counts per status, and the records that are
    /// failing, exhausted or in progress with their attempts and last error.
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Drops the current batch and makes the consumer read its next batch
    /// at POINTER (Kinesis: a sequence number, read after it; TRIM_HORIZON,
    /// LATEST or AT_TIMESTAMP:<ms>).
    Reset {
        #[command(flatten)]
        store: StoreArgs,
        /// Where the next batch starts.
        #[arg(long)]
        to: String,
        /// The lease table of a lease-coordinated consumer: refused while
        /// the shard's lease is held.
        #[arg(long)]
        lease_table: Option<String>,
        /// Do it (without: say what would be done, change nothing, exit 1).
        #[arg(long)]
        yes: bool,
    },
    /// Gives a failed or exhausted record of the current batch another
    /// round (every attempt again).
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// The record's id (as `checkpoint show` lists it).
        record_id: String,
        /// The lease table of a lease-coordinated consumer: refused while
        /// the shard's lease is held.
        #[arg(long)]
        lease_table: Option<String>,
        /// Do it (without: say what would be done, change nothing, exit 1).
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::InProgress => "in_progress",
        Status::Failed => "failed",
        Status::Exhausted => "exhausted",
        Status::Succeeded => "succeeded",
        Status::Ignored => "ignored",
    }
}

/// An opened store: the file one holds its lock until dropped.
enum Store {
    File(FileCheckpointStore, String),
    Dynamo(Box<DynamoDbS3CheckpointStore>, String),
}

impl StoreArgs {
    fn consumer_name(&self) -> String {
        match (&self.consumer, &self.key) {
            (Some(c), _) => c.clone(),
            (None, Some(k)) => k.clone(),
            (None, None) => String::new(),
        }
    }

    async fn open(&self, aws: &AwsArgs) -> Result<Store> {
        if let (Some(dir), Some(consumer)) = (&self.dir, &self.consumer) {
            if !dir.is_dir() {
                return Err(Error::Config(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            let store = FileCheckpointStore::open(dir, consumer, Durability::PowerLoss)?;
            return Ok(Store::File(
                store,
                format!("{} in {}", consumer, dir.display()),
            ));
        }
        let (Some(table), Some(key), Some(bucket)) = (&self.table, &self.key, &self.bucket) else {
            return Err(Error::Config(
                "say where the checkpoint is: --dir DIR --consumer ID, or --table T --key K --bucket B".into(),
            ));
        };
        let clients = aws.clients().await;
        let store = DynamoDbS3CheckpointStore::builder(clients.dynamodb(), clients.s3())
            .table(table)
            .key(key)
            .bucket(bucket)
            .key_attribute(&self.key_attribute)
            .prefix(&self.prefix)
            .build()?;
        Ok(Store::Dynamo(
            Box::new(store),
            format!("{key} in table {table}"),
        ))
    }
}

pub(crate) async fn run(cmd: Command, aws: &AwsArgs) -> Result<Output> {
    match cmd {
        Command::Show { store } => show(&store, aws).await,
        Command::Reset {
            store,
            to,
            lease_table,
            yes,
        } => {
            let to = Pointer::new(to);
            repair(&store, aws, lease_table.as_deref(), yes, Repair::Reset(to)).await
        }
        Command::Retry {
            store,
            record_id,
            lease_table,
            yes,
        } => {
            repair(
                &store,
                aws,
                lease_table.as_deref(),
                yes,
                Repair::Retry(record_id),
            )
            .await
        }
    }
}

async fn show(args: &StoreArgs, aws: &AwsArgs) -> Result<Output> {
    let (stored, extra) = match args.open(aws).await? {
        Store::File(mut store, _) => (store.load().await?, json!({})),
        Store::Dynamo(mut store, _) => match store.peek().await? {
            None => (None, json!({})),
            Some(p) => (
                Some(p.stored.clone()),
                json!({"version": p.version, "owner": p.owner, "item_bytes": p.item_bytes}),
            ),
        },
    };
    let consumer = args.consumer_name();
    let Some(stored) = stored else {
        return Ok(Output {
            text: format!("no checkpoint for consumer {consumer:?}\n"),
            json: json!({"consumer": consumer, "checkpoint": null}),
            ..Default::default()
        });
    };
    let mut out = render(&stored.checkpoint);
    if let Some(map) = extra.as_object()
        && !map.is_empty()
    {
        let _ = writeln!(
            out.text,
            "\nitem: version {}, {} bytes, last written by store instance {}",
            extra["version"],
            extra["item_bytes"],
            extra["owner"].as_str().unwrap_or("?")
        );
        out.json["item"] = extra;
    }
    Ok(out)
}

/// The table and JSON of a checkpoint.
fn render(cp: &Checkpoint) -> Output {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in cp.trackers() {
        *counts.entry(status_name(t.status)).or_default() += 1;
    }
    let failing: Vec<_> = cp
        .trackers()
        .iter()
        .filter(|t| {
            matches!(
                t.status,
                Status::Failed | Status::Exhausted | Status::InProgress
            )
        })
        .collect();
    // Writing to a String cannot fail.
    let mut text = String::new();
    let _ = writeln!(text, "consumer        {}", cp.consumer_id());
    let _ = writeln!(text, "batch           {}", cp.batch_sequence());
    let _ = writeln!(text, "start pointer   {}", cp.start_pointer());
    let _ = writeln!(
        text,
        "next pointer    {}",
        cp.next_pointer().map_or(
            "(none: last batch of a closed stream)".to_owned(),
            ToString::to_string
        )
    );
    let _ = writeln!(text, "committed       {}", cp.is_committed());
    let _ = writeln!(text, "max attempts    {}", cp.max_attempts());
    let _ = writeln!(
        text,
        "records         {} ({})",
        cp.trackers().len(),
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !failing.is_empty() {
        let _ = writeln!(
            text,
            "\n{:<24} {:<12} {:>8}  last error",
            "record_id", "status", "attempts"
        );
        for t in &failing {
            let error = t.errors.as_ref().map_or(String::new(), ToString::to_string);
            let mark = if t.dead_lettered {
                " (dead-lettered)"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "{:<24} {:<12} {:>8}  {error}{mark}",
                t.record_id,
                status_name(t.status),
                t.attempts
            );
        }
    }
    let json = json!({
        "consumer": cp.consumer_id(),
        "batch_sequence": cp.batch_sequence(),
        "start_pointer": cp.start_pointer().as_str(),
        "next_pointer": cp.next_pointer().map(|p| p.as_str().to_owned()),
        "committed": cp.is_committed(),
        "max_attempts": cp.max_attempts(),
        "records": cp.trackers().len(),
        "counts": counts,
        "failing": failing.iter().map(|t| json!({
            "record_id": t.record_id,
            "status": status_name(t.status),
            "attempts": t.attempts,
            "dead_lettered": t.dead_lettered,
            "error": t.errors.as_ref().map(ToString::to_string),
            "lock_expire_time": t.lock_expire_time.map(|t| t.to_rfc3339()),
        })).collect::<Vec<_>>(),
    });
    Output {
        text,
        json,
        ..Default::default()
    }
}

enum Repair {
    Reset(Pointer),
    Retry(String),
}

async fn repair(
    args: &StoreArgs,
    aws: &AwsArgs,
    lease_table: Option<&str>,
    yes: bool,
    what: Repair,
) -> Result<Output> {
    if let (Some(lease_table), Some(key)) = (lease_table, &args.key) {
        let table = DynamoDbLeaseTable::new(aws.clients().await.dynamodb(), lease_table);
        let shard = shard_of_key(key);
        ensure_not_held(&table, lease_table, shard)
            .await
            .map_err(|e| match e {
                Error::Config(m) => Error::Config(format!(
                    "{m} (taken from the key {key:?}: <app>/<shard id>)"
                )),
                e => e,
            })?;
    }
    let mut store = args.open(aws).await?;
    let name = match &store {
        Store::File(_, name) | Store::Dynamo(_, name) => name.clone(),
    };
    // The change, and what it did in words and JSON (read before it is made).
    let change = |cp: &mut Checkpoint,
                  records: &mut Vec<SourceRecord>|
     -> Result<(String, Value)> {
        match &what {
            Repair::Reset(to) => {
                check_pointer(to, cp)?;
                let (batch, len) = (cp.batch_sequence(), cp.trackers().len());
                let was = cp.next_pointer().map(|p| p.as_str().to_owned());
                records.clear();
                let dropped = cp.reset_to(to.clone());
                Ok((
                    format!(
                        "checkpoint of {name}: batch {batch} dropped ({dropped} of its {len} records not done); the next batch starts at {to} (was {})\n",
                        was.as_deref().unwrap_or("nothing: the stream was closed")
                    ),
                    json!({"reset_to": to.as_str(), "dropped_not_done": dropped,
                           "batch_sequence": batch, "was_next_pointer": was}),
                ))
            }
            Repair::Retry(id) => {
                let t = cp.retry_record(id, Utc::now())?;
                let letter = if t.dead_lettered {
                    "; its letter stays in the dead-letter queue: delete it, or the record is processed again if it is redriven"
                } else {
                    ""
                };
                Ok((
                    format!(
                        "checkpoint of {name}: record {id:?} of batch {} was {} after {} attempts ({}); it gets {} attempts again{letter}\n",
                        cp.batch_sequence(),
                        status_name(t.status),
                        t.attempts,
                        t.errors
                            .as_ref()
                            .map_or("no error".into(), ToString::to_string),
                        cp.max_attempts(),
                    ),
                    json!({"retried": id, "was": status_name(t.status), "attempts": t.attempts,
                           "dead_lettered": t.dead_lettered}),
                ))
            }
        }
    };
    // The file store holds its lock from `open`; the DynamoDB one reads
    // without taking over, refuses while a record is locked, and writes only
    // at the version it read (`DynamoDbS3CheckpointStore::repair`).
    let repaired = match &mut store {
        Store::File(s, _) => s.repair(yes, change).await?,
        Store::Dynamo(s, _) => s.repair(yes, change).await?,
    };
    let Some(repaired) = repaired else {
        return Err(no_checkpoint(&name));
    };
    let (text, mut json) = repaired.outcome;
    json["applied"] = json!(repaired.applied);
    if !repaired.applied {
        return Ok(Output {
            text: format!("NOT CHANGED (add --yes to do it): {text}"),
            json,
            not_applied: true,
        });
    }
    Ok(Output {
        text,
        json,
        ..Default::default()
    })
}

/// The two pointer shapes of the sources shipped: Kinesis positions
/// ([`Position`]) and file positions ([`FilePosition`]).
fn pointer_kind(p: &str) -> Option<&'static str> {
    if p.parse::<Position>().is_ok() {
        Some(
            "a Kinesis position (a sequence number, <sequence>:<sub-sequence>, TRIM_HORIZON, LATEST or AT_TIMESTAMP:<ms>)",
        )
    } else if FilePosition::parse(&Pointer::from(p), std::path::Path::new("")).is_ok() {
        Some("a file position (<line>@<byte offset>)")
    } else {
        None
    }
}

/// Refuses a reset to a pointer of another shape than the checkpoint's own:
/// its source could never read it, and the consumer would fail on every
/// fetch until reset again.
fn check_pointer(to: &Pointer, cp: &Checkpoint) -> Result<()> {
    let Some(expected) = pointer_kind(cp.initial_pointer().as_str()) else {
        // A source of its own: its pointers are its business.
        return Ok(());
    };
    if pointer_kind(to.as_str()) == Some(expected) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "--to {to:?}: this checkpoint's source reads {expected} (it started at {}); nothing changed",
        cp.initial_pointer()
    )))
}

fn no_checkpoint(name: &str) -> Error {
    Error::Config(format!(
        "no checkpoint for {name}: nothing to change (a new consumer starts at its configured position)"
    ))
}
