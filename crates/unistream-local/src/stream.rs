//! [`FileSource`]: a JSON-lines stream file read from a `line@byte` pointer.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use unistream_core::source::{Fetched, Pointer, Source, SourceRecord};
use unistream_core::{Error, Result};

/// A position in a JSON-lines file: the line number (0-based) and the byte
/// offset where that line starts. Written as `"<line>@<byte>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePosition {
    /// 0-based line number.
    pub line: u64,
    /// Byte offset of the start of the line.
    pub byte: u64,
}

impl FilePosition {
    /// As a pointer.
    pub fn to_pointer(self) -> Pointer {
        // Hot path (once per record): no `format!` machinery.
        let mut s = String::with_capacity(24);
        s.push_str(itoa::Buffer::new().format(self.line));
        s.push('@');
        s.push_str(itoa::Buffer::new().format(self.byte));
        Pointer::new(s)
    }

    /// Parses a `"<line>@<byte>"` pointer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPointer`](unistream_core::Error::InvalidPointer) if
    /// `pointer` is not `line@byte`.
    pub fn parse(p: &Pointer, path: &Path) -> Result<Self> {
        let parsed = p
            .as_str()
            .split_once('@')
            .and_then(|(l, b)| Some((l.parse().ok()?, b.parse().ok()?)));
        match parsed {
            Some((line, byte)) => Ok(FilePosition { line, byte }),
            None => Err(Error::InvalidPointer {
                pointer: p.to_string(),
                source_name: path.display().to_string(),
                reason: "expected \"<line>@<byte offset>\"".into(),
            }),
        }
    }
}

/// A stream stored as a JSON-lines file: one record per line.
///
/// The pointer is a [`FilePosition`]; each fetch seeks straight to it, so the
/// cost of a batch does not depend on how far into the file it is. Only lines
/// ending with a newline are read: an unterminated last line (a writer in the
/// middle of an append, or one that crashed) is left for a later fetch. Empty
/// lines are skipped. A missing file is an empty stream. The stream is never
/// closed (a file can always grow); use `stop_at_end` to stop at its end.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A stream over the file at `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, from: &Pointer, reason: impl Into<String>) -> Error {
        Error::InvalidPointer {
            pointer: from.to_string(),
            source_name: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    fn read(&self, from: &Pointer, limit: usize) -> Result<Fetched> {
        let mut pos = FilePosition::parse(from, &self.path)?;
        let io = |e| Error::io(&self.path, e);
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && pos.byte == 0 => {
                return Ok(Fetched::new(Vec::new(), Some(from.clone())));
            }
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if pos.byte > len {
            return Err(self.invalid(
                from,
                format!("the file has only {len} bytes (truncated or replaced?)"),
            ));
        }
        if pos.byte > 0 {
            let mut prev = [0u8; 1];
            file.read_exact_at(&mut prev, pos.byte - 1).map_err(io)?;
            if prev[0] != b'\n' {
                return Err(self.invalid(from, "the offset is not the start of a line"));
            }
        }
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        reader.seek(SeekFrom::Start(pos.byte)).map_err(io)?;
        let mut records = Vec::with_capacity(limit.min(4096));
        let mut line = Vec::with_capacity(256);
        while records.len() < limit {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // end of file, or a line still being written
            }
            let here = pos;
            pos.line += 1;
            pos.byte += n as u64;
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            records.push(SourceRecord::new(here.to_pointer(), line.clone()));
        }
        Ok(Fetched::new(records, Some(pos.to_pointer())))
    }
}

impl Source for FileSource {
    fn initial_pointer(&self) -> Pointer {
        FilePosition { line: 0, byte: 0 }.to_pointer()
    }

    async fn fetch(&mut self, from: &Pointer, limit: usize) -> Result<Fetched> {
        self.read(from, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch_all(src: &FileSource, from: &Pointer, limit: usize) -> Fetched {
        src.read(from, limit).unwrap()
    }

    #[test]
    fn reads_in_batches_from_the_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "a\nbb\n\nccc\r\nd\n").unwrap();
        let src = FileSource::new(&path);
        let f = fetch_all(&src, &src.initial_pointer(), 2);
        assert_eq!(f.records.len(), 2);
        assert_eq!(f.records[1].data, b"bb");
        assert_eq!(f.records[1].pointer.as_str(), "1@2");
        let next = f.next_pointer.unwrap();
        assert_eq!(next.as_str(), "2@5");
        let f = fetch_all(&src, &next, 10);
        let data: Vec<_> = f.records.iter().map(|r| r.data.clone()).collect();
        assert_eq!(data, vec![b"ccc".to_vec(), b"d".to_vec()]);
        assert_eq!(f.records[0].pointer.as_str(), "3@6");
        let end = f.next_pointer.unwrap();
        let f = fetch_all(&src, &end, 10);
        assert!(f.records.is_empty());
        assert_eq!(f.next_pointer.unwrap(), end);
    }

    #[test]
    fn an_unterminated_last_line_is_not_read_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "a\n{\"half").unwrap();
        let src = FileSource::new(&path);
        let f = fetch_all(&src, &src.initial_pointer(), 10);
        assert_eq!(f.records.len(), 1);
        let next = f.next_pointer.unwrap();
        std::fs::write(&path, "a\n{\"half\": 1}\n").unwrap();
        let f = fetch_all(&src, &next, 10);
        assert_eq!(f.records[0].data, br#"{"half": 1}"#);
    }

    #[test]
    fn missing_file_is_an_empty_stream() {
        let dir = tempfile::tempdir().unwrap();
        let src = FileSource::new(dir.path().join("nope.jsonl"));
        let f = fetch_all(&src, &src.initial_pointer(), 10);
        assert!(f.records.is_empty());
    }

    #[test]
    fn bad_pointers_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "abc\ndef\n").unwrap();
        let src = FileSource::new(&path);
        for (p, why) in [
            ("garbage", "expected"),
            ("1@2", "not the start of a line"),
            ("9@100", "only 8 bytes"),
        ] {
            let err = src.read(&Pointer::from(p), 1).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("s.jsonl"), "{err}");
        }
    }
}
