//! [`DynamoDbS3CheckpointStore`] and its builder: the checkpoint item in
//! DynamoDB, the batch's records in S3 (layout and cost: `docs/production.md`).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint, Tracker};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{BoxError, Error, Result};

use crate::error::StoreError;

/// DynamoDB's item size limit; writes that would exceed it are refused
/// before the call.
pub const ITEM_LIMIT_BYTES: usize = 400 * 1024;

/// A [`CheckpointStore`] in one DynamoDB item plus one S3 object per batch;
/// see the crate docs.
///
/// ```no_run
/// # async fn demo(ddb: aws_sdk_dynamodb::Client, s3: aws_sdk_s3::Client) {
/// use unistream_dynamodb_s3::DynamoDbS3CheckpointStore;
/// let store = DynamoDbS3CheckpointStore::builder(ddb, s3)
///     .table("checkpoints")
///     .key("orders/shardId-000000000000")
///     .bucket("my-bucket")
///     .build()
///     .expect("table, key and bucket are set");
/// # }
/// ```
#[derive(Debug)]
pub struct DynamoDbS3CheckpointStore {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: String,
    pk_name: String,
    pk_value: String,
    bucket: String,
    prefix: String,
    owner: String,
    /// The item's version as this store last saw it (None: no item yet).
    version: Option<u64>,
    /// Trackers saved but not yet written, by index.
    pending: BTreeMap<usize, Tracker>,
    /// Approximate size of the item, for the 400 KB guard.
    item_bytes: usize,
    calls: StoreCalls,
    exclusive: bool,
}

/// How many calls a [`DynamoDbS3CheckpointStore`] made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCalls {
    /// DynamoDB `GetItem`.
    pub get_item: u64,
    /// DynamoDB `PutItem` (one per batch).
    pub put_item: u64,
    /// DynamoDB `UpdateItem` (tracker changes, commits, take-overs).
    pub update_item: u64,
    /// S3 `PutObject` (one per batch).
    pub put_object: u64,
    /// S3 `GetObject` (on load).
    pub get_object: u64,
    /// S3 `DeleteObject` (the previous batch's records).
    pub delete_object: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    pointer: Pointer,
    data: String,
}

fn tracker_key(index: usize, t: &Tracker) -> String {
    format!("{index}|{}", t.record_id)
}

/// Builds a [`DynamoDbS3CheckpointStore`]; from
/// [`DynamoDbS3CheckpointStore::builder`].
///
/// Required, checked by [`build`](Self::build): [`table`](Self::table),
/// [`key`](Self::key) and [`bucket`](Self::bucket) — named, so that three
/// strings cannot be swapped. The rest has defaults, named on each setter.
#[derive(Debug, Clone)]
pub struct DynamoDbS3CheckpointStoreBuilder {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: Option<String>,
    key: Option<String>,
    bucket: Option<String>,
    key_attribute: String,
    prefix: String,
    exclusive: bool,
}

/// DynamoDB's limit on a partition key value.
const MAX_KEY_BYTES: usize = 2048;

impl DynamoDbS3CheckpointStoreBuilder {
    /// The DynamoDB table holding one item per consumer. Required.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// This consumer's item: the value of its partition key (the consumer
    /// id, e.g. `orders/shardId-000000000000`). Required.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The S3 bucket holding each batch's records. Required.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The name of the table's partition key attribute (a string). Default
    /// `id`.
    pub fn key_attribute(mut self, name: impl Into<String>) -> Self {
        self.key_attribute = name.into();
        self
    }

