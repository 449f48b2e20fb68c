//! Property tests: any sequence of put / put_many / seal / emit+commit /
//! emit+narrow / reopen (with other limits) against a model queue delivers
//! every record exactly once, batches come out in put order, and the
//! segment count the buffer reports (from its bookkeeping) is the number of
//! segment files in its directory; the segment reader never panics on
//! arbitrary bytes.

use std::collections::VecDeque;

use proptest::prelude::*;
use unistream_buffer::frame::{MAGIC, encode_record, frames};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    PutMany(usize, usize),
    Seal,
    Commit,
    /// Keep the records whose bit is set.
    Narrow(u64),
    Reopen(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300).prop_map(Op::Put),
        2 => (1usize..12, 0usize..100).prop_map(|(n, s)| Op::PutMany(n, s)),
        1 => Just(Op::Seal),
        2 => Just(Op::Commit),
        2 => any::<u64>().prop_map(Op::Narrow),
        1 => (1usize..6, 50u64..2000).prop_map(|(r, b)| Op::Reopen(r, b)),
    ]
}

fn record(n: u64, size: usize) -> EncodedRecord {
    EncodedRecord::new(n.to_string(), format!("k{}", n % 3), vec![b'x'; size])
}

fn open(dir: &std::path::Path, max_records: usize, max_bytes: u64) -> FileBuffer {
    let limits = BufferLimits::records(max_records).with_max_bytes(max_bytes);
    // Small segment files, so that batches span several of them.
    let mut options = FileBufferConfig::new(limits, Durability::Process);
    options.segment_bytes = max_bytes * 2;
    FileBuffer::open(dir, options).unwrap()
}

/// The segment files in `dir`.
fn segment_files(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count() as u64
}

/// Reads all frames; checks what a scan may claim.
fn scan(bytes: &[u8]) {
    let mut it = frames(bytes);
    let mut n = 0;
    for item in it.by_ref() {
        if item.is_err() {
            return;
        }
        n += 1;
        assert!(n <= bytes.len());
    }
    assert!(it.valid_len() <= bytes.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_record_is_delivered_exactly_once_in_order(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut wal = open(dir.path(), 3, 500);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut delivered: Vec<u64> = Vec::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Put(size) => {
                        wal.put(&record(next, size)).await.unwrap();
                        model.push_back(next);
                        next += 1;
                    }
                    Op::PutMany(n, size) => {
                        let rs: Vec<_> = (next..next + n as u64).map(|i| record(i, size)).collect();
                        wal.put_many(&rs).await.unwrap();
                        model.extend(next..next + n as u64);
                        next += n as u64;
                    }
                    Op::Seal => wal.seal().unwrap(),
                    Op::Commit | Op::Narrow(_) => {
                        let Some(b) = wal.emit().unwrap() else { continue };
                        let ids: Vec<u64> = b.records.iter().map(|r| r.id.parse().unwrap()).collect();
                        // The batch is the front of the model queue, in order.
                        let front: Vec<u64> = model.iter().take(ids.len()).copied().collect();
                        prop_assert_eq!(&ids, &front);
                        let keep: Vec<usize> = match op {
                            Op::Narrow(mask) => (0..ids.len()).filter(|i| mask >> (i % 64) & 1 == 1).collect(),
                            _ => Vec::new(),
                        };
                        if keep.is_empty() { wal.commit(&b).unwrap() } else { wal.narrow(&b, &keep).unwrap() }
                        let kept: Vec<u64> = keep.iter().map(|&i| ids[i]).collect();
                        for (i, id) in ids.iter().enumerate() {
                            if !keep.contains(&i) { delivered.push(*id); }
                        }
                        for _ in 0..ids.len() { model.pop_front(); }
                        for id in kept.into_iter().rev() { model.push_front(id); }
                    }
                    Op::Reopen(r, b) => {
                        drop(wal);
                        wal = open(dir.path(), r, b);
                    }
                }
                prop_assert_eq!(wal.stats().records, model.len() as u64);
                prop_assert_eq!(wal.stats().segments, Some(segment_files(dir.path())));
            }
            // Drain what is left.
            wal.seal().unwrap();
            while let Some(b) = wal.emit().unwrap() {
                delivered.extend(b.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
                wal.commit(&b).unwrap();
            }
            delivered.sort_unstable();
            prop_assert_eq!(delivered, (0..next).collect::<Vec<_>>());
            Ok(())
        })?;
    }

    #[test]
    fn the_segment_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        scan(&bytes);
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        scan(&with_magic);
    }

    #[test]
    fn mutated_segments_are_repaired_or_reported(flips in proptest::collection::vec((0usize..10_000, any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut seg = MAGIC.to_vec();
        for i in 0..20u64 {
            encode_record(&mut seg, &record(i, (i * 13 % 40) as usize)).unwrap();
        }
        for (at, x) in flips {
            let n = seg.len();
            seg[at % n] ^= x;
        }
        let cut = cut.index(seg.len() + 1);
        scan(&seg[..cut]);
    }
}
