//! The pieces of work the engine ([`BatchRun`](super::engine)) keeps in
//! flight and the bookkeeping around them: attempts, slices and dead letters
//! as futures ([`launch`], [`send_letter`]), what each one reports
//! ([`Done`]), the trackers changed since the last write ([`Dirty`]), and
//! the lanes of a batch ([`lanes`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::FuturesUnordered;
use tracing::warn;

use super::config::ConsumerConfig;
use super::metrics::{EngineMetrics, Write};
use super::processor::{Attempt, Call, Handler, Outcome, SliceItem};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::clock::SharedClock;
use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::error::{BoxError, Error, ErrorInfo, Result};
use crate::record::Record;
use crate::retry::retry;
use crate::source::SourceRecord;

/// What a piece of work in flight reports when it ends.
pub(super) enum Done {
    One {
        index: usize,
        lock: String,
        result: std::result::Result<Outcome, BoxError>,
    },
    Unit {
        indices: Vec<usize>,
        locks: Vec<String>,
        results: Vec<std::result::Result<Outcome, BoxError>>,
    },
    Letter {
        index: usize,
        letter: Box<DeadLetter>,
        result: Result<()>,
    },
}

/// The futures in flight.
pub(super) type Running<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send + 'a>>>;

/// Indexes changed since the last write, each once.
pub(super) struct Dirty {
    list: Vec<usize>,
    pub(super) flag: Vec<bool>,
}

impl Dirty {
    pub(super) fn new(n: usize) -> Self {
        Dirty {
            list: Vec::new(),
            flag: vec![false; n],
        }
    }
    pub(super) fn add(&mut self, i: usize) {
        if !self.flag[i] {
            self.flag[i] = true;
            self.list.push(i);
        }
    }
    pub(super) fn any(&self) -> bool {
        !self.list.is_empty()
    }
    /// Everything was written by other means (a whole-batch save).
    pub(super) fn clear(&mut self) {
        for i in self.list.drain(..) {
            self.flag[i] = false;
        }
    }
    /// Saves the changed trackers, one `save_tracker` each, timed together
    /// from `since` (one sample for the group: the calls usually only buffer,
    /// and a clock read each would cost as much); returns when the last
    /// ended, the start of the write that follows (`since` if none changed).
    pub(super) async fn save<K: CheckpointStore>(
        &mut self,
        store: &mut K,
        cp: &Checkpoint,
        metrics: &EngineMetrics,
        since: Option<Instant>,
    ) -> Result<Option<Instant>> {
        if self.list.is_empty() {
            return Ok(since);
        }
        let calls = self.list.len() as u64;
        for (done, i) in self.list.drain(..).enumerate() {
            self.flag[i] = false;
            if let Err(e) = store.save_tracker(cp, i).await {
                metrics.wrote(Write::Tracker, since, done as u64 + 1);
                return Err(e);
            }
        }
        Ok(metrics.wrote(Write::Tracker, since, calls))
    }
}

/// One lane per partition key, or one for the whole batch when sequential;
/// an undecodable record gets a lane of its own.
pub(super) fn lanes<R: Record>(
    decoded: &[std::result::Result<R, ErrorInfo>],
    sequential: bool,
) -> (Vec<u32>, usize) {
    if sequential {
        return (vec![0; decoded.len()], 1);
    }
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut next = 0u32;
    let lane_of = decoded
        .iter()
        .map(|d| {
            let fresh = |next: &mut u32| {
                *next += 1;
                *next - 1
            };
            match d {
                Ok(r) => *ids
                    .entry(r.partition_key())
                    .or_insert_with(|| fresh(&mut next)),
                Err(_) => fresh(&mut next),
            }
        })
        .collect();
    (lane_of, next as usize)
}

pub(super) fn dead_letter(
    config: &ConsumerConfig,
    cp: &Checkpoint,
    records: &[SourceRecord],
    partition_key: Option<String>,
    index: usize,
    now: DateTime<Utc>,
) -> DeadLetter {
    let t = &cp.trackers()[index];
    let r = &records[index];
    let mut letter = DeadLetter::new(
        config.consumer_id.clone(),
        t.record_id.clone(),
        r.data.clone(),
        r.pointer.clone(),
        now,
    );
    letter.attempts = t.attempts;
    letter.error = t.errors.clone();
    letter.first_attempt_time = t.first_attempt_time;
    letter.last_attempt_time = t.update_time;
    letter.partition_key = partition_key;
    letter
}

/// Hands a letter to the dead-letter queue, retried with its own policy.
pub(super) async fn send_letter<D: DeadLetterQueue>(
    config: &ConsumerConfig,
    clock: &SharedClock,
    dlq: &D,
    index: usize,
    letter: Box<DeadLetter>,
) -> Done {
    let id = letter.record_id.clone();
    let notify = move |e: &Error, wait: Duration| {
        warn!(consumer = %config.consumer_id, record_id = %id, error = %e, ?wait, "dead-letter queue failed; retrying");
    };
    let letter_ref: &DeadLetter = &letter;
    // A named future type: the engine's futures must be provably `Send`.
    let send = move || -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(dlq.send(letter_ref))
    };
    let result = retry(&config.dlq_retry, clock, send, notify).await;
    Done::Letter {
        index,
        letter,
        result,
    }
}

/// The item of record `index` for the processor (`None` if it is not
/// decoded: only decoded records are ever marked).
pub(super) fn one_item<'a, R>(
    consumer_id: &'a str,
    cp: &Checkpoint,
    records: &'a [SourceRecord],
    decoded: &'a [std::result::Result<R, ErrorInfo>],
    index: usize,
) -> Option<SliceItem<'a, R>> {
    let record = decoded[index].as_ref().ok()?;
    let t = &cp.trackers()[index];
    Some(SliceItem::new(
        record,
        Attempt::new(
            t.attempts,
            cp.max_attempts(),
            &records[index].pointer,
            cp.batch_sequence(),
        )
        .with_keys(
            records[index].partition_key.as_deref(),
            records[index].explicit_hash_key.as_deref(),
        )
        .with_context(consumer_id, &records[index].data, t.lock_expire_time),
    ))
}

/// The lock record `index` is held under.
fn lock_of(cp: &Checkpoint, index: usize) -> String {
    cp.trackers()[index].lock.clone().unwrap_or_default()
}

/// Hands `indices` to the handler in one call.
pub(super) fn launch<'a, H: Handler>(
    handler: &'a H,
    call: Call<'a>,
    cp: &Checkpoint,
    records: &'a [SourceRecord],
    decoded: &'a [std::result::Result<H::Record, ErrorInfo>],
    indices: Vec<usize>,
) -> Pin<Box<dyn Future<Output = Done> + Send + 'a>> {
    let consumer_id = call.consumer_id;
    if let [index] = indices[..]
        && let Some(item) = one_item(consumer_id, cp, records, decoded, index)
    {
        let lock = lock_of(cp, index);
        return Box::pin(async move {
            let result = handler.handle_one(item, call).await;
            Done::One {
                index,
                lock,
                result,
            }
        });
    }
    let mut items = Vec::with_capacity(indices.len());
    let mut locks = Vec::with_capacity(indices.len());
    for &i in &indices {
        if let Some(item) = one_item(consumer_id, cp, records, decoded, i) {
            items.push(item);
            locks.push(lock_of(cp, i));
        }
    }
    Box::pin(async move {
        let results = handler.handle(&items, call).await;
        Done::Unit {
            indices,
            locks,
            results,
        }
    })
}
