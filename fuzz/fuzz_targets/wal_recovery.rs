//! WAL segment recovery.
//!
//! - Any bytes, as a segment's frames (format 3 and 2): the reader never
//!   panics and never claims more valid bytes than it was given.
//! - Any bytes as the only segment of a log that is opened (recovery, the
//!   format 2 rewrite, the torn-tail repair): no panic; an open log drains.
//! - Loss check: a log written from the input (records, batch sizes,
//!   commits, narrowings, either durability), then 1–4 bytes of its files
//!   changed as the input says: the open either refuses with
//!   `Error::Corrupt` or holds exactly the records an open of the
//!   undamaged files holds.
#![no_main]

use std::path::Path;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use unistream_buffer::frame::{NAME, frames};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::Error;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;

fn scan(bytes: &[u8]) {
    let mut it = frames(bytes);
    for item in it.by_ref() {
        if item.is_err() {
            break;
        }
    }
    assert!(it.valid_len() <= bytes.len() as u64);
}

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

/// Opens the log in `dir` and drains it: `None` if refused as corrupt.
fn drain(dir: &Path) -> Option<Vec<EncodedRecord>> {
    let cfg = FileBufferConfig::new(BufferLimits::records(4), Durability::Process);
    let wal = match FileBuffer::open(dir, cfg) {
        Err(Error::Corrupt { .. }) => return None,
        Err(e) => panic!("open failed with another error than Corrupt: {e}"),
        Ok(w) => w,
    };
    wal.seal().unwrap();
    let mut got = Vec::new();
    while let Some(b) = wal.emit().unwrap() {
        got.extend(b.records.iter().cloned());
        wal.commit(&b).unwrap();
    }
    Some(got)
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
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
    v.sort();
    v
}

fn write(dir: &Path, files: &[(String, Vec<u8>)]) {
    clear(dir);
    for (n, b) in files {
        std::fs::write(dir.join(n), b).unwrap();
    }
}

fn loss_check(u: &mut Unstructured<'_>) -> Result<()> {
    let durability = if u.arbitrary()? {
        Durability::PowerLoss
    } else {
        Durability::Process
    };
    let mut cfg = FileBufferConfig::new(BufferLimits::records(u.int_in_range(1..=6)?), durability);
    cfg.segment_bytes = u.int_in_range(64..=1024)?;
    let n: usize = u.int_in_range(1..=40)?;
    let src = scratch();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let wal = FileBuffer::open(src.path(), cfg).unwrap();
    for i in 0..n {
        let len: usize = u.int_in_range(1..=300)?;
        let byte: u8 = u.int_in_range(32..=126)?;
        let r = EncodedRecord::new(i.to_string(), format!("k{}", i % 3), vec![byte; len]);
        rt.block_on(wal.put(&r)).unwrap();
        if wal.should_emit() {
            let b = wal.emit().unwrap().unwrap();
            match u.int_in_range(0..=2)? {
                1 => wal.commit(&b).unwrap(),
                2 => {
                    let keep: Vec<usize> = (0..b.records.len()).filter(|i| i % 2 == 1).collect();
                    wal.narrow(&b, &keep).unwrap();
                }
                _ => {}
            }
        }
    }
    // As a kill leaves them: copied while the log is open.
    let good = files(src.path());
    drop(wal);
    let dir = scratch();
    write(dir.path(), &good);
    let truth = drain(dir.path()).expect("the undamaged log opens");
    let mut bad = good.clone();
    let mut zeroed_word = false;
    for _ in 0..u.int_in_range(1..=4)? {
        let f = u.choose_index(bad.len())?;
        let bytes = &mut bad[f].1;
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if written == 0 {
            continue;
        }
        let at = u.choose_index(written)?;
        let x: u8 = u.int_in_range(1..=255)?;
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!("damage: file {f} ({} bytes, {} written) at {at} ^= {x:#04x}", bytes.len(), written);
        }
        bytes[at] ^= x;
        let word = at / 8 * 8;
        zeroed_word |= bytes
            .get(word..word + 8)
            .is_some_and(|w| w.iter().all(|&b| b == 0));
        // Or zeroes 4 bytes in a row (a frame's checksum, the last field:
        // what a lost sector leaves).
        zeroed_word |= (at.saturating_sub(3)..=at).any(|s| {
            bytes.get(s..s + 4).is_some_and(|w| w.iter().all(|&b| b == 0))
        });
    }
    // Damage that zeroes a whole 8-byte header word or a checksum makes
    // exactly what a kill or a power loss leaves: the documented limits
    // (docs/guarantees.md), not checked.
    if zeroed_word {
        return Ok(());
    }
    write(dir.path(), &bad);
    if let Some(got) = drain(dir.path()) {
        if got != truth && std::env::var_os("FUZZ_DEBUG").is_some() {
            let ids = |v: &[EncodedRecord]| v.iter().map(|r| format!("{}:{}", r.id, r.data.len())).collect::<Vec<_>>();
            eprintln!("durability {durability:?}\ntruth {:?}\ngot   {:?}", ids(&truth), ids(&got));
            for (n, b) in &good {
                eprintln!("{n}: {} bytes", b.len());
                std::fs::write(format!("/tmp/dbg-{n}"), b).unwrap();
            }
            for (n, b) in &bad {
                std::fs::write(format!("/tmp/dbg-bad-{n}"), b).unwrap();
            }
        }
        assert!(got == truth, "damage lost or changed acknowledged records");
    }
    Ok(())
}

/// A directory in memory (`/dev/shm`) where there is one: the targets
/// write files (and power-loss mode syncs them) on every run.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fuzz_target!(|data: &[u8]| {
    scan(data);
    for version in [2u8, 3] {
        let mut segment = NAME.to_vec();
        segment.push(version);
        segment.extend_from_slice(data);
        scan(&segment);
        if data.first().is_some_and(|b| b % 4 == version) {
            let dir = scratch();
            std::fs::write(dir.path().join("00000000000000000001.wal"), &segment).unwrap();
            let _ = drain(dir.path());
        }
    }
    let _ = loss_check(&mut Unstructured::new(data));
});
