//! The producer against a shard that enforces its write quota: user records
//! per `PutRecords` entry and per call, bytes per entry, user records/s and
//! the share of throttled calls, with and without KPL aggregation, with and
//! without the sink's per-shard rate limit.
//!
//! ```text
//! moto_server -H 127.0.0.1 -p 5000 &
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo bench -p unistream-kinesis --bench quota -- [--records N] [--plain-records N]
//! ```
//!
//! moto does not enforce Kinesis quotas, so the bench puts a **quota-enforcing
//! proxy** in front of it: a loopback HTTP server (hyper) that the sink's
//! client talks to. It reads each `PutRecords` request (JSON: the Rust SDK
//! speaks `awsJson1_1` to Kinesis), predicts each entry's shard from the
//! stream's hash-key ranges, and answers `ProvisionedThroughputExceededException`
//! for every entry beyond the shard's quota — a token bucket per shard of
//! 1,000 entries/s and 1 MiB/s (data and partition key), holding at most one
//! second of quota, on the real clock. The entries within quota are put into
//! moto (with the SDK) and their results returned in place. `ListShards` is
//! passed to moto; nothing else is served.
//!
//! Each case is one stream of one shard, a backlog of records of 100 bytes
//! (distinct partition keys) in a memory buffer in batches of 500 records
//! (5,000 for the aggregated cases, so that a batch fills several aggregates
//! of 51,200 bytes; one row shows aggregation with batches of 500), sent by
//! `Producer::flush` with waits of 0.1, 0.2, 0.4, 0.8 then 1 s after a failed
//! or partial send. Without `AWS_ENDPOINT_URL` it says so and does nothing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::memory::MemoryBuffer;
use unistream_core::producer::{Producer, ProducerConfig};
use unistream_core::retry::RetryPolicy;
use unistream_core::sink::EncodedRecord;
use unistream_kinesis::aggregation;
use unistream_kinesis::{Aggregation, KinesisSink, RateLimit};
use unistream_test_support::Env;

const QUOTA_ENTRIES: f64 = 1_000.0;
const QUOTA_BYTES: f64 = 1_048_576.0;

use unistream_test_support::bench_arg as arg;

/// One shard's quota as the proxy enforces it.
struct Bucket {
    entries: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    fn full() -> Self {
        Bucket {
            entries: QUOTA_ENTRIES,
            bytes: QUOTA_BYTES,
            at: Instant::now(),
        }
    }

    /// Takes one entry of `size` bytes if the quota allows it now.
    fn admit(&mut self, size: f64) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.entries = (self.entries + dt * QUOTA_ENTRIES).min(QUOTA_ENTRIES);
        self.bytes = (self.bytes + dt * QUOTA_BYTES).min(QUOTA_BYTES);
        if self.entries >= 1.0 && self.bytes >= size {
            self.entries -= 1.0;
            self.bytes -= size;
            true
        } else {
            false
        }
    }
}

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
struct Counts {
    calls: u64,
    throttled_calls: u64,
    entries: u64,
    throttled_entries: u64,
    accepted_entries: u64,
    accepted_users: u64,
    accepted_bytes: u64,
}

/// A stream's open shards: hash-key range (start, end) and shard id.
type Ranges = Vec<(u128, u128, String)>;

