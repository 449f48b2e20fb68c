//! Loading the checkpoint: the item (layout 2, or layout 1 converted on the
//! way), the batch's records object, and the take-over write that makes
//! this store the item's owner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use tracing::{debug, info};
use unistream_core::Result;
use unistream_core::checkpoint::{Checkpoint, StoredCheckpoint, Tracker};
use unistream_core::source::SourceRecord;

use crate::item::{Mirror, map_key, number_bytes};
use crate::layout::{self, LAYOUT, Slot};
use crate::store::{DynamoDbS3CheckpointStore, s};
use crate::write::{StoredRecord, created_of};

/// The size DynamoDB counts for an item as read (strings, numbers and maps
/// of strings; anything else is counted as 8 bytes).
pub(crate) fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.parse::<u64>().map_or(n.len(), number_bytes),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>()
            }
            _ => 8,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// A batch's records and, if its records object has them, their ids.
pub(crate) type BatchRecords = (Vec<SourceRecord>, Option<Arc<[String]>>);

/// A batch's records object (as `save_batch` writes it): its records and,
/// if it has them, their ids. Never panics, whatever the bytes (fuzzed).
pub(crate) fn records_object(body: &[u8]) -> std::result::Result<BatchRecords, String> {
    let stored: Vec<StoredRecord> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let ids: Option<Arc<[String]>> = stored.iter().map(|r| r.id.clone()).collect();
    let records = stored
        .into_iter()
        .map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(&r.data)
                .map(|data| SourceRecord::new(r.pointer, data))
                .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok((records, ids))
}

