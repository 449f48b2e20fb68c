//! `unistream dlq show` for a file dead-letter queue.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};
use unistream_core::Error;

use crate::Output;
use crate::aws::AwsArgs;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// The letters of a dead-letter queue, oldest first.
    Show {
        /// A file dead-letter queue (JSON lines).
        file: std::path::PathBuf,
        /// Show at most this many letters.
        #[arg(long)]
        max: Option<usize>,
    },
}

pub(crate) async fn run(cmd: Command, _aws: &AwsArgs) -> unistream_core::Result<Output> {
    match cmd {
        Command::Show { file, max } => show(&file, max),
    }
}

/// The letters of the JSON-lines file at `path`, oldest first (at most
/// `max`). An unterminated last line is a letter whose write was cut short
/// (it is sent again by the consumer): reported, not an error. A line that
/// does not parse anywhere else is [`Error::Corrupt`] with its offset.
pub(crate) fn show(path: &Path, max: Option<usize>) -> unistream_core::Result<Output> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut letters: Vec<Value> = Vec::new();
    let mut offset = 0usize;
    let mut torn = None;
    let mut total = 0usize;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let at = offset;
        offset += line.len();
        let Some(line) = line.strip_suffix(b"\n") else {
            torn = Some((at, line.len()));
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let letter: Value = serde_json::from_slice(line).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            offset: at as u64,
            reason: format!("not a dead letter: {e}"),
        })?;
        total += 1;
        if max.is_none_or(|m| letters.len() < m) {
            letters.push(letter);
        }
    }
    let mut text = format!("{}: {total} letters\n\n", path.display());
    let _ = writeln!(
        text,
        "{:<24} {:>8} {:<32} error",
        "record_id", "attempts", "dead_letter_time"
    );
    for l in &letters {
        let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let mut error = s("error");
        if error.chars().count() > 80 {
            error = error.chars().take(77).collect::<String>() + "...";
        }
        let _ = writeln!(
            text,
            "{:<24} {:>8} {:<32} {error}",
            s("record_id"),
            l.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            s("dead_letter_time"),
        );
    }
    if letters.len() < total {
        let _ = writeln!(text, "... {} more (--max)", total - letters.len());
    }
    if let Some((at, len)) = torn {
        let _ = writeln!(
            text,
            "\na letter cut short at offset {at} ({len} bytes, no newline): dropped when the queue is next opened; the consumer sends it again"
        );
    }
    Ok(Output {
        text,
        json: json!({
            "file": path.display().to_string(),
            "total": total,
            "letters": letters,
            "torn_tail": torn.map(|(at, len)| json!({"offset": at, "bytes": len})),
        }),
    })
}
