//! [`FileDeadLetterQueue`]: dead letters as JSON lines.

use std::path::PathBuf;

use unistream_core::Result;
use unistream_core::dlq::{DeadLetter, DeadLetterQueue};

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
