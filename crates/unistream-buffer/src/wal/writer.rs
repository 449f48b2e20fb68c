//! The write path: appending record frames, sealing batches, bookkeeping
//! frames (commit, narrow), rolling to a new segment, deleting finished ones.

use tracing::debug;
use unistream_core::sink::{EncodedRecord, Refusal};
use unistream_core::{Error, Result};

use super::segment::{create_segment, segment_name, sync_dir};
use super::state::{BatchMeta, Inner, OpenBatch, State, lock};
use super::sync::GroupSync;
use crate::frame::{self, Frame};

impl Inner {
    /// Writes a bookkeeping frame (commit, narrow) durably.
    pub(super) fn write_meta(&self, st: &mut State, frame: &Frame<'_>) -> Result<()> {
        let mut buf = Vec::with_capacity(32);
        frame
            .encode(&mut buf)
            .map_err(|e| Error::InvalidTransition(e.to_string()))?;
        st.active.log.append(&buf)?;
        if self.power_loss() {
            st.active.log.sync_data()?;
        }
        Ok(())
    }

    /// Seals the open batch if it holds records; starts a new segment file
    /// when the active one is big enough.
    pub(super) fn seal(&self, st: &mut State, sync: &GroupSync) -> Result<()> {
        if st.open.records == 0 {
            return Ok(());
        }
        let id = st.next_id;
        let mut buf = Vec::with_capacity(24);
        Frame::Seal { id }
            .encode(&mut buf)
            .map_err(|e| Error::InvalidTransition(e.to_string()))?;
        st.active.log.append(&buf)?;
        let open = std::mem::take(&mut st.open);
        st.sealed.push_back(BatchMeta {
            id,
            file: st.active.seq,
            start: open.start,
            end: st.active.len(),
            original: open.records,
            records: open.records,
            bytes: open.bytes,
            keep: None,
        });
        st.next_id += 1;
        st.open.start = st.active.len();
        debug!(
            batch = id,
            records = open.records,
            bytes = open.bytes,
            "sealed batch"
        );
        if st.active.len() >= self.options.segment_bytes {
            self.roll(st, sync)?;
        }
        Ok(())
    }

    /// Starts the next segment file. The finished file is cut to its frames
    /// first (a mapped one is longer), and in power-loss mode synced, so
    /// every file but the active one is whole and on disk.
    pub(super) fn roll(&self, st: &mut State, sync: &GroupSync) -> Result<()> {
        st.active.log.finish()?;
        if self.power_loss() {
            st.active.log.sync_data()?;
            sync.mark_synced(st.written);
        }
        st.active = create_segment(&self.dir, st.active.seq + 1, &self.options)?;
        st.files.push_back(st.active.seq);
        st.open = OpenBatch {
            start: st.active.len(),
            ..OpenBatch::default()
        };
        Ok(())
    }

    /// Deletes the files that hold no unsent batch (never the active one).
    pub(super) fn delete_unneeded(&self, st: &mut State) -> Result<()> {
        let needed = st.sealed.front().map_or(st.active.seq, |b| b.file);
        let mut deleted = false;
        while let Some(&seq) = st.files.front() {
            if seq >= needed {
                break;
            }
            let path = self.dir.join(segment_name(seq));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            st.files.pop_front();
            deleted = true;
        }
        if deleted && self.power_loss() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Appends records, sealing batches as they fill. Returns the record
    /// frame count after the last one (for group commit). On an I/O error,
    /// the records of batches sealed before it stay stored.
    pub(super) fn append(&self, records: &[EncodedRecord], sync: &GroupSync) -> Result<u64> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let incoming: u64 = records.iter().map(|r| r.data.len() as u64).sum();
        let cap = self.options.limits.max_total_bytes;
        if st.total_bytes + incoming > cap {
            return Err(Error::BufferFull {
                buffered: st.total_bytes,
                incoming,
                cap,
            });
        }
        let mut buf = std::mem::take(&mut st.scratch);
        let mut ends = std::mem::take(&mut st.ends);
        buf.clear();
        ends.clear();
        let result = self.append_with(st, records, sync, &mut buf, &mut ends);
        st.scratch = buf;
        st.ends = ends;
        result.map(|()| st.written)
    }

    pub(super) fn append_with(
        &self,
        st: &mut State,
        records: &[EncodedRecord],
        sync: &GroupSync,
        buf: &mut Vec<u8>,
        ends: &mut Vec<usize>,
    ) -> Result<()> {
        // Encode everything first: a record the format cannot hold refuses
        // the whole call before anything is written.
        for r in records {
            frame::encode_record(buf, r).map_err(|e| Error::InvalidRecord {
                record_id: r.id.clone(),
                reason: Refusal::Unrepresentable(e.to_string()),
            })?;
            ends.push(buf.len());
        }
        let mut chunk_start = 0usize;
        let (mut n, mut bytes) = (0u64, 0u64);
        for (i, (r, &at)) in records.iter().zip(ends.iter()).enumerate() {
            n += 1;
            bytes += r.data.len() as u64;
            let limits = &self.options.limits;
            let full = limits.is_full((st.open.records + n) as usize, st.open.bytes + bytes);
            if !full && i + 1 < records.len() {
                continue;
            }
            if st.open.records == 0 {
                st.open.start = st.active.len();
            }
            // A failed append is cut back: the file never holds part of a frame.
            st.active.log.append(&buf[chunk_start..at])?;
            st.open.records += n;
            st.open.bytes += bytes;
            st.total_records += n;
            st.total_bytes += bytes;
            st.written += n;
            chunk_start = at;
            (n, bytes) = (0, 0);
            if full {
                self.seal(st, sync)?;
            }
        }
        Ok(())
    }
}
