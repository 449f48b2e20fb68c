//! Tests of the file checkpoint store: round trips, torn and corrupt
//! journals, crash states, the mapped journal.

use super::journal::{decode_tracker, encode_tracker};
use super::*;
use std::time::Duration;
use unistream_core::ErrorInfo;
use unistream_core::checkpoint::Status;
use unistream_core::checkpoint::Tracker;

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_704_781_446, 0).unwrap()
}

fn records(n: usize) -> Vec<SourceRecord> {
    (0..n)
        .map(|i| {
            SourceRecord::new(
                Pointer::new(i.to_string()),
                format!("{{\"id\": \"{i}\"}}").into_bytes(),
            )
        })
        .collect()
}

/// The test consumer's store in `dir`, in process-crash mode.
fn open_store(dir: &Path) -> FileCheckpointStore {
    FileCheckpointStore::open(dir, "c/1 ü", Durability::Process).unwrap()
}

async fn store_with_batch(dir: &Path, n: usize) -> (FileCheckpointStore, Checkpoint) {
    let mut store = open_store(dir);
    assert!(store.load().await.unwrap().is_none());
    let mut cp = Checkpoint::new("c/1 ü", Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(
        (0..n).map(|i| i.to_string()),
        Some(Pointer::new(n.to_string())),
        now(),
    )
    .unwrap();
    store.save_batch(&cp, &records(n)).await.unwrap();
    (store, cp)
}

/// Offsets of the journal's frames, padding left out.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    framing::raw_frames(bytes, NAME)
        .map(|f| f.unwrap())
        .filter(|f| f.1 != KIND_PADDING)
        .map(|f| f.0 as usize)
        .collect()
}

fn journal_of(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "journal"))
        .unwrap()
}

#[tokio::test]
async fn round_trip_of_batch_transitions_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 3).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    cp.succeed(0, "L", None, now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    cp.begin_attempt(1, "M", now()).unwrap();
    store.save_tracker(&cp, 1).await.unwrap();
    cp.fail(1, "M", ErrorInfo::new("x"), now()).unwrap();
    store.save_tracker(&cp, 1).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let mut store = open_store(dir.path());
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.checkpoint, cp);
    assert_eq!(loaded.records, records(3));
    assert!(
        journal_of(dir.path())
            .to_string_lossy()
            .contains("c%2F1%20%C3%BC.")
    );
}

#[tokio::test]
async fn unsynced_changes_are_not_on_disk_and_synced_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    let len_before = std::fs::metadata(journal_of(dir.path())).unwrap().len();
    store.sync().await.unwrap();
    assert!(std::fs::metadata(journal_of(dir.path())).unwrap().len() > len_before);
}

#[tokio::test]
async fn a_torn_last_entry_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    let expected = cp.clone();
    cp.succeed(0, "L", None, now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let path = journal_of(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    // Cut the last entry in half, as a crash mid-write would.
    let last_start = *frame_offsets(&bytes).last().unwrap();
    let cut = last_start + (bytes.len() - last_start) / 2;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let mut store = open_store(dir.path());
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.checkpoint, expected);
    assert_eq!(loaded.checkpoint.trackers()[0].status, Status::InProgress);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
    // The store keeps working after the repair.
    let mut cp = loaded.checkpoint;
    cp.recover(now(), true);
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let mut store = open_store(dir.path());
    assert_eq!(store.load().await.unwrap().unwrap().checkpoint, cp);
}

#[tokio::test]
async fn a_corrupt_entry_in_the_middle_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
    for (i, l) in [(0, "A"), (1, "B")] {
        cp.begin_attempt(i, l, now()).unwrap();
        store.save_tracker(&cp, i).await.unwrap();
    }
    store.sync().await.unwrap();
    drop(store);
    let path = journal_of(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Frame 3 (first tracker) comes after the batch and the 2 records.
    let offset = frame_offsets(&bytes)[3];
    bytes[offset + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let mut store = open_store(dir.path());
    match store.load().await {
        Err(Error::Corrupt {
            path: p,
            offset: o,
            reason,
        }) => {
            assert_eq!(p, path);
            assert_eq!(o, offset as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_journal_missing_records_is_unreadable_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_batch(dir.path(), 3).await;
    drop(store);
    let path = journal_of(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    // Keep the batch frame and the first record only.
    std::fs::write(&path, &bytes[..frame_offsets(&bytes)[2]]).unwrap();
    let mut store = open_store(dir.path());
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, Error::CheckpointUnreadable { .. }), "{err}");
    assert!(err.to_string().contains("1 of its 3 records"), "{err}");
}

#[tokio::test]
async fn a_crash_before_the_rename_keeps_the_previous_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    cp.succeed(0, "L", None, now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    cp.commit().unwrap();
    store.save_commit(&cp).await.unwrap();
    drop(store);
    // A half-written next journal, as a crash during save_batch leaves it.
    let tmp = dir
        .path()
        .join(format!("{}.{:020}.journal.tmp", file_stem("c/1 ü"), 2));
    std::fs::write(&tmp, b"0000").unwrap();
    let mut store = open_store(dir.path());
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.checkpoint, cp);
    assert!(loaded.checkpoint.is_committed());
    assert!(!tmp.exists(), "leftover temp file removed");
}

#[tokio::test]
async fn a_new_batch_replaces_the_old_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 1).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    cp.succeed(0, "L", None, now()).unwrap();
    cp.start_batch(["x".into()], Some(Pointer::from("2")), now())
        .unwrap();
    store.save_batch(&cp, &records(1)).await.unwrap();
    // The old journal is deleted in the background; closing waits.
    drop(store);
    let journals: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".journal"))
        .collect();
    assert_eq!(
        journals,
        vec![format!("{}.{:020}.journal", file_stem("c/1 ü"), 2)]
    );
}

