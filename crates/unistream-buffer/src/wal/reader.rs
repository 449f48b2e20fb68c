//! The read path: a sealed batch read back from its segment file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use unistream_core::buffer::Batch;
use unistream_core::sink::EncodedRecord;
use unistream_core::{Error, Result};

use super::segment::segment_name;
use super::state::{BatchMeta, Emitted, Inner};
use crate::frame::{self, Frame};

impl Inner {
    /// Reads a sealed batch's records back from its file.
    pub(super) fn read_batch(&self, meta: &BatchMeta) -> Result<Emitted> {
        let path = self.dir.join(segment_name(meta.file));
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut bytes = vec![0u8; (meta.end - meta.start) as usize];
        file.read_exact_at(&mut bytes, meta.start)
            .map_err(|e| Error::io(&path, e))?;
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            path: path.clone(),
            offset: meta.start + offset,
            reason,
        };
        let mut all = Vec::with_capacity(meta.original as usize);
        let mut sealed = false;
        for item in frame::frames_in_range(&bytes, frame::Version::V3, meta.start) {
            let (offset, f) = item.map_err(|c| corrupt(c.offset, c.reason))?;
            match f {
                Frame::Record {
                    id,
                    key,
                    hash,
                    data,
                } => {
                    let mut r = EncodedRecord::new(id, key, data.to_vec());
                    r.explicit_hash_key = hash.map(str::to_owned);
                    all.push(Some(r));
                }
                Frame::Seal { id } if id == meta.id => sealed = true,
                Frame::Seal { id } => {
                    return Err(corrupt(
                        offset,
                        format!("batch {} ends with the seal of batch {id}", meta.id),
                    ));
                }
                Frame::Narrow { .. } | Frame::Commit { .. } | Frame::Padding => {}
            }
        }
        if !sealed || all.len() as u64 != meta.original {
            return Err(corrupt(
                0,
                format!("batch {} does not read back as written", meta.id),
            ));
        }
        let keep: Vec<u32> = match &meta.keep {
            Some(k) => k.clone(),
            None => (0..meta.original as u32).collect(),
        };
        let mut records = Vec::with_capacity(keep.len());
        for &i in &keep {
            if let Some(r) = all.get_mut(i as usize).and_then(Option::take) {
                records.push(r);
            }
        }
        Ok(Emitted {
            batch: Batch {
                id: meta.id,
                records: Arc::new(records),
            },
            original: keep,
        })
    }
}
