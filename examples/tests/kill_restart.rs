//! Kills the `simple_consumer` example with SIGKILL at random points, many
//! times, restarting it with the same arguments, and checks the invariants
//! the example promises: it always starts again, no record is lost (each one
//! ends in the target or the DLQ), and no record gets more than
//! `--max-attempts` attempts in total.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use rand::Rng;

mod common;
use common::{RunEnd, example_bin, ids_in, kill_test_rng, run_and_kill};
use unistream_examples::write_sample_stream;

const MAX_ATTEMPTS: usize = 3;

/// Appends records `ids` to the stream, each with a `pad` field of that
/// text if given (to make the record, and its dead letter, large).
fn append_records(stream: &Path, ids: std::ops::Range<u64>, pad: Option<&str>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stream)
        .unwrap();
    let pad = pad
        .map(|p| format!(", \"pad\": \"{p}\""))
        .unwrap_or_default();
    let mut out = String::new();
    for id in ids {
        out.push_str(&format!(
            "{{\"id\": \"{id}\", \"create_at\": \"2024-01-09T06:24:06.759449+00:00\", \"value\": {}{pad}}}\n",
            id % 100
        ));
    }
    f.write_all(out.as_bytes()).unwrap();
}

#[test]
fn kill_9_at_random_points_never_loses_a_record_nor_exceeds_max_attempts() {
    // Small batches: the checkpoint journal appends with write(2).
    kill_and_restart("7");
}

#[test]
fn kill_9_with_a_memory_mapped_checkpoint_journal() {
    // Batches of 256+ records: the journal is memory-mapped (FrameFile).
    kill_and_restart("300");
}

