//! Which leases this worker holds: renewing, taking over, balancing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use unistream_core::Result;
use unistream_core::clock::{Clock, SharedClock, SystemClock};

use crate::lease::{Lease, LeaseTable};

/// Timing of lease coordination: [`new`](Self::new) with the failover time
/// (or [`default`](Self::default)), then a setter per field to change (the
/// fields are public too).
///
/// ```
/// use std::time::Duration;
/// use unistream_leases::LeaseConfig;
///
/// let config = LeaseConfig::new(Duration::from_secs(20))
///     .discover_every(Duration::from_secs(30))
///     .max_leases(8);
/// assert_eq!(config.renew_every, Duration::from_secs(5));
/// assert_eq!(config.max_leases, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// The longest a dead worker's shards wait: its leases are taken over
    /// within this time of its last renewal. Another worker takes a lease
    /// whose counter it has seen unchanged for `failover - balance_every`
    /// (by its own clock), at its next scan; a worker that could not renew
    /// a lease for `failover - balance_every - renew_every` stops that
    /// shard, before anyone may take it. Default 10 s.
    pub failover: Duration,
    /// How often held leases are renewed, on a timer of their own,
    /// whatever processing does. Default: a quarter of `failover`.
    pub renew_every: Duration,
    /// How often the table is read to take free and expired leases and to
    /// balance. Default: a quarter of `failover`.
    pub balance_every: Duration,
    /// How often the stream's shards are listed, to create leases for new
    /// ones (after a reshard). Default 60 s.
    pub discover_every: Duration,
    /// The most leases one worker holds. Default: no limit.
    pub max_leases: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::new(Duration::from_secs(10))
    }
}

impl LeaseConfig {
    /// Defaults derived from a failover time.
    pub fn new(failover: Duration) -> Self {
        LeaseConfig {
            failover,
            renew_every: failover / 4,
            balance_every: failover / 4,
            discover_every: Duration::from_secs(60),
            max_leases: usize::MAX,
        }
    }

    /// Sets [`failover`](Self::failover) alone (the other timings derived from it in [`new`](Self::new) stay as they are).
    #[must_use]
    pub fn failover(mut self, failover: Duration) -> Self {
        self.failover = failover;
        self
    }

    /// Sets [`renew_every`](Self::renew_every): how often held leases are renewed (default a quarter of `failover`).
    #[must_use]
    pub fn renew_every(mut self, renew_every: Duration) -> Self {
        self.renew_every = renew_every;
        self
    }

    /// Sets [`balance_every`](Self::balance_every): how often the table is read to take and balance (default a quarter of `failover`).
    #[must_use]
    pub fn balance_every(mut self, balance_every: Duration) -> Self {
        self.balance_every = balance_every;
        self
    }

    /// Sets [`discover_every`](Self::discover_every): how often the stream's shards are listed (default 60 s).
    #[must_use]
    pub fn discover_every(mut self, discover_every: Duration) -> Self {
        self.discover_every = discover_every;
        self
    }

    /// Sets [`max_leases`](Self::max_leases): the most leases one worker holds (default no limit).
    #[must_use]
    pub fn max_leases(mut self, max_leases: usize) -> Self {
        self.max_leases = max_leases;
        self
    }
}

/// What a balancing round changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Balanced {
    /// Leases this worker took (free, expired, or stolen).
    pub taken: Vec<Lease>,
    /// Leases this worker held that the table shows in other hands.
    pub lost: Vec<String>,
}

/// One worker's view of the lease table: the leases it holds, and what it
/// has seen of the others. Call [`renew`](Self::renew) every
/// `renew_every` and [`balance`](Self::balance) every `balance_every`
/// ([`StreamConsumer`](crate::StreamConsumer) does).
///
/// Balancing takes, in this order, free leases, then expired ones (counter
/// seen unchanged for [`expiry`](Self::expiry)), up to a fair share: the ready leases divided
/// by the live workers, rounded up. A worker below its share with nothing
/// free or expired steals **one** lease from the worker holding the most,
/// if that one holds more than the share or at least two more than itself;
/// rounds repeat until no two workers differ by more than one lease. A lease is ready when its shard has not ended and every parent
/// shard has (or is no longer in the table).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_leases::{Coordinator, Lease, LeaseConfig, LeaseTable, MemoryLeaseTable};
///
/// let table = MemoryLeaseTable::default();
/// for shard in ["shard-0", "shard-1"] {
///     table.create(&Lease::new(shard, vec![])).await?;
/// }
/// let mut a = Coordinator::new(table.clone(), "worker-a", LeaseConfig::default());
/// assert_eq!(a.balance().await?.taken.len(), 2); // alone: takes both
/// let mut b = Coordinator::new(table.clone(), "worker-b", LeaseConfig::default());
/// assert_eq!(b.balance().await?.taken.len(), 1); // steals one: 1 and 1
/// assert_eq!(a.renew().await, vec!["shard-0".to_string()]); // a sees the loss
/// # Ok(()) }
/// ```
pub struct Coordinator<T> {
    table: T,
    worker: String,
    config: LeaseConfig,
    clock: SharedClock,
    /// The counter last seen of each lease, and since when.
    seen: HashMap<String, (u64, DateTime<Utc>)>,
    /// Leases held, with the time of their last successful renewal.
    held: BTreeMap<String, (Lease, DateTime<Utc>)>,
}

