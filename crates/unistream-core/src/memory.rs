//! In-memory backends: for tests, and for users who accept losing state on a
//! crash. Handles are cheap clones sharing one state, so a test can "restart"
//! a consumer by building a new one over the same handles.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::error::{Error, Result};
use crate::source::{Fetched, Pointer, Source, SourceRecord};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stream held in memory; the pointer is the record index.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    state: Arc<Mutex<MemoryStream>>,
}

#[derive(Debug, Default)]
struct MemoryStream {
    records: Vec<Vec<u8>>,
    closed: bool,
    fetches: u64,
}

impl MemorySource {
    /// A stream of these records.
    pub fn new(records: Vec<Vec<u8>>) -> Self {
        let s = MemorySource::default();
        lock(&s.state).records = records;
        s
    }

    /// Appends a record.
    pub fn push(&self, data: Vec<u8>) {
        lock(&self.state).records.push(data);
    }

    /// Closes the stream: a fetch that reaches the end reports no next pointer.
    pub fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// How many times `fetch` was called.
    pub fn fetches(&self) -> u64 {
        lock(&self.state).fetches
    }
}

impl Source for MemorySource {
    fn initial_pointer(&self) -> Pointer {
        Pointer::from("0")
    }

    async fn fetch(&mut self, from: &Pointer, limit: usize) -> Result<Fetched> {
        let start: usize = from.as_str().parse().map_err(|_| Error::InvalidPointer {
            pointer: from.to_string(),
            source_name: "memory stream".into(),
            reason: "not a record index".into(),
        })?;
        let mut s = lock(&self.state);
        s.fetches += 1;
        let end = start.saturating_add(limit).min(s.records.len()).max(start);
        let records = s.records.get(start..end).unwrap_or_default();
        let records = records
            .iter()
            .enumerate()
            .map(|(i, d)| SourceRecord::new(Pointer::new((start + i).to_string()), d.clone()))
            .collect();
        let next = if s.closed && end >= s.records.len() {
            None
        } else {
            Some(Pointer::new(end.to_string()))
        };
        Ok(Fetched::new(records, next))
    }
}

/// A checkpoint store in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    state: Arc<Mutex<MemoryCheckpoint>>,
}

#[derive(Debug, Default)]
struct MemoryCheckpoint {
    stored: Option<StoredCheckpoint>,
    writes: u64,
}

impl MemoryCheckpointStore {
    /// The stored checkpoint, if any.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        lock(&self.state)
            .stored
            .as_ref()
            .map(|s| s.checkpoint.clone())
    }

    /// How many writes (batch, tracker, commit) the store received.
    pub fn writes(&self) -> u64 {
        lock(&self.state).writes
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&mut self) -> Result<Option<StoredCheckpoint>> {
        Ok(lock(&self.state).stored.clone())
    }

    async fn save_batch(
        &mut self,
        checkpoint: &Checkpoint,
        records: &[SourceRecord],
    ) -> Result<()> {
        let mut s = lock(&self.state);
        s.writes += 1;
        s.stored = Some(StoredCheckpoint {
            checkpoint: checkpoint.clone(),
            records: records.to_vec(),
        });
        Ok(())
    }

    async fn save_tracker(&mut self, checkpoint: &Checkpoint, index: usize) -> Result<()> {
        let mut s = lock(&self.state);
        s.writes += 1;
        let tracker = checkpoint.trackers().get(index).cloned();
        match (s.stored.as_mut(), tracker) {
            (Some(stored), Some(t)) => stored.checkpoint.restore_tracker(index, t),
            _ => Err(Error::InvalidTransition(format!(
                "tracker {index} saved before its batch"
            ))),
        }
    }

    async fn save_commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let mut s = lock(&self.state);
        s.writes += 1;
        match s.stored.as_mut() {
            Some(stored) => {
                stored.checkpoint = checkpoint.clone();
                Ok(())
            }
            None => Err(Error::InvalidTransition(
                "commit saved before any batch".into(),
            )),
        }
    }
}

/// A dead-letter queue in memory, which can be told to fail.
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetterQueue {
    state: Arc<Mutex<MemoryQueue>>,
}

#[derive(Debug, Default)]
struct MemoryQueue {
    letters: Vec<DeadLetter>,
    fail_next: u32,
}

impl MemoryDeadLetterQueue {
    /// Every letter accepted so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        lock(&self.state).letters.clone()
    }

    /// Makes the next `n` sends fail (a fault injection for tests).
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).fail_next = n;
    }
}

impl DeadLetterQueue for MemoryDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<()> {
        let mut s = lock(&self.state);
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(Error::backend(
                "memory dead-letter queue",
                "injected failure",
            ));
        }
        s.letters.push(letter.clone());
        Ok(())
    }
}
