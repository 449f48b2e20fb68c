//! [`Status`] and [`Tracker`]: the processing status of one record, as the
//! checkpoint keeps it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ErrorInfo;

/// The processing status of a record. The numeric codes are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Not attempted yet.
    Pending = 0,
    /// An attempt is running (or was running when its owner died).
    InProgress = 10,
    /// The last attempt failed; attempts are left.
    Failed = 20,
    /// Every attempt failed; the record goes to the dead-letter queue.
    Exhausted = 30,
    /// Processed.
    Succeeded = 40,
    /// The processor chose to skip it.
    Ignored = 50,
}

impl Status {
    /// The seed's numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status of a numeric code.
    pub fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Pending,
            10 => Status::InProgress,
            20 => Status::Failed,
            30 => Status::Exhausted,
            40 => Status::Succeeded,
            50 => Status::Ignored,
            _ => return None,
        })
    }

    /// Whether no more attempts will be made.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Exhausted | Status::Succeeded | Status::Ignored
        )
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Status, D::Error> {
        let code = u8::deserialize(d)?;
        Status::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown status code {code}")))
    }
}

/// The processing status of one record of the current batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tracker {
    /// The record's id (`undecodable@<pointer>` when it could not be decoded).
    pub record_id: String,
    /// Current status.
    pub status: Status,
    /// Attempts started so far, across restarts.
    pub attempts: u32,
    /// When the batch holding the record was started.
    #[serde(with = "crate::timefmt")]
    pub create_time: DateTime<Utc>,
    /// Last change.
    #[serde(with = "crate::timefmt")]
    pub update_time: DateTime<Utc>,
    /// Id of the lock of the running attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// When the lock was taken.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub lock_time: Option<DateTime<Utc>>,
    /// When the lock expires.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub lock_expire_time: Option<DateTime<Utc>>,
    /// When the first attempt started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub first_attempt_time: Option<DateTime<Utc>>,
    /// Data the processor returned on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorInfo>,
    /// Whether an exhausted record has been accepted by the dead-letter queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_lettered: bool,
}

impl Tracker {
    /// A pending tracker for `record_id`, created and updated at `now` (what
    /// a new batch starts with; stores that decode trackers field by field
    /// start from it).
    pub fn new(record_id: String, now: DateTime<Utc>) -> Self {
        Tracker {
            record_id,
            status: Status::Pending,
            attempts: 0,
            create_time: now,
            update_time: now,
            lock: None,
            lock_time: None,
            lock_expire_time: None,
            first_attempt_time: None,
            data: None,
            errors: None,
            dead_lettered: false,
        }
    }

    /// Whether this record needs nothing more: succeeded, ignored, or
    /// exhausted and delivered to the dead-letter queue.
    pub fn is_done(&self) -> bool {
        match self.status {
            Status::Succeeded | Status::Ignored => true,
            Status::Exhausted => self.dead_lettered,
            _ => false,
        }
    }

    /// What a store that keeps done records compactly (the DynamoDB + S3
    /// store's item, whose size must not grow with the batch) restores of
    /// this tracker when it is done without data: the record id, status,
    /// attempts, create time and whether it was dead-lettered; the update
    /// time becomes the create time, and the attempt times, lock and error
    /// are dropped (the error of a dead-lettered record is in its letter).
    /// Any other tracker is returned unchanged.
    ///
    /// ```
    /// use chrono::Utc;
    /// use std::time::Duration;
    /// use unistream_core::checkpoint::{Checkpoint, Status};
    /// use unistream_core::source::Pointer;
    ///
    /// let t0 = Utc::now();
    /// let mut cp = Checkpoint::new("c1", Pointer::from("0"), 3, Duration::from_secs(60));
    /// cp.start_batch(["a".to_string()], None, t0)?;
    /// cp.begin_attempt(0, "lock", t0)?;
    /// let done = cp.succeed(0, "lock", None, t0 + chrono::Duration::seconds(1))?.summary();
    /// assert_eq!((done.status, done.attempts, done.update_time), (Status::Succeeded, 1, t0));
    /// assert_eq!(done.first_attempt_time, None);
    /// # Ok::<(), unistream_core::Error>(())
    /// ```
    pub fn summary(&self) -> Tracker {
        if !self.is_done() || self.data.is_some() {
            return self.clone();
        }
        Tracker {
            record_id: self.record_id.clone(),
            status: self.status,
            attempts: self.attempts,
            dead_lettered: self.dead_lettered,
            ..Tracker::new(String::new(), self.create_time)
        }
    }

    /// Whether the lock is held and not expired at `now`.
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::InProgress && self.lock_expire_time.is_some_and(|t| t > now)
    }

    pub(super) fn unlock(&mut self) {
        self.lock = None;
        self.lock_time = None;
        self.lock_expire_time = None;
    }
}
