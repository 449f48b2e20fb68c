//! The `unistream` binary on real files made by the library: a WAL with
//! pending and open records, the same WAL corrupted, a file checkpoint with
//! failing records (and one held by a running consumer), a file DLQ with a
//! torn last letter.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::ErrorInfo;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore};
use unistream_core::dlq::{DeadLetter, DeadLetterQueue};
use unistream_core::sink::EncodedRecord;
use unistream_core::source::{Pointer, SourceRecord};
use unistream_local::{Durability, FileCheckpointStore, FileDeadLetterQueue};

mod tool;
use tool::{json, text, unistream};

async fn wal_with_4_records(dir: &Path) {
    let wal = FileBuffer::open(
        dir,
        FileBufferConfig::new(BufferLimits::records(3), Durability::PowerLoss),
    )
    .unwrap();
    for i in 0..4 {
        let r = EncodedRecord::new(i.to_string(), "k", format!("{{\"i\":{i}}}").into_bytes());
        wal.put(&r).await.unwrap();
    }
}

#[tokio::test]
async fn wal_inspect_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    wal_with_4_records(dir.path()).await;
    let d = dir.path().to_str().unwrap();
    let out = unistream(&["wal", "inspect", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 unsent records"), "{}", text(&out));
    let report = json(&unistream(&["wal", "inspect", d, "--json"]));
    assert_eq!(report["unsent_records"], 4);
    assert_eq!(report["pending_batches"][0]["records"], 3);
    assert_eq!(report["open_records"], 1);
    let verified = json(&unistream(&["wal", "verify", d, "--json"]));
    assert_eq!(verified["ok"], true);

    // A flipped byte in the first record: verify names the file and offset.
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let out = unistream(&["wal", "verify", d]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&seg.display().to_string()) && t.contains("offset"),
        "{t}"
    );
}

