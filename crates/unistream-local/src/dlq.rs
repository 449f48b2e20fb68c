//! [`FileDeadLetterQueue`]: dead letters as JSON lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use unistream_core::clock::SystemClock;
use unistream_core::dlq::{DeadLetter, DeadLetterQueue, LeftLetter, RedriveReport};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::{EncodedRecord, Sink, send_until_accepted};
use unistream_core::{Error, Result};

use crate::{AppendFile, Durability};

/// A dead-letter queue that appends one JSON object per line, in the shape
/// of [`DeadLetter::to_json`], through an [`AppendFile`] (a letter torn by a
/// kill is dropped when the file is next opened, and sent again).
#[derive(Debug)]
pub struct FileDeadLetterQueue {
    file: AppendFile,
}

impl FileDeadLetterQueue {
    /// Opens (creates) the JSON-lines file at `path`.
    ///
    /// # Errors
    ///
    /// As [`AppendFile::open`].
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        Ok(FileDeadLetterQueue {
            file: AppendFile::open(path, durability)?,
        })
    }
}

impl DeadLetterQueue for FileDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<()> {
        let mut line = letter.to_json();
        line.push(b'\n');
        self.file.append(&line)
    }
}

/// Letters [`redrive_file`] sends to the stream in one batch.
const REDRIVE_BATCH: usize = 100;

/// Puts the records of the letters of the dead-letter file at `path` back
/// into `sink` (each record's original bytes, id and partition key — its id
/// when the letter has none), and removes those letters from the file:
/// oldest first, at most `max` letters looked at. `on_progress` is called
/// with the report so far after each batch.
///
/// Nothing is lost if the process dies at any point, and at worst a record
/// is put twice:
///
/// - The file is opened with [`AppendFile::open_exclusive`]: refused
///   ([`Error::Locked`]) while a consumer (another process, or a handle in
///   this one) holds it, and no consumer can open it until the redrive is
///   over. Opening it drops a torn last letter, as every open of the queue
///   does (its consumer sends it again).
/// - Letters go to the sink in batches ([`send_until_accepted`]: rejected
///   records are sent again a few times). A letter is only removed once the
///   sink accepted its record — with [`FileSink`](crate::FileSink) opened
///   in [`Durability::PowerLoss`] mode, once it is on disk.
/// - The removal is one [`AppendFile::replace`] at the end: the letters not
///   redriven, byte for byte, in their order, written to a temporary file
///   and renamed over the queue. A crash before it leaves the queue as it
///   was: the next redrive puts those records again.
/// - A line that is not a letter ([`DeadLetter::from_json`] fails), or
///   whose record the sink refuses or keeps rejecting, stays in the file and
///   is reported in [`RedriveReport::errors`]. The redrive stops early if a
///   whole batch is rejected (the stream is unreachable, say); the letters
///   not looked at stay too.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::Utc;
/// use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
/// use unistream_core::memory::MemorySink;
/// use unistream_local::{Durability, FileDeadLetterQueue, redrive_file};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("dlq.jsonl");
/// let dlq = FileDeadLetterQueue::open(&path, Durability::Process)?;
/// dlq.send(&DeadLetter::new("c1", "17", b"{}".to_vec(), "16".into(), Utc::now())).await?;
/// drop(dlq);
/// let sink = MemorySink::default();
/// let report = redrive_file(&path, &sink, None, |_| {}).await?;
/// assert_eq!((report.redriven, sink.ids()), (1, vec!["17".to_string()]));
/// assert_eq!(std::fs::read(&path).unwrap(), b"");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Locked`] if the queue is held; [`Error::Io`] if it cannot be
/// read, or rewritten (then it is unchanged, and the records redriven so far
/// are put again by the next redrive).
pub async fn redrive_file<S: Sink>(
    path: impl AsRef<Path>,
    sink: &S,
    max: Option<u64>,
    mut on_progress: impl FnMut(&RedriveReport),
) -> Result<RedriveReport> {
    let path = path.as_ref();
    // `open` would create a missing queue: a typo must not look empty.
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let file = AppendFile::open_exclusive(path, Durability::PowerLoss)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let mut removed = vec![false; lines.len()];
    let mut report = RedriveReport::default();
    let policy = RetryPolicy::waits([100, 500, 2000].map(Duration::from_millis));
    // (line index, record) of the batch being filled.
    let mut batch: Vec<(usize, EncodedRecord)> = Vec::new();
    let mut looked_at = 0u64;
    let mut stopped = false;
    for (i, line) in lines.iter().enumerate() {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if max.is_some_and(|m| looked_at >= m) {
            break;
        }
        looked_at += 1;
        match DeadLetter::from_json(text) {
            Ok(l) => {
                let key = l.partition_key.unwrap_or_else(|| l.record_id.clone());
                batch.push((i, EncodedRecord::new(l.record_id, key, l.data)));
            }
            Err(why) => {
                let id = serde_json::from_slice::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("record_id")?.as_str().map(str::to_owned));
                report.leave(LeftLetter::new(
                    format!("line {}", i + 1),
                    id,
                    why.to_string(),
                ));
                on_progress(&report);
            }
        }
        if batch.len() == REDRIVE_BATCH {
            stopped = !send_batch(sink, &policy, &mut batch, &mut removed, &mut report).await;
            on_progress(&report);
            if stopped {
                break;
            }
        }
    }
    if !stopped && !batch.is_empty() {
        send_batch(sink, &policy, &mut batch, &mut removed, &mut report).await;
        on_progress(&report);
    }
    if report.redriven > 0 {
        let kept: Vec<u8> = lines
            .iter()
            .zip(&removed)
            .filter(|(_, r)| !**r)
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        file.replace(&kept)?;
    }
    Ok(report)
}

