//! `unistream wal inspect` and `unistream wal verify`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;
use unistream_buffer::WalReport;

use crate::Output;

fn report_json(r: &WalReport) -> serde_json::Value {
    json!({
        "segments": r.segments.iter().map(|s| json!({
            "path": s.path.display().to_string(),
            "bytes": s.bytes,
        })).collect::<Vec<_>>(),
        "pending_batches": r.pending.iter().map(|b| json!({
            "id": b.id,
            "segment": b.segment.display().to_string(),
            "sealed_records": b.sealed_records,
            "records": b.records,
            "bytes": b.bytes,
        })).collect::<Vec<_>>(),
        "open_records": r.open_records,
        "open_bytes": r.open_bytes,
        "unsent_records": r.unsent_records(),
        "unsent_bytes": r.unsent_bytes(),
        "last_batch_id": r.last_batch_id,
        "oldest": r.oldest.as_ref().map(|o| json!({
            "id": o.id,
            "partition_key": o.partition_key,
            "bytes": o.bytes,
            "segment": o.segment.display().to_string(),
            "offset": o.offset,
            "batch": o.batch,
        })),
        "torn_tail": r.torn_tail.as_ref().map(|t| json!({
            "path": t.path.display().to_string(),
            "offset": t.offset,
            "reason": t.reason,
        })),
    })
}

/// The table of `wal inspect`.
pub(crate) fn inspect(dir: &Path) -> unistream_core::Result<Output> {
    let r = unistream_buffer::inspect(dir)?;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "WAL {}: {} unsent records ({} bytes) in {} pending batches and the open batch; last batch id {}",
        dir.display(),
        r.unsent_records(),
        r.unsent_bytes(),
        r.pending.len(),
        r.last_batch_id
    );
    let _ = writeln!(text, "\n{:<28} {:>12}", "segment", "bytes");
    for s in &r.segments {
        let name = s.path.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(text, "{name:<28} {:>12}", s.bytes);
    }
    let _ = writeln!(
        text,
        "\n{:>10} {:<28} {:>9} {:>9} {:>12}",
        "batch", "segment", "sealed", "unsent", "bytes"
    );
    for b in &r.pending {
        let name = b.segment.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            text,
            "{:>10} {name:<28} {:>9} {:>9} {:>12}",
            b.id, b.sealed_records, b.records, b.bytes
        );
    }
    let _ = writeln!(
        text,
        "{:>10} {:<28} {:>9} {:>9} {:>12}",
        "open", "", "", r.open_records, r.open_bytes
    );
    if let Some(o) = &r.oldest {
        let _ = writeln!(
            text,
            "\noldest unsent record: id {:?}, partition key {:?}, {} bytes, {} at offset {}{}",
            o.id,
            o.partition_key,
            o.bytes,
            o.segment.file_name().unwrap_or_default().to_string_lossy(),
            o.offset,
            o.batch
                .map_or(" (open batch)".into(), |b| format!(" (batch {b})"))
        );
    }
    if let Some(t) = &r.torn_tail {
        let _ = writeln!(
            text,
            "\ntorn tail in {} at offset {}: {} (a write cut short; the producer drops it when it opens the log)",
            t.path.display(),
            t.offset,
            t.reason
        );
    }
    Ok(Output {
        text,
        json: report_json(&r),
        ..Default::default()
    })
}

/// `wal verify`: every frame read; a corruption is the command's error.
pub(crate) fn verify(dir: &Path) -> unistream_core::Result<Output> {
    let r = unistream_buffer::inspect(dir)?;
    let frames_ok = format!(
        "WAL {}: {} segments verified, {} unsent records{}\n",
        dir.display(),
        r.segments.len(),
        r.unsent_records(),
        r.torn_tail.as_ref().map_or(String::new(), |t| format!(
            "; a torn tail at offset {} of {} (dropped on open, not corruption)",
            t.offset,
            t.path.display()
        ))
    );
    Ok(Output {
        text: frames_ok,
        json: json!({"ok": true, "report": report_json(&r)}),
        ..Default::default()
    })
}
