//! The journal's binary codec: the frame kinds, and how a tracker, a
//! batch's head and a time are encoded (the layout is in the parent
//! module's docs). Decoding never panics: a malformed payload is `None`.

use chrono::{DateTime, Utc};
use unistream_core::checkpoint::{Checkpoint, Status, Tracker};
use unistream_core::{Error, ErrorInfo, Result};

use crate::framing::{self, Cursor, put_bytes, put_str};

/// The journal format's name; the magic is this and the version byte.
pub(super) const NAME: &[u8; 7] = b"USCKPT\0";
pub(super) const KIND_BATCH: u8 = 1;
pub(super) const KIND_RECORD: u8 = 2;
pub(super) const KIND_TRACKER: u8 = 3;
pub(super) const KIND_COMMIT: u8 = 4;

pub(super) fn put_time(out: &mut Vec<u8>, t: DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

pub(super) fn time(c: &mut Cursor<'_>) -> Option<DateTime<Utc>> {
    let secs = c.i64()?;
    DateTime::from_timestamp(secs, c.u32()?)
}

const HAS_LOCK: u8 = 1;
const HAS_LOCK_TIME: u8 = 2;
const HAS_LOCK_EXPIRE: u8 = 4;
const HAS_FIRST_ATTEMPT: u8 = 8;
const HAS_DATA: u8 = 16;
const HAS_ERRORS: u8 = 32;
const DEAD_LETTERED: u8 = 64;

pub(super) fn encode_tracker(out: &mut Vec<u8>, t: &Tracker) {
    put_str(out, &t.record_id);
    out.push(t.status.code());
    out.extend_from_slice(&t.attempts.to_le_bytes());
    put_time(out, t.create_time);
    put_time(out, t.update_time);
    // `data` is the processor's JSON value: serializing a Value cannot fail.
    let data = t
        .data
        .as_ref()
        .map(|d| serde_json::to_vec(d).unwrap_or_default());
    let flags = [
        (t.lock.is_some(), HAS_LOCK),
        (t.lock_time.is_some(), HAS_LOCK_TIME),
        (t.lock_expire_time.is_some(), HAS_LOCK_EXPIRE),
        (t.first_attempt_time.is_some(), HAS_FIRST_ATTEMPT),
        (data.is_some(), HAS_DATA),
        (t.errors.is_some(), HAS_ERRORS),
        (t.dead_lettered, DEAD_LETTERED),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    out.push(flags);
    if let Some(lock) = &t.lock {
        put_str(out, lock);
    }
    for time in [t.lock_time, t.lock_expire_time, t.first_attempt_time]
        .into_iter()
        .flatten()
    {
        put_time(out, time);
    }
    if let Some(data) = &data {
        put_bytes(out, data);
    }
    if let Some(e) = &t.errors {
        put_str(out, &e.message);
        out.extend_from_slice(&(e.causes.len() as u32).to_le_bytes());
        for cause in &e.causes {
            put_str(out, cause);
        }
    }
}

pub(super) fn decode_tracker(c: &mut Cursor<'_>) -> Option<Tracker> {
    let record_id = c.str()?.to_owned();
    let status = Status::from_code(c.u8()?)?;
    let attempts = c.u32()?;
    let create_time = time(c)?;
    let update_time = time(c)?;
    let flags = c.u8()?;
    let has = |bit: u8| flags & bit != 0;
    let lock = if has(HAS_LOCK) {
        Some(c.str()?.to_owned())
    } else {
        None
    };
    let mut opt_time = |bit: u8| {
        if has(bit) {
            time(c).map(Some)
        } else {
            Some(None)
        }
    };
    let lock_time = opt_time(HAS_LOCK_TIME)?;
    let lock_expire_time = opt_time(HAS_LOCK_EXPIRE)?;
    let first_attempt_time = opt_time(HAS_FIRST_ATTEMPT)?;
    let data = if has(HAS_DATA) {
        Some(serde_json::from_slice(c.bytes()?).ok()?)
    } else {
        None
    };
    let errors = if has(HAS_ERRORS) {
        let message = c.str()?.to_owned();
        let n = c.u32()?;
        let causes = (0..n)
            .map(|_| c.str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(ErrorInfo { message, causes })
    } else {
        None
    };
    let mut t = Tracker::new(record_id, create_time);
    t.status = status;
    t.attempts = attempts;
    t.update_time = update_time;
    t.lock = lock;
    t.lock_time = lock_time;
    t.lock_expire_time = lock_expire_time;
    t.first_attempt_time = first_attempt_time;
    t.data = data;
    t.errors = errors;
    t.dead_lettered = has(DEAD_LETTERED);
    Some(t)
}

pub(super) fn encode_batch(out: &mut Vec<u8>, checkpoint: &Checkpoint, records: usize) {
    // Our own Checkpoint (without trackers) always serializes.
    let head = serde_json::to_vec(&checkpoint.without_trackers()).unwrap_or_default();
    put_bytes(out, &head);
    out.extend_from_slice(&(records as u32).to_le_bytes());
    out.extend_from_slice(&(checkpoint.trackers().len() as u32).to_le_bytes());
    for t in checkpoint.trackers() {
        encode_tracker(out, t);
    }
}

pub(super) fn decode_batch(c: &mut Cursor<'_>) -> Option<(Checkpoint, usize)> {
    let head: Checkpoint = serde_json::from_slice(c.bytes()?).ok()?;
    let records = c.u32()? as usize;
    let n = c.u32()?;
    let trackers = (0..n)
        .map(|_| decode_tracker(c))
        .collect::<Option<Vec<_>>>()?;
    Some((head.with_trackers(trackers), records))
}

/// Appends one journal frame. Frames hold one record or one tracker, so
/// only a record of 4 GiB could fail to fit; such a record is refused.
pub(super) fn frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
    framing::encode(out, kind, payload)
        .map_err(|e| Error::InvalidTransition(format!("checkpoint journal: {e}")))
}
