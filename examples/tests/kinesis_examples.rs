//! Runs the Kinesis examples as a user would, against the emulator that
//! `cargo xtask it` provides: the producer puts records (half of its sends
//! failing), the consumer reads them back (half of its attempts failing);
//! every record must end in the target file or the DLQ.

use std::collections::HashSet;
use std::process::Command;

mod common;
use common::example_bin;

fn ids(
    path: &std::path::Path,
    pick: impl Fn(&serde_json::Value) -> &serde_json::Value,
) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            pick(&v)["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn the_kinesis_examples_run_against_the_emulator() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("needs an AWS emulator: run with `cargo xtask it`");
    let producer = example_bin("aws_kinesis_producer");
    let consumer = example_bin("aws_kinesis_consumer");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("it-examples-{}-{nanos}", std::process::id());
    let out = Command::new(&producer)
        .args([
            "--endpoint",
            &endpoint,
            "--stream",
            &stream,
            "--create",
            "--count",
            "40",
        ])
        .args(["--interval-ms", "0", "--backoff-ms", "0", "--dir", d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&consumer)
        .args([
            "--endpoint",
            &endpoint,
            "--stream",
            &stream,
            "--until-end",
            "--limit",
            "10",
        ])
        .args(["--backoff-ms", "0", "--delay-ms", "100", "--dir", d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    files.sort();
    let target = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".target.jsonl"))
        .expect("target file");
    let dlq = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".dlq.jsonl"));
    let mut seen = ids(target, |v| v);
    if let Some(dlq) = dlq {
        seen.extend(ids(dlq, |v| &v["record"]));
    }
    let expected: HashSet<String> = (1..=40).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "every record in the target or the DLQ");
}
