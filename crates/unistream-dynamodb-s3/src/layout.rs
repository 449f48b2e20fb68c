//! The compact batch state of the checkpoint item (layout 2): every record's
//! status and attempts as runs, so that the item — billed by its whole size
//! on every write — does not grow with the batch.
//!
//! A record's tracker is kept as a [`Slot`]:
//!
//! | slot | tracker | restored |
//! |---|---|---|
//! | `P` | pending, as the batch created it | exactly |
//! | `R<a>.<g>` | first attempt running under lock group `g` | exactly |
//! | `S<a>` / `I<a>` / `D<a>` | succeeded or ignored without data, or dead-lettered, after `a` attempts | as [`Tracker::summary`] |
//! | `X` | anything else (failing, exhausted, with data, retried in flight) | exactly: the tracker is in the item's `trackers` map |
//!
//! Consecutive equal slots are one run (`S1*480`). The state is JSON:
//!
//! ```text
//! {"v":2,"created":"<batch create time>","locks":[["<lock id>","<lock time>","<expiry>"],...],"runs":"S1*480 R1.0*16 P*4"}
//! ```
//!
//! Only records that are failing, exhausted but not yet delivered, carry
//! data, or are in a retry keep a full tracker (in the item's map): without
//! failures the item is a few hundred bytes whatever `limit` is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unistream_core::checkpoint::{Status, Tracker};

/// The layout version of items written by this store.
pub(crate) const LAYOUT: u32 = 2;

/// A lock shared by the records marked in one write: its id, when it was
/// taken, when it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Lock(String, DateTime<Utc>, DateTime<Utc>);

/// How one record's tracker is kept in the item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot {
    /// Pending, as the batch created it.
    Pending,
    /// A first attempt running (no error yet) under this lock.
    Running { attempts: u32, lock: Lock },
    /// Done without data: succeeded, ignored or exhausted and dead-lettered
    /// (kept as its [`Tracker::summary`]).
    Done { status: Status, attempts: u32 },
    /// The full tracker is in the item's `trackers` map.
    Full,
}

impl Slot {
    /// The slot that keeps `t`: compact when nothing the store promises to
    /// keep is lost, else [`Slot::Full`].
    pub(crate) fn of(t: &Tracker, created: DateTime<Utc>) -> Slot {
        if t.create_time != created || t.data.is_some() {
            return Slot::Full;
        }
        match t.status {
            Status::Succeeded | Status::Ignored => Slot::Done {
                status: t.status,
                attempts: t.attempts,
            },
            Status::Exhausted if t.dead_lettered => Slot::Done {
                status: t.status,
                attempts: t.attempts,
            },
            // Done records are summarized by design; the rest only if the
            // compact form gives back exactly this tracker.
            _ => {
                let slot = match (t.status, &t.lock, t.lock_time, t.lock_expire_time) {
                    (Status::Pending, ..) => Slot::Pending,
                    (Status::InProgress, Some(lock), Some(time), Some(expire)) => Slot::Running {
                        attempts: t.attempts,
                        lock: Lock(lock.clone(), time, expire),
                    },
                    _ => return Slot::Full,
                };
                if slot.tracker(&t.record_id, created).as_ref() != Some(t) {
                    return Slot::Full;
                }
                slot
            }
        }
    }

    /// The tracker a compact slot stands for (`None` for [`Slot::Full`]).
    pub(crate) fn tracker(&self, id: &str, created: DateTime<Utc>) -> Option<Tracker> {
        let mut t = Tracker::new(id.to_owned(), created);
        match self {
            Slot::Pending => {}
            Slot::Running {
                attempts,
                lock: Lock(id, time, expire),
            } => {
                t.status = Status::InProgress;
                t.attempts = *attempts;
                t.update_time = *time;
                t.lock = Some(id.clone());
                t.lock_time = Some(*time);
                t.lock_expire_time = Some(*expire);
                t.first_attempt_time = Some(*time);
            }
            Slot::Done { status, attempts } => {
                t.status = *status;
                t.attempts = *attempts;
                t.dead_lettered = *status == Status::Exhausted;
            }
            Slot::Full => return None,
        }
        Some(t)
    }
}

#[derive(Serialize, Deserialize)]
struct StateDoc {
    v: u32,
    created: DateTime<Utc>,
    locks: Vec<Lock>,
    runs: String,
}