impl<T> std::fmt::Debug for Coordinator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("worker", &self.worker)
            .field("config", &self.config)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<T: LeaseTable> Coordinator<T> {
    /// A coordinator for `worker` (an id unique among the workers sharing
    /// `table`).
    pub fn new(table: T, worker: impl Into<String>, config: LeaseConfig) -> Self {
        Coordinator {
            table,
            worker: worker.into(),
            config,
            clock: Arc::new(SystemClock),
            seen: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Uses another clock (virtual in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The lease table.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// How long another worker must see a lease's counter unchanged before
    /// taking it: `failover - balance_every`, so that with one scan to
    /// notice, a dead worker's lease is taken within `failover`.
    pub fn expiry(&self) -> Duration {
        self.config
            .failover
            .saturating_sub(self.config.balance_every)
    }

    /// How long a holder tries to renew a lease before giving it up:
    /// `expiry() - renew_every`, so it stops before another worker may
    /// take the lease.
    pub fn give_up_after(&self) -> Duration {
        self.expiry().saturating_sub(self.config.renew_every)
    }

    /// The shards whose leases this worker holds.
    pub fn held(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// Whether this worker holds the lease of `shard`.
    pub fn holds(&self, shard: &str) -> bool {
        self.held.contains_key(shard)
    }

    /// Renews every held lease. Returns the shards lost: taken by another
    /// worker, or not renewed for [`give_up_after`](Self::give_up_after)
    /// (another worker may take them soon). Their processing must stop.
    pub async fn renew(&mut self) -> Vec<String> {
        let now = self.clock.now();
        let mut lost = Vec::new();
        let shards: Vec<String> = self.held.keys().cloned().collect();
        for shard in shards {
            let Some((lease, last_ok)) = self.held.get(&shard).cloned() else {
                continue;
            };
            match self.table.renew(&lease).await {
                Ok(Some(renewed)) => {
                    self.seen
                        .insert(shard.clone(), (renewed.counter, self.clock.now()));
                    self.held.insert(shard, (renewed, self.clock.now()));
                }
                Ok(None) => {
                    info!(worker = %self.worker, %shard, "lease lost: another worker took it");
                    count(&self.worker, "unistream_leases_lost_total");
                    self.held.remove(&shard);
                    lost.push(shard);
                }
                Err(e) if now - last_ok >= chrono_duration(self.give_up_after()) => {
                    warn!(worker = %self.worker, %shard, error = %e, "lease not renewed in time: giving it up before another worker takes it");
                    count(&self.worker, "unistream_leases_renew_failures_total");
                    count(&self.worker, "unistream_leases_lost_total");
                    self.held.remove(&shard);
                    lost.push(shard);
                }
                Err(e) => {
                    warn!(worker = %self.worker, %shard, error = %e, "could not renew a lease; trying again");
                    count(&self.worker, "unistream_leases_renew_failures_total");
                }
            }
        }
        self.record_held();
        lost
    }

    /// Reads the table; takes free and expired ready leases up to the fair
    /// share, or steals one from the busiest worker.
    ///
    /// # Errors
    ///
    /// The lease table's error (reading it, or a conditional change other than
    /// a lost race).
    pub async fn balance(&mut self) -> Result<Balanced> {
        let now = self.clock.now();
        let leases = self.table.list().await?;
        let mut out = Balanced::default();
        for l in &leases {
            match self.seen.get(&l.shard_id) {
                Some((counter, _)) if *counter == l.counter => {}
                _ => {
                    self.seen.insert(l.shard_id.clone(), (l.counter, now));
                }
            }
        }
        let known: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
        self.seen.retain(|k, _| known.contains(k.as_str()));
        for l in &leases {
            if self.held.contains_key(&l.shard_id) && !l.is_owned_by(&self.worker) {
                info!(worker = %self.worker, shard = %l.shard_id, "lease lost: another worker holds it");
                count(&self.worker, "unistream_leases_lost_total");
                self.held.remove(&l.shard_id);
                out.lost.push(l.shard_id.clone());
            }
        }
        let ended: HashSet<&str> = leases
            .iter()
            .filter(|l| l.ended)
            .map(|l| l.shard_id.as_str())
            .collect();
        let failover = chrono_duration(self.expiry());
        let expired = |l: &Lease| {
            l.owner.is_some()
                && !l.is_owned_by(&self.worker)
                && self
                    .seen
                    .get(&l.shard_id)
                    .is_some_and(|(_, since)| now - *since >= failover)
        };
        let ready: Vec<&Lease> = leases
            .iter()
            .filter(|l| {
                !l.ended
                    && l.parents
                        .iter()
                        .all(|p| ended.contains(p.as_str()) || !known.contains(p.as_str()))
            })
            .collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &ready {
            if let Some(owner) = l.owner.as_deref()
                && !expired(l)
                && owner != self.worker
            {
                *counts.entry(owner).or_default() += 1;
            }
        }
        let workers = counts.len() + 1;
        let share = ready.len().div_ceil(workers).min(self.config.max_leases);
        let mut mine = self.held.len();
        let free = ready.iter().filter(|l| l.owner.is_none());
        let stale = ready.iter().filter(|l| expired(l));
        let candidates: Vec<Lease> = free.chain(stale).map(|l| (*l).clone()).collect();
        for lease in candidates {
            if mine >= share {
                break;
            }
            if let Some(taken) = self.take(&lease).await? {
                mine += 1;
                out.taken.push(taken);
            }
        }
        if mine < share && out.taken.is_empty() {
            let busiest = counts
                .iter()
                .max_by_key(|(w, n)| (**n, std::cmp::Reverse(**w)))
                .map(|(w, n)| (w.to_string(), *n));
            // Moving one lease must make things more even: the victim holds
            // more than the share, or at least two more than this worker.
            if let Some((victim, n)) = busiest
                && (n > share || n >= mine + 2)
                && let Some(lease) = ready
                    .iter()
                    .find(|l| l.owner.as_deref() == Some(victim.as_str()))
            {
                let lease = (*lease).clone();
                if let Some(taken) = self.take(&lease).await? {
                    info!(worker = %self.worker, shard = %taken.shard_id, from = %victim, "stole a lease to balance");
                    count(&self.worker, "unistream_leases_stolen_total");
                    out.taken.push(taken);
                }
            }
        }
        self.record_held();
        Ok(out)
    }

    /// The gauge of leases held.
    fn record_held(&self) {
        ::metrics::gauge!("unistream_leases_held", "worker" => self.worker.clone())
            .set(self.held.len() as f64);
    }

    async fn take(&mut self, lease: &Lease) -> Result<Option<Lease>> {
        let Some(taken) = self.table.take(lease, &self.worker).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        info!(worker = %self.worker, shard = %taken.shard_id, previous = ?lease.owner, "took lease");
        count(&self.worker, "unistream_leases_taken_total");
        self.seen
            .insert(taken.shard_id.clone(), (taken.counter, now));
        self.held
            .insert(taken.shard_id.clone(), (taken.clone(), now));
        Ok(Some(taken))
    }

    /// Frees a held lease (after its shard's processing stopped and
    /// checkpointed), so another worker can take it at once.
    ///
    /// # Errors
    ///
    /// The lease table's error.
    pub async fn release(&mut self, shard: &str) -> Result<()> {
        if let Some((lease, _)) = self.held.remove(shard) {
            if self.table.release(&lease).await? {
                count(&self.worker, "unistream_leases_released_total");
            } else {
                info!(worker = %self.worker, %shard, "lease was lost before it could be released");
            }
            self.record_held();
        }
        Ok(())
    }

    /// Marks a held lease's shard ended (its checkpoint reached the shard's
    /// end) and frees it: the lease is retired and the shard's children
    /// become ready. `false` if the lease was lost meanwhile.
    ///
    /// # Errors
    ///
    /// The lease table's error.
    pub async fn end(&mut self, shard: &str) -> Result<bool> {
        let Some((lease, _)) = self.held.remove(shard) else {
            return Ok(false);
        };
        let done = self.table.end(&lease).await?;
        if done {
            info!(worker = %self.worker, %shard, "shard ended; its lease is retired");
            count(&self.worker, "unistream_leases_ended_total");
        }
        self.record_held();
        Ok(done)
    }
}

/// Counts one lease event of `worker` (metrics facade; see
/// `docs/operations.md`).
fn count(worker: &str, name: &'static str) {
    ::metrics::counter!(name, "worker" => worker.to_owned()).increment(1);
}

/// `d` as a chrono duration (saturating).
pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests;
