//! Tests of the producer engine over the memory buffer and sink, in virtual
//! time: `put` must never sleep, `flush` must wait exactly the policy's waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::Error;
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::clock::{Clock, VirtualClock};
use unistream_core::memory::{MemoryBuffer, MemorySink};
use unistream_core::producer::{Producer, ProducerConfig, SendErrors, SendStep, WhenFull};
use unistream_core::record::{Record, iso8601};
use unistream_core::retry::RetryPolicy;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    id: String,
    #[serde(with = "iso8601")]
    create_at: DateTime<Utc>,
}

impl Record for Rec {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

fn rec(i: u32) -> Rec {
    Rec {
        id: i.to_string(),
        create_at: DateTime::from_timestamp(1_704_781_446, 0).unwrap(),
    }
}

fn config(waits: &[u64]) -> ProducerConfig {
    let mut c = ProducerConfig::default();
    c.retry = RetryPolicy::waits(waits.iter().map(|s| Duration::from_secs(*s)))
        .with_max_attempts(u32::MAX);
    c.linger = None;
    c
}

fn producer(
    c: ProducerConfig,
    max_records: usize,
    clock: &VirtualClock,
) -> (Producer<MemoryBuffer, MemorySink>, MemorySink) {
    let sink = MemorySink::default();
    let p = Producer::new(
        c,
        MemoryBuffer::new(BufferLimits::records(max_records)),
        sink.clone(),
    )
    .with_clock(clock.clone());
    (p, sink)
}

fn kind(s: &SendStep) -> &'static str {
    match s {
        SendStep::NotReady => "not-ready",
        SendStep::OnHold { .. } => "hold",
        SendStep::Busy => "busy",
        SendStep::Sent { .. } => "sent",
        SendStep::Failed { .. } => "failed",
        SendStep::Partial { .. } => "partial",
        _ => "other",
    }
}

#[tokio::test]
async fn put_never_sleeps_and_holds_until_the_backoff_has_passed() {
    let clock = VirtualClock::default();
    let (p, sink) = producer(config(&[1, 2, 4]), 3, &clock);
    let mut steps = Vec::new();
    for i in 1..=3 {
        steps.push(kind(&p.put(&rec(i)).await.unwrap()));
    }
    assert_eq!(steps, ["not-ready", "not-ready", "sent"]);

    sink.fail_next(2);
    let mut steps = Vec::new();
    for i in 4..=6 {
        steps.push(kind(&p.put(&rec(i)).await.unwrap()));
    }
    assert_eq!(steps, ["not-ready", "not-ready", "failed"]);
    // On hold for 1 s: puts only append.
    assert_eq!(kind(&p.put(&rec(7)).await.unwrap()), "hold");
    clock.advance(Duration::from_secs(1));
    match p.put(&rec(8)).await.unwrap() {
        SendStep::Failed {
            ids,
            failures,
            retry_at,
            ..
        } => {
            assert_eq!(ids, ["4", "5", "6"], "the same batch again");
            assert_eq!(failures, 2);
            assert_eq!(retry_at, clock.now() + chrono::Duration::seconds(2));
        }
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(kind(&p.put(&rec(9)).await.unwrap()), "hold");
    clock.advance(Duration::from_secs(1));
    assert_eq!(kind(&p.put(&rec(10)).await.unwrap()), "sent");
    assert!(clock.sleeps().is_empty(), "put must never sleep");
    // Success reset the state: the next ready batch goes at once.
    assert_eq!(kind(&p.put(&rec(11)).await.unwrap()), "sent");
    assert_eq!(sink.ids(), ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    p.flush().await.unwrap();
    assert_eq!(sink.ids().len(), 11);
}

#[tokio::test]
async fn partial_acceptance_resends_only_the_rejected_records() {
    let clock = VirtualClock::default();
    let (p, sink) = producer(config(&[1]), 4, &clock);
    sink.reject_next(vec![1, 3]);
    for i in 1..=4 {
        p.put(&rec(i)).await.unwrap();
    }
    assert_eq!(sink.ids(), ["1", "3"]);
    assert_eq!(p.buffer().stats().records, 2);
    p.flush().await.unwrap();
    assert_eq!(
        sink.ids(),
        ["1", "3", "2", "4"],
        "accepted records never sent twice"
    );
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);
}

#[tokio::test]
async fn flush_waits_the_schedule_and_gives_up_after_max_attempts_keeping_records() {
    let clock = VirtualClock::default();
    let mut c = config(&[1, 2, 4]);
    c.retry = c.retry.with_max_attempts(3);
    let (p, sink) = producer(c, 10, &clock);
    p.put(&rec(1)).await.unwrap();
    sink.fail_next(5);
    let err = p.flush().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SendFailed {
                records: 1,
                failures: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(p.buffer().stats().records, 1, "nothing dropped");
    sink.fail_next(0);
    p.flush().await.unwrap();
    assert_eq!(sink.ids(), ["1"]);
}

#[tokio::test]
async fn linger_seals_a_trickle() {
    let clock = VirtualClock::default();
    let mut c = config(&[1]);
    c.linger = Some(Duration::from_millis(500));
    let (p, sink) = producer(c, 100, &clock);
    assert_eq!(kind(&p.put(&rec(1)).await.unwrap()), "not-ready");
    assert_eq!(kind(&p.tick().await.unwrap()), "not-ready");
    clock.advance(Duration::from_millis(500));
    assert_eq!(kind(&p.tick().await.unwrap()), "sent");
    assert_eq!(sink.ids(), ["1"]);
}

#[tokio::test]
async fn a_full_buffer_refuses_or_waits() {
    let clock = VirtualClock::default();
    let sink = MemorySink::default();
    let record_len = unistream_core::record::JsonCodec::default()
        .to_vec(&rec(1))
        .unwrap()
        .len() as u64;
    let limits = BufferLimits::records(1).with_max_total_bytes(2 * record_len + 2);
    let p = Producer::new(config(&[1]), MemoryBuffer::new(limits), sink.clone())
        .with_clock(clock.clone());
    sink.fail_next(u32::MAX);
    p.put(&rec(1)).await.unwrap();
    p.put(&rec(2)).await.unwrap();
    let err = p.put(&rec(3)).await.unwrap_err();
    assert!(matches!(err, Error::BufferFull { .. }), "{err}");
    assert_eq!(p.buffer().stats().records, 2);

    let mut c = config(&[1]);
    c.when_full = WhenFull::Wait;
    let sink = MemorySink::default();
    let p = Producer::new(c, MemoryBuffer::new(limits), sink.clone()).with_clock(clock.clone());
    sink.fail_next(3);
    for i in 1..=3 {
        p.put(&rec(i)).await.unwrap();
    }
    // The third put waited out three backoffs, sending until "1" got through.
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1); 3]);
    assert_eq!(sink.ids(), ["1", "2"]);
    p.flush().await.unwrap();
    assert_eq!(sink.ids(), ["1", "2", "3"]);
}

