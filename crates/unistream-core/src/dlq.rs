//! Dead-letter queues: where records that keep failing go.

use std::future::Future;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::error::Result;
use crate::source::Pointer;

/// An exhausted record with everything known about its failure.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The consumer that gave up on it.
    pub consumer_id: String,
    /// The record's id (`undecodable@<pointer>` if it could not be decoded).
    pub record_id: String,
    /// The record's partition key, if it could be decoded (FIFO queues
    /// group by it; a stream DLQ partitions by it).
    pub partition_key: Option<String>,
    /// The record's bytes, exactly as read from the stream.
    pub data: Vec<u8>,
    /// Where the record was in the stream.
    pub pointer: Pointer,
    /// Attempts made, across restarts (0 if it could not be decoded).
    pub attempts: u32,
    /// The last error.
    pub error: Option<ErrorInfo>,
    /// When the first attempt started.
    pub first_attempt_time: Option<DateTime<Utc>>,
    /// When the last change happened before it was given up.
    pub last_attempt_time: DateTime<Utc>,
    /// When it was handed to the queue.
    pub dead_letter_time: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter for `data` read at `pointer`.
    pub fn new(
        consumer_id: impl Into<String>,
        record_id: impl Into<String>,
        data: Vec<u8>,
        pointer: Pointer,
        now: DateTime<Utc>,
    ) -> Self {
        DeadLetter {
            consumer_id: consumer_id.into(),
            record_id: record_id.into(),
            partition_key: None,
            data,
            pointer,
            attempts: 0,
            error: None,
            first_attempt_time: None,
            last_attempt_time: now,
            dead_letter_time: now,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    record: Record<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_base64: Option<String>,
    record_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_key: Option<&'a str>,
    attempts: u32,
    error: Option<String>,
    errors: Option<&'a ErrorInfo>,
    consumer_id: &'a str,
    pointer: &'a str,
    first_attempt_time: Option<DateTime<Utc>>,
    last_attempt_time: DateTime<Utc>,
    dead_letter_time: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Record<'a> {
    Json(&'a serde_json::value::RawValue),
    Text(String),
}

impl DeadLetter {
    /// The letter as one JSON object (no newline): what the file and
    /// Kinesis dead-letter queues store.
    ///
    /// ```text
    /// {"record": {...the record as read...}, "record_id": "17", "attempts": 3,
    ///  "error": "random error at record_id = 17", "errors": {"message": ..., "causes": [...]},
    ///  "consumer_id": "c1", "pointer": "16@1190", "first_attempt_time": ...,
    ///  "last_attempt_time": ..., "dead_letter_time": ...}
    /// ```
    ///
    /// `record` is the record itself when its bytes are one JSON value with
    /// no whitespace around it and no newline in it (so that the line stays
    /// one line, and [`from_json`](Self::from_json) gets the exact bytes
    /// back); otherwise it is the bytes as (lossy) text and `record_base64`
    /// holds them exactly. `partition_key` is there when it is known.
    pub fn to_json(&self) -> Vec<u8> {
        let letter = self;
        let raw = serde_json::from_slice::<&serde_json::value::RawValue>(&letter.data)
            .ok()
            .filter(|raw| raw.get().len() == letter.data.len() && !letter.data.contains(&b'\n'));
        let (record, record_base64) = match raw {
            Some(raw) => (Record::Json(raw), None),
            None => (
                Record::Text(String::from_utf8_lossy(&letter.data).into_owned()),
                Some(base64::engine::general_purpose::STANDARD.encode(&letter.data)),
            ),
        };
        let line = Line {
            record,
            record_base64,
            record_id: &letter.record_id,
            partition_key: letter.partition_key.as_deref(),
            attempts: letter.attempts,
            error: letter.error.as_ref().map(ToString::to_string),
            errors: letter.error.as_ref(),
            consumer_id: &letter.consumer_id,
            pointer: letter.pointer.as_str(),
            first_attempt_time: letter.first_attempt_time,
            last_attempt_time: letter.last_attempt_time,
            dead_letter_time: letter.dead_letter_time,
        };
        // Serializing this struct cannot fail: every field is a string, number,
        // time or already-valid JSON.
        serde_json::to_vec(&line).unwrap_or_default()
    }
}

/// A line of [`DeadLetter::to_json`], read back.
#[derive(Deserialize)]
struct ParsedLine<'a> {
    #[serde(borrow, default)]
    record: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    record_base64: Option<String>,
    record_id: String,
    #[serde(default)]
    partition_key: Option<String>,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    errors: Option<ErrorInfo>,
    consumer_id: String,
    pointer: String,
    #[serde(default)]
    first_attempt_time: Option<DateTime<Utc>>,
    last_attempt_time: DateTime<Utc>,
    dead_letter_time: DateTime<Utc>,
}

impl DeadLetter {
    /// Reads back a letter written by [`to_json`](Self::to_json) (one line,
    /// without its newline): what a redrive puts back into a stream.
    ///
    /// The record's bytes are `record_base64` decoded when it is there, else
    /// the text of `record` exactly as it stands in the line (a letter
    /// written before `to_json` kept whitespace-padded records in base64 may
    /// have lost the padding). A letter without `partition_key` (written
    /// before it was recorded, or whose key was unknown) has `None`.
    ///
    /// ```
    /// use chrono::Utc;
    /// use unistream_core::dlq::DeadLetter;
    ///
    /// let mut letter = DeadLetter::new("c1", "17", br#"{"id": "17"}"#.to_vec(), "16@1190".into(), Utc::now());
    /// letter.partition_key = Some("customer-4".into());
    /// assert_eq!(DeadLetter::from_json(&letter.to_json()).unwrap(), letter);
    /// assert!(DeadLetter::from_json(b"{\"record\": 1}").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`DeadLetterParseError`]: why the line is not a letter (not JSON, a
    /// field missing or of the wrong type, `record_base64` not base64, no
    /// record at all).
    pub fn from_json(line: &[u8]) -> std::result::Result<DeadLetter, DeadLetterParseError> {
        let l: ParsedLine<'_> =
            serde_json::from_slice(line).map_err(DeadLetterParseError::NotALetter)?;
        let data = match (&l.record_base64, l.record) {
            (Some(b64), _) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|source| DeadLetterParseError::Base64 {
                    record_id: l.record_id.clone(),
                    source,
                })?,
            (None, Some(raw)) => raw.get().as_bytes().to_vec(),
            (None, None) => {
                return Err(DeadLetterParseError::NoRecord {
                    record_id: l.record_id,
                });
            }
        };
        let error = l.errors.or_else(|| l.error.map(ErrorInfo::new));
        Ok(DeadLetter {
            consumer_id: l.consumer_id,
            record_id: l.record_id,
            partition_key: l.partition_key,
            data,
            pointer: Pointer::new(l.pointer),
            attempts: l.attempts,
            error,
            first_attempt_time: l.first_attempt_time,
            last_attempt_time: l.last_attempt_time,
            dead_letter_time: l.dead_letter_time,
        })
    }
}

