//! The `unistream` tool and the metrics endpoint against a running
//! production consumer (`aws_production_consumer`: Kinesis, DynamoDB + S3,
//! SQS) on the emulator that `cargo xtask it` provides: `checkpoint show`
//! reads its checkpoint while it runs without disturbing it, a repair is
//! refused while its records are in progress, the scraped counters match
//! what it wrote, and `lag` says it caught up.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use unistream_test_support::{Env, Service};

#[path = "../../../examples/tests/common/mod.rs"]
mod common;

mod tool;
use tool::text;

const RECORDS: u64 = 120;

fn lines(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count() as u64)
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    Some(page)
}

/// Kills the consumer when the test ends, passed or failed: a consumer left
/// running would hold the test's stdout and its resources.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `name{consumer="<consumer>"}` in a Prometheus page.
fn value(page: &str, name: &str, consumer: &str) -> Option<u64> {
    let prefix = format!("{name}{{consumer=\"{consumer}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
async fn the_tool_and_the_metrics_of_a_running_production_consumer() {
    let env = Env::from_env().await;
    for s in [
        Service::Kinesis,
        Service::DynamoDb,
        Service::S3,
        Service::Sqs,
    ] {
        if env.skip_unless(s) {
            return;
        }
    }
    let stream = env.create_stream(1).await;
    let (table, bucket) = (env.create_table("id").await, env.create_bucket().await);
    let queue_url = env.create_queue(false).await;
    let queue = queue_url.rsplit('/').next().unwrap().to_owned();
    env.put_raw(
        &stream,
        (1..=RECORDS).map(|i| {
            let data = format!(
                "{{\"id\": \"{i}\", \"create_at\": \"2024-01-09T06:24:06.759449+00:00\", \"value\": {i}}}"
            );
            (i.to_string(), data.into_bytes())
        }),
    )
    .await;
    let shard = env.shards(&stream).await.remove(0).0;
    let key = format!("{stream}-{shard}");
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Built before the consumer starts: a build while it runs could outlast
    // it.
    let bin = common::example_bin_of("unistream-aws-examples", "aws_production_consumer");
    let cli = env!("CARGO_BIN_EXE_unistream");
    let mut consumer = KillOnDrop(
        Command::new(bin)
            .args(["--endpoint", &env.endpoint, "--stream", &stream])
            .args(["--table", &table, "--bucket", &bucket, "--queue", &queue])
            .args(["--dir", dir.path().to_str().unwrap()])
            .args(["--concurrency", "8", "--limit", "40", "--work-ms", "300"])
            .args(["--lock-expire-s", "60", "--fail-rate", "0"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let unistream = |args: &[&str]| {
        Command::new(cli)
            .args(args)
            .args(["--endpoint", &env.endpoint])
            .output()
            .unwrap()
    };
    let at = [
        "--table",
        table.as_str(),
        "--key",
        &key,
        "--bucket",
        &bucket,
    ];

    // While it works: `show` sees records in progress; a repair is refused.
    let start = Instant::now();
    loop {
        let out = unistream(&[&["checkpoint", "show", "--json"][..], &at].concat());
        if out.status.success() {
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if j["counts"]["in_progress"].as_u64().unwrap_or(0) > 0 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no record in progress seen: {}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = unistream(
        &[
            &["checkpoint", "reset"][..],
            &at,
            &["--to", "TRIM_HORIZON", "--yes"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("being processed by a running consumer"),
        "{}",
        text(&out)
    );

    // It finishes undisturbed (neither `show` nor the refused repair took
    // its checkpoint over); then the scraped counters match its target file.
    let target = dir.path().join("target.jsonl");
    let start = Instant::now();
    while lines(&target) < RECORDS {
        assert!(
            consumer.0.try_wait().unwrap().is_none(),
            "the consumer stopped: fenced by the tool?"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "too slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The handler writes its line before the consumer counts its success:
    // the counters catch up with the file a moment later.
    let start = Instant::now();
    let page = loop {
        let page = scrape(port).expect("the metrics endpoint answers");
        let fetched = value(&page, "unistream_consumer_records_fetched_total", &key);
        let succeeded = value(&page, "unistream_consumer_records_succeeded_total", &key);
        if fetched == Some(RECORDS) && succeeded == Some(lines(&target)) {
            break page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the counters never matched the target ({} lines): {page}",
            lines(&target)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        page.contains(&format!(
            "unistream_consumer_checkpoint_writes_total{{consumer=\"{key}\",kind=\"batch\"}}"
        )),
        "{page}"
    );
    drop(consumer);

    // Caught up: nothing behind its checkpoint.
    let out = unistream(&[
        "lag", "--stream", &stream, "--table", &table, "--key", &key, "--shard", &shard, "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &j["shards"][0];
    assert_eq!(row["shard_id"], shard.as_str(), "{j}");
    assert_eq!(row["records_behind_exact"], true, "{j}");
    assert!(
        row["records_behind"].as_u64().unwrap() <= 40,
        "at most the batch in hand, uncommitted at the kill: {j}"
    );
    env.delete_stream(&stream).await;
    env.delete_queue(&queue_url).await;
}
