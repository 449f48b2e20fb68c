//! The store's writes: a new batch (records object, then the whole item)
//! and the group-committed `UpdateItem` of everything saved since the last
//! write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;
use unistream_core::checkpoint::{Checkpoint, Tracker};
use unistream_core::source::{Pointer, SourceRecord};
use unistream_core::{Error, Result};

use crate::ITEM_LIMIT_BYTES;
use crate::error::StoreError;
use crate::item::{Mirror, map_key};
use crate::layout::{self, LAYOUT, Slot};
use crate::store::{DynamoDbS3CheckpointStore, s};

/// One record of the S3 records object. `id` is there from layout 2 on
/// (compact trackers take their record id from it).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub(crate) pointer: Pointer,
    pub(crate) data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
}

/// More map changes than this in one write replace the whole map: an
/// update expression is limited to 4 KB.
const MAX_PATH_CHANGES: usize = 64;

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn tracker_map(full: &BTreeMap<usize, String>) -> AttributeValue {
    AttributeValue::M(full.iter().map(|(i, v)| (map_key(*i), s(v))).collect())
}

/// When the batch was created (every tracker of a new batch has that time).
pub(crate) fn created_of(trackers: &[Tracker]) -> DateTime<Utc> {
    trackers
        .first()
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.create_time)
}

impl DynamoDbS3CheckpointStore {
    fn encode_tracker(&self, t: &Tracker) -> Result<String> {
        serde_json::to_string(t).map_err(|e| self.encode_error("tracker", e))
    }

    /// The size of `mirror`'s item after this store's next write, refused
    /// over DynamoDB's limit.
    fn checked_size(&self, mirror: &Mirror, version: u64) -> Result<usize> {
        let bytes = mirror.item_bytes((&self.pk_name, &self.pk_value), &self.owner, version);
        if bytes > ITEM_LIMIT_BYTES {
            return Err(StoreError::ItemTooLarge {
                table: self.table.clone(),
                key: self.pk_value.clone(),
                bytes,
                limit: ITEM_LIMIT_BYTES,
                full_trackers: mirror.full.len(),
            }
            .into());
        }
        Ok(bytes)
    }

    /// `save_batch`: the records object first (an item never points at
    /// records that are not there), then the whole item, conditional on the
    /// version this store last saw; then the previous batch's object is
    /// deleted.
    pub(crate) async fn write_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        self.pending.clear();
        let trackers = checkpoint.trackers();
        let ids: Arc<[String]> = trackers.iter().map(|t| t.record_id.clone()).collect();
        let stored: Vec<StoredRecord> = records
            .iter()
            .zip(ids.iter())
            .map(|(r, id)| StoredRecord {
                pointer: r.pointer.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(&r.data),
                id: Some(id.clone()),
            })
            .collect();
        let body = serde_json::to_vec(&stored).map_err(|e| self.encode_error("records", e))?;
        let created = created_of(trackers);
        let mut mirror = Mirror {
            created,
            ids: Some(ids),
            slots: Vec::with_capacity(trackers.len()),
            full: BTreeMap::new(),
            state: String::new(),
            meta: serde_json::to_string(&checkpoint.without_trackers())
                .map_err(|e| self.encode_error("checkpoint", e))?,
            records_key: self.records_key(checkpoint.batch_sequence()),
        };
        for (i, t) in trackers.iter().enumerate() {
            let slot = mirror.slot_of(i, t);
            if slot == Slot::Full {
                mirror.full.insert(i, self.encode_tracker(t)?);
            }
            mirror.slots.push(slot);
        }
        mirror.state = layout::encode(created, &mirror.slots);
        let new_version = self.version.map_or(1, |v| v + 1);
        let bytes = self.checked_size(&mirror, new_version)?;
        let before = self.item_bytes();