#[tokio::test]
async fn binary_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileCheckpointStore::open(dir.path(), "b", Durability::PowerLoss).unwrap();
    let mut cp = Checkpoint::new("b", Pointer::from("0"), 3, Duration::from_secs(60));
    cp.start_batch(["x".into()], Some(Pointer::from("1")), now())
        .unwrap();
    let recs = vec![SourceRecord::new(
        Pointer::from("0"),
        vec![0xff, 0x00, b'\n', 0x80],
    )];
    store.save_batch(&cp, &recs).await.unwrap();
    drop(store);
    let mut store = FileCheckpointStore::open(dir.path(), "b", Durability::Process).unwrap();
    assert_eq!(store.load().await.unwrap().unwrap().records, recs);
}

#[test]
fn every_tracker_field_round_trips() {
    let t0 = now();
    let mut full = Tracker::new("id \u{1F600} \"x\"".into(), t0);
    full.status = Status::Exhausted;
    full.attempts = 7;
    full.update_time = t0 + chrono::Duration::nanoseconds(123_456_789);
    full.lock = Some("lock-1".into());
    full.lock_time = Some(t0 + chrono::Duration::seconds(1));
    full.lock_expire_time = Some(t0 + chrono::Duration::seconds(61));
    full.first_attempt_time = Some(t0 - chrono::Duration::seconds(5));
    full.data = Some(serde_json::json!({"k": [1, "two", null]}));
    full.errors = Some(ErrorInfo {
        message: "outer".into(),
        causes: vec!["inner".into(), "root\n".into()],
    });
    full.dead_lettered = true;
    let mut bare = full.clone();
    (bare.lock, bare.lock_time, bare.data, bare.errors) = (None, None, None, None);
    bare.dead_lettered = false;
    for t in [full, bare] {
        let mut out = Vec::new();
        encode_tracker(&mut out, &t);
        let mut c = Cursor::new(&out);
        assert_eq!(decode_tracker(&mut c), Some(t));
        assert!(c.is_empty());
        // Every strict prefix is malformed, never a panic or a wrong value.
        for cut in 0..out.len() {
            let mut c = Cursor::new(&out[..cut]);
            assert_eq!(decode_tracker(&mut c), None, "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn a_cut_at_every_byte_of_the_last_entry_loses_only_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 2).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    let expected = cp.clone();
    cp.fail(0, "L", ErrorInfo::new("boom"), now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let path = journal_of(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let last = *frame_offsets(&bytes).last().unwrap();
    // Where the entry ends (padding may follow it).
    let all: Vec<_> = framing::raw_frames(&bytes, NAME)
        .map(|f| f.unwrap().0 as usize)
        .collect();
    let end = all
        .iter()
        .copied()
        .find(|&o| o > last)
        .unwrap_or(bytes.len());
    for cut in last..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let mut store = open_store(dir.path());
        let loaded = store.load().await.unwrap().unwrap();
        if cut < end {
            assert_eq!(loaded.checkpoint, expected, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
        } else {
            assert_eq!(loaded.checkpoint, cp, "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn a_file_in_another_format_is_reported_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_batch(dir.path(), 1).await;
    drop(store);
    let path = journal_of(dir.path());
    // What the development version's text journal looked like.
    std::fs::write(&path, b"0badc0de {\"t\":\"commit\"}\n").unwrap();
    let mut store = open_store(dir.path());
    match store.load().await {
        Err(Error::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!((p, offset), (path, 0));
            assert!(reason.contains("magic"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// What `kill -9` leaves of a memory-mapped journal: the file as it is
/// while the store is open (preallocated zeros after the entries), and
/// the same with a last group copied but not published.
#[tokio::test]
async fn a_mapped_journal_as_a_kill_leaves_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut cp) = store_with_batch(dir.path(), 300).await;
    cp.begin_attempt(0, "L", now()).unwrap();
    store.save_tracker(&cp, 0).await.unwrap();
    store.sync().await.unwrap();
    let published = cp.clone();
    let path = journal_of(dir.path());
    let live = std::fs::read(&path).unwrap();
    let entries = framing::raw_frames(&live, NAME).fold(0, |_, f| {
        let (o, _, p) = f.unwrap();
        o as usize + framing::frame_size(p.len())
    });
    if cfg!(target_os = "linux") {
        assert!(live.len() > entries, "preallocated: {}", live.len());
        assert!(live[entries..].iter().all(|&b| b == 0));
    }
    // The next group, copied but for its first 8 bytes.
    cp.succeed(0, "L", None, now()).unwrap();
    let mut group = Vec::new();
    frame(&mut group, KIND_TRACKER, |o| {
        o.extend_from_slice(&0u32.to_le_bytes());
        encode_tracker(o, &cp.trackers()[0]);
    })
    .unwrap();
    let mut killed = live.clone();
    killed.resize(killed.len().max(entries + group.len() + 4096), 0);
    killed[entries + 8..entries + group.len()].copy_from_slice(&group[8..]);
    for (name, bytes) in [("preallocated", &live), ("unpublished", &killed)] {
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(path.file_name().unwrap()), bytes).unwrap();
        let mut s2 = open_store(other.path());
        let loaded = s2.load().await.unwrap().unwrap();
        assert_eq!(loaded.checkpoint, published, "{name}");
        // It goes on from there.
        s2.save_tracker(&cp, 0).await.unwrap();
        s2.sync().await.unwrap();
        drop(s2);
        let mut s3 = open_store(other.path());
        assert_eq!(s3.load().await.unwrap().unwrap().checkpoint, cp, "{name}");
    }
    // A clean close gives the preallocated space back.
    drop(store);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, entries);
}
