//! Named crash and corruption cases of the write-ahead log, one per test.

use std::path::{Path, PathBuf};

use unistream_buffer::frame::{Frame, MAGIC, frames};
use unistream_buffer::{FileBuffer, FileBufferConfig, Recovery};
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

fn opts(max_records: usize) -> FileBufferConfig {
    FileBufferConfig::new(BufferLimits::records(max_records), Durability::Process)
}

/// Options that start a new segment file after every batch.
fn tiny_files(max_records: usize) -> FileBufferConfig {
    let mut config = opts(max_records);
    config.segment_bytes = 1;
    config
}

/// `config` with damaged segments set aside.
fn setting_aside(mut config: FileBufferConfig) -> FileBufferConfig {
    config.recovery = Recovery::SetAsideDamaged;
    config
}

/// `(start, end)` of each frame of a segment that is not padding (process
/// mode maps segments and pads its appends; see `FrameFile`).
fn frame_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
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

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Every record still in the log, in emit order, by sealing and draining it.
fn drain(wal: &FileBuffer) -> Vec<String> {
    wal.seal().unwrap();
    let mut ids = Vec::new();
    while let Some(b) = wal.emit().unwrap() {
        ids.extend(b.records.iter().map(|r| r.id.clone()));
        wal.commit(&b).unwrap();
    }
    ids
}

async fn filled(dir: &Path, max_records: usize, n: u32) {
    let wal = FileBuffer::open(dir, opts(max_records)).unwrap();
    for i in 1..=n {
        wal.put(&rec(i)).await.unwrap();
    }
}

#[tokio::test]
async fn torn_tail_at_every_byte_offset_of_the_last_frame() {
    let src = tempfile::tempdir().unwrap();
    filled(src.path(), 100, 3).await;
    let seg = segments(src.path()).pop().unwrap();
    let full = std::fs::read(&seg).unwrap();
    let (last_start, last_end) = *frame_spans(&full).last().unwrap();
    for cut in last_start..last_end {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &full[..cut]).unwrap();
        let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
        assert_eq!(wal.stats().records, 2, "cut at {cut}");
        assert_eq!(
            std::fs::metadata(dir.path().join(seg.file_name().unwrap()))
                .unwrap()
                .len(),
            last_start as u64
        );
        // The repaired log takes new records and keeps them.
        wal.put(&rec(4)).await.unwrap();
        drop(wal);
        let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
        assert_eq!(drain(&wal), ["1", "2", "4"], "cut at {cut}");
    }
}

#[tokio::test]
async fn a_garbled_last_frame_is_damage_but_a_lost_sector_is_a_torn_tail() {
    // Written (not mapped) appends. A garbled byte in the last frame is
    // damage (issue 22: it was taken for a torn tail and record 3 dropped);
    // a power loss that kept the file's length but not its last sector
    // leaves zeros from a 512-byte boundary: that is a torn tail.
    let dir = tempfile::tempdir().unwrap();
    {
        let options = FileBufferConfig::new(BufferLimits::records(100), Durability::PowerLoss);
        let wal = FileBuffer::open(dir.path(), options).unwrap();
        for i in 1..=2 {
            wal.put(&rec(i)).await.unwrap();
        }
        let big = EncodedRecord::new("3", "k", vec![b'x'; 1500]);
        wal.put(&big).await.unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let mut garbled = bytes.clone();
    let n = garbled.len();
    garbled[n - 20] ^= 0xff;
    std::fs::write(&seg, &garbled).unwrap();
    match FileBuffer::open(dir.path(), opts(100)) {
        Err(Error::Corrupt { path, reason, .. }) => {
            assert_eq!(path, seg);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let mut lost_sector = bytes.clone();
    lost_sector[1024..].fill(0);
    std::fs::write(&seg, &lost_sector).unwrap();
    let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
    assert_eq!(drain(&wal), ["1", "2"]);
}

#[tokio::test]
async fn a_flipped_bit_mid_segment_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 100, 3).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = frame_spans(&bytes)[1].0;
    bytes[second + 12] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    match FileBuffer::open(dir.path(), opts(100)) {
        Err(Error::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, second as u64);
            assert!(
                reason.contains("checksum") && reason.contains("SetAsideDamaged"),
                "{reason}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // The documented way past it: set the segment aside.
    let wal = FileBuffer::open(dir.path(), setting_aside(opts(100))).unwrap();
    assert_eq!(wal.stats().records, 0);
    assert!(
        dir.path()
            .join("damaged")
            .join(seg.file_name().unwrap())
            .exists()
    );
}

#[tokio::test]
async fn a_missing_segment_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(dir.path(), tiny_files(1)).unwrap();
    for i in 1..=3 {
        wal.put(&rec(i)).await.unwrap();
    }
    drop(wal);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 4, "a file per batch, and the active one");
    std::fs::remove_file(&segs[1]).unwrap();
    let err = FileBuffer::open(dir.path(), tiny_files(1)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    let options = setting_aside(tiny_files(1));
    let wal = FileBuffer::open(dir.path(), options).unwrap();
    assert_eq!(drain(&wal), ["1", "3"]);
}

#[tokio::test]
async fn leftover_files_and_a_cut_segment_header_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(dir.path(), tiny_files(2)).unwrap();
    for i in 1..=2 {
        wal.put(&rec(i)).await.unwrap();
    }
    drop(wal); // segment 1 holds batch [1, 2]; segment 2 is the empty active one
    std::fs::remove_file(segments(dir.path()).pop().unwrap()).unwrap();
    // A crash while creating segment 2 left only part of its header, and an
    // editor left a temporary file.
    std::fs::write(dir.path().join(format!("{:020}.wal", 2)), &MAGIC[..3]).unwrap();
    std::fs::write(dir.path().join(format!("{:020}.wal.tmp", 9)), b"junk").unwrap();
    let wal = FileBuffer::open(dir.path(), tiny_files(2)).unwrap();
    wal.put(&rec(3)).await.unwrap();
    assert_eq!(drain(&wal), ["1", "2", "3"]);
}

#[tokio::test]
async fn limits_may_change_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 10, 5).await; // all 5 in the active segment
    let wal = FileBuffer::open(dir.path(), opts(2)).unwrap();
    let b = wal
        .emit()
        .unwrap()
        .expect("the over-full active segment was sealed on open");
    assert_eq!(b.records.len(), 5);
    wal.commit(&b).unwrap();
    for i in 6..=9 {
        wal.put(&rec(i)).await.unwrap();
    }
    assert_eq!(
        wal.stats().sealed_batches,
        2,
        "new puts follow the new limit"
    );
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
    assert_eq!(drain(&wal), ["6", "7", "8", "9"]);
}

