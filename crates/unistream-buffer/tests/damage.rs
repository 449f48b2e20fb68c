//! Damage is never taken for a torn tail (issue 22). For a WAL whose
//! records were all acknowledged (`put` returned), every single-byte change
//! at every offset of its first frames, a frame in the middle and its last
//! frame, and every length set past the segment's end, must either be
//! refused with `Error::Corrupt` (naming the segment) or recover every
//! acknowledged record, byte for byte. A true torn tail (the last frame cut
//! at every offset) is still repaired. Both durability modes: written
//! segments (power loss) and memory-mapped, preallocated ones (process).

use std::path::{Path, PathBuf};

use unistream_buffer::frame::{Frame, frames};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::Error;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;

fn rec(i: u32) -> EncodedRecord {
    EncodedRecord::new(
        i.to_string(),
        format!("key-{i}"),
        format!("{{\"id\": \"{i}\", \"v\": {}}}", i * 7).into_bytes(),
    )
}

fn config(durability: Durability) -> FileBufferConfig {
    FileBufferConfig::new(BufferLimits::records(4), durability)
}

fn segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap()
}

/// A WAL of one segment holding 10 acknowledged records (two sealed batches
/// and an open one; one batch narrowed to all of its records, so that every
/// frame kind is there). Returns the segment's name and bytes.
async fn acknowledged(durability: Durability) -> (String, Vec<u8>, Vec<EncodedRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(dir.path(), config(durability)).unwrap();
    let records: Vec<EncodedRecord> = (1..=10).map(rec).collect();
    for r in &records[..8] {
        wal.put(r).await.unwrap();
    }
    let first = wal.emit().unwrap().unwrap();
    wal.narrow(&first, &[0, 1, 2, 3]).unwrap();
    for r in &records[8..] {
        wal.put(r).await.unwrap();
    }
    drop(wal);
    let seg = segment(dir.path());
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    (name, std::fs::read(&seg).unwrap(), records)
}

/// `(start, end)` of each frame that is not padding.
fn spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut it = frames(bytes);
    let mut starts: Vec<(usize, bool)> = it
        .by_ref()
        .map(|f| {
            let (offset, f) = f.unwrap();
            (offset as usize, f == Frame::Padding)
        })
        .collect();
    starts.push((it.valid_len() as usize, true));
    starts
        .windows(2)
        .filter(|w| !w[0].1)
        .map(|w| (w[0].0, w[1].0))
        .collect()
}

/// What an open of `bytes` as the only segment gives.
enum Verdict {
    Refused,
    /// Every acknowledged record, intact.
    Recovered,
    /// The open succeeded without some acknowledged records, or with
    /// records that were never put: the bug.
    Lost(String),
}

/// Empties `dir`.
fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

fn open(dir: &Path, name: &str, bytes: &[u8], want: &[EncodedRecord]) -> Verdict {
    clear(dir);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let wal = match FileBuffer::open(dir, config(Durability::Process)) {
        Err(Error::Corrupt { path: p, .. }) => {
            assert_eq!(p, path, "the error names the segment");
            return Verdict::Refused;
        }
        Err(e) => return Verdict::Lost(format!("not a corruption error: {e}")),
        Ok(wal) => wal,
    };
    if let Err(e) = wal.seal() {
        return Verdict::Lost(format!("seal failed: {e}"));
    }
    let mut got = Vec::new();
    loop {
        match wal.emit() {
            Ok(Some(b)) => {
                got.extend(b.records.iter().cloned());
                if wal.commit(&b).is_err() {
                    return Verdict::Lost("commit failed".into());
                }
            }
            Ok(None) => break,
            Err(e) => return Verdict::Lost(format!("emit failed after an open: {e}")),
        }
    }
    if got == want {
        Verdict::Recovered
    } else {
        let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        Verdict::Lost(format!(
            "opened with {} of {} records: {ids:?}",
            got.len(),
            want.len()
        ))
    }
}

/// The frames to damage: the first two, one in the middle, the last.
fn chosen(spans: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let n = spans.len();
    assert!(n >= 6, "{n} frames");
    vec![spans[0], spans[1], spans[n / 2], spans[n - 1]]
}

