//! [`inspect`]: what a WAL directory holds, read without opening the log —
//! no lock, no repair, nothing written — for operators (`unistream wal
//! inspect` / `verify`) and for a producer that is running.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use unistream_core::{Error, Result};

use super::recover::{Scanned, check_segment};
use super::segment::parse_segment_name;
use super::state::OpenBatch;
use crate::frame::{self, Frame};

/// What [`inspect`] found in a WAL directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalReport {
    /// The segment files, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Batches sealed and not yet committed (not yet sent, or sent in
    /// part), oldest first.
    pub pending: Vec<PendingBatch>,
    /// Records put since the last seal (the batch being filled).
    pub open_records: u64,
    /// Their bytes.
    pub open_bytes: u64,
    /// The highest batch id seen (0: none yet).
    pub last_batch_id: u64,
    /// Frames after the last whole one in the newest segment: a write cut
    /// short (a crash), which the next open truncates. Not an error.
    pub torn_tail: Option<TornTail>,
    /// The oldest record not yet sent (the next one the sink gets), if any.
    pub oldest: Option<OldestRecord>,
}

/// The oldest unsent record of a WAL: where it is and what it is (the
/// frame holds no time: its age is not known).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OldestRecord {
    /// The record's id.
    pub id: String,
    /// Its partition key.
    pub partition_key: String,
    /// Its payload's size.
    pub bytes: u64,
    /// The segment holding it.
    pub segment: PathBuf,
    /// The byte offset of its frame in the segment.
    pub offset: u64,
    /// The batch holding it (`None`: the open batch, not yet sealed).
    pub batch: Option<u64>,
}

impl WalReport {
    /// Records not yet sent: the pending batches' and the open batch's.
    pub fn unsent_records(&self) -> u64 {
        self.pending.iter().map(|b| b.records).sum::<u64>() + self.open_records
    }

    /// Their bytes.
    pub fn unsent_bytes(&self) -> u64 {
        self.pending.iter().map(|b| b.bytes).sum::<u64>() + self.open_bytes
    }
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes (a memory-mapped active segment is preallocated:
    /// this is its allocated length).
    pub bytes: u64,
}

/// A sealed batch not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingBatch {
    /// Its id.
    pub id: u64,
    /// The segment holding it.
    pub segment: PathBuf,
    /// Records it was sealed with.
    pub sealed_records: u64,
    /// Records still unsent (fewer once a partial send narrowed it).
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A torn tail of the newest segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the whole frames end.
    pub offset: u64,
    /// What is wrong after it.
    pub reason: String,
}

/// Reads every segment of the WAL in `dir` and reports what it holds,
/// without opening the log (no lock, nothing repaired or written).
///
/// # Errors
///
/// [`Error::Corrupt`] with the segment's path and the byte offset of the
/// first bad frame, or of records left after the last seal of a finished
/// segment, or naming a missing segment; [`Error::Io`] if a file cannot be
/// read.
pub fn inspect(dir: &Path) -> Result<WalReport> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push((seq, entry.path()));
        }
    }
    seqs.sort_unstable();
    for pair in seqs.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "segments {} to {} are missing",
                    pair[0].0 + 1,
                    pair[1].0 - 1
                ),
            });
        }
    }
    let mut s = Scanned {
        files: VecDeque::new(),
        sealed: VecDeque::new(),
        open: OpenBatch::default(),
        max_id: 0,
    };
    let mut report = WalReport {
        segments: Vec::new(),
        pending: Vec::new(),
        open_records: 0,
        open_bytes: 0,
        last_batch_id: 0,
        torn_tail: None,
        oldest: None,
    };
    let last = seqs.last().map(|(seq, _)| *seq);
    for (seq, path) in &seqs {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        let is_last = Some(*seq) == last;
        match check_segment(&mut s, *seq, &bytes, is_last) {
            Err((offset, reason)) => return Err(corrupt(offset, reason)),
            Ok((valid, torn)) => {
                // Zeros after the last frame are a memory-mapped segment's
                // preallocated room, not a tear.
                let zeros = bytes
                    .get(usize::try_from(valid).unwrap_or(usize::MAX)..)
                    .is_some_and(|rest| rest.iter().all(|&b| b == 0));
                if let Some(reason) = torn.filter(|_| !zeros) {
                    report.torn_tail = Some(TornTail {
                        path: path.clone(),
                        offset: valid,
                        reason,
                    });
                }
            }
        }
        report.segments.push(SegmentInfo {
            path: path.clone(),
            bytes: bytes.len() as u64,
        });
    }
    let path_of = |file: u64| {
        seqs.iter()
            .find(|(seq, _)| *seq == file)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    report.pending = s
        .sealed
        .iter()
        .map(|b| PendingBatch {
            id: b.id,
            segment: path_of(b.file),
            sealed_records: b.original,
            records: b.records,
            bytes: b.bytes,
        })
        .collect();
    report.open_records = s.open.records;
    report.open_bytes = s.open.bytes;
    report.last_batch_id = s.max_id;
    report.oldest = match s.sealed.front() {
        Some(b) => {
            let skip = b
                .keep
                .as_ref()
                .and_then(|k| k.first())
                .map_or(0, |i| *i as usize);
            first_record(&path_of(b.file), b.start, b.end, skip, Some(b.id))?
        }
        None if s.open.records > 0 => match seqs.last() {
            Some((_, path)) => first_record(path, s.open.start, u64::MAX, 0, None)?,
            None => None,
        },
        None => None,
    };
    Ok(report)
}