        let key = mirror.records_key.clone();
        self.calls.put_object += 1;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                self.s3_denied(&e, "PutObject", &key)
                    .unwrap_or_else(|| self.s3_error("PutObject", &key, aws_sdk_s3::Error::from(e)))
            })?;
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item(&self.pk_name, s(&self.pk_value))
            .item("version", number(new_version))
            .item("owner", s(&self.owner))
            .item("layout", number(u64::from(LAYOUT)))
            .item("meta", s(&mirror.meta))
            .item("state", s(&mirror.state))
            .item("trackers", tracker_map(&mirror.full))
            .item("records_key", s(&key));
        put = match self.version {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &self.pk_name),
            Some(v) => put
                .condition_expression("#ver = :old")
                .expression_attribute_names("#ver", "version")
                .expression_attribute_values(":old", number(v)),
        };
        self.calls.put_item += 1;
        if let Err(e) = put.send().await {
            if let Some(denied) = self.ddb_denied(&e, "PutItem") {
                return Err(denied);
            }
            return Err(match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => {
                    self.owned("the item changed: another consumer loaded or wrote it")
                }
                e => self.dynamodb_error("PutItem", e),
            });
        }
        self.version = Some(new_version);
        self.count_write(before, bytes);
        let previous = self.mirror.replace(mirror).map(|old| old.records_key);
        // The previous batch's records are no longer needed: this writer's
        // own object is overwritten two batches on; one of a previous owner
        // (or of layout 1) is deleted.
        let own = self.own_records_prefix();
        if let Some(old) = previous.filter(|old| !old.starts_with(&own)) {
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

    /// Writes everything saved since the last write (and the checkpoint's
    /// metadata, if given) with one conditional `UpdateItem`. On any error
    /// nothing is forgotten: the next call writes it all again.
    pub(crate) async fn update(&mut self, meta: Option<&Checkpoint>) -> Result<()> {
        if self.pending.is_empty() && meta.is_none() {
            return Ok(());
        }
        let (Some(version), Some(current)) = (self.version, self.mirror.as_ref()) else {
            return Err(Error::InvalidTransition(
                "checkpoint change saved before its batch".into(),
            ));
        };
        let mut next = current.clone();
        let mut set: Vec<usize> = Vec::new();
        let mut removed: Vec<usize> = Vec::new();
        for (&i, t) in &self.pending {
            let slot = next.slot_of(i, t);
            let Some(place) = next.slots.get_mut(i) else {
                return Err(Error::InvalidTransition(format!(
                    "no record at index {i} (batch of {})",
                    next.slots.len()
                )));
            };
            if slot == Slot::Full {
                next.full.insert(i, self.encode_tracker(t)?);
                set.push(i);
            } else if next.full.remove(&i).is_some() {
                removed.push(i);
            }
            *place = slot;
        }
        next.state = layout::encode(next.created, &next.slots);
        if let Some(checkpoint) = meta {
            next.meta = serde_json::to_string(&checkpoint.without_trackers())
                .map_err(|e| self.encode_error("checkpoint", e))?;
        }
        let bytes = self.checked_size(&next, version + 1)?;
        let before = self.item_bytes();

        let mut sets = vec!["#ver = :new".to_owned(), "#owner = :me".to_owned()];
        let mut names: HashMap<String, String> = HashMap::new();
        let mut values: HashMap<String, AttributeValue> = HashMap::new();
        names.insert("#ver".into(), "version".into());
        names.insert("#owner".into(), "owner".into());
        values.insert(":old".into(), number(version));
        values.insert(":new".into(), number(version + 1));
        values.insert(":me".into(), s(&self.owner));
        if next.state != current.state {
            sets.push("#state = :state".into());
            names.insert("#state".into(), "state".into());
            values.insert(":state".into(), s(&next.state));
        }
        if next.meta != current.meta {
            sets.push("#meta = :meta".into());
            names.insert("#meta".into(), "meta".into());
            values.insert(":meta".into(), s(&next.meta));
        }
        let mut removes: Vec<String> = Vec::new();
        if !set.is_empty() || !removed.is_empty() {
            names.insert("#t".into(), "trackers".into());
            if set.len() + removed.len() > MAX_PATH_CHANGES {
                sets.push("#t = :t".into());
                values.insert(":t".into(), tracker_map(&next.full));
            } else {
                for (n, i) in set.iter().enumerate() {
                    sets.push(format!("#t.#k{n} = :v{n}"));
                    names.insert(format!("#k{n}"), map_key(*i));
                    let json = next.full.get(i).cloned().unwrap_or_default();
                    values.insert(format!(":v{n}"), s(json));
                }
                for (n, i) in removed.iter().enumerate() {
                    removes.push(format!("#t.#r{n}"));
                    names.insert(format!("#r{n}"), map_key(*i));
                }
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(" REMOVE ");
            expression.push_str(&removes.join(", "));
        }
        self.calls.update_item += 1;
        let sent = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key(&self.pk_name, s(&self.pk_value))
            .condition_expression("#ver = :old")
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.version = Some(version + 1);
                self.pending.clear();
                self.mirror = Some(next);
                self.count_write(before, bytes);
                Ok(())
            }
            Err(e) => Err(self.update_error(e, || {
                format!(
                    "the item changed since version {version}: another consumer loaded or wrote it"
                )
            })),
        }
    }
}
