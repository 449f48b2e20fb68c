//! Segments of format 2 (written by the code before issue 22, committed in
//! `tests/fixtures/format2/`, copied while the producer was open — as a
//! kill leaves them) are read, rewritten in format 3 on open, and their torn
//! tails are still repaired.

use std::path::Path;

use unistream_buffer::frame::{MAGIC, NAME};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::Error;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_local::Durability;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format2");

/// What the fixtures hold unsent: batch 2 narrowed to records 6 and 8,
/// batch 3 (9–12), and the open batch (13, 14).
const UNSENT: [&str; 8] = ["6", "8", "9", "10", "11", "12", "13", "14"];

fn copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(Path::new(FIXTURES).join(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn config() -> FileBufferConfig {
    FileBufferConfig::new(BufferLimits::records(4), Durability::Process)
}

fn drain(wal: &FileBuffer) -> Vec<String> {
    wal.seal().unwrap();
    let mut ids = Vec::new();
    while let Some(b) = wal.emit().unwrap() {
        ids.extend(b.records.iter().map(|r| r.id.clone()));
        wal.commit(&b).unwrap();
    }
    ids
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn format_2_segments_are_read_and_rewritten_in_format_3() {
    for name in ["wal-process", "wal-powerloss"] {
        let dir = copy(name);
        for seg in segments(dir.path()) {
            assert_eq!(
                std::fs::read(&seg).unwrap()[..8],
                NAME.iter().copied().chain([2]).collect::<Vec<_>>()[..]
            );
        }
        let wal = FileBuffer::open(dir.path(), config()).unwrap();
        assert_eq!(wal.stats().records, UNSENT.len() as u64, "{name}");
        for seg in segments(dir.path()) {
            assert_eq!(
                &std::fs::read(&seg).unwrap()[..8],
                MAGIC,
                "{name}: rewritten"
            );
        }
        // New records go on after them, in format 3, and all survive a restart.
        wal.put(&unistream_core::sink::EncodedRecord::new(
            "15",
            "k",
            b"x".to_vec(),
        ))
        .await
        .unwrap();
        drop(wal);
        let wal = FileBuffer::open(dir.path(), config()).unwrap();
        let mut want: Vec<&str> = UNSENT.to_vec();
        want.push("15");
        assert_eq!(drain(&wal), want, "{name}");
    }
}

/// `(start, end)` of each format 2 frame of a segment (no padding).
fn v2_frames(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 9 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 && bytes[at + 4..at + 8] == [0; 4] {
            break;
        }
        out.push((at, at + 9 + len, bytes[at + 8]));
        at += 9 + len;
    }
    out
}

#[tokio::test]
async fn a_torn_format_2_tail_is_still_repaired() {
    for name in ["wal-process", "wal-powerloss"] {
        let dir = copy(name);
        let last = segments(dir.path()).pop().unwrap();
        let bytes = std::fs::read(&last).unwrap();
        let frames: Vec<_> = v2_frames(&bytes).into_iter().filter(|f| f.2 != 0).collect();
        let (start, end, kind) = *frames.last().unwrap();
        // The last frame narrows batch 2 to records 6 and 8: without it,
        // the whole batch is sent again (nothing is lost).
        assert_eq!(kind, 2, "the last frame is the narrow frame");
        let unnarrowed: Vec<String> = (5..=14).map(|i: u32| i.to_string()).collect();
        for cut in start + 1..end {
            let d = copy(name);
            std::fs::write(d.path().join(last.file_name().unwrap()), &bytes[..cut]).unwrap();
            let wal = FileBuffer::open(d.path(), config()).unwrap();
            assert_eq!(drain(&wal), unnarrowed, "{name}: cut at {cut}");
        }
        if name == "wal-process" {
            // The last append copied but not published (its first header
            // still zeros, its padding frame and the preallocated zeros after).
            let d = copy(name);
            let mut unpublished = bytes.clone();
            unpublished[start..start + 8].fill(0);
            std::fs::write(d.path().join(last.file_name().unwrap()), &unpublished).unwrap();
            let wal = FileBuffer::open(d.path(), config()).unwrap();
            assert_eq!(drain(&wal), unnarrowed, "{name}: unpublished");
        }
    }
}

#[tokio::test]
async fn a_damaged_format_2_length_is_refused_when_records_follow() {
    for name in ["wal-process", "wal-powerloss"] {
        let dir = copy(name);
        let last = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let (start, _, _) = v2_frames(&bytes)[1];
        bytes[start..start + 4].copy_from_slice(&2_857_740_885u32.to_le_bytes());
        std::fs::write(&last, &bytes).unwrap();
        match FileBuffer::open(dir.path(), config()) {
            Err(Error::Corrupt {
                path,
                offset,
                reason,
            }) => {
                assert_eq!((path, offset), (last.clone(), start as u64));
                assert!(reason.contains("valid records follow"), "{reason}");
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => panic!("{name}: opened"),
        }
    }
}