impl DynamoDbS3CheckpointStore {
    fn text<'i>(
        &self,
        item: &'i HashMap<String, AttributeValue>,
        name: &str,
    ) -> Result<&'i String> {
        item.get(name).and_then(|v| v.as_s().ok()).ok_or_else(|| {
            self.unreadable(format!("attribute {name:?} is missing or not a string"))
        })
    }

    /// The `trackers` map as (key, JSON) pairs.
    fn tracker_entries<'i>(
        &self,
        item: &'i HashMap<String, AttributeValue>,
    ) -> Result<Vec<(&'i String, &'i String)>> {
        let Some(map) = item.get("trackers") else {
            return Ok(Vec::new());
        };
        let map = map
            .as_m()
            .map_err(|_| self.unreadable("attribute \"trackers\" is not a map"))?;
        map.iter()
            .map(|(k, v)| {
                v.as_s()
                    .map(|v| (k, v))
                    .map_err(|_| self.unreadable(format!("tracker {k:?} is not a string")))
            })
            .collect()
    }

    /// The batch's records and, if the object has them, their ids.
    async fn read_records(
        &mut self,
        records_key: &str,
    ) -> Result<(Vec<SourceRecord>, Option<Arc<[String]>>)> {
        self.calls.get_object += 1;
        let body = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(records_key)
            .send()
            .await
            .map_err(|e| {
                if let Some(denied) = self.s3_denied(&e, "GetObject", records_key) {
                    return denied;
                }
                self.unreadable(format!(
                    "records object s3://{}/{records_key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?
            .body
            .collect()
            .await
            .map_err(|e| self.s3_error("GetObject", records_key, e))?
            .into_bytes();
        records_object(&body).map_err(|e| {
            self.unreadable(format!(
                "records object s3://{}/{records_key}: {e}",
                self.bucket
            ))
        })
    }

    /// The batch part of an item of `layout` 2, or of layout 1 (one
    /// `"<index>|<record id>"` -> tracker entry per record) as a layout-2
    /// mirror whose trackers are all full.
    fn read_batch(
        &self,
        item: &HashMap<String, AttributeValue>,
        layout: u32,
        base: Mirror,
    ) -> Result<Mirror> {
        let entries = self.tracker_entries(item)?;
        if layout == LAYOUT {
            let state = self.text(item, "state")?.clone();
            let (created, slots) = layout::decode(&state).map_err(|e| self.unreadable(e))?;
            let mut full = BTreeMap::new();
            for (key, json) in entries {
                let index: usize = key
                    .parse()
                    .map_err(|_| self.unreadable(format!("tracker key {key:?}")))?;
                full.insert(index, json.clone());
            }
            return Ok(Mirror {
                created,
                slots,
                full,
                state,
                ..base
            });
        }
        let mut trackers: Vec<(usize, Tracker)> = Vec::new();
        for (key, json) in entries {
            let index: usize = key
                .split_once('|')
                .and_then(|(i, _)| i.parse().ok())
                .ok_or_else(|| self.unreadable(format!("tracker key {key:?}")))?;
            let t: Tracker = serde_json::from_str(json)
                .map_err(|_| self.unreadable(format!("tracker {key:?} is not a tracker")))?;
            trackers.push((index, t));
        }
        trackers.sort_by_key(|(i, _)| *i);
        if trackers.iter().enumerate().any(|(n, (i, _))| n != *i) {
            return Err(self.unreadable("the trackers are not numbered 0..n"));
        }
        let trackers: Vec<Tracker> = trackers.into_iter().map(|(_, t)| t).collect();
        let created = created_of(&trackers);
        let slots = vec![Slot::Full; trackers.len()];
        let full = trackers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::to_string(t)
                    .map(|json| (i, json))
                    .map_err(|e| self.encode_error("tracker", e))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Mirror {
            created,
            state: layout::encode(created, &slots),
            slots,
            full,
            ..base
        })
    }

    /// Reads the item and its records, changing nothing in the table.
    async fn read_item(&mut self) -> Result<Option<Read>> {
        let Some(item) = self.get_item(None).await? else {
            return Ok(None);
        };
        let version: u64 = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.unreadable("attribute \"version\" is missing or not a number"))?;
        let layout: u32 = match item.get("layout") {
            None => 1,
            Some(v) => v
                .as_n()
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| self.unreadable("attribute \"layout\" is not a number"))?,
        };
        if layout > LAYOUT {
            return Err(self.unreadable(format!(
                "the item has layout {layout}, newer than this version of unistream reads ({LAYOUT}): upgrade unistream"
            )));
        }
        let meta_text = self.text(&item, "meta")?.clone();
        let meta: Checkpoint = serde_json::from_str(&meta_text)
            .map_err(|e| self.unreadable(format!("attribute \"meta\": {e}")))?;
        let records_key = self.text(&item, "records_key")?.clone();
        let (records, ids) = self.read_records(&records_key).await?;
        let base = Mirror {
            created: DateTime::<Utc>::UNIX_EPOCH,
            ids,
            slots: Vec::new(),
            full: BTreeMap::new(),
            state: String::new(),
            meta: meta_text,
            records_key,
        };
        let mirror = self.read_batch(&item, layout, base)?;
        if mirror.slots.len() != records.len() {
            return Err(self.unreadable(format!(
                "{} trackers for {} records",
                mirror.slots.len(),
                records.len()
            )));
        }
        let trackers = mirror.trackers().map_err(|e| self.unreadable(e))?;
        Ok(Some(Read {
            owner: item.get("owner").and_then(|v| v.as_s().ok()).cloned(),
            bytes: item_size(&item),
            version,
            layout,
            mirror,
            stored: StoredCheckpoint {
                checkpoint: meta.with_trackers(trackers),
                records,
            },
        }))
    }

    /// The checkpoint as stored, read without taking it over: nothing is
    /// written, and a consumer running on it goes on undisturbed (for
    /// `unistream checkpoint show`). A later `load` by this store reads
    /// the item again.
    ///
    /// # Errors
    ///
    /// As [`load`](unistream_core::checkpoint::CheckpointStore::load), less
    /// [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned).
    pub async fn peek(&mut self) -> Result<Option<Peeked>> {
        // A consumer writing between the item's read and its records
        // object's read can make the two disagree (the object of another
        // batch, or one just deleted): read again until the item's version
        // is the same after the object was read.
        let mut tries = 0;
        loop {
            tries += 1;
            let read = match self.read_item().await {
                Ok(r) => r,
                Err(e) if tries < 3 => {
                    debug!(error = %e, "checkpoint changed while it was read; reading it again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(r) = read else {
                return Ok(None);
            };
            if tries < 3 && self.version_now().await? != Some(r.version) {
                continue;
            }
            return Ok(Some(Peeked {
                version: r.version,
                owner: r.owner,
                item_bytes: r.bytes,
                stored: r.stored,
            }));
        }
    }

    /// The item's version now (one `GetItem` of that attribute).
    async fn version_now(&mut self) -> Result<Option<u64>> {
        Ok(self
            .get_item(Some("version"))
            .await?
            .and_then(|i| i.get("version")?.as_n().ok()?.parse().ok()))
    }

    /// One consistent `GetItem` of the item, or of one attribute of it.
    async fn get_item(
        &mut self,
        attribute: Option<&str>,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        self.calls.get_item += 1;
        let mut req = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key(&self.pk_name, s(&self.pk_value))
            .consistent_read(true);
        if let Some(name) = attribute {
            req = req
                .projection_expression("#a")
                .expression_attribute_names("#a", name);
        }
        let got = req.send().await.map_err(|e| {
            self.ddb_denied(&e, "GetItem")
                .unwrap_or_else(|| self.dynamodb_error("GetItem", e))
        })?;
        Ok(got.item)
    }

    /// The checkpoint's pointers and counters without its trackers (one
    /// `GetItem`, nothing read from S3, nothing written): where the
    /// consumer reads next, for `unistream lag`.
    ///
    /// # Errors
    ///
    /// A failed `GetItem`, or an item that is not a checkpoint.
    pub async fn peek_meta(&mut self) -> Result<Option<Checkpoint>> {
        let Some(item) = self.get_item(Some("meta")).await? else {
            return Ok(None);
        };
        let meta = self.text(&item, "meta")?;
        serde_json::from_str(meta)
            .map(Some)
            .map_err(|e| self.unreadable(format!("attribute \"meta\": {e}")))
    }

    /// `load`: reads the item and its records, then takes the item over
    /// (bumps its version; a layout-1 item is rewritten as layout 2 in the
    /// same write).
    pub(crate) async fn load_item(&mut self) -> Result<Option<StoredCheckpoint>> {
        self.load_at(None).await
    }

    /// [`load`](unistream_core::checkpoint::CheckpointStore::load), but only
    /// if the item is still at `version` (as [`peek`](Self::peek) saw it):
    /// the take-over write is conditional on it, so a consumer that wrote
    /// since keeps its checkpoint (for repairs: `unistream checkpoint
    /// reset` / `retry`).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned) if
    /// the item is not at `version` (or is gone); otherwise as `load`.
    pub async fn load_if_unchanged(&mut self, version: u64) -> Result<StoredCheckpoint> {
        self.load_at(Some(version))
            .await?
            .ok_or_else(|| self.owned("the checkpoint was deleted since it was read"))
    }

    async fn load_at(&mut self, expected: Option<u64>) -> Result<Option<StoredCheckpoint>> {
        self.pending.clear();
        self.mirror = None;
        let Some(Read {
            version,
            layout,
            mirror,
            stored,
            bytes: before,
            ..
        }) = self.read_item().await?
        else {
            self.version = None;
            return Ok(None);
        };
        if let Some(expected) = expected
            && expected != version
        {
            return Err(self.owned(format!(
                "the checkpoint changed since it was read (version {expected}, now {version}): a consumer is writing it"
            )));
        }

        // Take ownership: from here on, a consumer that loaded before us
        // cannot write.
        let mut claim = self
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
        claim = if layout == LAYOUT {
            claim.update_expression("SET #ver = :new, #owner = :me")
        } else {
            info!(table = %self.table, key = %self.pk_value, "converting the checkpoint item from layout 1 to layout {LAYOUT}");
            let map = mirror
                .full
                .iter()
                .map(|(i, v)| (map_key(*i), s(v)))
                .collect();
            claim
                .update_expression(
                    "SET #ver = :new, #owner = :me, #layout = :layout, #state = :state, #t = :t",
                )
                .expression_attribute_names("#layout", "layout")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#t", "trackers")
                .expression_attribute_values(":layout", AttributeValue::N(LAYOUT.to_string()))
                .expression_attribute_values(":state", s(&mirror.state))
                .expression_attribute_values(":t", AttributeValue::M(map))
        };
        self.calls.update_item += 1;
        if let Err(e) = claim.send().await {
            return Err(self.update_error(e, || {
                "another consumer wrote the item while it was being loaded".into()
            }));
        }
        self.version = Some(version + 1);
        self.mirror = Some(mirror);
        let after = self.item_bytes();
        self.count_write(before, after);
        debug!(table = %self.table, key = %self.pk_value, version = version + 1, bytes = after, "loaded checkpoint");
        Ok(Some(stored))
    }
}

/// What [`read_item`](DynamoDbS3CheckpointStore::read_item) found.
struct Read {
    owner: Option<String>,
    bytes: usize,
    version: u64,
    layout: u32,
    mirror: Mirror,
    stored: StoredCheckpoint,
}

/// A checkpoint read by [`DynamoDbS3CheckpointStore::peek`], with what the
/// item says of its writer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Peeked {
    /// The item's version (bumped by every write).
    pub version: u64,
    /// The id of the store instance that wrote it last (random per process
    /// and store).
    pub owner: Option<String>,
    /// The item's size as DynamoDB counts it.
    pub item_bytes: usize,
    /// The checkpoint and its batch's records.
    pub stored: StoredCheckpoint,
}
