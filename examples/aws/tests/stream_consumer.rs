//! Scale-out as a user runs it: `kinesis_stream_consumer` worker processes
//! over one 4-shard stream of 20,000 records, against the emulator that
//! `cargo xtask it` provides. Leases are in DynamoDB; checkpoints are local
//! files shared by the workers (moto answers DynamoDB writes at ~100/s,
//! too slow for a per-record checkpoint of 20,000 records in a test; the
//! DynamoDB + S3 store under leases is tested in `unistream-leases`).
//!
//! One worker alone first (the baseline), then three on a second
//! application of the same stream, then three more on a third one, one of
//! which is killed with `kill -9` mid-way. Checked: every record processed
//! or dead-lettered; the killed worker's shards taken over within the
//! failover time; duplicates only for records the killed worker had not
//! checkpointed (at most one per shard it held); per shard, processing
//! never switches workers more often than the lease moved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unistream_test_support::Env;

#[path = "../../tests/common/mod.rs"]
mod common;

const RECORDS: u64 = 20_000;
const FAILOVER_MS: u64 = 3_000;

/// `(time, shards held)` for each change a worker printed.
type Holds = Arc<Mutex<Vec<(Instant, Vec<String>)>>>;

/// A running worker and what it printed.
struct Worker {
    name: String,
    child: Child,
    holds: Holds,
}

fn start(bin: &Path, args: &[String], name: &str) -> Worker {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--worker", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holds: Holds = Arc::default();
    let out = child.stdout.take().unwrap();
    let sink = holds.clone();
    let prefix = format!("{name} holds ");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(list) = line.strip_prefix(&prefix) {
                let shards: Vec<String> = serde_json::from_str(list).unwrap_or_default();
                sink.lock().unwrap().push((Instant::now(), shards));
            }
        }
    });
    Worker {
        name: name.to_owned(),
        child,
        holds,
    }
}

impl Worker {
    fn held(&self) -> Vec<String> {
        self.holds
            .lock()
            .unwrap()
            .last()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// How many times it started holding each shard.
    fn acquisitions(&self) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        let mut before: HashSet<String> = HashSet::new();
        for (_, held) in self.holds.lock().unwrap().iter() {
            let now: HashSet<String> = held.iter().cloned().collect();
            for s in now.difference(&before) {
                *n.entry(s.clone()).or_default() += 1;
            }
            before = now;
        }
        n
    }

    fn interrupt(&mut self) {
        self.signal("-INT");
    }

    fn signal(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

#[derive(Debug, Clone)]
struct Attempt {
    worker: String,
    shard: String,
    id: String,
    ok: bool,
    t: i64,
}

/// The lines of a JSON-lines file, each of which must parse, but for an
/// unterminated last one: a worker killed for good (never restarted to
/// repair it) may leave half a line.
fn whole_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad line {l:?} in {}: {e}", path.display()))
        })
        .collect()
}

fn attempts(dir: &Path) -> Vec<Attempt> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".processed.jsonl") {
            continue;
        }
        for v in whole_lines(&path) {
            all.push(Attempt {
                worker: v["worker"].as_str().unwrap().to_owned(),
                shard: v["shard"].as_str().unwrap().to_owned(),
                id: v["id"].as_str().unwrap().to_owned(),
                ok: v["ok"].as_bool().unwrap(),
                t: v["t"].as_i64().unwrap(),
            });
        }
    }
    all
}

