//! Group commit for power-loss durability: many `put`s share one
//! `fdatasync`.
//!
//! Each `put` writes its frames, notes the running count of frames written,
//! and waits until a sync has covered that count. The first waiter to find
//! no sync running becomes the leader: it takes a handle on the active
//! segment and the count written so far, syncs on a blocking thread, and
//! publishes the new synced count; everyone whose frames it covered returns
//! together. Puts that arrive during a sync are covered by the next one.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use unistream_core::{Error, Result};

use super::state::Inner;

#[derive(Debug, Default)]
pub(super) struct GroupSync {
    state: Mutex<SyncState>,
    done: Notify,
    syncs: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    synced: u64,
    running: bool,
}

/// Clears `running` and wakes the waiters however the leader ends (even if
/// its future is dropped mid-sync).
struct Leading<'a>(&'a GroupSync);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.done.notify_waiters();
    }
}

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many group syncs ran.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that every frame up to `upto` is on disk (a sealed segment
    /// was synced).
    pub(super) fn mark_synced(&self, upto: u64) {
        let mut s = self.lock();
        s.synced = s.synced.max(upto);
    }

    /// Returns once frame number `target` is on disk.
    pub(super) async fn wait(&self, target: u64, inner: &Inner) -> Result<()> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lead = {
                let mut s = self.lock();
                if s.synced >= target {
                    return Ok(());
                }
                if s.running {
                    false
                } else {
                    s.running = true;
                    true
                }
            };
            if !lead {
                notified.await;
                continue;
            }
            let _leading = Leading(self);
            let (file, path, upto) = GroupSync::target(inner)?;
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let synced = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            synced.map_err(|e| Error::io(path, e))?;
            self.mark_synced(upto);
        }
    }
}