/// Large records all dead-lettered: most of the consumer's time is spent in
/// multi-page `write(2)`s of dead letters (each letter embeds its ~96 KiB
/// record), so kills often cut one short. A torn letter must be dropped when
/// the DLQ is reopened, and the letter sent again on its own line.
#[test]
fn kill_9_while_writing_large_dead_letters() {
    let bin = example_bin("simple_consumer");
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.jsonl");
    let dlq_path = dir.path().join("dlq.jsonl");
    let pad = "x".repeat(96 * 1024);
    append_records(&stream, 1..61, Some(&pad));
    let mut next_id = 61;
    let args = [
        "--dir",
        dir.path().to_str().unwrap(),
        "--limit",
        "5",
        "--max-attempts",
        "1",
        "--fail-rate",
        "1.0",
        "--backoff-ms",
        "0",
        "--until-end",
    ];
    let mut rng = kill_test_rng();
    let dlq_len = || std::fs::metadata(&dlq_path).map(|m| m.len()).unwrap_or(0);
    let torn = || {
        std::fs::read(&dlq_path)
            .map(|b| b.last().is_some_and(|&c| c != b'\n'))
            .unwrap_or(false)
    };
    // A kill counts when it lands while letters are being written; a tear
    // when it leaves the DLQ ending in part of a letter.
    let (mut kills, mut tears, mut runs) = (0, 0, 0);
    while kills < 40 || (tears < 5 && runs < 400) {
        assert!(
            runs < 600,
            "only {kills} kills landed mid-work in {runs} runs"
        );
        runs += 1;
        let end = run_and_kill(&bin, &args, &mut rng, dlq_len, true, 3_000);
        if let RunEnd::KilledMidWork = end {
            kills += 1;
            tears += usize::from(torn());
        }
        append_records(&stream, next_id..next_id + 10, Some(&pad));
        next_id += 10;
    }
    let out = Command::new(&bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dlq: HashSet<String> = ids_in(&dlq_path, |v| {
        v["record"]["id"].as_str().unwrap().to_owned()
    })
    .into_iter()
    .collect();
    let lost: Vec<u64> = (1..next_id)
        .filter(|id| !dlq.contains(&id.to_string()))
        .collect();
    assert!(
        lost.is_empty(),
        "records lost after {kills} kills: {lost:?}"
    );
    eprintln!(
        "{kills} kills mid-work in {runs} runs, {tears} left a torn dead letter; {} records in the DLQ",
        dlq.len()
    );
    assert!(
        tears >= 5,
        "only {tears} kills cut a dead letter short in {runs} runs (5 wanted): the test no longer exercises torn appends enough"
    );
}

fn kill_and_restart(limit: &str) {
    let bin = example_bin("simple_consumer");
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.jsonl");
    write_sample_stream(&stream, 1, 300, 1).unwrap();
    let mut next_id = 301;
    let args = [
        "--dir",
        dir.path().to_str().unwrap(),
        "--limit",
        limit,
        "--max-attempts",
        "3",
        "--fail-rate",
        "0.4",
        "--poison",
        "13,77,150",
        "--seed",
        "42",
        "--backoff-ms",
        "0",
        "--until-end",
        "--attempt-log",
        // Each attempt awaits 1 ms (a remote call): a run lasts long enough
        // for random kills to land mid-work (a run of 40 records without it
        // takes ~2 ms, shorter than the kill delays).
        "--work-ms",
        "1",
    ];
    let mut rng = kill_test_rng();
    let attempts_log = dir.path().join("attempts.log");
    let log_len = || {
        std::fs::metadata(&attempts_log)
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // A kill counts when it lands while the consumer is working: the run had
    // started attempts (the attempt log grew) and had not finished.
    let mut kills = 0;
    let mut runs = 0;
    while kills < 25 {
        assert!(
            runs < 400,
            "only {kills} kills landed mid-work in {runs} runs"
        );
        runs += 1;
        // Mostly wait until the run has started attempts, then kill at a
        // random point, so that kills land mid-work however fast the
        // consumer is; sometimes kill earlier, during start-up and recovery.
        let wait = rng.random_bool(0.75);
        if let RunEnd::KilledMidWork = run_and_kill(&bin, &args, &mut rng, log_len, wait, 20_000) {
            kills += 1;
        }
        // Keep the stream growing so the next run has work to be killed in.
        append_records(&stream, next_id..next_id + 40, None);
        next_id += 40;
    }
    let out = Command::new(&bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stream_ids: HashSet<String> = ids_in(&stream, |v| v["id"].as_str().unwrap().to_owned())
        .into_iter()
        .collect();
    assert_eq!(stream_ids.len() as u64, next_id - 1);
    let target: HashSet<String> = ids_in(&dir.path().join("target.jsonl"), |v| {
        v["id"].as_str().unwrap().to_owned()
    })
    .into_iter()
    .collect();
    let dlq = ids_in(&dir.path().join("dlq.jsonl"), |v| {
        assert!(
            v["attempts"].as_u64().unwrap() <= MAX_ATTEMPTS as u64,
            "DLQ entry over max attempts: {v}"
        );
        assert!(v["error"].is_string(), "DLQ entry without error: {v}");
        v["record"]["id"].as_str().unwrap().to_owned()
    });
    let dlq: HashSet<String> = dlq.into_iter().collect();
    let lost: Vec<_> = stream_ids
        .iter()
        .filter(|id| !target.contains(*id) && !dlq.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "records lost after {kills} kills: {lost:?}"
    );
    for poison in ["13", "77", "150"] {
        assert!(
            dlq.contains(poison),
            "poison record {poison} not in the DLQ"
        );
    }

    // Each line is "<id> <attempt number>". The number is saved before the
    // attempt runs, so a restart never reuses it: a pair seen twice means an
    // attempt count was lost in a crash.
    let mut attempts: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for line in std::fs::read_to_string(&attempts_log).unwrap().lines() {
        let (id, n) = line.split_once(' ').unwrap();
        let n: usize = n.parse().unwrap();
        assert!(
            (1..=MAX_ATTEMPTS).contains(&n),
            "attempt number out of range: {line}"
        );
        assert!(
            seen.insert((id.to_owned(), n)),
            "attempt {n} of record {id} ran twice"
        );
        *attempts.entry(id.to_owned()).or_default() += 1;
    }
    let over: Vec<_> = attempts
        .iter()
        .filter(|(_, n)| **n > MAX_ATTEMPTS)
        .collect();
    assert!(
        over.is_empty(),
        "records attempted more than {MAX_ATTEMPTS} times: {over:?}"
    );
    eprintln!(
        "{kills} kills mid-work in {runs} runs; {} records: {} in target, {} in DLQ",
        stream_ids.len(),
        target.len(),
        dlq.len()
    );
}