/// The record frame number `skip` from `start` in `path` (frames up to
/// `end`).
fn first_record(
    path: &Path,
    start: u64,
    end: u64,
    skip: usize,
    batch: Option<u64>,
) -> Result<Option<OldestRecord>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut n = 0;
    for item in frame::frames(&bytes) {
        let Ok((offset, f)) = item else {
            break;
        };
        if offset < start {
            continue;
        }
        if offset >= end {
            break;
        }
        if let Frame::Record { id, key, data, .. } = f {
            if n == skip {
                return Ok(Some(OldestRecord {
                    id: id.to_owned(),
                    partition_key: key.to_owned(),
                    bytes: data.len() as u64,
                    segment: path.to_path_buf(),
                    offset,
                    batch,
                }));
            }
            n += 1;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use unistream_core::buffer::{Buffer, BufferLimits};
    use unistream_core::sink::EncodedRecord;
    use unistream_local::Durability;

    use super::*;
    use crate::{FileBuffer, FileBufferConfig};

    fn record(i: usize) -> EncodedRecord {
        EncodedRecord::new(i.to_string(), "k", format!("{{\"i\":{i}}}").into_bytes())
    }

    fn wal(dir: &Path, durability: Durability) -> FileBuffer {
        FileBuffer::open(
            dir,
            FileBufferConfig::new(BufferLimits::records(3), durability),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_wal_with_pending_and_open_records_is_reported_without_being_changed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal(dir.path(), Durability::Process);
        for i in 0..4 {
            wal.put(&record(i)).await.unwrap();
        }
        let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap_or_default();
                (p, b)
            })
            .collect();
        let report = inspect(dir.path()).unwrap();
        assert_eq!(report.pending.len(), 1, "{report:?}");
        assert_eq!(report.pending[0].records, 3);
        assert_eq!(report.pending[0].sealed_records, 3);
        assert_eq!(report.open_records, 1);
        assert_eq!(report.unsent_records(), 4);
        assert_eq!(report.torn_tail, None);
        let oldest = report.oldest.as_ref().expect("an oldest record");
        assert_eq!((oldest.id.as_str(), oldest.batch), ("0", Some(1)));
        for (p, b) in before {
            assert_eq!(
                std::fs::read(&p).unwrap_or_default(),
                b,
                "{} unchanged",
                p.display()
            );
        }
        // Once the batch is committed, only the open record is left.
        let batch = wal.emit().unwrap().expect("a sealed batch");
        wal.commit(&batch).unwrap();
        let report = inspect(dir.path()).unwrap();
        assert!(report.pending.is_empty());
        assert_eq!(report.unsent_records(), 1);
        let oldest = report.oldest.expect("the open record");
        assert_eq!((oldest.id.as_str(), oldest.batch), ("3", None));
    }

    #[tokio::test]
    async fn the_oldest_record_of_a_narrowed_batch_is_the_first_still_unsent() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal(dir.path(), Durability::Process);
        for i in 0..3 {
            wal.put(&record(i)).await.unwrap();
        }
        let batch = wal.emit().unwrap().expect("a sealed batch");
        // The sink took record 0 only: 1 and 2 stay.
        wal.narrow(&batch, &[1, 2]).unwrap();
        let report = inspect(dir.path()).unwrap();
        assert_eq!(report.unsent_records(), 2);
        let oldest = report.oldest.expect("an oldest record");
        assert_eq!(oldest.id, "1");
        assert!(oldest.offset > 8, "past the first frame: {oldest:?}");
    }

    #[tokio::test]
    async fn a_damaged_frame_is_reported_with_path_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal(dir.path(), Durability::PowerLoss);
        for i in 0..3 {
            wal.put(&record(i)).await.unwrap();
        }
        drop(wal);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        match inspect(dir.path()) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert!(offset < bytes.len() as u64);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
