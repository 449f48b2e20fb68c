//! Kills the production example (`aws_production_consumer`: Kinesis source,
//! DynamoDB + S3 checkpoint, SQS dead-letter queue) with SIGKILL while 32
//! records are in flight, many times, against the emulator that `cargo xtask
//! it` provides, restarting it with the same arguments each time; then runs
//! it once to the end of the stream and checks what the production wiring
//! promises across `kill -9`: every record put to the stream is in the
//! target file or the dead-letter queue, no `(record, attempt number)` ran
//! twice, no record ran more than `--max-attempts` times, and duplicates in
//! the target are bounded by the records in flight at each kill.
//!
//! The checkpoint store is not exclusive: a record its killed predecessor
//! had in progress is retried once its lock has expired (`--lock-expire-s 1`
//! here). Every other restart waits for those locks to expire, so the
//! restarted consumer recovers them on load; the others restart at once, so
//! the consumer waits for the locks itself and then counts the interrupted
//! attempts (one that was a record's last sends it to the dead-letter
//! queue).
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use unistream_test_support::{Env, FastKinesis, Service};

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{RunEnd, ids_in, kill_test_rng, run_and_kill_within};

const MAX_ATTEMPTS: u64 = 3;
const CONCURRENCY: u64 = 32;
const KILLS: usize = 25;
/// Records put to the stream before the first run, then before each run.
const FIRST: u64 = 200;
const MORE: u64 = 160;
/// `--lock-expire-s`.
const LOCK_EXPIRE: Duration = Duration::from_secs(1);

/// Puts records `ids` to the stream, from this one writer (moto loses
/// records under concurrent `PutRecords` to one shard); each its own
/// partition key, so that 32 can be in flight at once.
async fn put(env: &Env, stream: &str, ids: std::ops::Range<u64>) {
    env.put_raw(
        stream,
        ids.map(|i| {
            let data = format!(
                "{{\"id\": \"{i}\", \"create_at\": \"2024-01-09T06:24:06.759449+00:00\", \"value\": {}}}",
                i % 100
            );
            (i.to_string(), data.into_bytes())
        }),
    )
    .await;
}

/// Every message of the queue: `(record id, attempts)`. Received with a long
/// visibility timeout, so that none comes back while the queue is drained.
async fn dead_letters(env: &Env, queue_url: &str) -> Vec<(String, u64)> {
    let sqs = env.sqs();
    let mut letters = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {queue_url}: {e:?}"));
        if out.messages().is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in out.messages() {
            let attr = |name: &str| {
                m.message_attributes()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.string_value())
                    .unwrap_or_else(|| panic!("dead letter without {name}: {m:?}"))
                    .to_owned()
            };
            let attempts = attr("attempts")
                .parse()
                .unwrap_or_else(|e| panic!("attempts of {m:?}: {e}"));
            letters.push((attr("record_id"), attempts));
        }
    }
    letters
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn kill_9_of_the_production_consumer_with_32_in_flight_loses_nothing() {
    kill_test(false, false);
}

/// The same (same seed) with `--idempotent`: the effect (the target write)
/// is duplicated only for records killed inside it — between the claim of
/// their key and its completion: the keys found `in_progress` in the table
/// after a kill — and records put again after their effect completed (as a
/// redrive puts a letter back) run nothing.
#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn kill_9_of_the_idempotent_production_consumer_duplicates_only_effects_cut_by_a_kill() {
    kill_test(false, true);
}

/// The same, reading by enhanced fan-out (`--efo`) from the fast Kinesis
/// emulator (moto has no `SubscribeToShard`), sessions cut every 2 s.
#[test]
#[ignore = "needs an AWS emulator and the fast Kinesis emulator: run with `cargo xtask it`"]
fn kill_9_of_the_fan_out_production_consumer_loses_nothing() {
    kill_test(true, false);
}

/// The record ids whose idempotency key is `in_progress` in `table` (keys
/// `<consumer id>#<record id>`): effects a kill cut short.
async fn in_progress_keys(env: &Env, table: &str) -> HashSet<String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut ids = HashSet::new();
    let mut start = None;
    loop {
        let out = env
            .dynamodb()
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in out.items() {
            if let (Some(AttributeValue::S(key)), Some(AttributeValue::S(status))) =
                (item.get("id"), item.get("status"))
                && status == "in_progress"
                && let Some((_, id)) = key.split_once('#')
            {
                ids.insert(id.to_owned());
            }
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            return ids;
        }
    }
}

