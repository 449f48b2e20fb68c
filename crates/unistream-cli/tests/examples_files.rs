//! The `unistream` tool on files made by the example programs, as an
//! on-call engineer would use it: the WAL a producer left behind when its
//! sink was down (then corrupted), a consumer's checkpoint and dead letters,
//! and a checkpoint held by a running consumer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../examples/tests/common/mod.rs"]
mod common;
use common::example_bin;

mod tool;
use tool::{json, text, unistream};

/// Runs `simple_producer` with a sink that fails every send until it has
/// acknowledged `count` records (they are in its WAL), then kills it.
fn producer_with_a_dead_sink(dir: &Path, count: u64) {
    let mut child = Command::new(example_bin("simple_producer"))
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "--count",
            &count.to_string(),
        ])
        .args([
            "--fail-rate",
            "1",
            "--backoff-ms",
            "60000",
            "--max-records",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let last = format!("ACK {count}");
    let acked = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == last);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked, "the producer did not acknowledge {count} records");
}

#[test]
fn wal_inspect_and_verify_on_a_producers_log_then_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    producer_with_a_dead_sink(dir.path(), 45);
    let wal = dir.path().join("wal");
    let w = wal.to_str().unwrap();

    let out = unistream(&["wal", "inspect", w]);
    assert!(text(&out).contains("45 unsent records"), "{}", text(&out));
    let j = json(&unistream(&["wal", "inspect", w, "--json"]));
    assert_eq!(j["unsent_records"], 45, "{j}");
    let out = unistream(&["wal", "verify", w]);
    assert!(out.status.success(), "{}", text(&out));

    // One flipped byte inside a record: verify names the segment and the
    // offset of the damaged frame, and exits 1.
    let segment = j["segments"][0]["path"].as_str().unwrap().to_owned();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"\"id\"")
        .expect("a record in the segment");
    bytes[at + 1] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let out = unistream(&["wal", "verify", w]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&segment) && t.contains("offset"), "{t}");

    // Issue 22: a damaged length pointing past the end of the segment was
    // taken for a torn tail (exit 0, every record after it dropped on
    // open). Now it is damage, and verify says how many records follow it.
    bytes[at + 1] ^= 0x20;
    let second = 8 + unistream_local::framing::frame_size(u32::from_le_bytes(
        bytes[8..12].try_into().unwrap(),
    ) as usize);
    bytes[second..second + 4].copy_from_slice(&2_857_740_885u32.to_le_bytes());
    std::fs::write(&segment, &bytes).unwrap();
    let out = unistream(&["wal", "verify", w]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("offset {second}")) && t.contains("43 valid records follow"),
        "{t}"
    );
}

#[test]
fn checkpoint_and_dlq_of_a_consumer_and_a_checkpoint_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let status = Command::new(example_bin("simple_consumer"))
        .args(["--dir", d, "--sample", "20", "--poison", "3,7"])
        .args(["--max-attempts", "2", "--backoff-ms", "0", "--until-end"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let checkpoint = dir.path().join("checkpoint");
    let c = checkpoint.to_str().unwrap();
    let show = [
        "checkpoint",
        "show",
        "--dir",
        c,
        "--consumer",
        "simple_consumer",
    ];
    let j = json(&unistream(&[&show[..], &["--json"]].concat()));
    assert_eq!(j["committed"], true, "{j}");
    assert_eq!(j["consumer"], "simple_consumer");

    let dlq = dir.path().join("dlq.jsonl");
    let j = json(&unistream(&[
        "dlq",
        "show",
        dlq.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(j["total"], 2, "{j}");
    let ids: Vec<&str> = j["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3", "7"]);

    // A consumer running on the checkpoint: `show` is refused, clearly.
    let consumer = || {
        Command::new(example_bin("simple_consumer"))
            .args(["--dir", d, "--delay-ms", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut running = consumer();
    let start = Instant::now();
    let refused = loop {
        // A consumer that started while a `show` held the lock was refused
        // itself (and exited): start another.
        if running.try_wait().unwrap().is_some() {
            running = consumer();
        }
        let out = unistream(&show);
        if out.status.code() == Some(1) {
            break text(&out);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never held: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(refused.contains("locked by a running process"), "{refused}");
    let reset = |to: &str| {
        unistream(&[
            "checkpoint",
            "reset",
            "--dir",
            c,
            "--consumer",
            "simple_consumer",
            "--to",
            to,
            "--yes",
        ])
    };
    // A pointer the file source could never read: refused, not saved.
    let out = reset("TRIM_HORIZON");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("a file position"), "{}", text(&out));
    let out = reset("0@0");
    assert!(
        out.status.success(),
        "free again once it stopped: {}",
        text(&out)
    );
}
