//! [`ReadQuotaProxy`]: a loopback HTTP proxy in front of a Kinesis emulator
//! that enforces the service's read quotas, which no emulator here does —
//! a device that makes "at quota" measured rather than assumed (the write
//! quota's proxy is in the `quota` bench of `unistream-kinesis`).
//!
//! Per shard, as AWS documents them for shared-throughput consumers:
//! - at most **5 `GetRecords` calls per second** (any 1-second window);
//! - at most **2 MiB/s** of record data: a call is refused while the shard's
//!   byte budget is spent; the budget refills at 2 MiB/s up to 2 MiB, and a
//!   served call takes the bytes it returned (it may overdraw, as AWS lets a
//!   call return up to 10 MiB and then throttles the following ones).
//!
//! A refused call gets what AWS answers: HTTP 400 with
//! `ProvisionedThroughputExceededException`. Each `SubscribeToShard`
//! subscription (enhanced fan-out: its own quota) is paced to 2 MiB/s of
//! record data (the event stream is cut into its messages; each is passed
//! on when the record bytes in it are due). Everything else passes through unchanged.
//! The proxy learns which shard an iterator belongs to from the
//! `GetShardIterator` and `GetRecords` answers it forwards.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, channel::Channel};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// Record bytes per second per shard (and per subscription).
pub const READ_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
/// `GetRecords` calls per second per shard.
pub const READ_CALLS_PER_SECOND: usize = 5;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The window the call quota is counted over (1 s, less 5 ms of slack).
const WINDOW: Duration = Duration::from_millis(995);
type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What the proxy counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct ReadCounts {
    /// `GetRecords` calls forwarded.
    pub get_records: u64,
    /// `GetRecords` calls refused with `ProvisionedThroughputExceededException`.
    pub throttled: u64,
    /// Record data bytes returned by `GetRecords`.
    pub get_records_bytes: u64,
    /// `SubscribeToShard` calls forwarded.
    pub subscriptions: u64,
    /// Record data bytes passed to subscribers.
    pub subscription_bytes: u64,
}

struct ShardQuota {
    calls: VecDeque<Instant>,
    budget: f64,
    at: Instant,
}

impl ShardQuota {
    fn new(now: Instant) -> Self {
        ShardQuota {
            calls: VecDeque::new(),
            budget: READ_BYTES_PER_SECOND,
            at: now,
        }
    }

    /// Whether a call may be served now (and counts it if so).
    fn admit(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * READ_BYTES_PER_SECOND;
        self.budget = (self.budget + refill).min(READ_BYTES_PER_SECOND);
        self.at = now;
        // A call leaves the window a few milliseconds early: a reader that
        // spaces its calls 200 ms apart by its own clock is not refused for
        // the jitter of the loopback (AWS does not count that finely either).
        while self
            .calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.calls.pop_front();
        }
        if self.calls.len() >= READ_CALLS_PER_SECOND || self.budget <= 0.0 {
            return false;
        }
        self.calls.push_back(now);
        true
    }
}

#[derive(Default)]
struct State {
    /// Shard iterator → "stream/shard".
    iterators: HashMap<String, String>,
    shards: HashMap<String, ShardQuota>,
    counts: ReadCounts,
    /// `SubscribeToShard` calls still to refuse with `ResourceInUseException`.
    refuse: u32,
    /// Drop each subscription's connection this long after it opened.
    cut_after: Option<Duration>,
}

struct Inner {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Mutex<State>,
}

/// A running read-quota proxy; it stops when dropped.
#[derive(Debug)]
pub struct ReadQuotaProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadQuotaProxy {{ upstream: {:?} }}", self.upstream)
    }
}

impl ReadQuotaProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (e.g.
    /// `http://127.0.0.1:4567`).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: &str) -> ReadQuotaProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("read-quota proxy: cannot bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("read-quota proxy: {e}"));
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            state: Mutex::new(State::default()),
        });
        let serving = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let inner = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let inner = Arc::clone(&inner);
                        async move { Ok::<_, Infallible>(inner.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        ReadQuotaProxy { inner, addr, task }
    }

    /// The proxy's URL, for a Kinesis client's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it counted so far.
    pub fn counts(&self) -> ReadCounts {
        self.inner.state().counts
    }

    /// Fault: answers the next `n` `SubscribeToShard` calls with
    /// `ResourceInUseException` (as AWS does while another subscription of
    /// the consumer to the shard is open).
    pub fn refuse_subscriptions(&self, n: u32) {
        self.inner.state().refuse = n;
    }

    /// Fault: drops the connection of every subscription opened from now
    /// on `after` it opened (the event stream ends in an error, as when a
    /// network path fails); `None` stops doing so.
    pub fn cut_subscriptions_after(&self, after: Option<Duration>) {
        self.inner.state().cut_after = after;
    }

    /// Zeroes the counts and forgets the shards' quota use (between cases).
    pub fn reset(&self) {
        let mut s = self.inner.state();
        s.counts = ReadCounts::default();
        s.shards.clear();
    }
}

impl Drop for ReadQuotaProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn boxed(body: Incoming) -> Body {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed()
}

fn throttled(shard: &str) -> Response<Body> {
    refused(
        "ProvisionedThroughputExceededException",
        &format!("Rate exceeded for shard {shard} (read-quota proxy)"),
    )
}

