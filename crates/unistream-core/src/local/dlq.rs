use std::path::PathBuf;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AppendFile, Durability};
use crate::checkpoint::ErrorInfo;
use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::error::Result;

/// A dead-letter queue that appends one JSON object per line:
///
/// ```text
/// {"record": {...the record as read...}, "record_id": "17", "attempts": 3,
///  "error": "random error at record_id = 17", "errors": {"message": ..., "causes": [...]},
///  "consumer_id": "c1", "pointer": "16@1190", "first_attempt_time": ...,
///  "last_attempt_time": ..., "dead_letter_time": ...}
/// ```
///
/// `record` is the record itself when its bytes are JSON; otherwise it is the
/// bytes as (lossy) text and `record_base64` holds them exactly.
#[derive(Debug)]
pub struct FileDeadLetterQueue {
    file: AppendFile,
}

impl FileDeadLetterQueue {
    /// Opens (creates) the JSON-lines file at `path`.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        Ok(FileDeadLetterQueue {
            file: AppendFile::open(path, durability)?,
        })
    }
}

#[derive(Serialize)]
struct Line<'a> {
    record: Record<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_base64: Option<String>,
    record_id: &'a str,
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

/// The JSON line [`FileDeadLetterQueue`] writes for a letter (newline
/// included).
pub fn dead_letter_line(letter: &DeadLetter) -> Vec<u8> {
    let (record, record_base64) = match serde_json::from_slice(&letter.data) {
        Ok(raw) => (Record::Json(raw), None),
        Err(_) => (
            Record::Text(String::from_utf8_lossy(&letter.data).into_owned()),
            Some(base64::engine::general_purpose::STANDARD.encode(&letter.data)),
        ),
    };
    let line = Line {
        record,
        record_base64,
        record_id: &letter.record_id,
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
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

impl DeadLetterQueue for FileDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<()> {
        self.file.append(&dead_letter_line(letter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Pointer;

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
        let line = dead_letter_line(&letter(br#"{"id": "17", "value": 31}"#));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["record"]["value"], 31);
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["error"], "random error: io");
        assert_eq!(v["consumer_id"], "c1");
        assert_eq!(v["pointer"], "16@1190");
        assert!(v.get("record_base64").is_none());
        assert!(line.ends_with(b"\n"));
    }

    /// A `kill -9` can cut a letter's write at any byte: reopened, the queue
    /// drops the torn letter, and the letter sent again gets its own line.
    #[tokio::test]
    async fn a_letter_cut_at_every_offset_is_sent_again_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let letters: Vec<DeadLetter> = (1..=3)
            .map(|i| {
                let mut l =
                    letter(format!(r#"{{"id": "{i}", "pad": "{}"}}"#, "x".repeat(300)).as_bytes());
                l.record_id = i.to_string();
                l
            })
            .collect();
        let accepted: Vec<u8> = letters[..2].iter().flat_map(dead_letter_line).collect();
        let last = dead_letter_line(&letters[2]);
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

    #[test]
    fn non_json_records_keep_their_exact_bytes() {
        let line = dead_letter_line(&letter(b"\xffnot json"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let b64 = v["record_base64"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"\xffnot json");
        assert!(v["record"].as_str().unwrap().ends_with("not json"));
    }
}
