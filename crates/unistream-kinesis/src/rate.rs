//! Per-shard rate limits: a token bucket for records and one for bytes.
//!
//! A bucket holds at most one second of its rate and starts full; taking
//! more than it holds is refused, except that an entry larger than the
//! whole bucket may go when the bucket is full (so a limit set below the
//! record size still lets every record through, at that rate). Time is
//! passed in, never read: the sink reads its [`Clock`](unistream_core::clock::Clock),
//! so tests run in virtual time.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The write quota of a shard as [`KinesisSink::with_rate_limit`](crate::KinesisSink::with_rate_limit)
/// paces it: entries (Kinesis records, an aggregate counting as one) and
/// bytes (data and partition key) per second, per predicted shard.
///
/// The default is the service's quota: 1,000 entries and 1 MiB per second.
///
/// ```
/// use unistream_kinesis::RateLimit;
/// let half = RateLimit::default().with_records_per_second(500).with_bytes_per_second(512 * 1024);
/// assert_eq!(half.records_per_second(), 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    records: u32,
    bytes: u32,
}

/// A shard's write quota in entries per second.
pub const SHARD_RECORDS_PER_SECOND: u32 = 1_000;
/// A shard's write quota in bytes per second (1 MiB).
pub const SHARD_BYTES_PER_SECOND: u32 = 1024 * 1024;
/// The read quota of a shard: record bytes per second, shared by the
/// applications that poll it (`GetRecords`), and each enhanced fan-out
/// consumer's own.
pub const SHARD_READ_BYTES_PER_SECOND: u32 = 2 * 1024 * 1024;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            records: SHARD_RECORDS_PER_SECOND,
            bytes: SHARD_BYTES_PER_SECOND,
        }
    }
}

impl RateLimit {
    /// Entries per second per shard (at least 1; default 1,000).
    pub fn with_records_per_second(mut self, records: u32) -> Self {
        self.records = records.max(1);
        self
    }

    /// Bytes (data and partition key) per second per shard (at least 1;
    /// default 1 MiB).
    pub fn with_bytes_per_second(mut self, bytes: u32) -> Self {
        self.bytes = bytes.max(1);
        self
    }

    /// Entries per second per shard.
    pub fn records_per_second(&self) -> u32 {
        self.records
    }

    /// Bytes per second per shard.
    pub fn bytes_per_second(&self) -> u32 {
        self.bytes
    }

    pub(crate) fn buckets(&self, now: DateTime<Utc>) -> ShardBuckets {
        ShardBuckets {
            records: TokenBucket::full(f64::from(self.records), now),
            bytes: TokenBucket::full(f64::from(self.bytes), now),
        }
    }
}

/// One token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: DateTime<Utc>,
    /// Tokens were taken from a full bucket by a call not yet answered.
    from_full: bool,
}

impl TokenBucket {
    pub(crate) fn full(rate: f64, now: DateTime<Utc>) -> Self {
        TokenBucket {
            rate,
            tokens: rate,
            at: now,
            from_full: false,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        if now > self.at {
            let elapsed = (now - self.at).to_std().unwrap_or(Duration::ZERO);
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate);
            self.at = now;
        }
    }

    /// What taking `n` more tokens on top of `reserved` needs in the bucket:
    /// all of them, or a full bucket for an entry larger than the bucket.
    fn needed(&self, reserved: f64, n: f64) -> f64 {
        if reserved == 0.0 {
            n.min(self.rate)
        } else {
            reserved + n
        }
    }

    /// Whether `n` tokens can be taken on top of `reserved` already promised.
    pub(crate) fn allows(&mut self, now: DateTime<Utc>, reserved: f64, n: f64) -> bool {
        self.refill(now);
        // A hair of slack for the float sums of many refills.
        self.tokens + self.rate * 1e-9 >= self.needed(reserved, n)
    }

    /// How long until `n` tokens (alone) can be taken.
    pub(crate) fn wait_for(&mut self, now: DateTime<Utc>, n: f64) -> Duration {
        self.refill(now);
        let missing = self.needed(0.0, n) - self.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        // A microsecond more, so that float rounding never leaves the
        // bucket a hair short after the wait.
        Duration::from_secs_f64(missing / self.rate) + Duration::from_micros(1)
    }

    /// At a call's answer. If the call took from a full bucket, the bucket
    /// refills only from `now` on. Why: the service has its own bucket per
    /// shard, full as well when ours is, and took the call's entries at some
    /// time between request and answer; anchoring ours at the answer means
    /// it never counts more refill than the service's, so later calls sent
    /// sooner after their request than this one (its connection set up, say)
    /// are not throttled. A call that took from a part-full bucket needs no
    /// anchor: the last full one holds.
    pub(crate) fn answered(&mut self, now: DateTime<Utc>) {
        if std::mem::take(&mut self.from_full) {
            self.at = self.at.max(now);
        }
    }

    /// Empties the bucket (the service said the shard is over its quota).
    pub(crate) fn drain(&mut self, now: DateTime<Utc>) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }

    /// Takes `n` tokens (the bucket may go below zero for an entry larger
    /// than itself).
    pub(crate) fn take(&mut self, now: DateTime<Utc>, n: f64) {
        self.refill(now);
        self.from_full |= self.tokens >= self.rate;
        self.tokens -= n;
    }
}

/// The two buckets of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardBuckets {
    pub(crate) records: TokenBucket,
    pub(crate) bytes: TokenBucket,
}