async fn every_single_byte_change(durability: Durability) {
    let (name, bytes, want) = acknowledged(durability).await;
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        open(dir.path(), &name, &bytes, &want),
        Verdict::Recovered
    ));
    let mut lost = Vec::new();
    let (mut refused, mut recovered) = (0u32, 0u32);
    for (start, end) in chosen(&spans(&bytes)) {
        for at in start..end {
            for value in 0..=255u8 {
                if value == bytes[at] {
                    continue;
                }
                let mut damaged = bytes.clone();
                damaged[at] = value;
                match open(dir.path(), &name, &damaged, &want) {
                    Verdict::Refused => refused += 1,
                    Verdict::Recovered => recovered += 1,
                    Verdict::Lost(what) => lost.push(format!(
                        "frame {start}..{end}: byte {at} set to {value:#04x}: {what}"
                    )),
                }
            }
        }
    }
    eprintln!(
        "{durability:?}: {} single-byte changes: {refused} refused, {recovered} recovered, {} lost",
        refused + recovered + lost.len() as u32,
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} changes lost acknowledged records, e.g.:\n{}",
        lost.len(),
        lost.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_single_byte_change_of_written_frames_is_refused_or_harmless() {
    every_single_byte_change(Durability::PowerLoss).await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_single_byte_change_of_mapped_frames_is_refused_or_harmless() {
    every_single_byte_change(Durability::Process).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_length_past_the_segment_end_is_refused() {
    for durability in [Durability::PowerLoss, Durability::Process] {
        let (name, bytes, want) = acknowledged(durability).await;
        let dir = tempfile::tempdir().unwrap();
        let mut lost = Vec::new();
        for (start, _) in chosen(&spans(&bytes)) {
            let past = (bytes.len() - start) as u64;
            for len in [
                past,
                past + 1,
                past + 4096,
                1 << 20,
                2_857_740_885,
                u32::MAX.into(),
            ] {
                let Ok(len) = u32::try_from(len) else {
                    continue;
                };
                let mut damaged = bytes.clone();
                damaged[start..start + 4].copy_from_slice(&len.to_le_bytes());
                if let Verdict::Lost(what) = open(dir.path(), &name, &damaged, &want) {
                    lost.push(format!(
                        "{durability:?}: frame at {start}, length {len}: {what}"
                    ));
                }
            }
        }
        assert!(lost.is_empty(), "{}", lost.join("\n"));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_last_frame_cut_at_every_offset_is_still_repaired() {
    for durability in [Durability::PowerLoss, Durability::Process] {
        let (name, bytes, want) = acknowledged(durability).await;
        let (start, end) = *spans(&bytes).last().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in start..end {
            // The last frame is record 10; cut, it was never acknowledged.
            match open(dir.path(), &name, &bytes[..cut], &want[..9]) {
                Verdict::Recovered => {}
                Verdict::Refused => panic!("{durability:?}: a cut at {cut} was refused"),
                Verdict::Lost(what) => panic!("{durability:?}: a cut at {cut}: {what}"),
            }
        }
    }
}

mod property {
    //! Random damage (1–4 bytes changed anywhere in the written part of a
    //! segment) over multi-segment WALs of random records, batches, commits
    //! and narrowings, in both durability modes. The oracle: an open of the
    //! undamaged files gives every acknowledged record; an open of the
    //! damaged ones must give exactly the same, or refuse with
    //! `Error::Corrupt`.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Case {
        power_loss: bool,
        max_records: usize,
        segment_bytes: u64,
        records: Vec<(u16, u8)>,
        /// After each sealed batch: 0 leave, 1 commit, 2 narrow to odd ones.
        fate: Vec<u8>,
        damage: (u64, u64, Vec<u8>),
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            any::<bool>(),
            2usize..7,
            150u64..900,
            prop::collection::vec((1u16..400, 32u8..127), 8..60),
            prop::collection::vec(0u8..3, 0..12),
            (
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(1u8..=255, 1..5),
            ),
        )
            .prop_map(
                |(power_loss, max_records, segment_bytes, records, fate, damage)| Case {
                    power_loss,
                    max_records,
                    segment_bytes,
                    records,
                    fate,
                    damage,
                },
            )
    }

    fn cfg(c: &Case) -> FileBufferConfig {
        let durability = if c.power_loss {
            Durability::PowerLoss
        } else {
            Durability::Process
        };
        let mut cfg = FileBufferConfig::new(BufferLimits::records(c.max_records), durability);
        cfg.segment_bytes = c.segment_bytes;
        cfg
    }

    /// Writes the WAL; returns its segment files (name, bytes) as a kill
    /// leaves them (copied while open).
    async fn write(c: &Case, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let wal = FileBuffer::open(dir, cfg(c)).unwrap();
        let mut fates = c.fate.iter();
        for (i, &(len, byte)) in c.records.iter().enumerate() {
            let data = vec![byte; usize::from(len)];
            wal.put(&EncodedRecord::new(
                i.to_string(),
                format!("k{}", i % 5),
                data,
            ))
            .await
            .unwrap();
            if wal.should_emit() {
                let b = wal.emit().unwrap().unwrap();
                match fates.next() {
                    Some(1) => wal.commit(&b).unwrap(),
                    Some(2) => {
                        let keep: Vec<usize> =
                            (0..b.records.len()).filter(|i| i % 2 == 1).collect();
                        wal.narrow(&b, &keep).unwrap();
                    }
                    _ => {}
                }
            }
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        drop(wal);
        files
    }

    /// Opens `files` in `dir`: `None` if refused as corrupt, else what it
    /// holds.
    fn open_all(
        dir: &Path,
        files: &[(String, Vec<u8>)],
    ) -> Result<Option<Vec<EncodedRecord>>, String> {
        clear(dir);
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let wal = match FileBuffer::open(dir, config(Durability::Process)) {
            Err(Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
            Ok(w) => w,
        };
        wal.seal().map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        while let Some(b) = wal.emit().map_err(|e| e.to_string())? {
            got.extend(b.records.iter().cloned());
            wal.commit(&b).map_err(|e| e.to_string())?;
        }
        Ok(Some(got))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn random_damage_is_refused_or_harmless(c in case()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let src = tempfile::tempdir().unwrap();
            let files = rt.block_on(write(&c, src.path()));
            let dir = tempfile::tempdir().unwrap();
            let truth = open_all(dir.path(), &files).unwrap().expect("the undamaged WAL opens");
            // Damage inside the written part of one segment.
            let mut damaged = files.clone();
            let (pick, at, bytes) = &c.damage;
            let (_, seg) = &mut damaged[(*pick % files.len() as u64) as usize];
            let written = seg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            prop_assume!(written > 0);
            let start = (*at % written as u64) as usize;
            for (i, x) in bytes.iter().enumerate() {
                if let Some(b) = seg.get_mut(start + i) {
                    *b ^= x;
                }
            }
            match open_all(dir.path(), &damaged) {
                Ok(None) => {}
                Ok(Some(got)) => prop_assert_eq!(got, truth, "opened with other records"),
                Err(e) => prop_assert!(false, "not a corruption error: {}", e),
            }
        }
    }
}