/// Encodes the slots of a batch created at `created` as the item's `state`.
pub(crate) fn encode(created: DateTime<Utc>, slots: &[Slot]) -> String {
    use std::fmt::Write as _;
    let mut locks: Vec<Lock> = Vec::new();
    let mut runs = String::new();
    let mut i = 0;
    while i < slots.len() {
        let slot = &slots[i];
        let mut n = 1;
        while i + n < slots.len() && slots[i + n] == *slot {
            n += 1;
        }
        if !runs.is_empty() {
            runs.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = match slot {
            Slot::Pending => write!(runs, "P"),
            Slot::Full => write!(runs, "X"),
            Slot::Done { status, attempts } => {
                let code = match status {
                    Status::Succeeded => 'S',
                    Status::Ignored => 'I',
                    _ => 'D',
                };
                write!(runs, "{code}{attempts}")
            }
            Slot::Running { attempts, lock } => {
                let group = match locks.iter().position(|l| l == lock) {
                    Some(g) => g,
                    None => {
                        locks.push(lock.clone());
                        locks.len() - 1
                    }
                };
                write!(runs, "R{attempts}.{group}")
            }
        };
        if n > 1 {
            let _ = write!(runs, "*{n}");
        }
        i += n;
    }
    let doc = StateDoc {
        v: LAYOUT,
        created,
        locks,
        runs,
    };
    // A struct of strings and times always serializes.
    serde_json::to_string(&doc).unwrap_or_default()
}

fn number<T: std::str::FromStr>(text: &str, what: &str, token: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("state run {token:?}: bad {what} {text:?}"))
}