struct Proxy {
    moto: Client,
    /// Hash-key ranges (start, end, shard id) by stream.
    shards: Mutex<HashMap<String, Ranges>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    counts: Mutex<Counts>,
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn error(kind: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(400, json!({"__type": kind, "message": message}))
}

impl Proxy {
    async fn ranges(&self, stream: &str) -> Result<Ranges, String> {
        if let Some(r) = self.lock_shards().get(stream) {
            return Ok(r.clone());
        }
        let out = self
            .moto
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let ranges: Vec<_> = out
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none())
            })
            .filter_map(|s| {
                let r = s.hash_key_range()?;
                Some((
                    r.starting_hash_key().parse().ok()?,
                    r.ending_hash_key().parse().ok()?,
                    s.shard_id().to_owned(),
                ))
            })
            .collect();
        self.lock_shards().insert(stream.to_owned(), ranges.clone());
        Ok(ranges)
    }

    fn lock_shards(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ranges>> {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn list_shards(&self, body: &Value) -> Response<Full<Bytes>> {
        let Some(stream) = body["StreamName"].as_str() else {
            return error("InvalidArgumentException", "StreamName is required");
        };
        let out = match self.moto.list_shards().stream_name(stream).send().await {
            Ok(out) => out,
            Err(e) => return error("ResourceNotFoundException", &format!("{e:?}")),
        };
        let shards: Vec<Value> = out
            .shards()
            .iter()
            .map(|s| {
                let mut seq = json!({});
                if let Some(r) = s.sequence_number_range() {
                    seq = json!({"StartingSequenceNumber": r.starting_sequence_number()});
                    if let Some(end) = r.ending_sequence_number() {
                        seq["EndingSequenceNumber"] = json!(end);
                    }
                }
                json!({
                    "ShardId": s.shard_id(),
                    "HashKeyRange": {
                        "StartingHashKey": s.hash_key_range().map(|r| r.starting_hash_key()),
                        "EndingHashKey": s.hash_key_range().map(|r| r.ending_hash_key()),
                    },
                    "SequenceNumberRange": seq,
                })
            })
            .collect();
        json_response(200, json!({"Shards": shards}))
    }

    async fn put_records(&self, body: &Value) -> Response<Full<Bytes>> {
        let Some(stream) = body["StreamName"].as_str() else {
            return error("InvalidArgumentException", "StreamName is required");
        };
        let ranges = match self.ranges(stream).await {
            Ok(r) => r,
            Err(e) => return error("ResourceNotFoundException", &e),
        };
        let records = body["Records"].as_array().cloned().unwrap_or_default();
        // Decide each entry against its shard's bucket, in order.
        let mut admitted: Vec<(usize, PutRecordsRequestEntry, u64, u64)> = Vec::new();
        let mut results: Vec<Value> = vec![Value::Null; records.len()];
        let mut throttled = 0u64;
        {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, r) in records.iter().enumerate() {
                let key = r["PartitionKey"].as_str().unwrap_or_default();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                let ehk = r["ExplicitHashKey"].as_str();
                let hash = ehk
                    .and_then(|k| k.parse::<u128>().ok())
                    .unwrap_or_else(|| u128::from_be_bytes(Md5::digest(key.as_bytes()).into()));
                let shard = ranges
                    .iter()
                    .find(|(s, e, _)| *s <= hash && hash <= *e)
                    .map_or("none", |(_, _, id)| id.as_str());
                let size = (data.len() + key.len()) as f64;
                let bucket = buckets
                    .entry(format!("{stream}/{shard}"))
                    .or_insert_with(Bucket::full);
                if bucket.admit(size) {
                    let users = match aggregation::decode(&data) {
                        Ok(Some(u)) => u.len() as u64,
                        _ => 1,
                    };
                    let entry = PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .set_explicit_hash_key(ehk.map(str::to_owned))
                        .data(Blob::new(data));
                    match entry.build() {
                        Ok(entry) => admitted.push((i, entry, users, size as u64)),
                        Err(e) => return error("InvalidArgumentException", &e.to_string()),
                    }
                } else {
                    throttled += 1;
                    results[i] = json!({
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": format!("Rate exceeded for shard {shard} in stream {stream} (quota-enforcing proxy)"),
                    });
                }
            }
        }
        let (mut users, mut bytes) = (0, 0);
        if !admitted.is_empty() {
            let out = match self
                .moto
                .put_records()
                .stream_name(stream)
                .set_records(Some(admitted.iter().map(|a| a.1.clone()).collect()))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => return error("InternalFailure", &format!("{e:?}")),
            };
            for ((i, _, u, b), r) in admitted.iter().zip(out.records()) {
                results[*i] = match r.error_code() {
                    Some(code) => {
                        throttled += 1;
                        json!({"ErrorCode": code, "ErrorMessage": r.error_message()})
                    }
                    None => {
                        users += u;
                        bytes += b;
                        json!({"SequenceNumber": r.sequence_number(), "ShardId": r.shard_id()})
                    }
                };
            }
        }
        {
            let mut c = self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.calls += 1;
            c.entries += records.len() as u64;
            c.throttled_entries += throttled;
            c.throttled_calls += u64::from(throttled > 0);
            c.accepted_entries += records.len() as u64 - throttled;
            c.accepted_users += users;
            c.accepted_bytes += bytes;
        }
        json_response(
            200,
            json!({"FailedRecordCount": throttled, "Records": results}),
        )
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Ok(error("SerializationException", &e.to_string())),
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(match target.rsplit('.').next() {
            Some("PutRecords") => self.put_records(&body).await,
            Some("ListShards") => self.list_shards(&body).await,
            _ => error(
                "UnknownOperationException",
                &format!(
                    "the quota-enforcing proxy serves PutRecords and ListShards, not {target}"
                ),
            ),
        })
    }

    fn take_counts(&self) -> Counts {
        std::mem::take(
            &mut *self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Starts the quota-enforcing proxy on a free loopback port.
async fn start_proxy(moto: Client) -> (Arc<Proxy>, SocketAddr) {
    let proxy = Arc::new(Proxy {
        moto,
        shards: Mutex::default(),
        buckets: Mutex::default(),
        counts: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let p = Arc::clone(&proxy);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                let service = service_fn(move |req| Arc::clone(&p).handle(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (proxy, addr)
}

/// A record of 100 bytes with its own partition key.
fn record(i: u64) -> EncodedRecord {
    let mut data = format!("{{\"id\":\"{i}\",\"value\":{},\"note\":\"", i % 100).into_bytes();
    data.resize(98, b'x');
    data.extend_from_slice(b"\"}");
    EncodedRecord::new(i.to_string(), format!("key-{i}"), data)
}

#[allow(clippy::too_many_arguments)]
async fn case(
    batch: usize,
    env: &Env,
    proxy: &Proxy,
    via_proxy: &Client,
    name: &str,
    n: u64,
    aggregate: bool,
    limit: bool,
) -> f64 {
    let stream = env.create_stream(1).await;
    let mut sink = KinesisSink::new(via_proxy.clone(), &stream);
    if aggregate {
        sink = sink.with_aggregation(Aggregation::default());
    }
    if limit {
        sink = sink.with_rate_limit(RateLimit::default());
    }
    let buffer = MemoryBuffer::new(BufferLimits::records(batch));
    let backlog: Vec<EncodedRecord> = (0..n).map(record).collect();
    for chunk in backlog.chunks(batch) {
        buffer
            .put_many(chunk)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut config = ProducerConfig::default();
    config.linger = None;
    config.retry = RetryPolicy::waits([100, 200, 400, 800, 1000].map(Duration::from_millis))
        .with_max_attempts(u32::MAX);
    let producer = Producer::new(config, buffer, sink);
    proxy.take_counts();
    let t = Instant::now();
    producer.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let c = proxy.take_counts();
    assert_eq!(c.accepted_users, n, "{name}: every record delivered once");
    let rate = n as f64 / secs;
    let per_entry = c.accepted_users as f64 / c.accepted_entries.max(1) as f64;
    let per_call = c.accepted_users as f64 / c.calls.max(1) as f64;
    let bytes_per_entry = c.accepted_bytes as f64 / c.accepted_entries.max(1) as f64;
    let throttled = c.throttled_calls as f64 / c.calls.max(1) as f64;
    println!(
        "{name:<34} {n:>7} {rate:>9.0} {per_entry:>9.1} {per_call:>9.1} {bytes_per_entry:>9.0} {:>6} {:>7.1}% {:>8}",
        c.calls,
        throttled * 100.0,
        c.throttled_entries
    );
    println!(
        "BENCH {{\"bench\":\"quota\",\"case\":{name:?},\"records\":{n},\"records_per_s\":{rate:.0},\"users_per_entry\":{per_entry:.1},\"users_per_call\":{per_call:.1},\"bytes_per_entry\":{bytes_per_entry:.0},\"calls\":{},\"throttled_calls\":{},\"throttled_call_fraction\":{throttled:.4},\"throttled_entries\":{}}}",
        c.calls, c.throttled_calls, c.throttled_entries
    );
    env.delete_stream(&stream).await;
    rate
}

fn main() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!(
            "quota bench: no AWS_ENDPOINT_URL, nothing measured (start an emulator; see the file's docs)"
        );
        return;
    }
    let n = arg("--records", 100_000);
    let plain_n = arg("--plain-records", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let env = Env::from_env().await;
        let (proxy, addr) = start_proxy(env.kinesis()).await;
        let via_proxy = Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(env.sdk_config())
                .endpoint_url(format!("http://{addr}"))
                .build(),
        );
        println!("quota-enforcing proxy on {addr}: 1,000 entries/s and 1 MiB/s per shard; records of 100 bytes, 1 shard");
        println!(
            "{:<34} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8}",
            "case", "records", "records/s", "per entry", "per call", "B/entry", "calls", "throttled", "thr.ent"
        );
        let plain = case(500, &env, &proxy, &via_proxy, "plain, no rate limit", plain_n, false, false).await;
        let plain_limited = case(500, &env, &proxy, &via_proxy, "plain, rate limit", plain_n, false, true).await;
        let packed = case(5000, &env, &proxy, &via_proxy, "aggregated, no rate limit", n, true, false).await;
        let packed_limited = case(5000, &env, &proxy, &via_proxy, "aggregated, rate limit", n, true, true).await;
        case(500, &env, &proxy, &via_proxy, "aggregated, batches of 500, rate limit", n, true, true).await;
        let ratio = packed / plain.max(1.0);
        let ratio_limited = packed_limited / plain_limited.max(1.0);
        println!("aggregated vs plain, user records/s per shard: {ratio:.1}x without the rate limit, {ratio_limited:.1}x with it");
        println!(
            "BENCH {{\"bench\":\"quota\",\"case\":\"aggregated vs plain\",\"ratio\":{ratio:.2},\"ratio_rate_limited\":{ratio_limited:.2}}}"
        );
    });
}