/// Why a line is not a dead letter ([`DeadLetter::from_json`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterParseError {
    /// The line is not JSON, or a field is missing or of the wrong type.
    #[error("not a dead letter: {0}")]
    NotALetter(#[source] serde_json::Error),
    /// `record_base64` is there but is not base64.
    #[error("the dead letter of record {record_id:?}: record_base64 is not base64: {source}")]
    Base64 {
        /// The letter's record id.
        record_id: String,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// The letter has neither `record` nor `record_base64`.
    #[error("the dead letter of record {record_id:?} has no record and no record_base64")]
    NoRecord {
        /// The letter's record id.
        record_id: String,
    },
}

impl DeadLetterParseError {
    /// The record id of the letter, when the line got far enough to tell.
    pub fn record_id(&self) -> Option<&str> {
        match self {
            DeadLetterParseError::NotALetter(_) => None,
            DeadLetterParseError::Base64 { record_id, .. }
            | DeadLetterParseError::NoRecord { record_id } => Some(record_id),
        }
    }
}

/// What a redrive did: records put back into a stream (and their letters
/// removed from the queue), and letters left in the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Records the stream accepted; their letters are removed.
    pub redriven: u64,
    /// Letters left in the queue because their record could not be put
    /// back (why: [`errors`](Self::errors)).
    pub left: u64,
    /// Each letter counted in [`left`](Self::left), and why.
    pub errors: Vec<LeftLetter>,
}