#[tokio::test]
async fn fifo_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 3, 7).await;
    let wal = FileBuffer::open(dir.path(), opts(3)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    assert_eq!(b, wal.emit().unwrap().unwrap(), "emit repeats until commit");
    assert_eq!(
        b.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(b.records[0].partition_key, "key-1");
    assert_eq!(b.records[0].data, rec(1).data);
    assert_eq!(drain(&wal), ["1", "2", "3", "4", "5", "6", "7"]);
}

#[tokio::test]
async fn narrowing_and_commit_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 4, 8).await;
    let wal = FileBuffer::open(dir.path(), opts(4)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    wal.narrow(&b, &[1, 3]).unwrap(); // "2" and "4" were not accepted
    let b = wal.emit().unwrap().unwrap();
    assert_eq!(
        b.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["2", "4"]
    );
    assert_eq!(wal.stats().records, 6);
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(4)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    assert_eq!(
        b.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["2", "4"]
    );
    wal.narrow(&b, &[1]).unwrap();
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(4)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    assert_eq!(
        b.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["4"]
    );
    wal.commit(&b).unwrap();
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(4)).unwrap();
    assert_eq!(drain(&wal), ["5", "6", "7", "8"]);
}

#[tokio::test]
async fn a_torn_narrow_frame_falls_back_to_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 3, 4).await;
    let wal = FileBuffer::open(dir.path(), opts(3)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    wal.narrow(&b, &[2]).unwrap();
    drop(wal);
    let seg = segments(dir.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    // The narrow frame is the last one of the (single) segment file.
    let (_, narrow_end) = *frame_spans(&bytes).last().unwrap();
    std::fs::write(&seg, &bytes[..narrow_end - 3]).unwrap();
    let wal = FileBuffer::open(dir.path(), opts(3)).unwrap();
    // The narrowing is lost: the whole batch is sent again (at-least-once).
    assert_eq!(drain(&wal), ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn the_byte_cap_refuses_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cap = (rec(1).data.len() + rec(2).data.len()) as u64;
    let wal = FileBuffer::open(
        dir.path(),
        FileBufferConfig::new(
            BufferLimits::records(10).with_max_total_bytes(cap),
            Durability::Process,
        ),
    )
    .unwrap();
    wal.put(&rec(1)).await.unwrap();
    wal.put(&rec(2)).await.unwrap();
    assert!(matches!(
        wal.put(&rec(3)).await,
        Err(Error::BufferFull { .. })
    ));
    assert!(matches!(
        wal.put_many(&[rec(4)]).await,
        Err(Error::BufferFull { .. })
    ));
    assert_eq!(drain(&wal), ["1", "2"]);
    wal.put(&rec(5)).await.unwrap();
}

#[tokio::test]
async fn one_open_log_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = FileBuffer::open(dir.path(), opts(3)).unwrap();
    assert!(matches!(
        FileBuffer::open(dir.path(), opts(3)),
        Err(Error::Locked { .. })
    ));
}

#[tokio::test]
async fn put_many_spans_segments_and_shares_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileBufferConfig::new(BufferLimits::records(1000), Durability::PowerLoss);
    let wal = FileBuffer::open(dir.path(), o).unwrap();
    let batch: Vec<_> = (1..=250).map(rec).collect();
    wal.put_many(&batch).await.unwrap();
    assert_eq!(wal.group_syncs(), 1);
    drop(wal);
    let o = FileBufferConfig::new(BufferLimits::records(100), Durability::PowerLoss);
    let wal = FileBuffer::open(dir.path(), o).unwrap();
    wal.put_many(&(251..=500).map(rec).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        wal.stats().sealed_batches,
        3,
        "250 + 250 records with a limit of 100: [250], [100], [100], active [50]"
    );
    let ids = drain(&wal);
    assert_eq!(ids, (1..=500).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_puts_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileBufferConfig::new(BufferLimits::records(1000), Durability::PowerLoss);
    let wal = FileBuffer::open(dir.path(), o).unwrap();
    let tasks: Vec<_> = (1..=50)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.put(&rec(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // One task leads a sync while the others write; they share the next.
    assert!(
        wal.group_syncs() <= 5,
        "{} syncs for 50 puts",
        wal.group_syncs()
    );
    assert_eq!(wal.stats().records, 50);
}

#[tokio::test]
async fn committed_files_are_deleted_and_ids_keep_growing_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(dir.path(), tiny_files(2)).unwrap();
    for i in 1..=6 {
        wal.put(&rec(i)).await.unwrap();
    }
    assert_eq!(segments(dir.path()).len(), 4);
    let first = wal.emit().unwrap().unwrap();
    wal.commit(&first).unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        3,
        "the committed batch's file is gone"
    );
    drop(wal);
    let wal = FileBuffer::open(dir.path(), tiny_files(2)).unwrap();
    let second = wal.emit().unwrap().unwrap();
    assert!(second.id > first.id);
    assert_eq!(drain(&wal), ["3", "4", "5", "6"]);
    wal.put(&rec(7)).await.unwrap();
    wal.seal().unwrap();
    let next = wal.emit().unwrap().unwrap();
    assert!(
        next.id > second.id,
        "ids never restart: {} after {}",
        next.id,
        second.id
    );
    drop(wal);
    let wal = FileBuffer::open(dir.path(), tiny_files(2)).unwrap();
    assert_eq!(drain(&wal), ["7"]);
}

#[tokio::test]
async fn many_batches_share_a_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 2, 40).await;
    assert_eq!(segments(dir.path()).len(), 1);
    let wal = FileBuffer::open(dir.path(), opts(2)).unwrap();
    assert_eq!(wal.stats().sealed_batches, 20);
    let b = wal.emit().unwrap().unwrap();
    wal.narrow(&b, &[1]).unwrap();
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(2)).unwrap();
    let ids = drain(&wal);
    assert_eq!(ids.len(), 39);
    assert_eq!(ids[0], "2");
}

