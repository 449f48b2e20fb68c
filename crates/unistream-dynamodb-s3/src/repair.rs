//! [`DynamoDbS3CheckpointStore::repair`]: an operator's change to a
//! checkpoint (reset, retry) made safely while consumers may exist.
//!
//! The sequence: the item is read without taking it over
//! ([`peek`](DynamoDbS3CheckpointStore::peek)); a record in progress under a
//! live lock refuses the repair (a consumer is working on the batch); the
//! change is made on a copy; only then, if asked to apply it, the item is
//! taken over **at the version read** — a consumer that wrote since keeps
//! its checkpoint and nothing is written — and read again, and written only
//! if it still equals what was read. A consumer that was running all the
//! same, idle between two writes, stops at its next write with
//! `CheckpointOwned` instead of overwriting the repair.

use chrono::Utc;
use unistream_core::checkpoint::{Checkpoint, CheckpointStore, Repaired, StoredCheckpoint};
use unistream_core::source::SourceRecord;
use unistream_core::{Error, Result};

use crate::DynamoDbS3CheckpointStore;

impl DynamoDbS3CheckpointStore {
    /// Changes the stored checkpoint with `change` (which gets the
    /// checkpoint and its batch's records, and returns what it did), and
    /// writes the result if `apply` (else it is a dry run: nothing written).
    /// `None` if there is no checkpoint. See the module docs for the safety
    /// sequence; a lease-coordinated consumer's shard lease is the caller's
    /// to check first (`unistream_leases::ensure_not_held`).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointOwned`] if a record is in progress under a live
    /// lock, or the item changed since it was read; `change`'s error; the
    /// store's errors.
    ///
    /// ```no_run
    /// # async fn demo(mut store: unistream_dynamodb_s3::DynamoDbS3CheckpointStore) -> unistream_core::Result<()> {
    /// use unistream_core::source::Pointer;
    /// let done = store
    ///     .repair(true, |cp, records| {
    ///         records.clear();
    ///         Ok(cp.reset_to(Pointer::from("TRIM_HORIZON")))
    ///     })
    ///     .await?;
    /// if let Some(r) = done {
    ///     println!("{} records of the dropped batch were not done", r.outcome);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn repair<T>(
        &mut self,
        apply: bool,
        change: impl FnOnce(&mut Checkpoint, &mut Vec<SourceRecord>) -> Result<T>,
    ) -> Result<Option<Repaired<T>>> {
        let Some(peeked) = self.peek().await? else {
            return Ok(None);
        };
        let name = self.describe();
        peeked
            .stored
            .checkpoint
            .refuse_while_in_progress(&name, Utc::now())?;
        let StoredCheckpoint {
            mut checkpoint,
            mut records,
        } = peeked.stored;
        let before = checkpoint.clone();
        let outcome = change(&mut checkpoint, &mut records)?;
        let after = StoredCheckpoint {
            checkpoint,
            records,
        };
        if !apply {
            return Ok(Some(Repaired::new(before, after, outcome, false)));
        }
        let loaded = self.load_if_unchanged(peeked.version).await?;
        if loaded.checkpoint != before {
            return Err(Error::CheckpointOwned {
                store: name,
                key: before.consumer_id().to_owned(),
                detail: "the checkpoint read twice differs: nothing written".into(),
            });
        }
        self.save_batch(&after.checkpoint, &after.records).await?;
        Ok(Some(Repaired::new(before, after, outcome, true)))
    }

    /// `table T, key K` for messages.
    fn describe(&self) -> String {
        format!("table {}, key {:?}", self.table, self.pk_value)
    }
}
