//! Least privilege: the IAM policies of `docs/security.md`, read from that
//! file, on a moto server of this test's own with its IAM enforcement on
//! (`INITIAL_NO_AUTH_ACTION_COUNT`: its first 3 calls create an admin user
//! and its keys; every later call is checked). The examples run with
//! credentials holding exactly a role's policy and succeed; with one
//! permission taken away (or a resource moved out of the policy's scope)
//! they stop at once with an error naming the action and the resource —
//! never a retry loop, never a silent skip.
//!
//! What moto 5.2.1 checks, and so what the policies are adapted to here
//! (see [`for_moto`] and "What the test shows" in `docs/security.md`): the
//! action of every call; the resource only for S3 (bucket and object ARN)
//! and SQS (the queue's ARN, except `GetQueueUrl`); Kinesis and DynamoDB
//! calls are checked against the resource `*`, so their statements get
//! `"Resource": "*"`. And moto names a batch call's action after the call
//! (`sqs:SendMessageBatch`), where IAM uses the single form's.
//!
//! The server is started from `UNISTREAM_IT_MOTO_SERVER` (set by `cargo
//! xtask it`; the IAM set-up uses the Python next to it, which has boto3, or
//! `python3`). Outside the xtask the test is skipped loudly; under it a
//! missing variable is a failure.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../../tests/common/mod.rs"]
mod common;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Creates the admin user (the 3 calls moto does not authenticate), then,
/// as the admin, the resources and a user with an inline policy and keys
/// per role.
const SETUP: &str = r#"
import json, sys, boto3
from botocore.config import Config
inp = json.load(sys.stdin)
cfg = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})
def client(svc, key="unauthenticated", secret="unauthenticated"):
    return boto3.client(svc, endpoint_url=inp["endpoint"], region_name=inp["region"],
                        aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)
iam = client("iam")
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="admin")["AccessKey"]
admin = (k["AccessKeyId"], k["SecretAccessKey"])
iam = client("iam", *admin)
r = inp["resources"]
client("kinesis", *admin).create_stream(StreamName=r["stream"], ShardCount=1)
ddb = client("dynamodb", *admin)
for table, key in r["tables"].items():
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
client("s3", *admin).create_bucket(Bucket=r["bucket"])
sqs = client("sqs", *admin)
for queue in r["queues"]:
    sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "1"})
out = {"users": {}}
for name, policy in inp["users"].items():
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    out["users"][name] = [k["AccessKeyId"], k["SecretAccessKey"]]
print(json.dumps(out))
"#;

/// A moto server of this test's own, stopped (its process group) on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

