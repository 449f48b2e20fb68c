//! Kills the `simple_producer` example with SIGKILL at random points, many
//! times, and checks its promise: every id it acknowledged (`ACK <id>`)
//! reaches `stream.jsonl`, and every line of `stream.jsonl` parses.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use unistream_examples::MyRecord;

mod common;
use common::{example_bin, kill_test_rng};

#[test]
fn kill_9_at_random_points_never_loses_an_acknowledged_record() {
    let bin = example_bin("simple_producer");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let mut rng = kill_test_rng();
    let mut acked: HashSet<String> = HashSet::new();
    let (mut kills, mut runs, mut start) = (0, 0, 1u64);
    let count = 2000u64;
    while kills < 25 {
        assert!(
            runs < 300,
            "only {kills} kills landed mid-work in {runs} runs"
        );
        runs += 1;
        let mut child = Command::new(&bin)
            .args([
                "--dir",
                &d,
                "--count",
                &count.to_string(),
                "--start-id",
                &start.to_string(),
            ])
            .args([
                "--max-records",
                "7",
                "--fail-rate",
                "0.3",
                "--seed",
                &runs.to_string(),
                "--backoff-ms",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Mostly kill at a random point after the first acknowledgement, so
        // that kills land mid-work however fast the program is; sometimes
        // earlier, during start-up and recovery (not counted as mid-work).
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut out = String::new();
        if rng.random_bool(0.75) {
            stdout.read_line(&mut out).unwrap();
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        stdout.read_to_string(&mut out).unwrap();
        let before = acked.len();
        for line in out.lines() {
            let id = line
                .strip_prefix("ACK ")
                .unwrap_or_else(|| panic!("unexpected output {line:?}"));
            acked.insert(id.to_owned());
        }
        if killed {
            if acked.len() > before {
                kills += 1;
            }
        } else {
            assert!(status.success(), "run {runs} failed");
        }
        start += count;
    }
    // Drain what the last killed run left.
    let out = Command::new(&bin)
        .args(["--dir", &d, "--count", "0", "--backoff-ms", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "drain run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stream = std::fs::read_to_string(dir.path().join("stream.jsonl")).unwrap();
    let mut in_stream = HashSet::new();
    for (n, line) in stream.lines().enumerate() {
        let r: MyRecord = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} does not parse ({e}): {line:?}", n + 1));
        in_stream.insert(r.id);
    }
    assert!(stream.is_empty() || stream.ends_with('\n'));
    let lost: Vec<_> = acked.iter().filter(|id| !in_stream.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost after {kills} kills, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "{kills} kills mid-work in {runs} runs; {} acknowledged, {} distinct in the stream ({} lines)",
        acked.len(),
        in_stream.len(),
        stream.lines().count()
    );
}