    /// The prefix of the batch objects' keys in the bucket. Default
    /// `unistream/`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Declares that a lease (e.g. `unistream-leases`) makes this store's
    /// consumer the only one running for its key. A record left in
    /// progress by a previous owner is then retried at once, instead of
    /// after its lock expires: the previous owner lost its lease (it died,
    /// or stops on its next renewal), and its checkpoint writes fail once
    /// this store has loaded the item. Default: not exclusive.
    pub fn exclusive_by_lease(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the table, the key or the bucket is missing or
    /// empty, or the key is longer than DynamoDB's 2,048 bytes.
    pub fn build(self) -> Result<DynamoDbS3CheckpointStore> {
        let table = Error::required(self.table, "DynamoDbS3CheckpointStoreBuilder::table")?;
        let key = Error::required(self.key, "DynamoDbS3CheckpointStoreBuilder::key")?;
        let bucket = Error::required(self.bucket, "DynamoDbS3CheckpointStoreBuilder::bucket")?;
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::Config(format!(
                "DynamoDbS3CheckpointStore: the key is {} bytes, over DynamoDB's {MAX_KEY_BYTES} for a partition key",
                key.len()
            )));
        }
        if self.key_attribute.is_empty() {
            return Err(Error::Config(
                "DynamoDbS3CheckpointStore: the key attribute name is empty".into(),
            ));
        }
        Ok(DynamoDbS3CheckpointStore {
            ddb: self.ddb,
            s3: self.s3,
            table,
            pk_name: self.key_attribute,
            pk_value: key,
            bucket,
            prefix: self.prefix,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            version: None,
            pending: BTreeMap::new(),
            item_bytes: 0,
            calls: StoreCalls::default(),
            exclusive: self.exclusive,
        })
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl DynamoDbS3CheckpointStore {
    /// A builder of a store reaching DynamoDB and S3 through these clients
    /// (see [`DynamoDbS3CheckpointStoreBuilder`] for what is required and
    /// the defaults).
    pub fn builder(
        ddb: aws_sdk_dynamodb::Client,
        s3: aws_sdk_s3::Client,
    ) -> DynamoDbS3CheckpointStoreBuilder {
        DynamoDbS3CheckpointStoreBuilder {
            ddb,
            s3,
            table: None,
            key: None,
            bucket: None,
            key_attribute: "id".into(),
            prefix: "unistream/".into(),
            exclusive: false,
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> StoreCalls {
        self.calls
    }

    fn store_name(&self) -> String {
        format!(
            "DynamoDB table {} + s3://{}/{}",
            self.table, self.bucket, self.prefix
        )
    }

    fn unreadable(&self, reason: impl Into<String>) -> Error {
        Error::CheckpointUnreadable {
            store: self.store_name(),
            key: self.pk_value.clone(),
            reason: reason.into(),
        }
    }

    fn owned(&self, detail: impl Into<String>) -> Error {
        Error::CheckpointOwned {
            store: self.store_name(),
            key: self.pk_value.clone(),
            detail: detail.into(),
        }
    }

    fn records_key(&self, seq: u64) -> String {
        format!("{}{}/batch-{seq:020}.json", self.prefix, self.pk_value)
    }

    fn check_size(&self, bytes: usize) -> Result<()> {
        if bytes > ITEM_LIMIT_BYTES {
            return Err(Error::Config(format!(
                "the checkpoint item of consumer {:?} would be about {bytes} bytes, over DynamoDB's {ITEM_LIMIT_BYTES}: lower the consumer's `limit`",
                self.pk_value
            )));
        }
        Ok(())
    }

    fn encode_tracker(&self, t: &Tracker) -> Result<String> {
        serde_json::to_string(t).map_err(|e| self.encode_error("tracker", e))
    }

    fn encode_error(&self, what: &'static str, source: serde_json::Error) -> Error {
        StoreError::Encode {
            what,
            table: self.table.clone(),
            key: self.pk_value.clone(),
            source,
        }
        .into()
    }

    fn dynamodb_error(
        &self,
        operation: &'static str,
        source: impl Into<aws_sdk_dynamodb::Error>,
    ) -> Error {
        StoreError::DynamoDb {
            operation,
            table: self.table.clone(),
            key: self.pk_value.clone(),
            source: Box::new(source.into()),
        }
        .into()
    }

    fn s3_error(
        &self,
        operation: &'static str,
        object: &str,
        source: impl Into<BoxError>,
    ) -> Error {
        StoreError::S3 {
            operation,
            bucket: self.bucket.clone(),
            object: object.to_owned(),
            source: source.into(),
        }
        .into()
    }

    /// Writes the pending trackers (and the checkpoint's metadata, if
    /// given) with one conditional `UpdateItem`.
    async fn update(&mut self, meta: Option<&Checkpoint>) -> Result<()> {
        if self.pending.is_empty() && meta.is_none() {
            return Ok(());
        }
        let Some(version) = self.version else {
            return Err(Error::InvalidTransition(
                "checkpoint change saved before its batch".into(),
            ));
        };
        let mut sets = vec!["#ver = :new".to_owned(), "#owner = :me".to_owned()];
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(&self.pk_name, s(&self.pk_value))
            .condition_expression("#ver = :old")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":old", AttributeValue::N(version.to_string()))
            .expression_attribute_values(":new", AttributeValue::N((version + 1).to_string()))
            .expression_attribute_values(":me", s(&self.owner));
        let mut added = 0;
        if !self.pending.is_empty() {
            req = req.expression_attribute_names("#t", "trackers");
        }
        for (n, (&i, t)) in self.pending.iter().enumerate() {
            let value = self.encode_tracker(t)?;
            added += value.len();
            sets.push(format!("#t.#k{n} = :v{n}"));
            req = req
                .expression_attribute_names(format!("#k{n}"), tracker_key(i, t))
                .expression_attribute_values(format!(":v{n}"), s(value));
        }
        if let Some(checkpoint) = meta {
            let m = serde_json::to_string(&checkpoint.without_trackers())
                .map_err(|e| self.encode_error("checkpoint", e))?;
            sets.push("#meta = :meta".into());
            req = req
                .expression_attribute_names("#meta", "meta")
                .expression_attribute_values(":meta", s(m));
        }
        // Updated trackers replace old values of about the same size; count
        // the growth conservatively.
        self.check_size(self.item_bytes + added / 4)?;
        req = req.update_expression(format!("SET {}", sets.join(", ")));
        self.calls.update_item += 1;
        match req.send().await {
            Ok(_) => {
                self.version = Some(version + 1);
                self.pending.clear();
                Ok(())
            }
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Err(self.owned(format!(
                    "the item changed since version {version}: another consumer loaded or wrote it"
                ))),
                e => Err(self.dynamodb_error("UpdateItem", e)),
            },
        }
    }
}

impl CheckpointStore for DynamoDbS3CheckpointStore {
    fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    async fn load(&mut self) -> Result<Option<StoredCheckpoint>> {
        self.pending.clear();
        self.calls.get_item += 1;
        let got = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key(&self.pk_name, s(&self.pk_value))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.dynamodb_error("GetItem", e))?;
        let Some(item) = got.item else {
            self.version = None;
            return Ok(None);
        };
        let text = |name: &str| -> Result<&String> {
            item.get(name).and_then(|v| v.as_s().ok()).ok_or_else(|| {
                self.unreadable(format!("attribute {name:?} is missing or not a string"))
            })
        };
        let version: u64 = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.unreadable("attribute \"version\" is missing or not a number"))?;
        let meta: Checkpoint = serde_json::from_str(text("meta")?)
            .map_err(|e| self.unreadable(format!("attribute \"meta\": {e}")))?;
        let records_key = text("records_key")?.clone();
        let mut trackers: Vec<(usize, Tracker)> = Vec::new();
        if let Some(map) = item.get("trackers").and_then(|v| v.as_m().ok()) {
            for (key, value) in map {
                let index: usize = key
                    .split_once('|')
                    .and_then(|(i, _)| i.parse().ok())
                    .ok_or_else(|| self.unreadable(format!("tracker key {key:?}")))?;
                let t: Tracker = value
                    .as_s()
                    .ok()
                    .and_then(|v| serde_json::from_str(v).ok())
                    .ok_or_else(|| self.unreadable(format!("tracker {key:?} is not a tracker")))?;
                trackers.push((index, t));
            }
        }
        trackers.sort_by_key(|(i, _)| *i);
        if trackers.iter().enumerate().any(|(n, (i, _))| n != *i) {
            return Err(self.unreadable("the trackers are not numbered 0..n"));
        }
        let checkpoint = meta.with_trackers(trackers.into_iter().map(|(_, t)| t).collect());
        self.calls.get_object += 1;
        let body = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&records_key)
            .send()
            .await
            .map_err(|e| {
                self.unreadable(format!(
                    "records object s3://{}/{records_key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?
            .body
            .collect()
            .await
            .map_err(|e| self.s3_error("GetObject", &records_key, e))?
            .into_bytes();
        let stored: Vec<StoredRecord> = serde_json::from_slice(&body).map_err(|e| {
            self.unreadable(format!(
                "records object s3://{}/{records_key}: {e}",
                self.bucket
            ))
        })?;
        let records = stored
            .into_iter()
            .map(|r| {
                base64::engine::general_purpose::STANDARD
                    .decode(&r.data)
                    .map(|data| SourceRecord::new(r.pointer, data))
                    .map_err(|e| self.unreadable(format!("records object: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.item_bytes = item
            .values()
            .map(|v| v.as_s().map_or(64, String::len))
            .sum::<usize>()
            + checkpoint.trackers().len() * 200;
        // Take ownership: from here on, a consumer that loaded before us
        // cannot write.
        self.calls.update_item += 1;
        let claim = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(&self.pk_name, s(&self.pk_value))
            .condition_expression("#ver = :old")
            .update_expression("SET #ver = :new, #owner = :me")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":old", AttributeValue::N(version.to_string()))
            .expression_attribute_values(":new", AttributeValue::N((version + 1).to_string()))
            .expression_attribute_values(":me", s(&self.owner))
            .send()
            .await;
        match claim {
            Ok(_) => self.version = Some(version + 1),
            Err(e) => {
                return Err(match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(_) => {
                        self.owned("another consumer wrote the item while it was being loaded")
                    }
                    e => self.dynamodb_error("UpdateItem", e),
                });
            }
        }
        debug!(table = %self.table, key = %self.pk_value, version = version + 1, "loaded checkpoint");
        Ok(Some(StoredCheckpoint {
            checkpoint,
            records,
        }))
    }

    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        self.pending.clear();
        let stored: Vec<StoredRecord> = records
            .iter()
            .map(|r| StoredRecord {
                pointer: r.pointer.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(&r.data),
            })
            .collect();
        let body = serde_json::to_vec(&stored).map_err(|e| self.encode_error("records", e))?;
        let meta = serde_json::to_string(&checkpoint.without_trackers())
            .map_err(|e| self.encode_error("checkpoint", e))?;
        let mut trackers = HashMap::with_capacity(checkpoint.trackers().len());
        let mut bytes = meta.len() + self.pk_value.len() + 200;
        for (i, t) in checkpoint.trackers().iter().enumerate() {
            let key = tracker_key(i, t);
            let value = self.encode_tracker(t)?;
            // Room for the tracker to grow (status, lock, error text).
            bytes += key.len() + value.len() + 200;
            trackers.insert(key, s(value));
        }
        self.check_size(bytes)?;
        // Records first: an item never points at records that are not there.
        let key = self.records_key(checkpoint.batch_sequence());
        self.calls.put_object += 1;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.s3_error("PutObject", &key, aws_sdk_s3::Error::from(e)))?;
        let new_version = self.version.map_or(1, |v| v + 1);
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item(&self.pk_name, s(&self.pk_value))
            .item("version", AttributeValue::N(new_version.to_string()))
            .item("owner", s(&self.owner))
            .item("meta", s(meta))
            .item("trackers", AttributeValue::M(trackers))
            .item("records_key", s(&key));
        put = match self.version {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &self.pk_name),
            Some(v) => put
                .condition_expression("#ver = :old")
                .expression_attribute_names("#ver", "version")
                .expression_attribute_values(":old", AttributeValue::N(v.to_string())),
        };
        self.calls.put_item += 1;
        match put.send().await {
            Ok(_) => {}
            Err(e) => {
                return Err(match e.into_service_error() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_) => {
                        self.owned("the item changed: another consumer loaded or wrote it")
                    }
                    e => self.dynamodb_error("PutItem", e),
                });
            }
        }
        self.version = Some(new_version);
        self.item_bytes = bytes;
        // The previous batch's records are no longer needed.
        if checkpoint.batch_sequence() > 1 {
            let old = self.records_key(checkpoint.batch_sequence() - 1);
            self.calls.delete_object += 1;
            if let Err(e) = self
                .s3
                .delete_object()
                .bucket(&self.bucket)
                .key(&old)
                .send()
                .await
            {
                warn!(key = %old, error = %aws_sdk_s3::error::DisplayErrorContext(e), "could not delete the previous batch's records");
            }
        }
        Ok(())
    }

    async fn save_tracker(&mut self, checkpoint: &Checkpoint, index: usize) -> Result<()> {
        let t = checkpoint.tracker(index)?;
        self.pending.insert(index, t.clone());
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        self.update(None).await
    }

    async fn save_commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.update(Some(checkpoint)).await
    }
}
