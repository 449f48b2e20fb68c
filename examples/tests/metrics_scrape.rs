//! Scrapes the Prometheus endpoint of a running `simple_consumer`
//! (`--metrics-addr`) and checks that its counters match what the consumer
//! did, as its files tell: records in the target, letters in the DLQ,
//! attempts in the attempt log.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{example_bin, ids_in};

/// The value of `name{consumer="simple_consumer"}` in a Prometheus text
/// page, if present.
fn value(page: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}{{consumer=\"simple_consumer\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    Some(page)
}

fn lines(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count() as u64)
        .unwrap_or(0)
}

#[test]
fn the_scraped_counters_match_what_the_consumer_did() {
    const RECORDS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(example_bin("simple_consumer"))
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--sample", &RECORDS.to_string()])
        .args(["--fail-rate", "0.3", "--poison", "7", "--backoff-ms", "1"])
        .args(["--limit", "10", "--delay-ms", "50", "--attempt-log"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target = dir.path().join("target.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    let attempts = dir.path().join("attempts.log");
    let t = Instant::now();
    let page = loop {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the consumer did not finish, or its counters never matched"
        );
        std::thread::sleep(Duration::from_millis(50));
        let done = lines(&target) + lines(&dlq);
        if done < RECORDS {
            continue;
        }
        let Some(page) = scrape(port) else {
            continue;
        };
        // Counters are recorded when a batch step ends: wait for the last.
        if value(&page, "unistream_consumer_records_succeeded_total") == Some(lines(&target))
            && value(&page, "unistream_consumer_attempts_total") == Some(lines(&attempts))
        {
            break page;
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(
        child.wait().unwrap().success(),
        "a graceful stop on SIGTERM"
    );

    let succeeded = lines(&target);
    let letters = ids_in(&dlq, |v| v["record_id"].as_str().unwrap_or("").to_owned());
    let attempted = lines(&attempts);
    assert_eq!(
        succeeded + letters.len() as u64,
        RECORDS,
        "each record once"
    );
    assert!(
        letters.contains(&"7".to_owned()),
        "the poison record is a letter"
    );
    assert_eq!(
        value(&page, "unistream_consumer_records_dead_lettered_total"),
        Some(letters.len() as u64)
    );
    assert_eq!(
        value(&page, "unistream_consumer_records_fetched_total"),
        Some(RECORDS)
    );
    assert_eq!(
        value(&page, "unistream_consumer_failed_attempts_total"),
        Some(attempted - succeeded),
        "every attempt but the successful ones failed"
    );
    assert!(page.contains("unistream_consumer_step_seconds"), "{page}");
    eprintln!(
        "scraped: {succeeded} succeeded, {} dead-lettered, {attempted} attempts ({} failed)",
        letters.len(),
        attempted - succeeded
    );
}
