//! [`MemoryIdempotencyStore`]: keys in a map, for tests and for one
//! process that needs no durability.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Claim, Claimed, Completion, IdempotencyItem, IdempotencyStore, ItemStatus, Owner};
use crate::error::Result;

/// Idempotency keys in memory (clones share them); counts its writes.
#[derive(Debug, Clone, Default)]
pub struct MemoryIdempotencyStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    items: HashMap<String, IdempotencyItem>,
    writes: u64,
}

impl MemoryIdempotencyStore {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes made (claims that wrote, completions, releases, forgets).
    pub fn writes(&self) -> u64 {
        self.with(|s| s.writes)
    }

    /// Every item, by key.
    pub fn items(&self) -> HashMap<String, IdempotencyItem> {
        self.with(|s| s.items.clone())
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<Claimed> {
        Ok(self.with(|s| match s.items.get(&claim.key) {
            Some(item) if !item.claimable_by(claim) => item.answer(claim),
            _ => {
                s.writes += 1;
                s.items.insert(claim.key.clone(), claim.item());
                Claimed::Started
            }
        }))
    }

    async fn complete(&self, completion: &Completion) -> Result<()> {
        self.with(|s| {
            s.writes += 1;
            s.items
                .insert(completion.item.key.clone(), completion.item.clone());
        });
        Ok(())
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<()> {
        self.with(|s| {
            if s.items
                .get(key)
                .is_some_and(|i| i.status == ItemStatus::InProgress && i.owner == *owner)
            {
                s.writes += 1;
                s.items.remove(key);
            }
        });
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyItem>> {
        Ok(self.with(|s| s.items.get(key).cloned()))
    }

    async fn forget(&self, key: &str) -> Result<()> {
        self.with(|s| {
            s.writes += 1;
            s.items.remove(key);
        });
        Ok(())
    }
}
