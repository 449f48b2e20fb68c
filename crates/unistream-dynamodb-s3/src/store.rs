//! [`DynamoDbS3CheckpointStore`] and its builder: the checkpoint item in
//! DynamoDB, the batch's records in S3 (layout and cost: `docs/production.md`).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint, Tracker};
use unistream_core::source::SourceRecord;
use unistream_core::{BoxError, Error, Result};

use crate::error::StoreError;
use crate::item::Mirror;

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
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) table: String,
    pub(crate) pk_name: String,
    pub(crate) pk_value: String,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) owner: String,
    /// The item's version as this store last saw it (None: no item yet).
    pub(crate) version: Option<u64>,
    /// Trackers saved but not yet written, by index.
    pub(crate) pending: BTreeMap<usize, Tracker>,
    /// The item as last written or read (None: no batch yet).
    pub(crate) mirror: Option<Mirror>,
    pub(crate) calls: StoreCalls,
    pub(crate) exclusive: bool,
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
    /// S3 `DeleteObject` (a previous owner's records object, once after a
    /// take-over; a writer's own two objects alternate).
    pub delete_object: u64,
    /// DynamoDB write units billed for the successful `PutItem` and
    /// `UpdateItem` calls, as AWS bills them: per started KB of the larger
    /// of the item before and after each write.
    pub write_units: u64,
    /// The largest size of the item (as DynamoDB counts it) after a write.
    pub max_item_bytes: u64,
}

impl StoreCalls {
    /// Every DynamoDB and S3 call counted here.
    pub fn total(&self) -> u64 {
        self.get_item
            + self.put_item
            + self.update_item
            + self.put_object
            + self.get_object
            + self.delete_object
    }
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
            mirror: None,
            calls: StoreCalls::default(),
            exclusive: self.exclusive,
        })
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
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

    /// The size of the checkpoint item as DynamoDB counts it, as this store
    /// last wrote or read it (0 before the first batch).
    pub fn item_bytes(&self) -> usize {
        match &self.mirror {
            Some(m) => m.item_bytes(
                (&self.pk_name, &self.pk_value),
                &self.owner,
                self.version.unwrap_or(0),
            ),
            None => 0,
        }
    }

    pub(crate) fn store_name(&self) -> String {
        format!(
            "DynamoDB table {} + s3://{}/{}",
            self.table, self.bucket, self.prefix
        )
    }

    pub(crate) fn unreadable(&self, reason: impl Into<String>) -> Error {
        Error::CheckpointUnreadable {
            store: self.store_name(),
            key: self.pk_value.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn owned(&self, detail: impl Into<String>) -> Error {
        Error::CheckpointOwned {
            store: self.store_name(),
            key: self.pk_value.clone(),
            detail: detail.into(),
        }
    }

    /// The records object of batch `seq` written by this store: one of two
    /// per writer, alternating, so that a new batch overwrites the object of
    /// the batch before the previous one (which no item points at any more)
    /// and no `DeleteObject` is needed. The writer is part of the key: a
    /// writer that lost the item (fenced, its `PutItem` about to fail) can
    /// never overwrite the object that the new owner's item points at.
    pub(crate) fn records_key(&self, seq: u64) -> String {
        format!("{}{}", self.own_records_prefix(), seq % 2)
    }

    /// What every records object of this writer's keys starts with.
    pub(crate) fn own_records_prefix(&self) -> String {
        format!("{}{}/records-{}-", self.prefix, self.pk_value, self.owner)
    }

    pub(crate) fn encode_error(&self, what: &'static str, source: serde_json::Error) -> Error {
        StoreError::Encode {
            what,
            table: self.table.clone(),
            key: self.pk_value.clone(),
            source,
        }
        .into()
    }

    /// [`Error::Denied`] if DynamoDB refused `operation` on the item.
    pub(crate) fn ddb_denied<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
        &self,
        e: &aws_sdk_dynamodb::error::SdkError<E>,
        operation: &str,
    ) -> Option<Error> {
        unistream_aws::denied(e, &format!("dynamodb:{operation}"), || {
            format!("table {}, key {:?}", self.table, self.pk_value)
        })
    }

    /// [`Error::Denied`] if S3 refused `operation` on `object`.
    pub(crate) fn s3_denied<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
        &self,
        e: &aws_sdk_dynamodb::error::SdkError<E>,
        operation: &str,
        object: &str,
    ) -> Option<Error> {
        unistream_aws::denied(e, &format!("s3:{operation}"), || {
            format!("s3://{}/{object}", self.bucket)
        })
    }

    pub(crate) fn dynamodb_error(
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

    pub(crate) fn s3_error(
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

    /// The error of a failed `UpdateItem`: a failed condition means another
    /// consumer loaded or wrote the item ([`Error::CheckpointOwned`] with
    /// `detail`).
    pub(crate) fn update_error(
        &self,
        e: aws_sdk_dynamodb::error::SdkError<UpdateItemError>,
        detail: impl FnOnce() -> String,
    ) -> Error {
        if let Some(denied) = self.ddb_denied(&e, "UpdateItem") {
            return denied;
        }
        match e.into_service_error() {
            UpdateItemError::ConditionalCheckFailedException(_) => self.owned(detail()),
            e => self.dynamodb_error("UpdateItem", e),
        }
    }

    /// Counts a successful write of the item from `before` to `after`
    /// bytes.
    pub(crate) fn count_write(&mut self, before: usize, after: usize) {
        self.calls.write_units += crate::item::write_units(before, after);
        self.calls.max_item_bytes = self.calls.max_item_bytes.max(after as u64);
    }
}

impl CheckpointStore for DynamoDbS3CheckpointStore {
    fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    async fn load(&mut self) -> Result<Option<StoredCheckpoint>> {
        self.load_item().await
    }

    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        self.write_batch(checkpoint, records).await
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
