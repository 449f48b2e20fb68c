use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{AppendFile, Durability, lock_exclusive};
use crate::error::{BoxError, Error, Result};
use crate::sink::{Delivery, EncodedRecord, Sink};

/// A sink that appends each batch to a JSON-lines stream file (the file a
/// [`FileSource`](super::FileSource) reads), one record per line.
///
/// - A batch is written with one `write`, whole lines only; with
///   [`Durability::PowerLoss`] it is also `fdatasync`ed before `send`
///   returns.
/// - A crash can still cut a large write short. On open, a torn last line
///   (bytes after the last newline) is truncated: readers never consume an
///   unterminated line, and the producer sends the whole batch again from its
///   buffer, so nothing is lost (records before the cut appear twice:
///   at-least-once).
/// - An exclusive lock (`<file>.lock`) keeps a second producer from writing
///   the same file — the repair above is only safe with one writer.
/// - A record containing a newline byte is refused by
///   [`Sink::validate`], before the producer accepts it.
#[derive(Debug)]
pub struct FileSink {
    file: AppendFile,
    _lock: File,
}

impl FileSink {
    /// Opens (creates) the stream file at `path`, takes its writer lock and
    /// repairs a torn last line.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let lock_path = path.with_extension("jsonl.lock");
        let Some(lock) = lock_exclusive(&lock_path)? else {
            return Err(Error::Locked {
                path: lock_path,
                what: format!("another producer writes {}", path.display()),
            });
        };
        repair_torn_tail(&path)?;
        Ok(FileSink {
            file: AppendFile::open(path, durability)?,
            _lock: lock,
        })
    }

    /// The stream file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Truncates bytes after the last newline of the file, if any.
fn repair_torn_tail(path: &Path) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        f.read_exact(&mut chunk[..n]).map_err(io)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let good = start + i as u64 + 1;
            if good < len {
                warn!(path = %path.display(), offset = good, dropped = len - good, "truncating a torn last line of the stream");
                f.set_len(good).map_err(io)?;
            }
            return Ok(());
        }
        end = start;
    }
    if len > 0 {
        warn!(path = %path.display(), dropped = len, "the stream holds only a torn line; truncating it");
        f.set_len(0).map_err(io)?;
    }
    Ok(())
}

impl Sink for FileSink {
    fn validate(&self, record: &EncodedRecord) -> std::result::Result<(), String> {
        if record.data.contains(&b'\n') {
            return Err("a record of a JSON-lines stream cannot contain a newline byte".into());
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
    fn one_writer_at_a_time_and_no_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let sink = FileSink::open(&path, Durability::Process).unwrap();
        let err = FileSink::open(&path, Durability::Process).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
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