#[tokio::test]
async fn checkpoint_show_lists_failing_records_and_refuses_a_held_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    {
        let mut store = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
        store.load().await.unwrap();
        let mut cp = Checkpoint::new("c1", Pointer::from("0"), 2, Duration::from_secs(60));
        cp.start_batch(
            ["a".to_string(), "b".to_string(), "c".to_string()],
            Some(Pointer::from("3")),
            now,
        )
        .unwrap();
        let records: Vec<SourceRecord> = (0..3)
            .map(|i| SourceRecord::new(Pointer::new(i.to_string()), b"{}".to_vec()))
            .collect();
        store.save_batch(&cp, &records).await.unwrap();
        cp.begin_attempt(0, "L", now).unwrap();
        cp.succeed(0, "L", None, now).unwrap();
        cp.begin_attempt(1, "L", now).unwrap();
        cp.fail(1, "L", ErrorInfo::new("the payment service said no"), now)
            .unwrap();
        for i in 0..2 {
            store.save_tracker(&cp, i).await.unwrap();
        }
        store.sync().await.unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let out = unistream(&["checkpoint", "show", "--dir", d, "--consumer", "c1"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("the payment service said no") && t.contains("failed"),
        "{t}"
    );
    let j = json(&unistream(&[
        "checkpoint",
        "show",
        "--dir",
        d,
        "--consumer",
        "c1",
        "--json",
    ]));
    assert_eq!(j["batch_sequence"], 1);
    assert_eq!(j["counts"]["succeeded"], 1);
    assert_eq!(j["counts"]["pending"], 1);
    assert_eq!(j["failing"][0]["record_id"], "b");
    assert_eq!(j["failing"][0]["attempts"], 1);

    // While a consumer holds it: a clear refusal, not a read of a moving file.
    let _held = FileCheckpointStore::open(dir.path(), "c1", Durability::Process).unwrap();
    let out = unistream(&["checkpoint", "show", "--dir", d, "--consumer", "c1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("locked by a running process"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn dlq_show_reads_letters_and_reports_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dlq.jsonl");
    {
        let dlq = FileDeadLetterQueue::open(&path, Durability::Process).unwrap();
        for i in 0..3 {
            let mut letter = DeadLetter::new(
                "c1",
                format!("r{i}"),
                format!("{{\"id\": \"r{i}\"}}").into_bytes(),
                Pointer::new(i.to_string()),
                Utc::now(),
            );
            letter.attempts = 3;
            letter.error = Some(ErrorInfo::new(format!("boom {i}")));
            dlq.send(&letter).await.unwrap();
        }
    }
    // A letter cut short by a kill.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"record\": {\"id\": \"r3");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let out = unistream(&["dlq", "show", p]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("3 letters") && t.contains("boom 2") && t.contains("cut short"),
        "{t}"
    );
    let j = json(&unistream(&["dlq", "show", p, "--json", "--max", "2"]));
    assert_eq!(j["total"], 3);
    assert_eq!(j["letters"].as_array().unwrap().len(), 2);
    assert_eq!(j["letters"][0]["record_id"], "r0");
    assert!(j["torn_tail"]["offset"].as_u64().unwrap() > 0);
}

/// `n` letters with JSON records (`{"id": "rI"}`), keys `kI`.
async fn dlq_with_letters(path: &Path, n: usize) -> Vec<DeadLetter> {
    let dlq = FileDeadLetterQueue::open(path, Durability::Process).unwrap();
    let mut letters = Vec::new();
    for i in 0..n {
        let mut letter = DeadLetter::new(
            "c1",
            format!("r{i}"),
            format!("{{\"id\": \"r{i}\"}}").into_bytes(),
            Pointer::new(i.to_string()),
            Utc::now(),
        );
        letter.partition_key = Some(format!("k{i}"));
        letter.attempts = 3;
        letter.error = Some(ErrorInfo::new(format!("boom {i}")));
        dlq.send(&letter).await.unwrap();
        letters.push(letter);
    }
    letters
}

/// The data lines a file sink wrote for `letters`.
fn stream_of(letters: &[DeadLetter]) -> String {
    letters
        .iter()
        .map(|l| format!("{}\n", String::from_utf8_lossy(&l.data)))
        .collect()
}

#[tokio::test]
async fn dlq_redrive_moves_letters_into_a_stream_file_and_empties_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let stream = dir.path().join("stream.jsonl");
    let letters = dlq_with_letters(&dlq, 5).await;
    let (d, s) = (dlq.to_str().unwrap(), stream.to_str().unwrap());

    // --max 2: the two oldest go, the rest stay, in order.
    let j = json(&unistream(&[
        "dlq",
        "redrive",
        d,
        "--to-file",
        s,
        "--max",
        "2",
        "--json",
    ]));
    assert_eq!(j["redriven"], 2, "{j}");
    assert_eq!(j["left"], 0);
    assert_eq!(j["remaining"], 3);
    assert_eq!(
        std::fs::read_to_string(&stream).unwrap(),
        stream_of(&letters[..2])
    );
    let rest = json(&unistream(&["dlq", "show", d, "--json"]));
    assert_eq!(rest["total"], 3);
    assert_eq!(rest["letters"][0]["record_id"], "r2");

    // The rest, with the readable summary.
    let out = unistream(&["dlq", "redrive", d, "--to-file", s]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("redriven: 3 records") && t.contains("0 letters remain"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(&stream).unwrap(),
        stream_of(&letters)
    );
    assert_eq!(std::fs::read(&dlq).unwrap(), b"", "the queue is empty");
}

#[tokio::test]
async fn dlq_redrive_leaves_what_cannot_go_and_refuses_a_queue_a_consumer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let stream = dir.path().join("stream.jsonl");
    let letters = dlq_with_letters(&dlq, 2).await;
    let mut bytes = std::fs::read(&dlq).unwrap();
    bytes.extend_from_slice(b"not a letter\n");
    std::fs::write(&dlq, &bytes).unwrap();
    let (d, s) = (dlq.to_str().unwrap(), stream.to_str().unwrap());

    // A consumer has the queue open: refused, nothing moved.
    let held = FileDeadLetterQueue::open(&dlq, Durability::Process).unwrap();
    let out = unistream(&["dlq", "redrive", d, "--to-file", s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("locked by another process"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&dlq).unwrap(), bytes);
    assert_eq!(std::fs::read(&stream).unwrap_or_default(), b"");
    drop(held);

    // The undecodable line stays, and is reported.
    let j = json(&unistream(&["dlq", "redrive", d, "--to-file", s, "--json"]));
    assert_eq!(
        (j["redriven"].as_u64(), j["left"].as_u64()),
        (Some(2), Some(1)),
        "{j}"
    );
    assert_eq!(j["errors"][0]["letter"], "line 3");
    assert!(
        j["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not a dead letter")
    );
    assert_eq!(
        std::fs::read_to_string(&stream).unwrap(),
        stream_of(&letters)
    );
    assert_eq!(std::fs::read(&dlq).unwrap(), b"not a letter\n");
}