/// Decodes the item's `state`: the batch's create time and its slots.
///
/// # Errors
///
/// A description of what is wrong, for
/// [`Error::CheckpointUnreadable`](unistream_core::Error::CheckpointUnreadable).
pub(crate) fn decode(text: &str) -> Result<(DateTime<Utc>, Vec<Slot>), String> {
    let doc: StateDoc = serde_json::from_str(text).map_err(|e| format!("state: {e}"))?;
    if doc.v != LAYOUT {
        return Err(format!("state of layout {}, expected {LAYOUT}", doc.v));
    }
    let mut slots = Vec::new();
    for token in doc.runs.split(' ').filter(|t| !t.is_empty()) {
        let (head, count) = match token.split_once('*') {
            Some((head, n)) => (head, number::<usize>(n, "count", token)?),
            None => (token, 1),
        };
        let mut chars = head.chars();
        let code = chars.next().unwrap_or(' ');
        let rest = chars.as_str();
        let slot = match code {
            'P' if rest.is_empty() => Slot::Pending,
            'X' if rest.is_empty() => Slot::Full,
            'S' | 'I' | 'D' => Slot::Done {
                status: match code {
                    'S' => Status::Succeeded,
                    'I' => Status::Ignored,
                    _ => Status::Exhausted,
                },
                attempts: number(rest, "attempt count", token)?,
            },
            'R' => {
                let (a, g) = rest
                    .split_once('.')
                    .ok_or_else(|| format!("state run {token:?}: no lock group"))?;
                let g: usize = number(g, "lock group", token)?;
                let lock = doc
                    .locks
                    .get(g)
                    .cloned()
                    .ok_or_else(|| format!("state run {token:?}: no lock group {g}"))?;
                Slot::Running {
                    attempts: number(a, "attempt count", token)?,
                    lock,
                }
            }
            _ => return Err(format!("state run {token:?}: unknown")),
        };
        // A checked sum: a count near usize::MAX (a damaged or hostile
        // item) must be refused, not wrap past the limit (found by the
        // dynamodb_item fuzz target).
        if count == 0 || slots.len().checked_add(count).is_none_or(|n| n > 1_000_000) {
            return Err(format!("state run {token:?}: bad count"));
        }
        slots.extend(std::iter::repeat_n(slot, count));
    }
    Ok((doc.created, slots))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use unistream_core::ErrorInfo;
    use unistream_core::checkpoint::Checkpoint;

    #[test]
    fn a_run_count_that_would_overflow_is_refused() {
        let state = format!(
            r#"{{"v":2,"created":"2024-01-09T06:24:06.000000Z","locks":[],"runs":"P P*{}"}}"#,
            usize::MAX
        );
        let err = decode(&state).unwrap_err();
        assert!(err.contains("bad count"), "{err}");
    }
    use unistream_core::source::Pointer;

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_781_446, 123_456_789).unwrap_or_default()
    }

    /// A batch of `n` records, each in one of the kinds of state.
    fn batch(n: usize) -> Checkpoint {
        let mut cp = Checkpoint::new("c", Pointer::from("0"), 2, Duration::from_secs(60));
        cp.start_batch((0..n).map(|i| format!("id {i}")), None, t0())
            .unwrap();
        let t1 = t0() + chrono::Duration::milliseconds(7);
        for i in 0..n {
            let lock = format!("lock-{}", i / 4);
            match i % 7 {
                0 => {}
                1 | 2 => {
                    cp.begin_attempt(i, &lock, t1).unwrap();
                }
                3 => {
                    cp.begin_attempt(i, &lock, t1).unwrap();
                    cp.succeed(i, &lock, None, t1).unwrap();
                }
                4 => {
                    cp.begin_attempt(i, &lock, t1).unwrap();
                    cp.fail(i, &lock, ErrorInfo::new("boom"), t1).unwrap();
                }
                5 => {
                    cp.begin_attempt(i, &lock, t1).unwrap();
                    cp.succeed(i, &lock, Some(serde_json::json!({"i": i})), t1)
                        .unwrap();
                }
                _ => {
                    cp.exhaust(i, ErrorInfo::new("undecodable"), t1).unwrap();
                    cp.mark_dead_lettered(i, t1).unwrap();
                }
            }
        }
        cp
    }

    #[test]
    fn every_slot_round_trips_through_the_state() {
        let cp = batch(50);
        let slots: Vec<Slot> = cp.trackers().iter().map(|t| Slot::of(t, t0())).collect();
        let text = encode(t0(), &slots);
        let (created, back) = decode(&text).unwrap();
        assert_eq!(created, t0());
        assert_eq!(back, slots);
        for (t, slot) in cp.trackers().iter().zip(&back) {
            match slot.tracker(&t.record_id, created) {
                Some(restored) => assert_eq!(restored, t.summary(), "{slot:?}"),
                None => assert!(
                    t.errors.is_some() || t.data.is_some(),
                    "only failing trackers or trackers with data are kept in full: {t:?}"
                ),
            }
        }
    }

    #[test]
    fn a_batch_without_failures_is_a_few_runs_whatever_its_size() {
        let mut cp = Checkpoint::new("c", Pointer::from("0"), 3, Duration::from_secs(60));
        cp.start_batch((0..10_000).map(|i| i.to_string()), None, t0())
            .unwrap();
        for i in 0..9_000 {
            cp.begin_attempt(i, "done", t0()).unwrap();
            cp.succeed(i, "done", None, t0()).unwrap();
        }
        for i in 9_000..9_064 {
            cp.begin_attempt(i, "lock-9", t0()).unwrap();
        }
        let slots: Vec<Slot> = cp.trackers().iter().map(|t| Slot::of(t, t0())).collect();
        let text = encode(t0(), &slots);
        assert!(text.len() < 300, "{} bytes: {text}", text.len());
        assert!(text.contains("\"S1*9000 R1.0*64 P*936\""), "{text}");
    }

    #[test]
    fn a_retry_in_flight_and_a_pending_record_taken_back_are_kept_in_full() {
        let mut cp = Checkpoint::new("c", Pointer::from("0"), 3, Duration::from_secs(60));
        cp.start_batch(["a".to_string(), "b".to_string()], None, t0())
            .unwrap();
        cp.begin_attempt(0, "l1", t0()).unwrap();
        cp.fail(0, "l1", ErrorInfo::new("boom"), t0()).unwrap();
        cp.begin_attempt(0, "l2", t0()).unwrap();
        cp.begin_attempt(1, "l2", t0()).unwrap();
        cp.release(1, "l2", t0() + chrono::Duration::seconds(1))
            .unwrap();
        assert_eq!(Slot::of(&cp.trackers()[0], t0()), Slot::Full);
        assert_eq!(Slot::of(&cp.trackers()[1], t0()), Slot::Full);
    }

    #[test]
    fn damaged_states_are_errors() {
        for bad in [
            "",
            "{}",
            r#"{"v":1,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"P"}"#,
            r#"{"v":2,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"R1.0"}"#,
            r#"{"v":2,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"Q"}"#,
            r#"{"v":2,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"S*0"}"#,
            r#"{"v":2,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"Sx"}"#,
            r#"{"v":2,"created":"2024-01-09T06:24:06Z","locks":[],"runs":"P*99999999"}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
