//! Leases and the table that holds them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use unistream_core::Result;

/// The checkpoint key of `shard`'s consumer in the consumer group `app`:
/// `<app>/<shard id>`, the consumer id a [`StreamConsumer`](crate::StreamConsumer)
/// gives each shard's consumer.
pub fn checkpoint_key(app: &str, shard: &str) -> String {
    format!("{app}/{shard}")
}

/// The shard of a checkpoint key made by [`checkpoint_key`] (what follows
/// its last `/`; the key itself if it has none).
pub fn shard_of_key(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Refuses while a worker holds `shard`'s lease: for a program about to
/// change that shard's checkpoint (a repair), which must not race the
/// consumer. `table_name` names the table in the error. Returns the free
/// lease.
///
/// # Errors
///
/// [`Error::CheckpointOwned`](unistream_core::Error::CheckpointOwned) naming
/// the worker while the lease is held; [`Error::Config`](unistream_core::Error::Config)
/// if the table has no lease for the shard; the table's error.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use unistream_leases::{Lease, LeaseTable, MemoryLeaseTable, ensure_not_held};
/// let table = MemoryLeaseTable::default();
/// table.create(&Lease::new("shardId-000000000000", vec![])).await.unwrap();
/// assert!(ensure_not_held(&table, "leases", "shardId-000000000000").await.is_ok());
/// # });
/// ```
pub async fn ensure_not_held<T: LeaseTable>(
    table: &T,
    table_name: &str,
    shard: &str,
) -> Result<Lease> {
    let leases = table.list().await?;
    match leases.into_iter().find(|l| l.shard_id == shard) {
        Some(lease) if lease.owner.is_some() => Err(unistream_core::Error::CheckpointOwned {
            store: format!("lease table {table_name}"),
            key: shard.to_owned(),
            detail: format!(
                "the lease of shard {shard} is held by worker {} (counter {}): stop that worker (it releases its leases) first",
                lease.owner.as_deref().unwrap_or("?"),
                lease.counter
            ),
        }),
        Some(lease) => Ok(lease),
        None => Err(unistream_core::Error::Config(format!(
            "no lease for shard {shard:?} in table {table_name}"
        ))),
    }
}

/// One shard's lease, as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard_id: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// Bumped by every change (take, renew, release, end): a counter that
    /// stops moving means a dead owner.
    pub counter: u64,
    /// The shard's parents (after a split or merge): processed first.
    pub parents: Vec<String>,
    /// The shard reached its end and its checkpoint says so: the lease is
    /// retired (nobody takes it again) and its children may start.
    pub ended: bool,
}

impl Lease {
    /// A free lease, as created.
    pub fn new(shard_id: impl Into<String>, parents: Vec<String>) -> Self {
        Lease {
            shard_id: shard_id.into(),
            owner: None,
            counter: 0,
            parents,
            ended: false,
        }
    }

    /// Whether `worker` holds it.
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.owner.as_deref() == Some(worker)
    }
}

/// Where leases live. Every change is conditional on the counter the caller
/// last saw, so of two workers racing for a lease exactly one wins, and a
/// worker that lost a lease cannot renew, release or end it.
pub trait LeaseTable: Send + Sync + 'static {
    /// Every lease (consistent read).
    fn list(&self) -> impl Future<Output = Result<Vec<Lease>>> + Send;
    /// Creates a free lease unless one exists; `true` if created.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<bool>> + Send;
    /// Makes `owner` hold `lease` if its counter is still `lease.counter`;
    /// the new lease, or `None` if it changed.
    fn take(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;
    /// Bumps the counter of a lease still held as `lease` says; `None` if it
    /// was lost.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<Option<Lease>>> + Send;
    /// Frees a lease still held as `lease` says; `false` if it was lost.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<bool>> + Send;
    /// Marks a held lease's shard ended and frees it; `false` if it was lost.
    fn end(&self, lease: &Lease) -> impl Future<Output = Result<bool>> + Send;
}

/// A [`LeaseTable`] in memory, shared by clones within one process: for
/// tests of the coordination logic (in virtual time) and for trying things
/// out. Not a substitute for the DynamoDB table across processes.
#[derive(Debug, Default, Clone)]
pub struct MemoryLeaseTable {
    leases: std::sync::Arc<Mutex<BTreeMap<String, Lease>>>,
}

impl MemoryLeaseTable {
    fn change(&self, lease: &Lease, f: impl FnOnce(&mut Lease)) -> Option<Lease> {
        let mut all = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let stored = all.get_mut(&lease.shard_id)?;
        if stored.counter != lease.counter || stored.owner != lease.owner {
            return None;
        }
        f(stored);
        stored.counter += 1;
        Some(stored.clone())
    }
}

impl LeaseTable for MemoryLeaseTable {
    async fn list(&self) -> Result<Vec<Lease>> {
        let all = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.values().cloned().collect())
    }

    async fn create(&self, lease: &Lease) -> Result<bool> {
        let mut all = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if all.contains_key(&lease.shard_id) {
            return Ok(false);
        }
        all.insert(lease.shard_id.clone(), lease.clone());
        Ok(true)
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Option<Lease>> {
        Ok(self.change(lease, |l| l.owner = Some(owner.to_owned())))
    }

    async fn renew(&self, lease: &Lease) -> Result<Option<Lease>> {
        Ok(self.change(lease, |_| {}))
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        Ok(self.change(lease, |l| l.owner = None).is_some())
    }

    async fn end(&self, lease: &Lease) -> Result<bool> {
        Ok(self
            .change(lease, |l| {
                l.owner = None;
                l.ended = true;
            })
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lease_refuses_and_names_its_worker() {
        let table = MemoryLeaseTable::default();
        let shard = "shardId-000000000001";
        let free = Lease::new(shard, vec![]);
        assert!(table.create(&free).await.unwrap_or(false));
        assert_eq!(
            ensure_not_held(&table, "t", shard).await.ok(),
            Some(free.clone())
        );
        let held = table.take(&free, "worker-a").await.ok().flatten();
        assert!(held.is_some());
        let e = ensure_not_held(&table, "t", shard)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(
                |e| e.contains("held by worker worker-a") && e.contains("lease table t")
            ),
            "{e:?}"
        );
        let none = ensure_not_held(&table, "t", "shardId-9")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(none.is_some_and(|e| e.contains("no lease for shard")));
    }

    #[test]
    fn a_checkpoint_key_gives_its_shard_back() {
        let key = checkpoint_key("orders-app", "shardId-000000000007");
        assert_eq!(key, "orders-app/shardId-000000000007");
        assert_eq!(shard_of_key(&key), "shardId-000000000007");
        assert_eq!(shard_of_key("shardId-1"), "shardId-1");
    }
}