#[tokio::test]
async fn send_errors_can_be_returned_but_the_record_is_kept() {
    let clock = VirtualClock::default();
    let mut c = config(&[1]);
    c.send_errors = SendErrors::Return;
    let (p, sink) = producer(c, 1, &clock);
    sink.fail_next(1);
    let err = p.put(&rec(1)).await.unwrap_err();
    assert!(matches!(err, Error::SendFailed { .. }));
    assert_eq!(p.buffer().stats().records, 1);
    p.flush().await.unwrap();
    assert_eq!(sink.ids(), ["1"]);
}

#[tokio::test]
async fn records_a_sink_cannot_take_are_refused_before_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let sink = unistream_local::FileSink::open(
        dir.path().join("s.jsonl"),
        unistream_local::Durability::Process,
    )
    .unwrap();
    let p = Producer::new(
        config(&[1]),
        MemoryBuffer::new(BufferLimits::records(1)),
        sink,
    )
    .with_codec(NewlineCodec);
    let err = p.put(&rec(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidRecord { ref record_id, .. } if record_id == "1"),
        "{err}"
    );
    assert_eq!(p.buffer().stats().records, 0);
}

struct NewlineCodec;
impl unistream_core::record::Codec<Rec> for NewlineCodec {
    fn encode(&self, r: &Rec) -> Result<Vec<u8>, unistream_core::record::CodecError> {
        Ok(format!("{}\n", r.id).into_bytes())
    }
    fn decode(&self, _: &[u8]) -> Result<Rec, unistream_core::record::CodecError> {
        Err(unistream_core::record::CodecError::decode("write-only"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_deliver_every_record_once() {
    let clock = VirtualClock::default();
    let (p, sink) = producer(config(&[0]), 7, &clock);
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250u32 {
                p.put(&rec(t * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.flush().await.unwrap();
    let mut ids = sink.ids();
    assert_eq!(ids.len(), 1000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000);
}

/// A sink the service refuses until `allow` (what `KinesisSink` returns for
/// an `AccessDenied`), then the memory sink.
#[derive(Clone, Default)]
struct DenyingSink {
    inner: MemorySink,
    allow: Arc<std::sync::atomic::AtomicBool>,
    denied: Arc<std::sync::atomic::AtomicU32>,
}

impl unistream_core::sink::Sink for DenyingSink {
    async fn send(
        &self,
        batch: &[unistream_core::sink::EncodedRecord],
    ) -> Result<unistream_core::sink::Delivery, unistream_core::BoxError> {
        use std::sync::atomic::Ordering;
        if !self.allow.load(Ordering::SeqCst) {
            self.denied.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Denied {
                action: "kinesis:PutRecords".into(),
                resource: "stream orders".into(),
                message: "AccessDeniedException: not authorized".into(),
            }
            .into());
        }
        self.inner.send(batch).await
    }
}

#[tokio::test]
async fn a_denied_send_is_returned_at_once_never_retried_and_keeps_the_records() {
    use std::sync::atomic::Ordering;
    let clock = VirtualClock::default();
    // No attempt limit: a failure that is not a denial would be retried forever.
    let sink = DenyingSink::default();
    let p = Producer::new(
        config(&[1, 2, 4]),
        MemoryBuffer::new(BufferLimits::records(2)),
        sink.clone(),
    )
    .with_clock(clock.clone());
    p.put(&rec(1)).await.unwrap();
    // The batch is full: `put` sends it, and returns the denial (whatever
    // `send_errors` says: it is not a failed send to retry).
    let err = p.put(&rec(2)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "kinesis:PutRecords on stream orders was denied: AccessDeniedException: not authorized"
    );
    let err = p.flush().await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert_eq!(sink.denied.load(Ordering::SeqCst), 2, "one call per send");
    assert!(
        clock.sleeps().is_empty(),
        "no backoff: {:?}",
        clock.sleeps()
    );
    assert_eq!(p.buffer().stats().records, 2, "nothing dropped");
    // Once allowed, the same records go.
    sink.allow.store(true, Ordering::SeqCst);
    p.flush().await.unwrap();
    assert_eq!(sink.inner.ids(), ["1", "2"]);
}
