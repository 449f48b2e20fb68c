//! `unistream checkpoint show` for a file checkpoint store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;
use unistream_core::checkpoint::{CheckpointStore, Status};
use unistream_local::{Durability, FileCheckpointStore};

use crate::Output;

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::InProgress => "in_progress",
        Status::Failed => "failed",
        Status::Exhausted => "exhausted",
        Status::Succeeded => "succeeded",
        Status::Ignored => "ignored",
    }
}

/// The checkpoint of `consumer` in `dir`. It takes the store's lock for the
/// time of the read, so it fails with
/// [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned) while a
/// consumer runs on it.
pub(crate) fn show(dir: &Path, consumer: &str) -> unistream_core::Result<Output> {
    if !dir.is_dir() {
        return Err(unistream_core::Error::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut store = FileCheckpointStore::open(dir, consumer, Durability::Process)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| unistream_core::Error::io(dir, e))?;
    let Some(stored) = runtime.block_on(store.load())? else {
        return Ok(Output {
            text: format!(
                "no checkpoint for consumer {consumer:?} in {}\n",
                dir.display()
            ),
            json: json!({"consumer": consumer, "checkpoint": null}),
        });
    };
    let cp = &stored.checkpoint;
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
        })).collect::<Vec<_>>(),
    });
    Ok(Output { text, json })
}
