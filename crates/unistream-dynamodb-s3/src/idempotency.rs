//! [`DynamoDbIdempotencyStore`]: idempotency keys in a DynamoDB table, one
//! item per key, claimed with one conditional `PutItem`.
//!
//! # Item
//! ```text
//! <pk name>          S  the idempotency key (default attribute name `id`)
//! status             S  in_progress | completed
//! payload_hash       S  SHA-256 of the record's bytes, hex
//! owner_consumer     S  the consumer of the attempt that claimed it
//! owner_pointer      S  the record's pointer
//! owner_attempt      N  the attempt number
//! in_progress_until  N  epoch milliseconds: the claim lapses then
//! expires_ms         N  epoch milliseconds: the item is void then
//! expiration         N  epoch seconds, the same time: enable DynamoDB TTL on it
//! outcome            S  the stored outcome (JSON), once completed
//! ```
//!
//! # Cost
//! A record whose effect runs: one conditional `PutItem` (the claim) and one
//! `PutItem` (the completion) — 2 write units for items under 1 KB (an
//! outcome with large data costs more). A replay: one conditional `PutItem`
//! that fails (DynamoDB bills a failed conditional write as a write unit)
//! and answers the item found (`ReturnValuesOnConditionCheckFailure`, no
//! read). A failed effect adds a conditional `DeleteItem`. A slice
//! completes with `BatchWriteItem` (25 items per call: 4 calls instead of
//! 100 for a slice of 100, the same write units).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use chrono::{DateTime, Utc};
use unistream_core::idempotency::{
    Claim, Claimed, Completion, IdempotencyItem, IdempotencyStore, ItemStatus, Owner, StoredOutcome,
};
use unistream_core::{Error, Result};

/// Idempotency keys in DynamoDB (see the module docs for the item and its
/// cost). The table needs only a string partition key; enable TTL on
/// `expiration` so that void keys are deleted for free.
///
/// ```no_run
/// # async fn f(client: aws_sdk_dynamodb::Client) {
/// use unistream_dynamodb_s3::DynamoDbIdempotencyStore;
/// let keys = DynamoDbIdempotencyStore::new(client, "orders-idempotency");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoDbIdempotencyStore {
    client: Client,
    table: String,
    pk: String,
    calls: Arc<Counters>,
}

/// How many calls a [`DynamoDbIdempotencyStore`] made (clones share them),
/// and the write units they cost as AWS bills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyCalls {
    /// `PutItem`: claims (also those refused) and single completions.
    pub put_item: u64,
    /// `BatchWriteItem` calls (completions of a slice, 25 per call).
    pub batch_write_item: u64,
    /// Items written by `BatchWriteItem`.
    pub batch_items: u64,
    /// `DeleteItem`: releases after failed effects, forgets.
    pub delete_item: u64,
    /// `GetItem`.
    pub get_item: u64,
    /// Write units: per started KB of each item written (a refused
    /// conditional write is billed too), at least 1 per delete.
    pub write_units: u64,
}

impl IdempotencyCalls {
    /// Every call counted here.
    pub fn total(&self) -> u64 {
        self.put_item + self.batch_write_item + self.delete_item + self.get_item
    }
}

#[derive(Debug, Default)]
struct Counters {
    put_item: AtomicU64,
    batch_write_item: AtomicU64,
    batch_items: AtomicU64,
    delete_item: AtomicU64,
    get_item: AtomicU64,
    write_units: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn units(item: &HashMap<String, AttributeValue>) -> u64 {
    crate::item::write_units(crate::load::item_size(item), 0)
}

const BATCH: usize = 25;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn status_name(s: ItemStatus) -> &'static str {
    match s {
        ItemStatus::InProgress => "in_progress",
        ItemStatus::Completed => "completed",
    }
}

impl DynamoDbIdempotencyStore {
    /// Keys in `table`, under the partition key attribute `id`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbIdempotencyStore {
            client,
            table: table.into(),
            pk: "id".into(),
            calls: Arc::default(),
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> IdempotencyCalls {
        let c = &self.calls;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IdempotencyCalls {
            put_item: get(&c.put_item),
            batch_write_item: get(&c.batch_write_item),
            batch_items: get(&c.batch_items),
            delete_item: get(&c.delete_item),
            get_item: get(&c.get_item),
            write_units: get(&c.write_units),
        }
    }