/// A letter a redrive left in its queue, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeftLetter {
    /// Where the letter is: an SQS message id, `line N` of a file.
    pub letter: String,
    /// Its record's id, if the letter could be read.
    pub record_id: Option<String>,
    /// Why it was left: not a letter, or the stream refused its record.
    pub reason: String,
}

impl LeftLetter {
    /// A letter left for `reason`.
    pub fn new(
        letter: impl Into<String>,
        record_id: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        LeftLetter {
            letter: letter.into(),
            record_id,
            reason: reason.into(),
        }
    }
}

impl RedriveReport {
    /// Counts a letter left for `why`.
    pub fn leave(&mut self, why: LeftLetter) {
        self.left += 1;
        self.errors.push(why);
    }
}

/// Receives records that failed every attempt (the seed's
/// `process_failed_record`).
///
/// Contract: when `send` returns `Ok`, the letter is stored (to the queue's
/// own durability); the engine then marks the record delivered. `send` may be
/// called again for the same letter after a crash (at-least-once), so a queue
/// that can deduplicate should key on `consumer_id` + `record_id` + `pointer`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use chrono::Utc;
/// use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
/// use unistream_core::memory::MemoryDeadLetterQueue;
///
/// let dlq = MemoryDeadLetterQueue::default();
/// dlq.send(&DeadLetter::new("c1", "17", b"{}".to_vec(), "17".into(), Utc::now())).await?;
/// assert_eq!(dlq.letters()[0].record_id, "17");
/// # Ok(()) }
/// ```
pub trait DeadLetterQueue: Send + Sync {
    /// Stores one letter.
    fn send(&self, letter: &DeadLetter) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(data: &[u8]) -> DeadLetter {
        let mut l = DeadLetter::new(
            "c1",
            "17",
            data.to_vec(),
            Pointer::from("16@1190"),
            Utc::now(),
        );
        l.attempts = 3;
        l.error = Some(ErrorInfo {
            message: "random error".into(),
            causes: vec!["io".into()],
        });
        l
    }

    #[test]
    fn json_records_are_embedded_as_is() {
        let line = letter(br#"{"id": "17", "value": 31}"#).to_json();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["record"]["value"], 31);
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["error"], "random error: io");
        assert_eq!(v["consumer_id"], "c1");
        assert_eq!(v["pointer"], "16@1190");
        assert!(v.get("record_base64").is_none());
        assert!(!line.contains(&b'\n'));
    }

    #[test]
    fn letters_read_back_are_the_letters_written() {
        let cases: [&[u8]; 5] = [
            br#"{"id": "17", "value": 31}"#,
            b"\xffnot json",
            // JSON, but a line must stay one line, and padding must survive.
            b"{\n  \"id\": \"17\"\n}",
            b" {\"id\": \"17\"} ",
            b"",
        ];
        for data in cases {
            let mut l = letter(data);
            l.partition_key = Some("customer-4".into());
            l.first_attempt_time = Some(l.dead_letter_time);
            let line = l.to_json();
            assert!(!line.contains(&b'\n'), "{data:?}");
            assert_eq!(DeadLetter::from_json(&line).unwrap(), l, "{data:?}");
        }
        let no_key = letter(b"{}");
        let v: serde_json::Value = serde_json::from_slice(&no_key.to_json()).unwrap();
        assert!(v.get("partition_key").is_none());
        assert_eq!(DeadLetter::from_json(&no_key.to_json()).unwrap(), no_key);
        assert!(DeadLetter::from_json(b"not json").is_err());
        assert!(DeadLetter::from_json(br#"{"record_id": "1"}"#).is_err());
    }

    #[test]
    fn non_json_records_keep_their_exact_bytes() {
        let line = letter(b"\xffnot json").to_json();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let b64 = v["record_base64"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"\xffnot json");
        assert!(v["record"].as_str().unwrap().ends_with("not json"));
    }
}
