//! [`Mirror`]: what the checkpoint item holds, as this store last wrote or
//! read it — the batch's compact state, the full trackers, and the item's
//! size as DynamoDB counts it (for the 400 KB guard and the write units).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use unistream_core::checkpoint::Tracker;

use crate::layout::{self, Slot};

/// DynamoDB bills a write by started KB of the larger of the item before
/// and after it.
pub(crate) const WRITE_UNIT_BYTES: usize = 1024;

/// The write units DynamoDB bills for a write turning an item of `before`
/// bytes into one of `after` (standard table class, on-demand or
/// provisioned alike).
pub(crate) fn write_units(before: usize, after: usize) -> u64 {
    (before.max(after).div_ceil(WRITE_UNIT_BYTES)).max(1) as u64
}

/// The size DynamoDB counts for a number attribute's value.
pub(crate) fn number_bytes(n: u64) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    digits.div_ceil(2) + 1
}

/// The item's batch part, as last written or read.
#[derive(Debug, Clone)]
pub(crate) struct Mirror {
    /// When the batch was created (every compact tracker's create time).
    pub(crate) created: DateTime<Utc>,
    /// The record ids, from the records object; `None` for a batch whose
    /// object predates layout 2 (no ids): its trackers all stay full.
    pub(crate) ids: Option<Arc<[String]>>,
    /// One per record.
    pub(crate) slots: Vec<Slot>,
    /// The `trackers` map: index -> tracker JSON, for the `Full` slots.
    pub(crate) full: BTreeMap<usize, String>,
    /// The `state` attribute.
    pub(crate) state: String,
    /// The `meta` attribute.
    pub(crate) meta: String,
    /// The `records_key` attribute.
    pub(crate) records_key: String,
}

impl Mirror {
    /// The size of the whole item as DynamoDB counts it (attribute names
    /// plus values; a map adds 3 bytes and 1 per entry).
    pub(crate) fn item_bytes(&self, pk: (&str, &str), owner: &str, version: u64) -> usize {
        let map: usize = self
            .full
            .iter()
            .map(|(i, v)| map_key(*i).len() + v.len() + 1)
            .sum();
        pk.0.len()
            + pk.1.len()
            + "version".len()
            + number_bytes(version)
            + "owner".len()
            + owner.len()
            + "layout".len()
            + number_bytes(u64::from(layout::LAYOUT))
            + "meta".len()
            + self.meta.len()
            + "state".len()
            + self.state.len()
            + "trackers".len()
            + 3
            + map
            + "records_key".len()
            + self.records_key.len()
    }

    /// The slot of `t` at `index` in this batch: a compact slot needs the
    /// record's id on record in the records object.
    pub(crate) fn slot_of(&self, index: usize, t: &Tracker) -> Slot {
        match &self.ids {
            Some(ids) if ids.get(index) == Some(&t.record_id) => Slot::of(t, self.created),
            _ => Slot::Full,
        }
    }

    /// The trackers of the batch, restored from the slots and the map.
    ///
    /// # Errors
    ///
    /// A description of a missing or unreadable tracker.
    pub(crate) fn trackers(&self) -> Result<Vec<Tracker>, String> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, slot)| match slot {
                Slot::Full => {
                    let json = self
                        .full
                        .get(&i)
                        .ok_or_else(|| format!("tracker {i} is missing from the map"))?;
                    serde_json::from_str(json).map_err(|e| format!("tracker {i}: {e}"))
                }
                compact => {
                    let id = self
                        .ids
                        .as_ref()
                        .and_then(|ids| ids.get(i))
                        .ok_or_else(|| format!("record {i} has no id in the records object"))?;
                    compact
                        .tracker(id, self.created)
                        .ok_or_else(|| format!("tracker {i}"))
                }
            })
            .collect()
    }
}

/// The key of the tracker at `index` in the `trackers` map (layout 2).
pub(crate) fn map_key(index: usize) -> String {
    index.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_units_are_started_kilobytes_of_the_larger_item() {
        assert_eq!(write_units(0, 10), 1);
        assert_eq!(write_units(1024, 10), 1);
        assert_eq!(write_units(1025, 10), 2);
        assert_eq!(write_units(300, 101 * 1024), 101);
    }

    #[test]
    fn numbers_count_a_byte_per_two_digits_plus_one() {
        assert_eq!(number_bytes(0), 2);
        assert_eq!(number_bytes(9), 2);
        assert_eq!(number_bytes(10), 2);
        assert_eq!(number_bytes(100), 3);
        assert_eq!(number_bytes(u64::MAX), 11);
    }
}