fn kill_test(fan_out: bool, idempotent: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = rt.block_on(Env::from_env());
    if moto.skip_unless(Service::DynamoDb) {
        return;
    }
    let fast = fan_out.then(|| FastKinesis::start(&["--session-ms", "2000"]));
    let env = match &fast {
        Some(f) => moto.with_kinesis_at(f.url()),
        None => moto.clone(),
    };
    let started = Instant::now();
    let (stream, table, bucket, queue_url) = rt.block_on(async {
        let stream = env.create_stream(1).await;
        put(&env, &stream, 1..FIRST + 1).await;
        (
            stream,
            env.create_table("id").await,
            env.create_bucket().await,
            env.create_queue(false).await,
        )
    });
    let queue = queue_url
        .rsplit('/')
        .next()
        .expect("a queue URL ends in its name")
        .to_owned();
    let mut next_id = FIRST + 1;
    let bin = common::example_bin_of("unistream-aws-examples", "aws_production_consumer");
    let dir = tempfile::tempdir().unwrap();
    let attempt_log = dir.path().join("attempts.log");
    let concurrency = CONCURRENCY.to_string();
    let max_attempts = MAX_ATTEMPTS.to_string();
    let lock_expire = LOCK_EXPIRE.as_secs().to_string();
    let kinesis_endpoint = env.kinesis_endpoint().to_owned();
    let mut args = vec![
        "--endpoint",
        &env.endpoint,
        "--kinesis-endpoint",
        &kinesis_endpoint,
        "--stream",
        &stream,
        "--table",
        &table,
        "--bucket",
        &bucket,
        "--queue",
        &queue,
        "--dir",
        dir.path().to_str().unwrap(),
        "--attempt-log",
        attempt_log.to_str().unwrap(),
        "--until-end",
        "--concurrency",
        &concurrency,
        "--limit",
        "100",
        "--max-attempts",
        &max_attempts,
        // Retries and dead letters: 3 % of the records fail all 3 attempts.
        "--fail-rate",
        "0.3",
        "--seed",
        "7",
        "--backoff-ms",
        "5",
        // Each attempt awaits 40 ms, so kills land while records are in
        // flight.
        "--work-ms",
        "40",
        // A killed run's record locks expire 1 s after they were taken.
        "--lock-expire-s",
        &lock_expire,
    ];
    if fan_out {
        args.extend(["--efo", "kill-test"]);
    }
    if idempotent {
        args.push("--idempotent");
    }
    // Records whose effect a kill cut short (idempotent runs).
    let mut cut: HashSet<String> = HashSet::new();
    let mut rng = kill_test_rng();
    let (mut kills, mut early, mut finished, mut runs) = (0, 0, 0, 0);
    while kills < KILLS {
        assert!(
            runs < 4 * KILLS,
            "only {kills} kills landed mid-work in {runs} runs"
        );
        runs += 1;
        // Wait until the run has started attempts (past start-up, loading
        // the checkpoint and the predecessor's expired locks), then kill at
        // a random point of the next 400 ms (each run has at least 0.5 s of
        // work: the records put since the last run, and those left by it);
        // sometimes kill earlier.
        let wait = if rng.random_bool(0.85) {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let end = run_and_kill_within(
            &bin,
            &args,
            &mut rng,
            || file_len(&attempt_log),
            wait,
            400_000,
        );
        match end {
            RunEnd::KilledMidWork => kills += 1,
            RunEnd::KilledEarly => early += 1,
            RunEnd::Finished => finished += 1,
        }
        if idempotent && !matches!(end, RunEnd::Finished) {
            cut.extend(rt.block_on(in_progress_keys(&env, &table)));
        }
        if !matches!(end, RunEnd::Finished) && (kills + early) % 2 == 0 {
            // Let the killed run's record locks expire (see the top).
            std::thread::sleep(LOCK_EXPIRE + Duration::from_millis(100));
        }
        // The next run has work to be killed in.
        rt.block_on(put(&env, &stream, next_id..next_id + MORE));
        next_id += MORE;
    }
    let out = Command::new(&bin).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = ids_in(&dir.path().join("target.jsonl"), |v| {
        v["id"]
            .as_str()
            .expect("a target line has an id")
            .to_owned()
    });
    let in_target: HashSet<&String> = target.iter().collect();
    let letters = rt.block_on(dead_letters(&env, &queue_url));
    for (id, attempts) in &letters {
        assert!(
            *attempts <= MAX_ATTEMPTS,
            "dead letter of record {id} after {attempts} attempts"
        );
    }
    let dead: HashSet<&String> = letters.iter().map(|(id, _)| id).collect();
    let lost: Vec<u64> = (1..next_id)
        .filter(|id| {
            let id = id.to_string();
            !in_target.contains(&id) && !dead.contains(&id)
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} records lost after {kills} kills: {lost:?}",
        lost.len()
    );
    let stray: Vec<&&String> = in_target
        .iter()
        .chain(dead.iter())
        .filter(|id| !id.parse::<u64>().is_ok_and(|n| (1..next_id).contains(&n)))
        .collect();
    assert!(stray.is_empty(), "ids never put: {stray:?}");

    // Each line is "<id> <attempt number>", written before the attempt's
    // work. The number is saved before the attempt starts, so a restart
    // never reuses it: a pair seen twice means an attempt count was lost.
    let log = std::fs::read_to_string(&attempt_log).expect("the attempt log");
    let mut attempts: HashMap<&str, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut retries = 0;
    for line in log.lines() {
        let (id, n) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad attempt line {line:?}"));
        let n: u64 = n
            .parse()
            .unwrap_or_else(|e| panic!("bad attempt line {line:?}: {e}"));
        assert!(
            (1..=MAX_ATTEMPTS).contains(&n),
            "attempt number out of range: {line}"
        );
        assert!(seen.insert((id, n)), "attempt {n} of record {id} ran twice");
        retries += usize::from(n > 1);
        *attempts.entry(id).or_default() += 1;
    }
    let over: Vec<_> = attempts
        .iter()
        .filter(|(_, n)| **n > MAX_ATTEMPTS)
        .collect();
    assert!(
        over.is_empty(),
        "records attempted more than {MAX_ATTEMPTS} times: {over:?}"
    );

    // A record runs again only if it was in flight, or finished with its
    // result not yet written, when its consumer was killed: at most
    // `--concurrency` records per kill.
    let duplicates = target.len() - in_target.len();
    let mut copies: HashMap<&String, usize> = HashMap::new();
    for id in &target {
        *copies.entry(id).or_default() += 1;
    }
    let duplicated: Vec<&&String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    if idempotent {
        let outside: Vec<&&&String> = duplicated
            .iter()
            .filter(|id| !cut.contains(id.as_str()))
            .collect();
        assert!(
            outside.is_empty(),
            "with --idempotent, records duplicated although no kill cut their effect: {outside:?} (cut: {} keys)",
            cut.len()
        );
    }
    eprintln!(
        "AWS KILL TEST (fan-out: {fan_out}, idempotent: {idempotent}): {kills} kills mid-work, {early} early, {finished} runs finished before their kill, in {runs} runs; {} records, {duplicates} duplicates in the target ({} records; {} effects cut by a kill), {} dead letters ({} distinct), {retries} retries; {:.0} s",
        next_id - 1,
        duplicated.len(),
        cut.len(),
        letters.len(),
        dead.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates as u64 <= CONCURRENCY * kills as u64,
        "{duplicates} duplicates after {kills} kills with {CONCURRENCY} in flight"
    );
    assert!(
        retries > 0 && !dead.is_empty(),
        "the run had no retries or no dead letters: the failures were not exercised"
    );

    if idempotent {
        // A redrive puts a letter's bytes back into the stream: records
        // whose effect completed, put again, run nothing.
        let again: Vec<u64> = in_target
            .iter()
            .filter(|id| !dead.contains(*id))
            .filter_map(|id| id.parse::<u64>().ok())
            .take(20)
            .collect();
        assert_eq!(again.len(), 20);
        let before = target.len();
        for id in &again {
            rt.block_on(put(&env, &stream, *id..*id + 1));
        }
        let out = Command::new(&bin).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "redrive run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = ids_in(&dir.path().join("target.jsonl"), |v| {
            v["id"]
                .as_str()
                .expect("a target line has an id")
                .to_owned()
        });
        assert_eq!(
            after.len(),
            before,
            "records put again after their effect completed ran it again"
        );
        eprintln!("AWS KILL TEST (idempotent): 20 completed records put again: 0 effects run");
    }

    rt.block_on(async {
        env.delete_stream(&stream).await;
        env.delete_table(&table).await;
        env.delete_bucket(&bucket).await;
        env.delete_queue(&queue_url).await;
    });
}