fn refused(kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "__type": kind, "message": message });
    Response::builder()
        .status(400)
        .header("content-type", "application/x-amz-json-1.1")
        .body(full(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn bad_gateway(e: &dyn std::fmt::Display) -> Response<Body> {
    Response::builder()
        .status(502)
        .body(full(Bytes::from(format!("read-quota proxy: {e}"))))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return bad_gateway(&e),
        };
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_owned();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut shard = None;
        if target == "SubscribeToShard" {
            let mut s = self.state();
            if s.refuse > 0 {
                s.refuse -= 1;
                return refused(
                    "ResourceInUseException",
                    "Another active subscription exists for this consumer (read-quota proxy)",
                );
            }
        }
        if target == "GetRecords" {
            let key = str_field(&json, "ShardIterator")
                .and_then(|it| self.state().iterators.get(it).cloned())
                .unwrap_or_else(|| "unknown".to_owned());
            let now = Instant::now();
            let mut s = self.state();
            let quota = s
                .shards
                .entry(key.clone())
                .or_insert_with(|| ShardQuota::new(now));
            if !quota.admit(now) {
                s.counts.throttled += 1;
                return throttled(&key);
            }
            s.counts.get_records += 1;
            shard = Some(key);
        }
        let mut up = Request::builder().method(parts.method.clone()).uri(format!(
            "{}{}",
            self.upstream,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        ));
        for (name, value) in &parts.headers {
            up = up.header(name, value);
        }
        let Ok(up) = up.body(Full::new(body)) else {
            return bad_gateway(&"cannot build the upstream request");
        };
        let resp = match self.client.request(up).await {
            Ok(r) => r,
            Err(e) => return bad_gateway(&e),
        };
        match target.as_str() {
            "GetShardIterator" | "GetRecords" => {
                let (parts, body) = resp.into_parts();
                let bytes = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return bad_gateway(&e),
                };
                if parts.status.is_success() {
                    self.learn(&target, &json, &bytes, shard.as_deref());
                }
                Response::from_parts(parts, full(bytes))
            }
            "SubscribeToShard" => {
                self.state().counts.subscriptions += 1;
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, self.paced(body))
            }
            _ => resp.map(boxed),
        }
    }

    /// Notes the shard of the iterators in an answer, and debits the bytes
    /// a `GetRecords` returned.
    fn learn(&self, target: &str, request: &Value, answer: &[u8], shard: Option<&str>) {
        let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
            return;
        };
        let mut s = self.state();
        if target == "GetShardIterator" {
            let stream = str_field(request, "StreamName")
                .or_else(|| str_field(request, "StreamARN"))
                .unwrap_or("");
            let key = format!("{stream}/{}", str_field(request, "ShardId").unwrap_or(""));
            if let Some(it) = str_field(&answer, "ShardIterator") {
                s.iterators.insert(it.to_owned(), key);
            }
            return;
        }
        let Some(shard) = shard else { return };
        if let Some(used) = str_field(request, "ShardIterator") {
            s.iterators.remove(used);
        }
        if let Some(next) = str_field(&answer, "NextShardIterator") {
            s.iterators.insert(next.to_owned(), shard.to_owned());
        }
        let bytes = data_bytes(&answer);
        s.counts.get_records_bytes += bytes as u64;
        if let Some(q) = s.shards.get_mut(shard) {
            q.budget -= bytes as f64;
        }
    }

    /// The event stream of a subscription, paced to 2 MiB/s of record
    /// data (one second's worth up front, then no faster than the rate):
    /// the stream is cut into its event-stream messages, and each message
    /// is passed on once the record bytes in it are due.
    fn paced(self: &Arc<Self>, mut body: Incoming) -> Body {
        let (mut tx, rx) = Channel::<Bytes, BoxError>::new(4);
        let inner = Arc::downgrade(self);
        let cut_at = self.state().cut_after.map(|d| Instant::now() + d);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut data = 0f64;
            let mut pending = Vec::new();
            loop {
                let frame = match cut_at {
                    Some(at) => tokio::select! {
                        frame = body.frame() => frame,
                        () = tokio::time::sleep_until(at.into()) => {
                            tx.abort(Box::new(std::io::Error::other("connection cut by the read-quota proxy")));
                            return;
                        }
                    },
                    None => body.frame().await,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(bytes) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&bytes);
                while let Some((message, records)) = next_message(&mut pending) {
                    data += records as f64;
                    let due = Duration::from_secs_f64(
                        ((data - READ_BYTES_PER_SECOND) / READ_BYTES_PER_SECOND).max(0.0),
                    );
                    let wait = due.saturating_sub(started.elapsed());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    if let Some(inner) = inner.upgrade() {
                        inner.state().counts.subscription_bytes += records as u64;
                    }
                    if tx.send_data(message).await.is_err() {
                        return;
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send_data(Bytes::from(pending)).await;
            }
        });
        BodyExt::boxed(rx)
    }
}

/// The record data bytes of an answer or event: its `Records[].Data`,
/// base64 text, counted decoded (from the text's length and padding).
fn data_bytes(answer: &Value) -> usize {
    answer
        .get("Records")
        .and_then(Value::as_array)
        .map_or(0, |records| {
            records
                .iter()
                .filter_map(|r| str_field(r, "Data"))
                .map(|d| {
                    (d.len() / 4 * 3)
                        .saturating_sub(d.bytes().rev().take_while(|&b| b == b'=').count())
                })
                .sum()
        })
}

/// The first whole event-stream message in `buf` (taken out of it), and
/// the record data bytes it carries (base64-decoded `Records[].Data` of a
/// `SubscribeToShardEvent`; 0 for any other message).
fn next_message(buf: &mut Vec<u8>) -> Option<(Bytes, usize)> {
    let total = u32::from_be_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let headers = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
    if buf.len() < total || total < 16 {
        return None;
    }
    let message: Vec<u8> = buf.drain(..total).collect();
    let payload = message.get(12 + headers..total - 4).unwrap_or(&[]);
    let records = serde_json::from_slice::<Value>(payload).map_or(0, |v| data_bytes(&v));
    Some((Bytes::from(message), records))
}