/// Sends a batch of [`redrive_file`], marks the accepted letters removed and
/// reports the others. False if the sink took none of those it was sent.
async fn send_batch<S: Sink>(
    sink: &S,
    policy: &RetryPolicy,
    batch: &mut Vec<(usize, EncodedRecord)>,
    removed: &mut [bool],
    report: &mut RedriveReport,
) -> bool {
    let records: Vec<EncodedRecord> = batch.iter().map(|(_, r)| r.clone()).collect();
    let outcome = send_until_accepted(sink, &records, policy, &SystemClock).await;
    let sent = records.iter().filter(|r| sink.validate(r).is_ok()).count();
    let mut accepted = 0;
    for ((i, r), why) in batch.drain(..).zip(outcome) {
        match why {
            None => {
                removed[i] = true;
                report.redriven += 1;
                accepted += 1;
            }
            Some(e) => report.leave(LeftLetter::new(
                format!("line {}", i + 1),
                Some(r.id),
                e.to_string(),
            )),
        }
    }
    sent == 0 || accepted > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use unistream_core::ErrorInfo;
    use unistream_core::source::Pointer;

    fn line_of(letter: &DeadLetter) -> Vec<u8> {
        let mut line = letter.to_json();
        line.push(b'\n');
        line
    }

    /// Letter `i`: a JSON record with some padding, three attempts.
    fn letter(i: usize) -> DeadLetter {
        let data = format!(r#"{{"id": "{i}", "pad": "{}"}}"#, "x".repeat(300));
        let pointer = Pointer::from("16@1190");
        let mut l = DeadLetter::new("c1", i.to_string(), data.into_bytes(), pointer, Utc::now());
        l.attempts = 3;
        l.error = Some(ErrorInfo::new("random error"));
        l
    }

    /// Letters redriven into a stream file: their records there, byte for
    /// byte; what cannot go stays in the queue, in order, and is reported.
    #[tokio::test]
    async fn redrive_moves_records_to_the_stream_and_leaves_the_rest_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let letters: Vec<DeadLetter> = (0..=6).map(letter).collect();
        let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
        for l in &letters[1..=3] {
            dlq.send(l).await.unwrap();
        }
        drop(dlq);
        // Not a letter, then a record a JSON-lines stream cannot carry.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"record_id\": \"garbled\"}\n");
        let mut multi = letters[4].clone();
        multi.data = b"two\nlines".to_vec();
        bytes.extend_from_slice(&line_of(&multi));
        for l in &letters[5..=6] {
            bytes.extend_from_slice(&line_of(l));
        }
        std::fs::write(&path, &bytes).unwrap();

        let stream = dir.path().join("stream.jsonl");
        let sink = crate::FileSink::open(&stream, Durability::PowerLoss).unwrap();
        let mut calls = 0;
        let report = redrive_file(&path, &sink, Some(5), |_| calls += 1)
            .await
            .unwrap();
        assert_eq!((report.redriven, report.left), (3, 2), "{report:?}");
        assert!(calls > 0);
        assert_eq!(report.errors[0].letter, "line 4");
        assert_eq!(report.errors[0].record_id.as_deref(), Some("garbled"));
        assert_eq!(report.errors[1].record_id.as_deref(), Some("4"));
        assert!(report.errors[1].reason.contains("newline"), "{report:?}");
        let want: Vec<u8> = letters[1..=3]
            .iter()
            .flat_map(|l| [&l.data[..], b"\n"].concat())
            .collect();
        assert_eq!(std::fs::read(&stream).unwrap(), want);
        // Left, in order: the two it could not send, and letters 5 and 6
        // (over the 5 looked at).
        let mut left = b"{\"record_id\": \"garbled\"}\n".to_vec();
        left.extend_from_slice(&line_of(&multi));
        left.extend_from_slice(&line_of(&letters[5]));
        left.extend_from_slice(&line_of(&letters[6]));
        assert_eq!(std::fs::read(&path).unwrap(), left);
        assert!(!dir.path().join(".dlq.jsonl.replace-tmp").exists());
    }

    /// A queue a consumer holds is not touched: neither another process's
    /// (its `flock`) nor one open in this process.
    #[tokio::test]
    async fn redrive_refuses_a_queue_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
        dlq.send(&letter(1)).await.unwrap();
        let sink = unistream_core::memory::MemorySink::default();
        let err = redrive_file(&path, &sink, None, |_| {}).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(dlq);
        let other = std::fs::File::open(&path).unwrap();
        other.try_lock().unwrap();
        let err = redrive_file(&path, &sink, None, |_| {}).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(other);
        assert!(sink.records().is_empty());
        let report = redrive_file(&path, &sink, None, |_| {}).await.unwrap();
        assert_eq!(report.redriven, 1);
        // Missing: an error, not an empty queue created.
        let missing = dir.path().join("nope.jsonl");
        assert!(redrive_file(&missing, &sink, None, |_| {}).await.is_err());
        assert!(!missing.exists());
    }

    /// A `kill -9` can cut a letter's write at any byte: reopened, the queue
    /// drops the torn letter, and the letter sent again gets its own line.
    #[tokio::test]
    async fn a_letter_cut_at_every_offset_is_sent_again_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let letters: Vec<DeadLetter> = (1..=3).map(letter).collect();
        let accepted: Vec<u8> = letters[..2].iter().flat_map(line_of).collect();
        let last = line_of(&letters[2]);
        for cut in 0..last.len() {
            let mut bytes = accepted.clone();
            bytes.extend_from_slice(&last[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
            dlq.send(&letters[2]).await.unwrap();
            drop(dlq);
            let text = std::fs::read_to_string(&path).unwrap();
            let ids: Vec<String> = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("cut at {cut}: {l:?}: {e}"));
                    v["record"]["id"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(ids, ["1", "2", "3"], "cut at {cut}");
            assert!(text.as_bytes().starts_with(&accepted), "cut at {cut}");
        }
    }
}
