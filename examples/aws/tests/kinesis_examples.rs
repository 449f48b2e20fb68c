//! Runs the Kinesis examples as a user would, against the emulator that
//! `cargo xtask it` provides: the producer puts records (half of its sends
//! failing), the consumer reads them back (half of its attempts failing);
//! every record must end in the target file or the DLQ.

use std::collections::HashSet;
use std::process::Command;

#[path = "../../tests/common/mod.rs"]
mod common;

fn example_bin(name: &str) -> std::path::PathBuf {
    common::example_bin_of("unistream-aws-examples", name)
}

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

#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn the_production_wiring_and_redrive_run_against_the_emulator() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("needs an AWS emulator: run with `cargo xtask it`");
    if std::env::var("UNISTREAM_IT_EMULATOR").as_deref() == Ok("kinesis-local") {
        eprintln!("SKIPPED: kinesis-local serves Kinesis only");
        return;
    }
    let producer = example_bin("aws_kinesis_producer");
    let consumer = example_bin("aws_production_consumer");
    let redrive = example_bin("aws_redrive");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("it-prod-{}-{nanos}", std::process::id());
    let run = |bin: &std::path::Path, args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(
        &producer,
        &[
            "--endpoint",
            &endpoint,
            "--stream",
            &name,
            "--create",
            "--count",
            "30",
            "--interval-ms",
            "0",
            "--backoff-ms",
            "0",
            "--fail-rate",
            "0",
            "--dir",
            d,
        ],
    );
    let summary = run(
        &consumer,
        &[
            "--endpoint",
            &endpoint,
            "--stream",
            &name,
            "--table",
            &name,
            "--bucket",
            &name,
            "--queue",
            &name,
            "--create",
            "--until-end",
            "--backoff-ms",
            "0",
            "--fail-rate",
            "0.6",
            "--dir",
            d,
        ],
    );
    let dead: u64 = summary
        .split("succeeded, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {summary:?}"));
    let processed = ids(&dir.path().join("target.jsonl"), |v| v);
    assert!(
        dead > 0,
        "with 60 % failures some records reach the DLQ: {summary}"
    );
    assert_eq!(processed.len() as u64 + dead, 30, "{summary}");
    let redriven = run(
        &redrive,
        &[
            "--endpoint",
            &endpoint,
            "--queue",
            &name,
            "--stream",
            &name,
            "--dir",
            d,
        ],
    );
    assert!(
        redriven.contains(&format!("redriven: {dead} records")),
        "{redriven}"
    );
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn the_producer_example_aggregates_and_the_consumer_example_reads_every_record() {
    let env = unistream_test_support::Env::from_env().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let stream = unistream_test_support::unique_name("it-agg-example");
    let out = Command::new(example_bin("aws_kinesis_producer"))
        .args(["--endpoint", &endpoint, "--stream", &stream, "--create"])
        .args([
            "--count",
            "200",
            "--max-records",
            "50",
            "--interval-ms",
            "0",
        ])
        .args(["--backoff-ms", "0", "--fail-rate", "0", "--dir", d])
        .args([
            "--aggregate",
            "--rate-records",
            "1000",
            "--rate-bytes",
            "1048576",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 4 batches of 50 on one shard: 4 aggregates in the stream.
    let k = env.kinesis();
    let shard = env.shards(&stream).await[0].0.clone();
    let it = k
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator;
    let got = k.get_records().set_shard_iterator(it).send().await.unwrap();
    assert_eq!(got.records().len(), 4, "one aggregate per batch of 50");
    assert!(
        got.records()
            .iter()
            .all(|r| unistream::kinesis::aggregation::is_aggregate(r.data().as_ref()))
    );
    let out = Command::new(example_bin("aws_kinesis_consumer"))
        .args(["--endpoint", &endpoint, "--stream", &stream, "--until-end"])
        .args(["--limit", "30", "--fail-rate", "0", "--backoff-ms", "0"])
        .args(["--delay-ms", "100", "--dir", d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".target.jsonl"))
        .expect("target file");
    let expected: HashSet<String> = (1..=200).map(|i| i.to_string()).collect();
    assert_eq!(
        ids(&target, |v| v),
        expected,
        "every user record, none to the DLQ"
    );
    env.delete_stream(&stream).await;
}
