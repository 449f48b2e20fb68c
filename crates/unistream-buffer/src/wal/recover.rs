//! Recovery on open: every segment replayed oldest first, a torn tail of
//! the newest one truncated, damage refused or set aside (see the crate docs
//! for the rules).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use tracing::{error, info, warn};
use unistream_core::{Error, Result};
use unistream_local::Durability;

use super::options::{FileBufferConfig, Recovery};
use super::segment::{ActiveFile, active_file, create_segment, parse_segment_name, segment_name};
use super::state::{BatchMeta, OpenBatch, State};
use crate::frame::{self, Frame, MAGIC};

/// What the scan of the segment files found.
pub(super) struct Scanned {
    pub(super) files: VecDeque<u64>,
    pub(super) sealed: VecDeque<BatchMeta>,
    pub(super) open: OpenBatch,
    pub(super) max_id: u64,
}

/// Applies one segment file's frames to `s`. Returns the length of its good
/// frames and why the rest is torn, or the corruption.
pub(super) fn apply_file(
    s: &mut Scanned,
    seq: u64,
    bytes: &[u8],
) -> std::result::Result<(u64, Option<String>), frame::Corruption> {
    let mut frames = frame::frames(bytes);
    s.open = OpenBatch {
        start: MAGIC.len() as u64,
        ..OpenBatch::default()
    };
    while let Some(item) = frames.next() {
        let (offset, f) = item.map_err(|c| with_records_after(&frames, c))?;
        let end = frames.valid_len();
        let bad = |reason: String| frame::Corruption { offset, reason };
        match f {
            Frame::Record { data, .. } => {
                if s.open.records == 0 {
                    s.open.start = offset;
                }
                s.open.records += 1;
                s.open.bytes += data.len() as u64;
            }
            Frame::Seal { id } => {
                if s.open.records == 0 {
                    return Err(bad(format!("seal of batch {id} without records")));
                }
                if id <= s.max_id {
                    return Err(bad(format!("batch id {id} after batch id {}", s.max_id)));
                }
                s.sealed.push_back(BatchMeta {
                    id,
                    file: seq,
                    start: s.open.start,
                    end,
                    original: s.open.records,
                    records: s.open.records,
                    bytes: s.open.bytes,
                    keep: None,
                });
                s.max_id = id;
                s.open = OpenBatch {
                    start: end,
                    ..OpenBatch::default()
                };
            }
            Frame::Narrow { id, bytes, keep } => {
                if let Some(b) = s.sealed.iter_mut().find(|b| b.id == id) {
                    if keep.iter().any(|&i| u64::from(i) >= b.original) {
                        return Err(bad(format!("narrowing of batch {id} past its records")));
                    }
                    b.records = keep.len() as u64;
                    b.bytes = bytes;
                    b.keep = Some(keep);
                }
                s.max_id = s.max_id.max(id);
            }
            Frame::Padding => {}
            Frame::Commit { id } => {
                while s.sealed.front().is_some_and(|b| b.id <= id) {
                    s.sealed.pop_front();
                }
                s.max_id = s.max_id.max(id);
            }
        }
    }
    Ok((frames.valid_len(), frames.torn().map(str::to_owned)))
}

/// A corruption's reason, with how many valid records follow the damage
/// (what a strict open puts out of reach, and what setting the segment
/// aside takes out of the log).
fn with_records_after(frames: &frame::Frames<'_>, c: frame::Corruption) -> frame::Corruption {
    let after = frames.valid_after(c.offset);
    let records = after.iter().filter(|f| frame::is_record(f.1)).count();
    frame::Corruption {
        offset: c.offset,
        reason: format!(
            "{}; {records} valid records follow the damage in this segment",
            c.reason
        ),
    }
}

/// Rewrites a segment of an older format in the current one, when it reads
/// clean (a torn tail is allowed in the newest): its good frames, padding
/// left out, through a temporary file renamed over it. A damaged one is
/// left as it is, for the replay to report. Returns whether it was
/// rewritten.
fn upgrade(path: &Path, bytes: &[u8], is_last: bool, options: &FileBufferConfig) -> Result<bool> {
    let mut it = frame::frames(bytes);
    let mut out = MAGIC.to_vec();
    for item in it.by_ref() {
        let Ok((_, f)) = item else {
            return Ok(false);
        };
        if f != Frame::Padding && f.encode(&mut out).is_err() {
            return Ok(false);
        }
    }
    if it.version() == frame::Version::V3 || (it.torn().is_some() && !is_last) {
        return Ok(false);
    }
    if let Some(why) = it.torn() {
        warn!(path = %path.display(), offset = it.valid_len(), dropped = bytes.len() as u64 - it.valid_len(), why, "dropping a torn WAL tail (format 2)");
    }
    let tmp = path.with_extension("wal.tmp");
    let io = |e| Error::io(&tmp, e);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&out).map_err(io)?;
    if options.durability == Durability::PowerLoss {
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if options.durability == Durability::PowerLoss
        && let Some(dir) = path.parent()
    {
        super::segment::sync_dir(dir)?;
    }
    info!(path = %path.display(), "rewrote a WAL segment of format 2 in format 3");
    Ok(true)
}

