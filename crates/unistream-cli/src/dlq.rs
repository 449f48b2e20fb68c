//! `unistream dlq show` and `unistream dlq redrive`, for a file dead-letter
//! queue and an SQS one.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use unistream_core::Error;
use unistream_core::dlq::RedriveReport;
use unistream_core::sink::Sink;
use unistream_kinesis::KinesisSink;
use unistream_local::{Durability, FileSink};
use unistream_sqs_dlq::SqsDeadLetterQueue;

use crate::Output;
use crate::aws::AwsArgs;

/// Letters `dlq show --queue-url` reads when no `--max` is given.
const SQS_SHOW_DEFAULT: usize = 10;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// The letters of a dead-letter queue, oldest first (an SQS queue:
    /// read without consuming them, with the queue's approximate depth).
    Show {
        /// A file dead-letter queue (JSON lines).
        #[arg(required_unless_present = "queue_url")]
        file: Option<PathBuf>,
        /// An SQS dead-letter queue instead.
        #[arg(long, conflicts_with = "file")]
        queue_url: Option<String>,
        /// Show at most this many letters (an SQS queue: 10 by default).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Puts the letters' records back into a stream file or a Kinesis
    /// stream, deleting each letter only once the stream accepted its
    /// record. Letters that cannot go stay in the queue and are reported.
    Redrive {
        /// A file dead-letter queue (JSON lines); refused while a consumer
        /// holds it.
        #[arg(required_unless_present = "queue_url")]
        file: Option<PathBuf>,
        /// An SQS dead-letter queue instead.
        #[arg(long, conflicts_with = "file")]
        queue_url: Option<String>,
        /// Into this JSON-lines stream file (what a file source reads).
        #[arg(long, required_unless_present = "to_stream")]
        to_file: Option<PathBuf>,
        /// Into this Kinesis stream (a name or an ARN).
        #[arg(long, conflicts_with = "to_file")]
        to_stream: Option<String>,
        /// Redrive at most this many letters (oldest first).
        #[arg(long)]
        max: Option<u64>,
    },
}

pub(crate) async fn run(cmd: Command, aws: &AwsArgs) -> unistream_core::Result<Output> {
    match cmd {
        Command::Show {
            queue_url: Some(url),
            max,
            ..
        } => show_sqs(&sqs_queue(aws, url).await, max.unwrap_or(SQS_SHOW_DEFAULT)).await,
        Command::Show {
            file: Some(file),
            max,
            ..
        } => show(&file, max),
        Command::Redrive {
            file,
            queue_url,
            to_file,
            to_stream,
            max,
        } => {
            let from = match (file, queue_url) {
                (_, Some(url)) => Dlq::Sqs(sqs_queue(aws, url).await),
                (Some(file), None) => Dlq::File(file),
                (None, None) => {
                    return Err(Error::Config(
                        "dlq: give a dead-letter file or --queue-url".into(),
                    ));
                }
            };
            match (to_file, to_stream) {
                (_, Some(stream)) => {
                    let sink = KinesisSink::new(aws.clients().await.kinesis(), &stream);
                    redrive(&from, &sink, &format!("Kinesis stream {stream}"), max).await
                }
                (Some(path), None) => {
                    // PowerLoss: a record is on disk before its letter is
                    // removed.
                    let sink = FileSink::open(&path, Durability::PowerLoss)?;
                    redrive(
                        &from,
                        &sink,
                        &format!("stream file {}", path.display()),
                        max,
                    )
                    .await
                }
                (None, None) => Err(Error::Config(
                    "dlq redrive: give --to-file or --to-stream".into(),
                )),
            }
        }
        Command::Show { .. } => Err(Error::Config(
            "dlq: give a dead-letter file or --queue-url".into(),
        )),
    }
}

async fn sqs_queue(aws: &AwsArgs, url: String) -> SqsDeadLetterQueue {
    SqsDeadLetterQueue::new(aws.clients().await.sqs(), url)
}

/// Where `dlq redrive` takes letters from.
enum Dlq {
    File(PathBuf),
    Sqs(SqsDeadLetterQueue),
}

impl Dlq {
    fn describe(&self) -> String {
        match self {
            Dlq::File(p) => format!("dead-letter file {}", p.display()),
            Dlq::Sqs(q) => format!("SQS queue {}", q.queue_url()),
        }
    }
}