    /// Another partition key attribute name.
    #[must_use]
    pub fn key_attribute(mut self, name: impl Into<String>) -> Self {
        self.pk = name.into();
        self
    }

    fn error<E>(&self, operation: &str, key: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> Error
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        if let Some(denied) = unistream_aws::denied(&e, &format!("dynamodb:{operation}"), || {
            format!("table {}, key {key:?}", self.table)
        }) {
            return denied;
        }
        let code = e.code().unwrap_or("no error code").to_owned();
        Error::backend(
            format!(
                "DynamoDB idempotency store: {operation} on table {}, key {key:?} ({code})",
                self.table
            ),
            e,
        )
    }

    fn write_item(&self, i: &IdempotencyItem) -> Result<HashMap<String, AttributeValue>> {
        let mut m = HashMap::from([
            (self.pk.clone(), s(&i.key)),
            ("status".into(), s(status_name(i.status))),
            ("payload_hash".into(), s(&i.payload_hash)),
            ("owner_consumer".into(), s(&i.owner.consumer_id)),
            ("owner_pointer".into(), s(&i.owner.pointer)),
            ("owner_attempt".into(), n(i.owner.attempt)),
            (
                "in_progress_until".into(),
                n(i.in_progress_until.timestamp_millis()),
            ),
            ("expires_ms".into(), n(i.expires.timestamp_millis())),
            ("expiration".into(), n(i.expires.timestamp())),
        ]);
        if let Some(o) = &i.outcome {
            let json = serde_json::to_string(o).map_err(|e| {
                Error::backend("DynamoDB idempotency store: encoding an outcome", e)
            })?;
            m.insert("outcome".into(), s(json));
        }
        Ok(m)
    }

    fn read_item(&self, m: &HashMap<String, AttributeValue>) -> Result<IdempotencyItem> {
        let bad = |what: &str| {
            Error::backend(
                format!("DynamoDB idempotency store: table {}", self.table),
                format!("an item has no valid `{what}`: not an idempotency item"),
            )
        };
        let text = |k: &str| -> Result<String> {
            m.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| bad(k))
        };
        let num = |k: &str| -> Result<i64> {
            m.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(k))
        };
        let time = |k: &str| -> Result<DateTime<Utc>> {
            DateTime::from_timestamp_millis(num(k)?).ok_or_else(|| bad(k))
        };
        let status = match text("status")?.as_str() {
            "in_progress" => ItemStatus::InProgress,
            "completed" => ItemStatus::Completed,
            _ => return Err(bad("status")),
        };
        let outcome = match m.get("outcome").and_then(|v| v.as_s().ok()) {
            Some(json) => {
                Some(serde_json::from_str::<StoredOutcome>(json).map_err(|_| bad("outcome"))?)
            }
            None => None,
        };
        Ok(IdempotencyItem {
            key: text(&self.pk)?,
            status,
            payload_hash: text("payload_hash")?,
            owner: Owner {
                consumer_id: text("owner_consumer")?,
                pointer: text("owner_pointer")?,
                attempt: u32::try_from(num("owner_attempt")?).map_err(|_| bad("owner_attempt"))?,
            },
            in_progress_until: time("in_progress_until")?,
            expires: time("expires_ms")?,
            outcome,
        })
    }

    /// Completions in one `BatchWriteItem` (at most 25), re-sending what
    /// DynamoDB leaves unprocessed.
    async fn write_batch(&self, completions: &[&Completion]) -> Result<()> {
        let mut requests = Vec::with_capacity(completions.len());
        for c in completions {
            let put = PutRequest::builder()
                .set_item(Some(self.write_item(&c.item)?))
                .build()
                .map_err(|e| Error::backend("DynamoDB idempotency store", e))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let first = completions
            .first()
            .map(|c| c.item.key.clone())
            .unwrap_or_default();
        let mut wait = Duration::from_millis(50);
        for _ in 0..8 {
            add(&self.calls.batch_write_item, 1);
            add(&self.calls.batch_items, requests.len() as u64);
            add(
                &self.calls.write_units,
                requests
                    .iter()
                    .filter_map(|r| r.put_request())
                    .map(|p| units(p.item()))
                    .sum(),
            );
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| self.error("BatchWriteItem", &first, e))?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        Err(Error::backend(
            format!(
                "DynamoDB idempotency store: BatchWriteItem on table {}",
                self.table
            ),
            format!(
                "{} completions still unprocessed after 8 calls",
                requests.len()
            ),
        ))
    }
}