fn dead_letters(dir: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".dlq.jsonl") {
            continue;
        }
        for v in whole_lines(&path) {
            ids.insert(v["record_id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

/// Ids done (succeeded or dead-lettered) so far.
fn done(dir: &Path) -> HashSet<String> {
    let mut ids: HashSet<String> = attempts(dir)
        .into_iter()
        .filter(|a| a.ok)
        .map(|a| a.id)
        .collect();
    ids.extend(dead_letters(dir));
    ids
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn fill(env: &Env, stream: &str) {
    let t0 = chrono::Utc::now();
    env.put_raw(
        stream,
        (0..RECORDS).map(|i| {
            let data = format!(
                "{{\"id\": \"{i}\", \"create_at\": \"{}\", \"value\": {}}}",
                t0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
                i % 100
            );
            (i.to_string(), data.into_bytes())
        }),
    )
    .await;
}

#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn three_workers_share_four_shards_and_take_over_from_a_killed_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::from_env());
    if env.skip_unless(unistream_test_support::Service::DynamoDb) {
        return;
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let (stream, leases) = rt.block_on(async {
        let stream = env.create_stream(4).await;
        fill(&env, &stream).await;
        let leases = env.create_table(unistream::leases::LEASE_KEY).await;
        (stream, leases)
    });
    let bin = common::example_bin_of("unistream-aws-examples", "kinesis_stream_consumer");
    let dir = tempfile::tempdir().unwrap();
    let args = |app: &str, out: &Path| -> Vec<String> {
        [
            "--endpoint",
            &endpoint,
            "--stream",
            &stream,
            "--app",
            app,
            "--lease-table",
            &leases,
            "--checkpoint-dir",
            dir.path().join("checkpoints").to_str().unwrap(),
            "--dir",
            out.to_str().unwrap(),
            "--failover-ms",
            &FAILOVER_MS.to_string(),
            "--limit",
            "500",
            "--fail-rate",
            "0.05",
            "--max-attempts",
            "3",
            "--delay-ms",
            "200",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let all: HashSet<String> = (0..RECORDS).map(|i| i.to_string()).collect();

    // One worker alone: the baseline.
    let solo_dir = dir.path().join("solo");
    std::fs::create_dir_all(&solo_dir).unwrap();
    let t = Instant::now();
    let mut solo = start(&bin, &args("solo", &solo_dir), "solo");
    wait_for(
        "the solo worker to finish",
        Duration::from_secs(300),
        || done(&solo_dir).len() == all.len(),
    );
    let solo_secs = t.elapsed().as_secs_f64();
    solo.interrupt();
    assert!(solo.child.wait().unwrap().success());

    // Three workers, left alone: the same work shared.
    let three_dir = dir.path().join("three");
    std::fs::create_dir_all(&three_dir).unwrap();
    let t = Instant::now();
    let mut three: Vec<Worker> = ["t1", "t2", "t3"]
        .iter()
        .map(|w| start(&bin, &args("three", &three_dir), w))
        .collect();
    wait_for(
        "the three workers to finish",
        Duration::from_secs(300),
        || done(&three_dir).len() == all.len(),
    );
    let three_secs = t.elapsed().as_secs_f64();
    for w in &mut three {
        w.interrupt();
    }
    for w in &mut three {
        assert!(w.child.wait().unwrap().success());
    }

    // Three workers, one killed mid-way.
    let out = dir.path().join("kill");
    std::fs::create_dir_all(&out).unwrap();
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| start(&bin, &args("kill", &out), w))
        .collect();
    wait_for("every shard to be held", Duration::from_secs(60), || {
        let held: Vec<String> = workers.iter().flat_map(Worker::held).collect();
        held.len() == 4 && held.iter().collect::<HashSet<_>>().len() == 4
    });
    // Balanced before the kill (it may take a couple of rounds).
    wait_for("a balanced 2/1/1", Duration::from_secs(30), || {
        let mut counts: Vec<usize> = workers.iter().map(|w| w.held().len()).collect();
        counts.sort();
        counts == [1, 1, 2]
    });
    wait_for("a quarter of the records", Duration::from_secs(300), || {
        done(&out).len() as u64 >= RECORDS / 4
    });
    let victim = workers.iter().position(|w| !w.held().is_empty()).unwrap();
    let orphaned = workers[victim].held();
    workers[victim].child.kill().unwrap(); // SIGKILL
    workers[victim].child.wait().unwrap();
    let killed_at = Instant::now();
    let victim_name = workers[victim].name.clone();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    wait_for(
        "the killed worker's shards to be taken over",
        Duration::from_secs(60),
        || {
            let held: HashSet<String> = survivors.iter().flat_map(|i| workers[*i].held()).collect();
            orphaned.iter().all(|s| held.contains(s))
        },
    );
    let takeover = killed_at.elapsed();
    wait_for("every record", Duration::from_secs(300), || {
        done(&out).len() == all.len()
    });
    for i in &survivors {
        workers[*i].interrupt();
    }
    for i in &survivors {
        assert!(workers[*i].child.wait().unwrap().success());
    }

    let got = attempts(&out);
    let dead = dead_letters(&out);
    assert_eq!(done(&out), all, "every record processed or dead-lettered");
    // Duplicates: only records the killed worker had not checkpointed, at
    // most one per shard it held.
    let mut ok_by: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in got.iter().filter(|a| a.ok) {
        ok_by.entry(a.id.as_str()).or_default().push(a);
    }
    let dups: Vec<_> = ok_by.iter().filter(|(_, v)| v.len() > 1).collect();
    for (id, v) in &dups {
        assert_eq!(v.len(), 2, "record {id} succeeded {} times", v.len());
        assert!(
            v.iter().any(|a| a.worker == victim_name),
            "record {id} ran twice without the kill: {v:?}"
        );
    }
    assert!(
        dups.len() <= orphaned.len(),
        "{} duplicates for {} shards killed",
        dups.len(),
        orphaned.len()
    );
    // One worker at a time per shard: in time order, processing switches
    // workers no more often than the lease moved.
    let mut by_shard: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in &got {
        by_shard.entry(a.shard.as_str()).or_default().push(a);
    }
    let mut acquisitions: HashMap<String, usize> = HashMap::new();
    for w in &workers {
        for (s, n) in w.acquisitions() {
            *acquisitions.entry(s).or_default() += n;
        }
    }
    for (shard, mut v) in by_shard {
        v.sort_by_key(|a| a.t);
        let runs = 1 + v.windows(2).filter(|w| w[0].worker != w[1].worker).count();
        let moves = acquisitions.get(shard).copied().unwrap_or(0);
        assert!(
            runs <= moves.max(1),
            "shard {shard}: processing switched workers {runs} times, lease acquired {moves} times"
        );
    }
    // Taken within the failover time of the last renewal (so of the kill),
    // plus the calls that take the lease and start the shard, which moto —
    // one Python process, busy serving the workers' reads — answers slowly.
    let takeover_limit = Duration::from_millis(FAILOVER_MS + 2_000);
    eprintln!(
        "SCALE-OUT {{\"records\":{RECORDS},\"solo_seconds\":{solo_secs:.2},\"three_seconds\":{three_secs:.2},\"solo_rps\":{:.0},\"three_rps\":{:.0},\"takeover_ms\":{},\"failover_ms\":{FAILOVER_MS},\"duplicates\":{},\"dead_letters\":{},\"killed_shards\":{}}}",
        RECORDS as f64 / solo_secs,
        RECORDS as f64 / three_secs,
        takeover.as_millis(),
        dups.len(),
        dead.len(),
        orphaned.len()
    );
    assert!(
        takeover <= takeover_limit,
        "takeover took {takeover:?}, over {takeover_limit:?}"
    );
    rt.block_on(async {
        env.delete_stream(&stream).await;
        env.delete_table(&leases).await;
    });
}

/// SIGTERM — what systemd, Kubernetes, ECS and `docker stop` send — stops a
/// worker gracefully: it checkpoints, releases its leases and exits 0, and
/// another worker takes them at its next scan (every failover / 4), not
/// after the failover time.
#[test]
#[ignore = "needs an AWS emulator: run with `cargo xtask it`"]
fn sigterm_releases_leases_to_another_worker_within_one_scan() {
    const FAILOVER: Duration = Duration::from_secs(8);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::from_env());
    if env.skip_unless(unistream_test_support::Service::DynamoDb) {
        return;
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let (stream, leases) = rt.block_on(async {
        let stream = env.create_stream(2).await;
        let t0 = chrono::Utc::now();
        env.put_raw(
            &stream,
            (0..200).map(|i| {
                let data = format!(
                    "{{\"id\": \"{i}\", \"create_at\": \"{}\", \"value\": 1}}",
                    t0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
                );
                (i.to_string(), data.into_bytes())
            }),
        )
        .await;
        let leases = env.create_table(unistream::leases::LEASE_KEY).await;
        (stream, leases)
    });
    let bin = common::example_bin_of("unistream-aws-examples", "kinesis_stream_consumer");
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--endpoint",
        &endpoint,
        "--stream",
        &stream,
        "--app",
        "sigterm",
        "--lease-table",
        &leases,
        "--checkpoint-dir",
        dir.path().join("checkpoints").to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
        "--failover-ms",
        &FAILOVER.as_millis().to_string(),
        "--fail-rate",
        "0",
        "--delay-ms",
        "200",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut a = start(&bin, &args, "a");
    wait_for("a to hold both shards", Duration::from_secs(60), || {
        a.held().len() == 2
    });
    let b = start(&bin, &args, "b");
    wait_for("b to take its share", Duration::from_secs(60), || {
        b.held().len() == 1
    });
    let t = Instant::now();
    a.signal("-TERM");
    let status = a.child.wait().unwrap();
    let stopped = t.elapsed();
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    assert!(a.held().is_empty(), "a released its leases: {:?}", a.held());
    wait_for("b to take a's lease", FAILOVER, || b.held().len() == 2);
    let taken = t.elapsed();
    eprintln!(
        "SIGTERM: worker stopped in {} ms, its lease taken by the other in {} ms (failover {} ms, scan every {} ms)",
        stopped.as_millis(),
        taken.as_millis(),
        FAILOVER.as_millis(),
        FAILOVER.as_millis() / 4
    );
    assert!(
        taken < FAILOVER / 2,
        "taken after {taken:?}: that is waiting out the lease, not a release (failover {FAILOVER:?})"
    );
    let mut b = b;
    b.interrupt();
    assert!(b.child.wait().unwrap().success());
}