fn answers(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

fn start_moto(exe: &Path, log: &Path) -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(port) {
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer within 20 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// `moto_server` from `cargo xtask it`; `None`, after a loud notice,
/// outside it.
fn moto_server() -> Option<PathBuf> {
    match std::env::var_os("UNISTREAM_IT_MOTO_SERVER") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("UNISTREAM_IT_EMULATOR").is_some() => panic!(
            "UNISTREAM_IT_MOTO_SERVER is not set, yet UNISTREAM_IT_EMULATOR is: `cargo xtask it` sets both"
        ),
        None => {
            eprintln!(
                "SKIPPED: needs moto_server: run with `cargo xtask it` (it sets UNISTREAM_IT_MOTO_SERVER)"
            );
            None
        }
    }
}

/// The Python with boto3 (moto's): the one next to `moto_server` in a
/// virtualenv, else `python3` (moto on the PATH was importable there).
fn python_of(moto_server: &Path) -> PathBuf {
    moto_server
        .parent()
        .map(|d| d.join("python"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The policies of `docs/security.md` (```json policy=NAME blocks).
fn policies_of_the_doc() -> serde_json::Map<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut out = serde_json::Map::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```json policy=") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let policy: Value = serde_json::from_str(&body.join("\n"))
            .unwrap_or_else(|e| panic!("policy {name} in docs/security.md: {e}"));
        out.insert(name.to_owned(), policy);
    }
    out
}

/// The names of this run's resources.
struct Names {
    stream: String,
    checkpoint_table: String,
    lease_table: String,
    bucket: String,
    queue: String,
}

/// A policy with the placeholders filled in.
fn fill(policy: &Value, n: &Names) -> Value {
    let text = policy
        .to_string()
        .replace("CHECKPOINT_TABLE", &n.checkpoint_table)
        .replace("LEASE_TABLE", &n.lease_table)
        .replace("STREAM", &n.stream)
        .replace("BUCKET", &n.bucket)
        .replace("PREFIX", "unistream/")
        .replace("QUEUE", &n.queue)
        .replace("REGION", REGION)
        .replace("ACCOUNT", ACCOUNT);
    serde_json::from_str(&text).unwrap()
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
        _ => panic!("not a string or a list: {v}"),
    }
}

/// The policy as moto 5.2.1 can check it: Kinesis and DynamoDB calls, and
/// SQS `GetQueueUrl`, are checked against the resource `*` (a statement
/// scoped to an ARN would deny them all), and SQS `SendMessageBatch` is
/// checked as `sqs:SendMessageBatch`. S3 and the other SQS statements keep
/// their scope.
fn for_moto(policy: &Value) -> Value {
    let mut statements = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        let mut s = s.clone();
        let resources = list(&s["Resource"]);
        if resources
            .iter()
            .any(|r| r.starts_with("arn:aws:kinesis:") || r.starts_with("arn:aws:dynamodb:"))
        {
            s["Resource"] = json!("*");
        }
        let mut actions = list(&s["Action"]);
        if actions.iter().any(|a| a == "sqs:GetQueueUrl") {
            actions.retain(|a| a != "sqs:GetQueueUrl");
            statements
                .push(json!({"Effect": "Allow", "Action": ["sqs:GetQueueUrl"], "Resource": "*"}));
        }
        if actions.iter().any(|a| a == "sqs:SendMessage") {
            actions.push("sqs:SendMessageBatch".into());
        }
        s["Action"] = json!(actions);
        statements.push(s);
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The policy without `action`.
fn without(policy: &Value, action: &str) -> Value {
    let mut p = policy.clone();
    for s in p["Statement"].as_array_mut().unwrap() {
        let actions: Vec<String> = list(&s["Action"])
            .into_iter()
            .filter(|a| a != action)
            .collect();
        s["Action"] = json!(actions);
    }
    p
}

/// The policy with every resource `from` replaced by `to`.
fn rescoped(policy: &Value, from: &str, to: &str) -> Value {
    serde_json::from_str(&policy.to_string().replace(from, to)).unwrap()
}

/// Runs an example with a user's keys; kills it (and fails: a retry loop)
/// if it has not ended within `within`.
fn run(keys: &Value, bin: &Path, args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", keys[0].as_str().unwrap())
        .env("AWS_SECRET_ACCESS_KEY", keys[1].as_str().unwrap())
        .env("AWS_REGION", REGION)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{} {args:?} still running after {within:?} (a retry loop?):\n{}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn succeeded(what: &str, out: &Output) -> String {
    let t = text(out);
    assert!(out.status.success(), "{what} failed: {t}");
    eprintln!("--- {what}: ok\n{}", t.trim_end());
    t
}

/// The run ended (in time, see [`run`]) with a failure whose message names
/// the action and the resource.
#[track_caller]
fn denied(what: &str, out: &Output, expected: &str) {
    let t = text(out);
    assert!(
        !out.status.success(),
        "{what} succeeded without the permission: {t}"
    );
    assert!(
        t.contains(expected),
        "{what}: no {expected:?} in the output:\n{t}"
    );
    let error = t
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{what}: no error line:\n{t}"));
    eprintln!("--- {what}: denied as expected\n{error}");
}

#[test]
#[ignore = "needs moto_server: run with `cargo xtask it`"]
fn each_role_runs_with_its_policy_and_a_missing_permission_is_a_clear_error() {
    let Some(moto_server) = moto_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let moto = start_moto(&moto_server, &dir.path().join("moto.log"));
    let url = moto.url.as_str();
    let n = Names {
        stream: "iam-stream".into(),
        checkpoint_table: "iam-checkpoints".into(),
        lease_table: "iam-leases".into(),
        bucket: "iam-bucket".into(),
        queue: "iam-dlq".into(),
    };
    let doc = policies_of_the_doc();
    for role in [
        "producer",
        "shard-consumer",
        "lease-worker",
        "redrive",
        "cli-read",
        "cli-repair",
    ] {
        assert!(
            doc.contains_key(role),
            "no policy {role} in docs/security.md"
        );
    }
    let policy = |role: &str| for_moto(&fill(&doc[role], &n));
    let other_queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:iam-other-queue");
    let users = json!({
        "producer": policy("producer"),
        "shard-consumer": policy("shard-consumer"),
        "lease-worker": policy("lease-worker"),
        "redrive": policy("redrive"),
        "producer-without-putrecords": without(&policy("producer"), "kinesis:PutRecords"),
        "consumer-without-getrecords": without(&policy("shard-consumer"), "kinesis:GetRecords"),
        "consumer-without-putitem": without(&policy("shard-consumer"), "dynamodb:PutItem"),
        "consumer-other-prefix": rescoped(
            &policy("shard-consumer"),
            "arn:aws:s3:::iam-bucket/unistream/*",
            "arn:aws:s3:::iam-bucket/other/*",
        ),
        "consumer-other-queue": rescoped(
            &policy("shard-consumer"),
            &format!("arn:aws:sqs:{REGION}:{ACCOUNT}:iam-dlq"),
            &other_queue_arn,
        ),
        "worker-without-scan": without(&policy("lease-worker"), "dynamodb:Scan"),
        "worker-without-getrecords": without(&policy("lease-worker"), "kinesis:GetRecords"),
        "redrive-without-deletemessage": without(&policy("redrive"), "sqs:DeleteMessage"),
    });
    eprintln!(
        "the producer's policy as moto checks it: {}",
        users["producer"]
    );
    let python = python_of(&moto_server);
    let setup = unistream_test_support::run_python(
        &python,
        SETUP,
        &json!({
            "endpoint": url,
            "region": REGION,
            "resources": {
                "stream": n.stream,
                "tables": {n.checkpoint_table.as_str(): "id", n.lease_table.as_str(): "lease_key"},
                "bucket": n.bucket,
                "queues": [n.queue.as_str(), "iam-other-queue"],
            },
            "users": users,
        }),
    );
    let keys = |user: &str| setup["users"][user].clone();
    let queue_url = format!("{url}/{ACCOUNT}/{}", n.queue);
    let d = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let minute = Duration::from_secs(60);
    let producer = common::example_bin_of("unistream-aws-examples", "aws_kinesis_producer");
    let consumer = common::example_bin_of("unistream-aws-examples", "aws_production_consumer");
    let worker = common::example_bin_of("unistream-aws-examples", "kinesis_stream_consumer");
    let redrive = common::example_bin_of("unistream-aws-examples", "aws_redrive");

    // Producer. Retries without limit, 10 ms apart: a denial must still end it.
    let produce = |user: &str, dir: &str| {
        run(
            &keys(user),
            &producer,
            &[
                "--endpoint",
                url,
                "--stream",
                &n.stream,
                "--count",
                "12",
                "--interval-ms",
                "0",
                "--fail-rate",
                "0",
                "--backoff-ms",
                "10",
                "--dir",
                dir,
            ],
            minute,
        )
    };
    let out = produce("producer-without-putrecords", &d("p-denied"));
    denied(
        "producer without kinesis:PutRecords",
        &out,
        "error: kinesis:PutRecords on stream iam-stream was denied: AccessDenied: User: arn:aws:iam::123456789012:user/producer-without-putrecords is not authorized to perform: kinesis:PutRecords",
    );
    assert_eq!(
        text(&out).matches("send denied").count(),
        1,
        "one call, no retry: {}",
        text(&out)
    );
    succeeded("producer", &produce("producer", &d("p")));

    // Shard consumer (DynamoDB + S3 checkpoint, SQS dead letters); records
    // fail at random, 2 attempts each, so that some reach the queue.
    let consume = |user: &str, dir: &str, fail_rate: &str| {
        run(
            &keys(user),
            &consumer,
            &[
                "--endpoint",
                url,
                "--stream",
                &n.stream,
                "--table",
                &n.checkpoint_table,
                "--bucket",
                &n.bucket,
                "--queue",
                &n.queue,
                "--until-end",
                "--limit",
                "12",
                "--max-attempts",
                "2",
                "--backoff-ms",
                "0",
                "--fail-rate",
                fail_rate,
                "--lock-expire-s",
                "1",
                "--dir",
                dir,
            ],
            minute,
        )
    };
    let cp_key = "\"iam-stream-shardId-000000000000\"";
    std::fs::create_dir_all(d("c-getrecords")).unwrap();
    denied(
        "shard consumer without kinesis:GetRecords",
        &consume("consumer-without-getrecords", &d("c-getrecords"), "0.6"),
        "kinesis:GetRecords on stream iam-stream, shard shardId-000000000000 was denied: AccessDenied",
    );
    std::fs::create_dir_all(d("c-putitem")).unwrap();
    denied(
        "shard consumer without dynamodb:PutItem",
        &consume("consumer-without-putitem", &d("c-putitem"), "0.6"),
        &format!(
            "dynamodb:PutItem on table iam-checkpoints, key {cp_key} was denied: AccessDenied"
        ),
    );
    std::fs::create_dir_all(d("c-prefix")).unwrap();
    denied(
        "shard consumer whose S3 scope is another prefix",
        &consume("consumer-other-prefix", &d("c-prefix"), "0.6"),
        "s3:PutObject on s3://iam-bucket/unistream/iam-stream-shardId-000000000000/records-",
    );
    // Every attempt fails: the first record goes to the queue, which is
    // out of this user's scope.
    std::fs::create_dir_all(d("c-queue")).unwrap();
    denied(
        "shard consumer whose SQS scope is another queue",
        &consume("consumer-other-queue", &d("c-queue"), "1"),
        &format!("sqs:SendMessage on queue {queue_url} was denied: AccessDenied"),
    );
    std::fs::create_dir_all(d("c")).unwrap();
    let t = succeeded("shard consumer", &consume("shard-consumer", &d("c"), "0.6"));
    assert!(t.contains("dead-lettered"), "{t}");

    // Redrive: the letters back into the stream.
    std::thread::sleep(Duration::from_secs(2)); // the letters' visibility
    let redrive_with = |user: &str, dir: &str| {
        run(
            &keys(user),
            &redrive,
            &[
                "--endpoint",
                url,
                "--queue",
                &n.queue,
                "--stream",
                &n.stream,
                "--dir",
                dir,
            ],
            minute,
        )
    };
    denied(
        "redrive without sqs:DeleteMessage",
        &redrive_with("redrive-without-deletemessage", &d("r-denied")),
        &format!("sqs:DeleteMessage on queue {queue_url} was denied: AccessDenied"),
    );
    std::thread::sleep(Duration::from_secs(2)); // the letters' visibility
    let t = succeeded("redrive", &redrive_with("redrive", &d("r")));
    let redriven: u64 = t
        .split("redriven: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no redriven count: {t}"));
    assert!(redriven > 0, "{t}");

    // Lease worker: every shard, leases in DynamoDB. It runs until SIGTERM.
    let work = |user: &str, app: &str, dir: &str| {
        Command::new(&worker)
            .args([
                "--endpoint",
                url,
                "--stream",
                &n.stream,
                "--app",
                app,
                "--worker",
                app,
                "--lease-table",
                &n.lease_table,
                "--checkpoint-table",
                &n.checkpoint_table,
                "--bucket",
                &n.bucket,
                "--delay-ms",
                "100",
                "--dir",
                dir,
            ])
            .env("AWS_ACCESS_KEY_ID", keys(user)[0].as_str().unwrap())
            .env("AWS_SECRET_ACCESS_KEY", keys(user)[1].as_str().unwrap())
            .env("AWS_REGION", REGION)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = work("lease-worker", "iam-app", &d("w"));
    let processed = dir.path().join("w").join("iam-app.processed.jsonl");
    let records = 12 + redriven as usize;
    let deadline = Instant::now() + minute;
    loop {
        let lines = std::fs::read_to_string(&processed)
            .unwrap_or_default()
            .lines()
            .count();
        if lines >= records {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("the lease worker ended ({status}): {}", text(&out));
        }
        assert!(
            Instant::now() < deadline,
            "the lease worker processed {lines} of {records} records in a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + minute;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the lease worker did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = succeeded("lease worker", &child.wait_with_output().unwrap());
    assert!(t.contains(&format!("{records} records")), "{t}");

    let run_worker = |user: &str, app: &str| {
        let child = work(user, app, &d(app));
        let pid = child.id();
        let deadline = Instant::now() + minute;
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "{user} still running after a minute (a retry loop?): {}",
                    text(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    denied(
        "lease worker without dynamodb:Scan",
        &run_worker("worker-without-scan", "iam-app-2"),
        "dynamodb:Scan on lease table iam-leases was denied: AccessDenied",
    );
    denied(
        "lease worker without kinesis:GetRecords",
        &run_worker("worker-without-getrecords", "iam-app-3"),
        "kinesis:GetRecords on stream iam-stream, shard shardId-000000000000 was denied: AccessDenied",
    );
    drop(moto);
}
