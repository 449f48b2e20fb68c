//! Idempotent processing: the user's effect runs at most once per
//! idempotency key, across retries, replays after a crash, a stolen lease
//! and a redrive — [`Idempotent`], a wrapper for any [`Processor`] or
//! [`SliceProcessor`], over an [`IdempotencyStore`].
//!
//! The semantics are those of the Powertools for AWS Lambda idempotency
//! utility, built into the consumer where the checkpoint knows which
//! delivery is a replay:
//!
//! 1. Before the effect, the key is **claimed** in one conditional write:
//!    an `in_progress` item with the record's payload hash, its owner (the
//!    consumer, the record's pointer, the attempt number) and an expiry
//!    (the attempt's lock: after it, another delivery may start).
//! 2. The effect runs. If it succeeds, the item becomes `completed` with the
//!    [`Outcome`] (and its data), kept for `ttl`. If it fails, the item is
//!    deleted: a failed effect is never stored as completed, the retry runs
//!    it again.
//! 3. A delivery whose key is `completed` does not run the effect: it
//!    answers the stored outcome (a replay after a crash, a duplicate record
//!    in the stream, a redriven letter). Another record that reuses the key
//!    with other data is refused ([`IdempotencyError::PayloadMismatch`]).
//!    A key `in_progress` under another delivery is refused as in progress
//!    ([`IdempotencyError::InProgress`]: a failed attempt, retried with the
//!    consumer's backoff) — unless that delivery was an earlier attempt of
//!    the same record by the same consumer: the engine starts attempt `n+1`
//!    only once attempt `n` is over (its lock expired, it timed out, or its
//!    process died and the checkpoint proved it), so the claim is taken over
//!    at once, without waiting for the expiry.
//!
//! What is left: a crash *inside* the effect (after it acted, before the
//! item became `completed`) runs the effect again on the replay — the one
//! window no store can close without the effect's own cooperation. Use the
//! key in the effect's own write (a conditional put) to close it.
//!
//! Cost: two writes per record that runs (the claim and the completion;
//! one write unit each below 1 KB) — one read-free conditional write on a
//! replay. A slice processor claims concurrently and completes in batches
//! ([`IdempotencyStore::complete_many`]).

mod memory;
mod wrapper;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use memory::MemoryIdempotencyStore;
pub use wrapper::{IdempotencyConfig, Idempotent};

use crate::consumer::Outcome;
#[cfg(doc)]
use crate::consumer::{Processor, SliceProcessor};
use crate::error::Result;

/// Who claimed a key: one attempt of one record by one consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The consumer's id.
    pub consumer_id: String,
    /// The record's pointer in its stream.
    pub pointer: String,
    /// The attempt number (counted across restarts).
    pub attempt: u32,
}

impl Owner {
    /// Whether `newer` is a later attempt of the same record by the same
    /// consumer: then this attempt is over (the engine never overlaps two
    /// attempts of a record) and its claim may be taken over.
    pub fn is_superseded_by(&self, newer: &Owner) -> bool {
        self.consumer_id == newer.consumer_id
            && self.pointer == newer.pointer
            && self.attempt < newer.attempt
    }
}

/// The state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// An effect is running (or its process died before it ended).
    InProgress,
    /// The effect ran and its outcome is stored.
    Completed,
}

/// The outcome stored for a completed key, answered to the deliveries that
/// follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "data", rename_all = "snake_case")]
pub enum StoredOutcome {
    /// [`Outcome::Succeeded`].
    Succeeded,
    /// [`Outcome::SucceededWith`].
    SucceededWith(serde_json::Value),
    /// [`Outcome::Ignored`].
    Ignored,
}

impl From<&Outcome> for StoredOutcome {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Succeeded => StoredOutcome::Succeeded,
            Outcome::SucceededWith(v) => StoredOutcome::SucceededWith(v.clone()),
            Outcome::Ignored => StoredOutcome::Ignored,
        }
    }
}

impl From<StoredOutcome> for Outcome {
    fn from(o: StoredOutcome) -> Self {
        match o {
            StoredOutcome::Succeeded => Outcome::Succeeded,
            StoredOutcome::SucceededWith(v) => Outcome::SucceededWith(v),
            StoredOutcome::Ignored => Outcome::Ignored,
        }
    }
}

/// What a store keeps per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyItem {
    /// The idempotency key.
    pub key: String,
    /// In progress or completed.
    pub status: ItemStatus,
    /// SHA-256 of the record's bytes, hex.
    pub payload_hash: String,
    /// The attempt that claimed (or completed) it.
    pub owner: Owner,
    /// An `in_progress` item may be claimed by anyone after this.
    pub in_progress_until: DateTime<Utc>,
    /// The item is void after this (a store may delete it: DynamoDB's TTL).
    pub expires: DateTime<Utc>,
    /// The outcome, once completed.
    pub outcome: Option<StoredOutcome>,
}

