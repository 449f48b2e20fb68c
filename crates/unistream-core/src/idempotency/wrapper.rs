//! [`Idempotent`]: the wrapper that runs a processor's effect at most once
//! per idempotency key (see the module docs of
//! [`idempotency`](super)).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tracing::warn;

use super::{
    Claim, Claimed, Completion, IdempotencyError, IdempotencyStore, ItemStatus, Owner, payload_hash,
};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::consumer::{Attempt, Outcome, Processor, SliceItem, SliceProcessor, SliceResult};
use crate::dlq::DeadLetter;
use crate::error::BoxError;
use crate::record::Record;

/// Settings of [`Idempotent`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// How long a completed key is remembered (default 24 hours, Kinesis'
    /// default retention: a replay or a redrive within it runs nothing).
    pub ttl: Duration,
    /// How long a claim holds when the attempt has no lock expiry to tie
    /// it to (default 15 minutes, the consumer's default lock).
    pub in_progress: Duration,
    /// Prefixes every key (`namespace#key`), for several applications in
    /// one table. Default none.
    pub namespace: Option<String>,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl: Duration::from_secs(24 * 3600),
            in_progress: Duration::from_secs(900),
            namespace: None,
        }
    }
}

impl IdempotencyConfig {
    /// Sets [`ttl`](Self::ttl).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`in_progress`](Self::in_progress).
    #[must_use]
    pub fn in_progress(mut self, in_progress: Duration) -> Self {
        self.in_progress = in_progress;
        self
    }

