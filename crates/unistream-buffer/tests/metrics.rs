//! The producer's backlog gauges over a `FileBuffer`: records, bytes and
//! segment files while a failed send holds the batches back, and after they
//! are sent — the segment count equal to the files in the directory. Read
//! from metrics-util's debugging recorder, local to the test's thread.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::clock::VirtualClock;
use unistream_core::memory::MemorySink;
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;

/// The producer's gauges and counters in one snapshot (a snapshot resets
/// what it reads: take one only where every value read was set since).
fn take(snapshotter: &Snapshotter) -> std::collections::HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let value = match value {
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Counter(n) => n as f64,
                DebugValue::Histogram(_) => return None,
            };
            Some((key.key().name().to_owned(), value))
        })
        .collect()
}

fn segment_files(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count() as f64
}

#[test]
fn the_backlog_gauges_follow_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Batches of 2 records; a new segment file once one holds 100
            // bytes (about two batches of these records).
            let mut options = FileBufferConfig::new(BufferLimits::records(2), Durability::Process);
            options.segment_bytes = 100;
            let wal = FileBuffer::open(dir.path(), options).unwrap();
            let sink = MemorySink::default();
            let mut config = ProducerConfig::default();
            config.linger = None;
            config.retry = RetryPolicy::waits([Duration::from_secs(1)]);
            let producer =
                Producer::new(config, wal, sink.clone()).with_clock(VirtualClock::default());
            // The first send fails: the producer holds every batch after it.
            sink.fail_next(1);
            let mut bytes = 0;
            for i in 0..10 {
                let data = format!("{{\"id\":\"{i}\",\"value\":\"some payload\"}}").into_bytes();
                bytes += data.len();
                producer
                    .put_encoded(EncodedRecord::new(i.to_string(), "k", data))
                    .await
                    .unwrap();
            }
            let m = take(&snapshotter);
            assert_eq!(m["unistream_producer_records_put_total"], 10.0);
            assert_eq!(m["unistream_producer_sends_failed_total"], 1.0);
            assert_eq!(m["unistream_producer_backlog_records"], 10.0);
            assert_eq!(m["unistream_producer_backlog_bytes"], bytes as f64);
            let segments = m["unistream_producer_backlog_segments"];
            assert!(segments > 1.0, "the records span segments: {segments}");
            assert_eq!(segments, segment_files(dir.path()));
            assert_eq!(
                producer.buffer().stats().segments,
                Some(segments as u64),
                "the gauge is the buffer's count"
            );

            producer.flush().await.unwrap();
            assert_eq!(sink.ids().len(), 10);
            let m = take(&snapshotter);
            assert_eq!(m["unistream_producer_records_sent_total"], 10.0);
            assert_eq!(m["unistream_producer_backlog_records"], 0.0);
            assert_eq!(m["unistream_producer_backlog_bytes"], 0.0);
            // What is left on disk: the segment being written.
            assert_eq!(m["unistream_producer_backlog_segments"], 1.0);
            assert_eq!(segment_files(dir.path()), 1.0);
        });
    });
}