impl IdempotencyStore for DynamoDbIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<Claimed> {
        let item = self.write_item(&claim.item())?;
        // Absent, void, or in progress and lapsed or superseded by a later
        // attempt of the same record: `IdempotencyItem::claimable_by`.
        let condition = "attribute_not_exists(#pk) OR expires_ms <= :now \
            OR (#status = :in_progress AND (in_progress_until <= :now \
            OR (owner_consumer = :consumer AND owner_pointer = :pointer AND owner_attempt < :attempt)))";
        // A claim that raced with another write is tried again (a few times).
        for _ in 0..3 {
            add(&self.calls.put_item, 1);
            add(&self.calls.write_units, units(&item));
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression(condition)
                .expression_attribute_names("#pk", &self.pk)
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":now", n(claim.now.timestamp_millis()))
                .expression_attribute_values(":in_progress", s("in_progress"))
                .expression_attribute_values(":consumer", s(&claim.owner.consumer_id))
                .expression_attribute_values(":pointer", s(&claim.owner.pointer))
                .expression_attribute_values(":attempt", n(claim.owner.attempt))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let e = match put {
                Ok(_) => return Ok(Claimed::Started),
                Err(e) => e,
            };
            let found = match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
                _ => return Err(self.error("PutItem", &claim.key, e)),
            };
            // An emulator may not return the item: read it.
            let found = match found {
                Some(m) => Some(self.read_item(&m)?),
                None => self.get(&claim.key).await?,
            };
            match found {
                Some(existing) if !existing.claimable_by(claim) => {
                    return Ok(existing.answer(claim));
                }
                _ => continue,
            }
        }
        Err(Error::backend(
            format!("DynamoDB idempotency store: table {}", self.table),
            format!(
                "the claim of key {:?} kept racing with other writes",
                claim.key
            ),
        ))
    }

    async fn complete(&self, completion: &Completion) -> Result<()> {
        let item = self.write_item(&completion.item)?;
        add(&self.calls.put_item, 1);
        add(&self.calls.write_units, units(&item));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error("PutItem", &completion.item.key, e))?;
        Ok(())
    }

    async fn complete_many(&self, completions: &[Completion]) -> Result<()> {
        // One key twice in a batch is refused by DynamoDB: the last wins.
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<&Completion> = completions
            .iter()
            .rev()
            .filter(|c| seen.insert(c.item.key.as_str()))
            .collect();
        // The chunks overlap: a slice of 100 completes in one round trip.
        let written =
            futures_util::future::join_all(unique.chunks(BATCH).map(|c| self.write_batch(c))).await;
        written.into_iter().collect()
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<()> {
        add(&self.calls.delete_item, 1);
        add(&self.calls.write_units, 1);
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(&self.pk, s(key))
            .condition_expression(
                "#status = :in_progress AND owner_consumer = :consumer \
                 AND owner_pointer = :pointer AND owner_attempt = :attempt",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":consumer", s(&owner.consumer_id))
            .expression_attribute_values(":pointer", s(&owner.pointer))
            .expression_attribute_values(":attempt", n(owner.attempt))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("DeleteItem", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyItem>> {
        add(&self.calls.get_item, 1);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(&self.pk, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", key, e))?;
        out.item.as_ref().map(|m| self.read_item(m)).transpose()
    }

    async fn forget(&self, key: &str) -> Result<()> {
        add(&self.calls.delete_item, 1);
        add(&self.calls.write_units, 1);
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(&self.pk, s(key))
            .send()
            .await
            .map_err(|e| self.error("DeleteItem", key, e))?;
        Ok(())
    }
}