#[tokio::test]
async fn explicit_hash_keys_survive_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(dir.path(), opts(2)).unwrap();
    wal.put(&rec(1)).await.unwrap();
    wal.put(&rec(2).with_explicit_hash_key(Some("170141183460469231731687303715884105728".into())))
        .await
        .unwrap();
    drop(wal);
    let wal = FileBuffer::open(dir.path(), opts(2)).unwrap();
    let b = wal.emit().unwrap().unwrap();
    assert_eq!(b.records[0].explicit_hash_key, None);
    assert_eq!(
        b.records[1].explicit_hash_key.as_deref(),
        Some("170141183460469231731687303715884105728")
    );
    assert_eq!(b.records[1].data, rec(2).data);
}

/// What `kill -9` leaves of a mapped segment: the file as it is while the
/// log is open (preallocated zeros after the frames), and the same with a
/// last append copied but not published (its first 8 bytes still zero).
#[tokio::test]
async fn a_mapped_segment_as_a_kill_leaves_it_reopens() {
    let src = tempfile::tempdir().unwrap();
    let wal = FileBuffer::open(src.path(), opts(100)).unwrap();
    for i in 1..=3 {
        wal.put(&rec(i)).await.unwrap();
    }
    let seg = segments(src.path()).pop().unwrap();
    let live = std::fs::read(&seg).unwrap();
    let mut it = frames(&live);
    assert_eq!(it.by_ref().filter(|f| f.is_err()).count(), 0);
    let end = it.valid_len() as usize;
    assert!(live.len() > end, "a mapped segment is preallocated");
    assert!(live[end..].iter().all(|&b| b == 0));
    wal.put(&rec(4)).await.unwrap();
    let after = std::fs::read(&seg).unwrap();
    let (start4, end4) = *frame_spans(&after).last().unwrap();
    let mut unpublished = after.clone();
    unpublished[start4..start4 + 8].fill(0);
    assert!(unpublished[start4 + 8..end4].iter().any(|&b| b != 0));
    for (name, bytes, want) in [
        ("preallocated", &live, vec!["1", "2", "3"]),
        ("unpublished", &unpublished, vec!["1", "2", "3"]),
        ("published", &after, vec!["1", "2", "3", "4"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(seg.file_name().unwrap()), bytes).unwrap();
        let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
        wal.put(&rec(9)).await.unwrap();
        drop(wal);
        let wal = FileBuffer::open(dir.path(), opts(100)).unwrap();
        let mut want = want.clone();
        want.push("9");
        assert_eq!(drain(&wal), want, "{name}");
    }
}
