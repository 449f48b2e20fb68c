//! Checkpoint journals of format 2 (written by the code before issue 22,
//! committed in `tests/fixtures/format2/`, copied while the store was open
//! — as a kill leaves them) load, are rewritten in format 3 before anything
//! is appended, and their torn last entry is still dropped.

use std::path::Path;

use unistream_core::checkpoint::{CheckpointStore, Status};
use unistream_local::{Durability, FileCheckpointStore};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format2");
const JOURNAL: &str = "c1.00000000000000000001.journal";

fn copy(name: &str, bytes: Option<&[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(FIXTURES).join(name).join(JOURNAL);
    match bytes {
        Some(b) => std::fs::write(dir.path().join(JOURNAL), b).unwrap(),
        None => {
            std::fs::copy(from, dir.path().join(JOURNAL)).unwrap();
        }
    }
    dir
}

fn statuses(store_dir: &Path) -> Vec<Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut store = FileCheckpointStore::open(store_dir, "c1", Durability::Process).unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        loaded
            .checkpoint
            .trackers()
            .iter()
            .map(|t| t.status)
            .collect()
    })
}

#[test]
fn format_2_journals_load_and_are_rewritten_in_format_3() {
    for (name, n) in [("journal-mapped", 300), ("journal-written", 3)] {
        let dir = copy(name, None);
        let st = statuses(dir.path());
        assert_eq!(st.len(), n, "{name}");
        assert_eq!(st[0], Status::Succeeded, "{name}");
        assert_eq!(st[1], Status::InProgress, "{name}");
        let bytes = std::fs::read(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(&bytes[..8], b"USCKPT\0\x03", "{name}: rewritten");
        // It goes on in format 3.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut store =
                FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
            let loaded = store.load().await.unwrap().unwrap();
            let mut cp = loaded.checkpoint;
            let now = chrono::DateTime::from_timestamp(1_704_781_500, 0).unwrap();
            cp.succeed(1, "L", None, now).unwrap();
            store.save_tracker(&cp, 1).await.unwrap();
            store.sync().await.unwrap();
        });
        assert_eq!(statuses(dir.path())[1], Status::Succeeded, "{name}");
    }
}

/// `(start, end)` of each format 2 frame that is not padding.
fn v2_frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 9 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 && bytes[at + 4..at + 8] == [0; 4] {
            break;
        }
        if bytes[at + 8] != 0 {
            out.push((at, at + 9 + len));
        }
        at += 9 + len;
    }
    out
}

#[test]
fn a_torn_last_entry_of_a_format_2_journal_is_dropped() {
    for name in ["journal-mapped", "journal-written"] {
        let bytes = std::fs::read(Path::new(FIXTURES).join(name).join(JOURNAL)).unwrap();
        let (start, end) = *v2_frames(&bytes).last().unwrap();
        // The last entry starts record 1's attempt: without it, record 1
        // is pending again.
        for cut in (start + 1..end).step_by(3) {
            let dir = copy(name, Some(&bytes[..cut]));
            let st = statuses(dir.path());
            assert_eq!(
                (st[0], st[1]),
                (Status::Succeeded, Status::Pending),
                "{name}: cut at {cut}"
            );
        }
    }
}

#[test]
fn a_damaged_format_2_entry_followed_by_others_is_refused() {
    let bytes = std::fs::read(Path::new(FIXTURES).join("journal-written").join(JOURNAL)).unwrap();
    let (start, _) = v2_frames(&bytes)[1];
    let mut bad = bytes.clone();
    bad[start..start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let dir = copy("journal-written", Some(&bad));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut store = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
        match store.load().await {
            Err(unistream_core::Error::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, start as u64);
                assert!(reason.contains("records and"), "{reason}");
            }
            other => panic!("expected a corruption, got {other:?}"),
        }
    });
}
