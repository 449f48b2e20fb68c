//! Damage in a checkpoint journal is never taken for a torn tail (issue
//! 22). Deterministic: every single-byte change of the first entries, one in
//! the middle and the last; every length set past the end. Property: random
//! damage (1–4 bytes) over written and memory-mapped journals of random
//! transitions, many seeds. The oracle: the undamaged journal loads the
//! checkpoint as saved; the damaged one must load the same checkpoint or be
//! refused with `Error::Corrupt` — a torn last entry (cut at every offset)
//! is still dropped.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, ErrorInfo};
use unistream_local::framing;
use unistream_local::{Durability, FileCheckpointStore};

const NAME: &[u8; 7] = b"USCKPT\0";

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A journal of `n` records and the transitions `steps` (record, outcome:
/// 0 begin only, 1 begin + succeed, 2 begin + fail), each synced. Returns
/// its file name and bytes as a kill leaves them (copied while open).
fn journal(n: usize, steps: &[(usize, u8)]) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut store = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
        assert!(store.load().await.unwrap().is_none());
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
        for &(i, outcome) in steps {
            let i = i % n;
            if cp.begin_attempt(i, "L", now()).is_err() {
                continue;
            }
            store.save_tracker(&cp, i).await.unwrap();
            match outcome {
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
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "journal"))
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        drop(store);
        (
            path.file_name().unwrap().to_string_lossy().into_owned(),
            bytes,
        )
    })
}

/// Loads `bytes` as the only journal: `Ok(None)` if refused as corrupt.
fn load(dir: &Path, name: &str, bytes: &[u8]) -> Result<Option<StoredCheckpoint>, String> {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::write(dir.join(name), bytes).unwrap();
    rt().block_on(async {
        let mut store = FileCheckpointStore::open(dir, "c1", Durability::Process).unwrap();
        match store.load().await {
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, dir.join(name));
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
            Ok(Some(s)) => Ok(Some(s)),
            Ok(None) => Err("no checkpoint".into()),
        }
    })
}

fn spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut it = framing::raw_frames(bytes, NAME);
    let mut starts: Vec<usize> = it.by_ref().map(|f| f.unwrap().0 as usize).collect();
    starts.push(it.valid_len() as usize);
    starts.windows(2).map(|w| (w[0], w[1])).collect()
}

#[test]
fn every_single_byte_change_is_refused_or_harmless() {
    let steps: Vec<(usize, u8)> = (0..6).map(|i| (i, (i % 3) as u8)).collect();
    for n in [4, 300] {
        let (name, bytes) = journal(n, &steps);
        let dir = tempfile::tempdir().unwrap();
        let truth = load(dir.path(), &name, &bytes).unwrap().unwrap();
        let s = spans(&bytes);
        let chosen = [s[0], s[1], s[s.len() / 2], s[s.len() - 1]];
        let (mut refused, mut harmless, mut lost) = (0u32, 0u32, Vec::new());
        for (start, end) in chosen {
            // The mapped journal (300 records) is slow to load in a debug
            // build: there, 51 values of each header byte, and every 29th
            // byte of a payload, 5 values each.
            let (stride, header_values, values) = if n > 100 { (29, 5, 51) } else { (1, 1, 17) };
            for at in
                (start..end).filter(|at| at - start < framing::FRAME_HEADER || at % stride == 0)
            {
                // Every value in the header; 16 values a byte in payloads.
                let step = if at - start < framing::FRAME_HEADER {
                    header_values
                } else {
                    values
                };
                for v in (0..=255u8).step_by(step) {
                    if v == bytes[at] {
                        continue;
                    }
                    let mut bad = bytes.clone();
                    bad[at] = v;
                    match load(dir.path(), &name, &bad) {
                        Ok(None) => refused += 1,
                        Ok(Some(s)) if s == truth => harmless += 1,
                        other => {
                            lost.push(format!("byte {at} = {v}: {:?}", other.map(|o| o.is_some())))
                        }
                    }
                }
            }
        }
        eprintln!(
            "journal of {n} records: {refused} refused, {harmless} harmless, {} lost",
            lost.len()
        );
        assert!(lost.is_empty(), "{}", lost[..lost.len().min(10)].join("\n"));
        // Lengths past the end.
        for (start, _) in chosen {
            for len in [u32::MAX, (bytes.len() - start) as u32, 1 << 24] {
                let mut bad = bytes.clone();
                bad[start..start + 4].copy_from_slice(&len.to_le_bytes());
                assert_eq!(
                    load(dir.path(), &name, &bad),
                    Ok(None),
                    "length {len} at {start}"
                );
            }
        }
        // A true torn tail: the last entry cut at every offset.
        let (start, end) = s[s.len() - 1];
        for cut in start + 1..end {
            let got = load(dir.path(), &name, &bytes[..cut]).unwrap();
            assert!(
                got.is_some_and(|g| g != truth),
                "cut at {cut}: the entry is dropped, the rest loads"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_damage_is_refused_or_harmless(
        n in prop_oneof![1usize..40, 256usize..300],
        steps in prop::collection::vec((0usize..400, 0u8..3), 0..40),
        at in any::<u64>(),
        damage in prop::collection::vec(1u8..=255, 1..5),
    ) {
        let (name, bytes) = journal(n, &steps);
        let dir = tempfile::tempdir().unwrap();
        let truth = load(dir.path(), &name, &bytes).unwrap().expect("the undamaged journal loads");
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let start = (at % written as u64) as usize;
        let mut bad = bytes.clone();
        for (i, x) in damage.iter().enumerate() {
            if let Some(b) = bad.get_mut(start + i) {
                *b ^= x;
            }
        }
        match load(dir.path(), &name, &bad) {
            Ok(None) => {}
            Ok(Some(got)) => prop_assert!(got == truth, "loaded another checkpoint"),
            Err(e) => prop_assert!(false, "not a corruption error: {}", e),
        }
    }
}