/// `dlq redrive`: the library's redrive of each kind of queue, which
/// removes a letter only once `sink` accepted its record (a file: the
/// letters left are renamed over the queue at the end, under its lock; SQS:
/// each batch's accepted messages are deleted), with a progress bar on a
/// terminal.
async fn redrive<S: Sink>(
    from: &Dlq,
    sink: &S,
    to: &str,
    max: Option<u64>,
) -> unistream_core::Result<Output> {
    // The bar's length: the letters there are (approximately, for SQS).
    let total = match from {
        Dlq::File(path) => count_letters(path),
        Dlq::Sqs(q) => q.depth().await.map(|d| d.visible).unwrap_or(0),
    };
    let bar = progress_bar(max.map_or(total, |m| m.min(total)));
    let progress = |r: &RedriveReport| bar.set_position(r.redriven + r.left);
    let report = match from {
        Dlq::File(path) => unistream_local::redrive_file(path, sink, max, progress).await,
        Dlq::Sqs(q) => unistream_sqs_dlq::redrive_to_sink(q, sink, max, progress).await,
    };
    bar.finish_and_clear();
    let report = report?;
    let remaining = match from {
        Dlq::File(path) => Some(count_letters(path)),
        Dlq::Sqs(q) => q.depth().await.ok().map(|d| d.visible + d.in_flight),
    };
    let mut text = format!(
        "redriven: {} records from the {} into the {to}\nleft: {} letters",
        report.redriven,
        from.describe(),
        report.left
    );
    if let Some(n) = remaining {
        let approx = if matches!(from, Dlq::Sqs(_)) {
            "about "
        } else {
            ""
        };
        let _ = write!(text, " ({approx}{n} letters remain in the queue)");
    }
    text.push('\n');
    if !report.errors.is_empty() {
        let _ = writeln!(text, "\nleft in the queue:");
        for e in &report.errors {
            let id = e
                .record_id
                .as_deref()
                .map_or(String::new(), |id| format!(" (record {id})"));
            let _ = writeln!(text, "  {}{id}: {}", e.letter, e.reason);
        }
    }
    let errors: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({"letter": e.letter, "record_id": e.record_id, "error": e.reason}))
        .collect();
    Ok(Output {
        text,
        json: json!({
            "from": from.describe(),
            "to": to,
            "redriven": report.redriven,
            "left": report.left,
            "errors": errors,
            "remaining": remaining,
        }),
        ..Default::default()
    })
}

/// A bar on stderr when it is a terminal; nothing in a pipe or a test.
fn progress_bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} letters {elapsed}") {
        bar.set_style(style);
    }
    bar
}

/// The letters (non-blank lines) of a dead-letter file; 0 if unreadable
/// (the redrive then says why).
fn count_letters(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |b| {
        b.split(|&c| c == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count() as u64
    })
}

/// `dlq show --queue-url`: the queue's approximate depth, then up to `max`
/// letters read without consuming them
/// ([`SqsDeadLetterQueue::peek`]: received hidden for a moment, then made
/// visible again; receiving with `VisibilityTimeout=0` would return the
/// same few messages at every call).
async fn show_sqs(queue: &SqsDeadLetterQueue, max: usize) -> unistream_core::Result<Output> {
    // Before the peek, which puts the messages it reads in flight.
    let depth = queue.depth().await?;
    let letters = queue.peek(max).await?;
    let mut text = format!(
        "{}: about {} letters ({} in flight, {} delayed)\n\n",
        queue.queue_url(),
        depth.visible,
        depth.in_flight,
        depth.delayed
    );
    let _ = writeln!(
        text,
        "{:<24} {:>8} {:<32} error",
        "record_id", "attempts", "dead_letter_time"
    );
    for l in &letters {
        let mut error = l.error.clone().unwrap_or_default();
        if error.chars().count() > 80 {
            error = error.chars().take(77).collect::<String>() + "...";
        }
        let id = l
            .record_id
            .clone()
            .unwrap_or_else(|| format!("(not a letter: {})", l.message_id));
        let _ = writeln!(
            text,
            "{id:<24} {:>8} {:<32} {error}",
            l.attempts.unwrap_or(0),
            l.dead_letter_time.as_deref().unwrap_or(""),
        );
    }
    let shown = letters.len() as u64;
    if shown < depth.visible {
        let _ = writeln!(text, "... about {} more (--max)", depth.visible - shown);
    }
    let letters: Vec<Value> = letters
        .iter()
        .map(|l| {
            json!({
                "message_id": l.message_id,
                "record_id": l.record_id,
                "partition_key": l.partition_key,
                "attempts": l.attempts,
                "error": l.error,
                "consumer_id": l.consumer_id,
                "pointer": l.pointer,
                "dead_letter_time": l.dead_letter_time,
                "body_bytes": l.body_bytes,
                "receive_count": l.receive_count,
            })
        })
        .collect();
    Ok(Output {
        text,
        json: json!({
            "queue_url": queue.queue_url(),
            "depth": {
                "visible": depth.visible,
                "in_flight": depth.in_flight,
                "delayed": depth.delayed,
            },
            "letters": letters,
        }),
        ..Default::default()
    })
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
        ..Default::default()
    })
}
