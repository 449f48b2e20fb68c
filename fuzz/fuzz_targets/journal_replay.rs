//! Checkpoint journal replay.
//!
//! - Any bytes as a journal (format 3 and 2) loaded by the file checkpoint
//!   store: no panic; an error is `Corrupt` or `CheckpointUnreadable`.
//! - Loss check: a journal written from the input (batch size — written or
//!   memory-mapped —, transitions), then 1–4 bytes changed as the input
//!   says: the load either refuses with `Error::Corrupt` or gives exactly
//!   the checkpoint the undamaged journal gives.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, ErrorInfo};
use unistream_local::{Durability, FileCheckpointStore};

const FILE: &str = "c1.00000000000000000001.journal";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Loads `bytes` as the journal: `None` if refused as corrupt.
fn load(bytes: &[u8], strict: bool) -> Option<StoredCheckpoint> {
    let dir = scratch();
    std::fs::write(dir.path().join(FILE), bytes).unwrap();
    rt().block_on(async {
        let mut store = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
        match store.load().await {
            Ok(s) => s,
            Err(Error::Corrupt { .. }) => None,
            Err(Error::CheckpointUnreadable { .. }) if !strict => None,
            Err(e) => panic!("load failed with another error: {e}"),
        }
    })
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap()
}

fn journal(u: &mut Unstructured<'_>, dir: &Path) -> Result<Vec<u8>> {
    let n: usize = if u.arbitrary()? {
        u.int_in_range(1..=30)?
    } else {
        u.int_in_range(256..=300)?
    };
    let steps: usize = u.int_in_range(0..=30)?;
    rt().block_on(async {
        let mut store = FileCheckpointStore::open(dir, "c1", Durability::Process).unwrap();
        store.load().await.unwrap();
        let mut cp = Checkpoint::new("c1", Pointer::from("0"), 3, Duration::from_secs(60));
        cp.start_batch(
            (0..n).map(|i| i.to_string()),
            Some(Pointer::new(n.to_string())),
            now(),
        )
        .unwrap();
        let records: Vec<SourceRecord> = (0..n)
            .map(|i| {
                SourceRecord::new(
                    Pointer::new(i.to_string()),
                    format!("{{\"id\":{i}}}").into_bytes(),
                )
            })
            .collect();
        store.save_batch(&cp, &records).await.unwrap();
        for _ in 0..steps {
            let i = u.choose_index(n)?;
            if cp.begin_attempt(i, "L", now()).is_err() {
                continue;
            }
            store.save_tracker(&cp, i).await.unwrap();
            match u.int_in_range(0..=2)? {
                1 => {
                    cp.succeed(i, "L", None, now()).unwrap();
                    store.save_tracker(&cp, i).await.unwrap();
                }
                2 => {
                    cp.fail(i, "L", ErrorInfo::new("boom"), now()).unwrap();
                    store.save_tracker(&cp, i).await.unwrap();
                }
                _ => {}
            }
            store.sync().await.unwrap();
        }
        // As a kill leaves it: read while the store is open.
        Ok(std::fs::read(dir.join(FILE)).unwrap())
    })
}

fn loss_check(u: &mut Unstructured<'_>) -> Result<()> {
    let dir = scratch();
    let good = journal(u, dir.path())?;
    let truth = load(&good, true).expect("the undamaged journal loads");
    let mut bad = good.clone();
    let written = bad.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut zeroed_word = false;
    for _ in 0..u.int_in_range(1..=4)? {
        let at = u.choose_index(written)?;
        let x = u.int_in_range(1..=255u8)?;
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!("damage at {at} ^= {x:#04x} ({} bytes, {written} written)", bad.len());
        }
        bad[at] ^= x;
        let word = at / 8 * 8;
        zeroed_word |= bad.get(word..word + 8).is_some_and(|w| w.iter().all(|&b| b == 0));
        // Or zeroes 4 bytes in a row (a frame's checksum, the last field:
        // what a lost sector leaves).
        zeroed_word |= (at.saturating_sub(3)..=at).any(|s| {
            bad.get(s..s + 4).is_some_and(|w| w.iter().all(|&b| b == 0))
        });
    }
    // Damage that zeroes a whole 8-byte header word or a checksum makes
    // exactly what a kill or a power loss leaves: the documented limits
    // (docs/guarantees.md), not checked.
    if zeroed_word {
        return Ok(());
    }
    if let Some(got) = load(&bad, true) {
        if got != truth && std::env::var_os("FUZZ_DEBUG").is_some() {
            std::fs::write("/tmp/dbg-journal", &good).unwrap();
            std::fs::write("/tmp/dbg-journal-bad", &bad).unwrap();
            eprintln!("truth {:?}\ngot   {:?}", truth.checkpoint, got.checkpoint);
        }
        assert!(got == truth, "damage changed the checkpoint");
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
    if let Some((&first, rest)) = data.split_first() {
        let mut bytes = b"USCKPT\0".to_vec();
        bytes.push(if first % 2 == 0 { 2 } else { 3 });
        bytes.extend_from_slice(rest);
        let _ = load(&bytes, false);
    }
    let _ = loss_check(&mut Unstructured::new(data));
});