impl ShardBuckets {
    /// Whether an entry of `bytes` fits on top of what a call already holds
    /// for this shard (`reserved`: entries, bytes).
    pub(crate) fn allows(&mut self, now: DateTime<Utc>, reserved: (f64, f64), bytes: f64) -> bool {
        self.records.allows(now, reserved.0, 1.0) && self.bytes.allows(now, reserved.1, bytes)
    }

    /// Whether `entries` entries of `bytes` in all can go now.
    pub(crate) fn ready(&mut self, now: DateTime<Utc>, entries: f64, bytes: f64) -> bool {
        self.records.allows(now, 0.0, entries) && self.bytes.allows(now, 0.0, bytes)
    }

    /// How long until `entries` entries of `bytes` in all can go.
    pub(crate) fn wait_for(&mut self, now: DateTime<Utc>, entries: f64, bytes: f64) -> Duration {
        self.records
            .wait_for(now, entries)
            .max(self.bytes.wait_for(now, bytes))
    }

    /// At a call's answer (see [`TokenBucket::answered`]).
    pub(crate) fn answered(&mut self, now: DateTime<Utc>) {
        self.records.answered(now);
        self.bytes.answered(now);
    }

    /// Empties both buckets.
    pub(crate) fn drain(&mut self, now: DateTime<Utc>) {
        self.records.drain(now);
        self.bytes.drain(now);
    }

    pub(crate) fn take(&mut self, now: DateTime<Utc>, entries: f64, bytes: f64) {
        self.records.take(now, entries);
        self.bytes.take(now, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_704_781_446_000 + ms).unwrap_or_default()
    }

    #[test]
    fn a_full_bucket_takes_one_second_of_its_rate_then_refills_at_the_rate() {
        let mut b = TokenBucket::full(1000.0, t(0));
        assert!(b.allows(t(0), 0.0, 1000.0));
        b.take(t(0), 1000.0);
        assert!(!b.allows(t(0), 0.0, 1.0));
        assert_eq!(
            b.wait_for(t(0), 500.0),
            Duration::from_millis(500) + Duration::from_micros(1)
        );
        assert!(!b.allows(t(499), 0.0, 500.0));
        assert!(b.allows(t(500), 0.0, 500.0));
        // Never more than one second's worth, however long it rests.
        assert!(b.allows(t(60_000), 0.0, 1000.0));
        assert!(!b.allows(t(60_000), 1000.0, 1.0));
    }

    #[test]
    fn a_call_from_a_full_bucket_anchors_the_refill_at_its_answer() {
        let mut b = TokenBucket::full(1000.0, t(0));
        b.take(t(0), 500.0);
        // The answer comes 20 ms later: refill restarts there.
        b.answered(t(20));
        assert!(!b.allows(t(519), 0.0, 1000.0));
        assert!(b.allows(t(520), 0.0, 1000.0));
        // From a part-full bucket (750 at 270 ms): the call's 20 ms count.
        b.take(t(270), 250.0);
        b.answered(t(290));
        assert!(b.allows(t(770), 0.0, 1000.0));
    }

    #[test]
    fn throttling_empties_the_bucket() {
        let mut b = TokenBucket::full(1000.0, t(0));
        b.drain(t(0));
        assert!(!b.allows(t(0), 0.0, 1.0));
        assert!(b.allows(t(1), 0.0, 1.0));
    }

    #[test]
    fn reserved_tokens_count_against_the_bucket() {
        let mut b = TokenBucket::full(10.0, t(0));
        assert!(b.allows(t(0), 9.0, 1.0));
        assert!(!b.allows(t(0), 10.0, 1.0));
    }

    #[test]
    fn an_entry_larger_than_the_bucket_goes_when_the_bucket_is_full() {
        let mut b = TokenBucket::full(100.0, t(0));
        assert!(b.allows(t(0), 0.0, 250.0));
        b.take(t(0), 250.0);
        // 150 in debt: a full bucket again after 2.5 s.
        assert_eq!(
            b.wait_for(t(0), 250.0),
            Duration::from_millis(2500) + Duration::from_micros(1)
        );
        assert!(!b.allows(t(1500), 0.0, 1.5));
        assert!(b.allows(t(1520), 0.0, 1.0));
        assert!(!b.allows(t(2499), 0.0, 250.0));
        assert!(b.allows(t(2500), 0.0, 250.0));
    }

    #[test]
    fn a_shard_waits_for_the_scarcer_of_its_two_buckets() {
        let limit = RateLimit::default();
        let mut s = limit.buckets(t(0));
        // 1 MiB of bytes in 10 entries: the byte bucket runs dry first.
        s.take(t(0), 10.0, f64::from(SHARD_BYTES_PER_SECOND));
        assert!(!s.allows(t(0), (0.0, 0.0), 100.0));
        let wait = s.wait_for(t(0), 1.0, 1024.0 * 512.0);
        assert!(
            wait > Duration::from_millis(499) && wait < Duration::from_millis(501),
            "{wait:?}"
        );
        // 1,000 tiny entries: the record bucket runs dry first.
        let mut s = limit.buckets(t(0));
        s.take(t(0), 1000.0, 1000.0);
        assert_eq!(
            s.wait_for(t(0), 1.0, 1.0),
            Duration::from_millis(1) + Duration::from_micros(1)
        );
        assert_eq!(
            s.wait_for(t(0), 500.0, 500.0),
            Duration::from_millis(500) + Duration::from_micros(1)
        );
    }
}
