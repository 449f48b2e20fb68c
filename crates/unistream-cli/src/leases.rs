//! `unistream leases show`: the lease table of a group of workers.

use std::fmt::Write as _;

use serde_json::json;
use unistream_core::Result;
use unistream_leases::DynamoDbLeaseTable;

use crate::Output;
use crate::aws::AwsArgs;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Every lease: shard, owner, counter, last change, parents, ended.
    Show {
        /// The DynamoDB lease table.
        #[arg(long)]
        table: String,
    },
}

pub(crate) async fn run(cmd: Command, aws: &AwsArgs) -> Result<Output> {
    let Command::Show { table } = cmd;
    let leases = DynamoDbLeaseTable::new(aws.clients().await.dynamodb(), &table);
    let mut rows = leases.list_with_change_times().await?;
    rows.sort_by(|a, b| a.0.shard_id.cmp(&b.0.shard_id));
    let held = rows.iter().filter(|(l, _)| l.owner.is_some()).count();
    let ended = rows.iter().filter(|(l, _)| l.ended).count();
    let free = rows
        .iter()
        .filter(|(l, _)| l.owner.is_none() && !l.ended)
        .count();
    // Writing to a String cannot fail.
    let mut text = format!(
        "lease table {table}: {} leases, {held} held, {free} free, {ended} ended\n\n",
        rows.len()
    );
    let _ = writeln!(
        text,
        "{:<24} {:<28} {:>8} {:<24} {:<6} parents",
        "shard", "owner", "counter", "last change", "ended"
    );
    for (l, changed) in &rows {
        let _ = writeln!(
            text,
            "{:<24} {:<28} {:>8} {:<24} {:<6} {}",
            l.shard_id,
            l.owner.as_deref().unwrap_or("-"),
            l.counter,
            changed.map_or("-".into(), |t| t
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()),
            if l.ended { "yes" } else { "no" },
            if l.parents.is_empty() {
                "-".into()
            } else {
                l.parents.join(",")
            }
        );
    }
    let json = json!({
        "table": table,
        "leases": rows.iter().map(|(l, changed)| json!({
            "shard_id": l.shard_id,
            "owner": l.owner,
            "counter": l.counter,
            "changed": changed.map(|t| t.to_rfc3339()),
            "parents": l.parents,
            "ended": l.ended,
        })).collect::<Vec<_>>(),
    });
    Ok(Output {
        text,
        json,
        ..Default::default()
    })
}