/// What one segment's replay means: `Ok` with where its whole frames end
/// and why the rest is torn (only the newest segment may be torn), or the
/// damage (offset, reason) that makes it corrupt.
pub(super) fn check_segment(
    s: &mut Scanned,
    seq: u64,
    bytes: &[u8],
    is_last: bool,
) -> std::result::Result<(u64, Option<String>), (u64, String)> {
    match apply_file(s, seq, bytes) {
        Err(c) => Err((c.offset, c.reason)),
        Ok((valid, Some(why))) if !is_last => {
            Err((valid, format!("torn frames in a finished segment: {why}")))
        }
        Ok((_, None)) if !is_last && s.open.records > 0 => Err((
            s.open.start,
            "records after the last seal of a finished segment".to_owned(),
        )),
        Ok(ok) => Ok(ok),
    }
}

/// Reads every segment file of `dir`, oldest first, repairing a torn tail of
/// the newest one.
pub(super) fn recover(dir: &Path, options: &FileBufferConfig) -> Result<State> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        } else if name.to_str().is_some_and(|n| n.ends_with(".wal.tmp")) {
            // A crash while rewriting a segment of format 2: the segment
            // itself is whole.
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    seqs.sort_unstable();
    let strict = options.recovery == Recovery::Strict;
    let hint = "open with Recovery::SetAsideDamaged to go on without it";
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = segment_name(pair[0] + 1);
            let what = format!(
                "segment {missing} (and any up to {}) is missing: its records are lost",
                segment_name(pair[1] - 1)
            );
            if strict {
                return Err(Error::Corrupt {
                    path: dir.join(missing),
                    offset: 0,
                    reason: format!("{what}; {hint}"),
                });
            }
            error!(dir = %dir.display(), "{what}; going on without it");
        }
    }
    let set_aside = |path: &Path, why: &str| -> Result<()> {
        let damaged = dir.join("damaged");
        std::fs::create_dir_all(&damaged).map_err(|e| Error::io(&damaged, e))?;
        let to = damaged.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to).map_err(|e| Error::io(path, e))?;
        error!(from = %path.display(), to = %to.display(), why, "set a damaged WAL segment aside; its records are not in the buffer");
        Ok(())
    };
    let mut s = Scanned {
        files: VecDeque::new(),
        sealed: VecDeque::new(),
        open: OpenBatch::default(),
        max_id: 0,
    };
    let last = seqs.last().copied();
    let mut active: Option<ActiveFile> = None;
    for seq in seqs {
        let path = dir.join(segment_name(seq));
        let mut bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let is_last = Some(seq) == last;
        if bytes.get(..7) == Some(&frame::NAME[..])
            && bytes.get(7) == Some(&2)
            && upgrade(&path, &bytes, is_last, options)?
        {
            bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        }
        let damage = match check_segment(&mut s, seq, &bytes, is_last) {
            Err(damage) => Some(damage),
            Ok((valid, torn)) => {
                if let Some(why) = torn {
                    warn!(path = %path.display(), offset = valid, dropped = bytes.len() as u64 - valid, why, "truncating a torn WAL tail");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io(&path, e))?;
                    if valid < MAGIC.len() as u64 {
                        f.set_len(0).map_err(|e| Error::io(&path, e))?;
                        (&f).write_all(MAGIC).map_err(|e| Error::io(&path, e))?;
                    } else {
                        f.set_len(valid).map_err(|e| Error::io(&path, e))?;
                    }
                    if options.durability == Durability::PowerLoss {
                        f.sync_all().map_err(|e| Error::io(&path, e))?;
                    }
                }
                None
            }
        };
        if let Some((offset, reason)) = damage {
            if strict {
                return Err(Error::Corrupt {
                    path,
                    offset,
                    reason: format!("{reason}; {hint}"),
                });
            }
            // Forget what this file added, and move it aside.
            s.sealed.retain(|b| b.file != seq);
            s.open = OpenBatch::default();
            set_aside(&path, &reason)?;
            continue;
        }
        s.files.push_back(seq);
        if is_last {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            active = Some(active_file(seq, path, file, len, options)?);
        }
    }
    let active = match active {
        Some(a) => a,
        None => {
            let a = create_segment(dir, last.map_or(1, |l| l + 1), options)?;
            s.files.push_back(a.seq);
            s.open = OpenBatch {
                start: a.len(),
                ..OpenBatch::default()
            };
            a
        }
    };
    let total_records = s.sealed.iter().map(|b| b.records).sum::<u64>() + s.open.records;
    let total_bytes = s.sealed.iter().map(|b| b.bytes).sum::<u64>() + s.open.bytes;
    Ok(State {
        files: s.files,
        sealed: s.sealed,
        active,
        open: s.open,
        next_id: s.max_id + 1,
        total_bytes,
        total_records,
        emitted: None,
        written: 0,
        scratch: Vec::new(),
        ends: Vec::new(),
    })
}
