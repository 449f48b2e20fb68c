//! In-memory backends: for tests, and for users who accept losing state on a
//! crash. Handles are cheap clones sharing one state, so a test can "restart"
//! a consumer by building a new one over the same handles.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::buffer::{Batch, Buffer, BufferLimits, BufferStats};
use crate::checkpoint::{Checkpoint, CheckpointStore, StoredCheckpoint};
use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::error::ErrorInfo;
use crate::error::{BoxError, Error, Result};
use crate::sink::{Delivery, EncodedRecord, Sink};
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

/// A buffer in memory, with the behaviour of the file write-ahead log but
/// no durability.
#[derive(Debug, Default)]
pub struct MemoryBuffer {
    state: Mutex<MemoryBufferState>,
}

#[derive(Debug, Default)]
struct MemoryBufferState {
    limits: BufferLimits,
    sealed: VecDeque<Batch>,
    active: Vec<EncodedRecord>,
    active_bytes: u64,
    bytes: u64,
    /// Records of the sealed batches (so `stats` need not add them up).
    sealed_records: u64,
    next_id: u64,
}

impl MemoryBufferState {
    fn seal(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.active);
        self.active_bytes = 0;
        self.sealed_records += records.len() as u64;
        self.sealed.push_back(Batch {
            id: self.next_id,
            records: Arc::new(records),
        });
        self.next_id += 1;
    }

    fn oldest(&mut self, batch: &Batch) -> Result<&mut Batch> {
        match self.sealed.front_mut() {
            Some(b) if b.id == batch.id => Ok(b),
            _ => Err(Error::InvalidTransition(format!(
                "batch {} is not the oldest sealed batch",
                batch.id
            ))),
        }
    }
}

impl MemoryBuffer {
    /// An empty buffer with these limits.
    pub fn new(limits: BufferLimits) -> Self {
        MemoryBuffer {
            state: Mutex::new(MemoryBufferState {
                limits,
                next_id: 1,
                ..Default::default()
            }),
        }
    }

    fn append(&self, records: &[EncodedRecord]) -> Result<()> {
        let mut s = lock(&self.state);
        let incoming: u64 = records.iter().map(|r| r.data.len() as u64).sum();
        if s.bytes + incoming > s.limits.max_total_bytes {
            return Err(Error::BufferFull {
                buffered: s.bytes,
                incoming,
                cap: s.limits.max_total_bytes,
            });
        }
        for r in records {
            s.active.push(r.clone());
            s.active_bytes += r.data.len() as u64;
            s.bytes += r.data.len() as u64;
            if s.limits.is_full(s.active.len(), s.active_bytes) {
                s.seal();
            }
        }
        Ok(())
    }
}

impl Buffer for MemoryBuffer {
    async fn put(&self, record: &EncodedRecord) -> Result<()> {
        self.append(std::slice::from_ref(record))
    }

    async fn put_many(&self, records: &[EncodedRecord]) -> Result<()> {
        self.append(records)
    }

    fn seal(&self) -> Result<()> {
        lock(&self.state).seal();
        Ok(())
    }

    fn should_emit(&self) -> bool {
        !lock(&self.state).sealed.is_empty()
    }

    fn emit(&self) -> Result<Option<Batch>> {
        Ok(lock(&self.state).sealed.front().cloned())
    }

    fn commit(&self, batch: &Batch) -> Result<()> {
        let mut s = lock(&self.state);
        s.oldest(batch)?;
        if let Some(b) = s.sealed.pop_front() {
            s.bytes -= b.records.iter().map(|r| r.data.len() as u64).sum::<u64>();
            s.sealed_records -= b.records.len() as u64;
        }
        Ok(())
    }

    fn narrow(&self, batch: &Batch, keep: &[usize]) -> Result<()> {
        let mut s = lock(&self.state);
        let b = s.oldest(batch)?;
        let kept: Vec<EncodedRecord> = keep
            .iter()
            .filter_map(|&i| b.records.get(i).cloned())
            .collect();
        let dropped: u64 = b.records.iter().map(|r| r.data.len() as u64).sum::<u64>()
            - kept.iter().map(|r| r.data.len() as u64).sum::<u64>();
        let dropped_records = b.records.len().saturating_sub(kept.len()) as u64;
        if kept.is_empty() {
            s.sealed.pop_front();
        } else {
            b.records = Arc::new(kept);
        }
        s.bytes -= dropped;
        s.sealed_records -= dropped_records;
        Ok(())
    }

    fn stats(&self) -> BufferStats {
        let s = lock(&self.state);
        BufferStats {
            records: s.sealed_records + s.active.len() as u64,
            bytes: s.bytes,
            sealed_batches: s.sealed.len() as u64,
            active_records: s.active.len() as u64,
            segments: None,
        }
    }
}

/// A sink that keeps what it receives, and fails on demand: for tests.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<MemorySinkState>>,
}

#[derive(Debug, Default)]
struct MemorySinkState {
    records: Vec<EncodedRecord>,
    fail_next: u32,
    reject_next: Option<Vec<usize>>,
    calls: u64,
}

impl MemorySink {
    /// Every record accepted, in order.
    pub fn records(&self) -> Vec<EncodedRecord> {
        lock(&self.state).records.clone()
    }

    /// The ids of every record accepted, in order.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.state)
            .records
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }

    /// Makes the next `n` sends fail entirely.
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).fail_next = n;
    }

    /// Makes the next send accept all but the records at these indexes.
    pub fn reject_next(&self, indexes: Vec<usize>) {
        lock(&self.state).reject_next = Some(indexes);
    }

    /// How many times `send` was called.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }
}

impl Sink for MemorySink {
    async fn send(&self, batch: &[EncodedRecord]) -> std::result::Result<Delivery, BoxError> {
        let mut s = lock(&self.state);
        s.calls += 1;
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err("injected send failure".into());
        }
        if let Some(rejected) = s.reject_next.take() {
            for (i, r) in batch.iter().enumerate() {
                if !rejected.contains(&i) {
                    s.records.push(r.clone());
                }
            }
            return Ok(Delivery::Partial {
                rejected,
                error: ErrorInfo::new("injected partial failure"),
            });
        }
        s.records.extend_from_slice(batch);
        Ok(Delivery::All)
    }
}
