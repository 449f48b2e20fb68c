//! [`FileSink`]: the producer's side of a JSON-lines stream file.

use std::path::{Path, PathBuf};

use crate::{AppendFile, Durability};
use unistream_core::sink::{Delivery, EncodedRecord, Refusal, Sink};
use unistream_core::{BoxError, Result};

/// A sink that appends each batch to a JSON-lines stream file (the file a
/// [`FileSource`](crate::FileSource) reads), one record per line.
///
/// - A batch is written with one `write`, whole lines only; with
///   [`Durability::PowerLoss`] it is also `fdatasync`ed before `send`
///   returns.
/// - A crash can still cut a large write short. On open, a torn last line
///   (bytes after the last newline) is truncated ([`AppendFile`]): readers
///   never consume an unterminated line, and the producer sends the whole
///   batch again from its buffer, so nothing is lost (records before the cut
///   appear twice: at-least-once).
/// - The file's writer lock keeps a producer in another process from writing
///   the same file — the repair above is only safe with one writer.
/// - A record containing a newline byte is refused by
///   [`Sink::validate`], before the producer accepts it.
#[derive(Debug)]
pub struct FileSink {
    file: AppendFile,
}

impl FileSink {
    /// Opens (creates) the stream file at `path`, takes its writer lock and
    /// repairs a torn last line.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`](unistream_core::Error::Locked) if a process other than this one writes it;
    /// [`Error::Io`](unistream_core::Error::Io) if it cannot be created, locked or repaired.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        Ok(FileSink {
            file: AppendFile::open(path, durability)?,
        })
    }

    /// The stream file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

impl Sink for FileSink {
    fn validate(&self, record: &EncodedRecord) -> std::result::Result<(), Refusal> {
        if record.data.contains(&b'\n') {
            return Err(Refusal::Unrepresentable(
                "a record of a JSON-lines stream cannot contain a newline byte".into(),
            ));
        }
        Ok(())
    }

    async fn send(&self, batch: &[EncodedRecord]) -> std::result::Result<Delivery, BoxError> {
        let mut out = Vec::with_capacity(batch.iter().map(|r| r.data.len() + 1).sum());
        for r in batch {
            out.extend_from_slice(&r.data);
            out.push(b'\n');
        }
        self.file.append(&out)?;
        Ok(Delivery::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_whole_lines_and_repairs_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.jsonl");
        std::fs::write(&path, b"{\"id\": \"1\"}\n{\"id\": \"2\"").unwrap();
        let sink = FileSink::open(&path, Durability::Process).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"id\": \"1\"}\n");
        let batch = [
            EncodedRecord::new("2", "2", b"{\"id\": \"2\"}".to_vec()),
            EncodedRecord::new("3", "3", b"{\"id\": \"3\"}".to_vec()),
        ];
        assert_eq!(sink.send(&batch).await.unwrap(), Delivery::All);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\": \"1\"}\n{\"id\": \"2\"}\n{\"id\": \"3\"}\n"
        );
    }

    #[test]
    fn a_file_with_only_a_torn_line_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, b"{\"id\"").unwrap();
        let _sink = FileSink::open(&path, Durability::Process).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn one_writing_process_at_a_time_and_no_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        // Another process's writer: a descriptor of its own holding the lock.
        let other = std::fs::File::create(&path).unwrap();
        other.try_lock().unwrap();
        let err = FileSink::open(&path, Durability::Process).unwrap_err();
        assert!(matches!(err, unistream_core::Error::Locked { .. }), "{err}");
        drop(other);
        let sink = FileSink::open(&path, Durability::Process).unwrap();
        assert!(
            sink.validate(&EncodedRecord::new("1", "1", b"a\nb".to_vec()))
                .is_err()
        );
        assert!(
            sink.validate(&EncodedRecord::new("1", "1", b"ab".to_vec()))
                .is_ok()
        );
    }
}