/// A claim on a key, before an effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The idempotency key.
    pub key: String,
    /// SHA-256 of the record's bytes, hex.
    pub payload_hash: String,
    /// The attempt claiming.
    pub owner: Owner,
    /// The time of the claim.
    pub now: DateTime<Utc>,
    /// How long the claim holds if the effect never ends.
    pub in_progress_until: DateTime<Utc>,
    /// When the item becomes void.
    pub expires: DateTime<Utc>,
}

impl Claim {
    /// The item this claim writes.
    pub fn item(&self) -> IdempotencyItem {
        IdempotencyItem {
            key: self.key.clone(),
            status: ItemStatus::InProgress,
            payload_hash: self.payload_hash.clone(),
            owner: self.owner.clone(),
            in_progress_until: self.in_progress_until,
            expires: self.expires,
            outcome: None,
        }
    }
}

/// What a [`Claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// The key is ours: run the effect.
    Started,
    /// The effect already ran: answer its outcome.
    Completed(StoredOutcome),
    /// Another delivery holds the key.
    InProgress {
        /// Its owner.
        owner: Owner,
        /// When its claim lapses.
        until: DateTime<Utc>,
    },
    /// The key is in use with other data.
    PayloadMismatch,
}

impl IdempotencyItem {
    /// The rule every store applies atomically: `claim` may replace this
    /// item when it is void, or when it is in progress and its claim lapsed
    /// or its owner was superseded by the claim's (a later attempt of the
    /// same record).
    pub fn claimable_by(&self, claim: &Claim) -> bool {
        self.expires <= claim.now
            || (self.status == ItemStatus::InProgress
                && (self.in_progress_until <= claim.now
                    || self.owner.is_superseded_by(&claim.owner)))
    }

    /// What a claim that may not replace this item is told.
    pub fn answer(&self, claim: &Claim) -> Claimed {
        if self.payload_hash != claim.payload_hash {
            return Claimed::PayloadMismatch;
        }
        match (&self.status, &self.outcome) {
            (ItemStatus::Completed, Some(o)) => Claimed::Completed(o.clone()),
            (ItemStatus::Completed, None) => Claimed::Completed(StoredOutcome::Succeeded),
            (ItemStatus::InProgress, _) => Claimed::InProgress {
                owner: self.owner.clone(),
                until: self.in_progress_until,
            },
        }
    }
}

/// The completion of a claimed key.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The completed item (status `completed`, with its outcome).
    pub item: IdempotencyItem,
}

/// Where idempotency keys live. Implemented by
/// [`MemoryIdempotencyStore`], the file store of `unistream-local` and the
/// DynamoDB store of `unistream-dynamodb-s3`; all pass the same contract
/// suite (`unistream_core::testing::idempotency`, feature `testing`).
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key atomically: writes [`Claim::item`] if the key is absent
    /// or [`IdempotencyItem::claimable_by`] the claim, else answers
    /// [`IdempotencyItem::answer`] of the item it found.
    fn claim(&self, claim: &Claim) -> impl Future<Output = Result<Claimed>> + Send;

    /// Stores a completed key (whatever the key holds now).
    fn complete(&self, completion: &Completion) -> impl Future<Output = Result<()>> + Send;

    /// Stores many completed keys; by default one [`complete`](Self::complete)
    /// each, a store that can batch overrides it.
    fn complete_many(&self, completions: &[Completion]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for c in completions {
                self.complete(c).await?;
            }
            Ok(())
        }
    }

    /// Deletes the key if it is in progress under `owner` (an effect that
    /// failed: the retry claims it again).
    fn release(&self, key: &str, owner: &Owner) -> impl Future<Output = Result<()>> + Send;

    /// The item of a key, if any (void ones too).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<IdempotencyItem>>> + Send;

    /// Deletes a key whatever it holds: the next delivery runs its effect
    /// again (e.g. to re-run a redriven record on purpose).
    fn forget(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Why an idempotent attempt did not run its effect (a failed attempt).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// Another delivery holds the key: retried with the consumer's backoff.
    #[error(
        "idempotency key {key:?} is in progress under {owner_consumer}/{owner_pointer} attempt {owner_attempt} until {until}"
    )]
    InProgress {
        /// The key.
        key: String,
        /// Its owner's consumer.
        owner_consumer: String,
        /// Its owner's record pointer.
        owner_pointer: String,
        /// Its owner's attempt.
        owner_attempt: u32,
        /// When the claim lapses.
        until: DateTime<Utc>,
    },
    /// The key was used before with other data.
    #[error(
        "idempotency key {key:?} was already used with other data (payload hash differs): the key is not unique"
    )]
    PayloadMismatch {
        /// The key.
        key: String,
    },
    /// The store failed.
    #[error("idempotency store: {0}")]
    Store(#[source] crate::error::Error),
}

/// SHA-256 of `data`, lower-case hex: the payload hash.
pub fn payload_hash(data: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    hex
}