    /// Sets [`namespace`](Self::namespace).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

type KeyFn<R> = Arc<dyn Fn(&R) -> String + Send + Sync>;

/// Runs the wrapped processor's effect at most once per idempotency key
/// (the record's [`id`](Record::id) by default). A [`Processor`] when `P`
/// is one, a [`SliceProcessor`] when `P` is one (give it to the consumer in
/// [`Slices`](crate::consumer::Slices)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use unistream_core::consumer::{Attempt, Consumer, ConsumerConfig, Outcome, Processor};
/// use unistream_core::idempotency::{Idempotent, MemoryIdempotencyStore};
/// use unistream_core::memory::{MemoryCheckpointStore, MemoryDeadLetterQueue, MemorySource};
/// use unistream_core::raw::{RawCodec, RawRecord};
/// use unistream_core::BoxError;
///
/// #[derive(Default)]
/// struct Charge(AtomicU32);
/// impl Processor for Charge {
///     type Record = RawRecord;
///     async fn process(&self, _: &RawRecord, _: &Attempt<'_>) -> Result<Outcome, BoxError> {
///         self.0.fetch_add(1, Ordering::SeqCst); // the effect
///         Ok(Outcome::Succeeded)
///     }
/// }
///
/// // The same payment twice in the stream, under one key.
/// let source = MemorySource::new(vec![b"pay 5".to_vec(), b"pay 5".to_vec()]);
/// source.close();
/// let keys = MemoryIdempotencyStore::default();
/// let charge = Idempotent::new(Charge::default(), keys.clone())
///     .with_key(|r: &RawRecord| String::from_utf8_lossy(&r.data).into_owned());
/// let mut consumer = Consumer::new(
///     ConsumerConfig::new("payments").stop_at_end(true), source, charge,
///     MemoryCheckpointStore::default(), MemoryDeadLetterQueue::default(),
/// )?
/// .with_codec(RawCodec);
/// let summary = consumer.run().await?;
/// assert_eq!(summary.succeeded, 2);
/// assert_eq!(consumer.processor().inner().0.load(Ordering::SeqCst), 1, "charged once");
/// # Ok(()) }
/// ```
pub struct Idempotent<P, S, R> {
    inner: P,
    store: S,
    config: IdempotencyConfig,
    key: Option<KeyFn<R>>,
    clock: SharedClock,
}

impl<P, S, R> std::fmt::Debug for Idempotent<P, S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent")
            .field("config", &self.config)
            .field("custom_key", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl<P, S: IdempotencyStore, R: Record> Idempotent<P, S, R> {
    /// Wraps `inner`, keeping keys in `store`, with the default settings.
    pub fn new(inner: P, store: S) -> Self {
        Idempotent {
            inner,
            store,
            config: IdempotencyConfig::default(),
            key: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// With other settings.
    #[must_use]
    pub fn with_config(mut self, config: IdempotencyConfig) -> Self {
        self.config = config;
        self
    }

    /// Derives the key from the record (default: its id).
    #[must_use]
    pub fn with_key(mut self, key: impl Fn(&R) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Uses another clock (for claims' times; tests use a virtual one).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The wrapped processor.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn claim_for(&self, record: &R, attempt: &Attempt<'_>) -> Claim {
        let key = match &self.key {
            Some(f) => f(record),
            None => record.id().to_owned(),
        };
        let key = match &self.config.namespace {
            Some(ns) => format!("{ns}#{key}"),
            None => key,
        };
        let now = self.clock.now();
        Claim {
            key,
            payload_hash: payload_hash(attempt.data),
            owner: Owner {
                consumer_id: attempt.consumer_id.to_owned(),
                pointer: attempt.pointer.as_str().to_owned(),
                attempt: attempt.number,
            },
            now,
            in_progress_until: attempt
                .lock_expires
                .unwrap_or_else(|| later(now, self.config.in_progress)),
            expires: later(now, self.config.ttl),
        }
    }

    /// The answer of a delivery whose claim was refused.
    fn without_effect(claim: &Claim, claimed: Claimed) -> Result<Outcome, BoxError> {
        let consumer = claim.owner.consumer_id.clone();
        match claimed {
            Claimed::Started => Err("the claim was taken: the effect must run".into()),
            Claimed::Completed(outcome) => {
                ::metrics::counter!("unistream_idempotency_replays_total", "consumer" => consumer)
                    .increment(1);
                Ok(outcome.into())
            }
            Claimed::InProgress { owner, until } => {
                ::metrics::counter!("unistream_idempotency_in_progress_total", "consumer" => consumer)
                    .increment(1);
                Err(Box::new(IdempotencyError::InProgress {
                    key: claim.key.clone(),
                    owner_consumer: owner.consumer_id,
                    owner_pointer: owner.pointer,
                    owner_attempt: owner.attempt,
                    until,
                }))
            }
            Claimed::PayloadMismatch => {
                ::metrics::counter!("unistream_idempotency_mismatches_total", "consumer" => consumer)
                    .increment(1);
                Err(Box::new(IdempotencyError::PayloadMismatch {
                    key: claim.key.clone(),
                }))
            }
        }
    }

    fn completion(&self, claim: &Claim, outcome: &Outcome) -> Completion {
        let mut item = claim.item();
        item.status = ItemStatus::Completed;
        item.outcome = Some(outcome.into());
        item.expires = later(self.clock.now(), self.config.ttl);
        Completion { item }
    }

    /// A failed effect: the claim is given up, the retry claims again.
    async fn release(&self, claim: &Claim) {
        if let Err(e) = self.store.release(&claim.key, &claim.owner).await {
            // The claim lapses at its expiry, and the next attempt of the
            // record takes it over anyway.
            warn!(key = %claim.key, error = %e, "idempotency: could not release a failed claim");
        }
    }
}

fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn store_error(e: crate::error::Error) -> BoxError {
    Box::new(IdempotencyError::Store(e))
}

/// The effect ran but its completion could not be stored: the outcome
/// stands (the checkpoint records it); only a later delivery of the key
/// (after the claim lapses) would run it again.
fn completion_failed(e: &crate::error::Error, keys: usize) {
    warn!(keys, error = %e, "idempotency: the effect ran but its completion could not be stored");
    ::metrics::counter!("unistream_idempotency_store_errors_total").increment(1);
}

impl<P, S, R> Processor for Idempotent<P, S, R>
where
    P: Processor<Record = R>,
    S: IdempotencyStore,
    R: Record,
{
    type Record = R;

    async fn process(&self, record: &R, attempt: &Attempt<'_>) -> Result<Outcome, BoxError> {
        let claim = self.claim_for(record, attempt);
        match self.store.claim(&claim).await.map_err(store_error)? {
            Claimed::Started => {}
            refused => return Self::without_effect(&claim, refused),
        }
        match self.inner.process(record, attempt).await {
            Ok(outcome) => {
                if let Err(e) = self
                    .store
                    .complete(&self.completion(&claim, &outcome))
                    .await
                {
                    completion_failed(&e, 1);
                }
                Ok(outcome)
            }
            Err(e) => {
                self.release(&claim).await;
                Err(e)
            }
        }
    }

    fn on_dead_letter(&self, letter: &DeadLetter) {
        Processor::on_dead_letter(&self.inner, letter);
    }
}

impl<P, S, R> SliceProcessor for Idempotent<P, S, R>
where
    P: SliceProcessor<Record = R>,
    S: IdempotencyStore,
    R: Record,
{
    type Record = R;

    /// Claims every key concurrently, runs the inner processor once on the
    /// records whose claim it took, completes the ones that succeeded in
    /// one [`complete_many`](IdempotencyStore::complete_many), releases the
    /// ones that failed.
    async fn process_slice(&self, slice: &[SliceItem<'_, R>]) -> SliceResult {
        let claims: Vec<Claim> = slice
            .iter()
            .map(|i| self.claim_for(i.record, &i.attempt))
            .collect();
        let answers = join_all(claims.iter().map(|c| self.store.claim(c))).await;
        let mut results: Vec<Option<Result<Outcome, BoxError>>> =
            (0..slice.len()).map(|_| None).collect();
        let mut run = Vec::new();
        for (k, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(Claimed::Started) => run.push(k),
                Ok(refused) => results[k] = Some(Self::without_effect(&claims[k], refused)),
                Err(e) => results[k] = Some(Err(store_error(e))),
            }
        }
        if !run.is_empty() {
            let items: Vec<SliceItem<'_, R>> = run.iter().map(|&k| slice[k].clone()).collect();
            let answer = self.inner.process_slice(&items).await;
            let outcomes = match answer {
                Ok(outcomes) if outcomes.len() == items.len() => outcomes,
                whole => {
                    join_all(run.iter().map(|&k| self.release(&claims[k]))).await;
                    return match whole {
                        Err(e) => Err(e),
                        Ok(o) => Err(format!(
                            "the slice processor answered {} results for {} records",
                            o.len(),
                            items.len()
                        )
                        .into()),
                    };
                }
            };
            let mut completions = Vec::new();
            let mut failed = Vec::new();
            for (&k, outcome) in run.iter().zip(outcomes) {
                match &outcome {
                    Ok(o) => completions.push(self.completion(&claims[k], o)),
                    Err(_) => failed.push(k),
                }
                results[k] = Some(outcome);
            }
            if let Err(e) = self.store.complete_many(&completions).await {
                completion_failed(&e, completions.len());
            }
            join_all(failed.iter().map(|&k| self.release(&claims[k]))).await;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("no result for the record".into())))
            .collect())
    }

    fn on_dead_letter(&self, letter: &DeadLetter) {
        SliceProcessor::on_dead_letter(&self.inner, letter);
    }
}
