//! The key-order scheduler of one batch: which records may be marked
//! (their attempt written as started), which may start, which wait on a
//! timer. Pure bookkeeping: no I/O, no checkpoint, no clock.
//!
//! Invariants:
//! - records are grouped by *lane*: one lane per partition key, or one lane
//!   for the whole batch when the consumer is sequential (concurrency 1:
//!   strict stream order, today's behaviour);
//! - only the front of a lane (its oldest unfinished record) ever starts, so
//!   a lane never has two records running and its records run in stream
//!   order, across retries and the dead-letter queue;
//! - records behind a running or marked front may be marked ahead (the
//!   checkpoint interval: in a sequential lane always, in keyed lanes when
//!   the interval marks more records per write than run at once); they
//!   start when they reach the front;
//! - a record is marked at most once per attempt and starts only after the
//!   write that marked it is durable ([`Schedule::made_durable`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// May be marked when it is its lane's candidate.
    Ready,
    /// Waits for a backoff or another owner's lock to end.
    Waiting,
    /// Its attempt is begun in the checkpoint; durable once the write that
    /// holds it returned.
    Marked { durable: bool },
    /// Handed to the processor.
    InFlight,
    /// Exhausted: goes to the dead-letter queue before its lane moves on.
    DeadLetter,
    /// Succeeded, ignored or dead-lettered.
    Done,
}

/// A set of record indexes that pops its smallest, without allocating in
/// steady state (a heap with lazy deletion: a removed index stays in the
/// heap until popped, and is skipped then). The engine changes these sets
/// several times per record; a `BTreeSet` of one element allocated and
/// freed a node each time.
#[derive(Debug)]
struct MinSet {
    heap: BinaryHeap<Reverse<usize>>,
    member: Vec<bool>,
    len: usize,
}

impl MinSet {
    fn new(n: usize) -> Self {
        MinSet {
            heap: BinaryHeap::new(),
            member: vec![false; n],
            len: 0,
        }
    }
    fn insert(&mut self, i: usize) {
        if !self.member[i] {
            self.member[i] = true;
            self.len += 1;
            self.heap.push(Reverse(i));
        }
    }
    fn remove(&mut self, i: usize) {
        if self.member[i] {
            self.member[i] = false;
            self.len -= 1;
            if self.len == 0 {
                self.heap.clear();
            }
        }
    }
    fn pop_first(&mut self) -> Option<usize> {
        while let Some(Reverse(i)) = self.heap.pop() {
            if self.member[i] {
                self.member[i] = false;
                self.len -= 1;
                return Some(i);
            }
        }
        None
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug, Default)]
struct Lane {
    /// Unfinished records, in stream order.
    queue: VecDeque<usize>,
    /// Positions `1..next_claim` of the queue are marked ahead.
    next_claim: usize,
    candidate: Option<usize>,
    startable: Option<usize>,
}

#[derive(Debug)]
pub(super) struct Schedule {
    slots: Vec<Slot>,
    /// Records that go to the dead-letter queue without an attempt when
    /// they reach their lane's front (exhausted, undecodable).
    letter: Vec<bool>,
    lane_of: Vec<u32>,
    lanes: Vec<Lane>,
    ahead: bool,
    candidates: MinSet,
    startable: MinSet,
    timers: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    /// The live timer of each waiting record (older heap entries are stale).
    due: Vec<Option<DateTime<Utc>>>,
    marked_pending: Vec<usize>,
    marked: usize,
    in_flight: usize,
    unfinished: usize,
}

impl Schedule {
    /// A schedule of records in these lanes (`lane_of[i] < lanes`), all
    /// `Ready` except those `done`. `ahead`: marking behind the front is
    /// allowed.
    pub(super) fn new(
        lane_of: Vec<u32>,
        lanes: usize,
        done: impl Fn(usize) -> bool,
        ahead: bool,
    ) -> Self {
        let n = lane_of.len();
        // Each lane's queue sized once (no regrowth while it fills).
        let mut sizes = vec![0usize; lanes];
        for &l in &lane_of {
            sizes[l as usize] += 1;
        }
        let mut s = Schedule {
            slots: vec![Slot::Ready; n],
            letter: vec![false; n],
            lane_of,
            lanes: sizes
                .into_iter()
                .map(|size| Lane {
                    queue: VecDeque::with_capacity(size),
                    ..Lane::default()
                })
                .collect(),
            ahead,
            candidates: MinSet::new(n),
            startable: MinSet::new(n),
            timers: BinaryHeap::new(),
            due: vec![None; n],
            marked_pending: Vec::new(),
            marked: 0,
            in_flight: 0,
            unfinished: 0,
        };
        for i in 0..n {
            if done(i) {
                s.slots[i] = Slot::Done;
            } else {
                s.lanes[s.lane_of[i] as usize].queue.push_back(i);
                s.unfinished += 1;
            }
        }
        for l in 0..lanes {
            s.refresh(l);
        }
        s
    }

    /// Record `i` goes to the dead-letter queue, not to the processor, when
    /// it reaches its lane's front: it is a candidate only there.
    pub(super) fn set_letter(&mut self, i: usize) {
        self.letter[i] = true;
        self.refresh(self.lane_of[i] as usize);
    }

    /// Whether record `i` is one for the dead-letter queue.
    pub(super) fn is_letter(&self, i: usize) -> bool {
        self.letter[i]
    }

    /// Records not done.
    pub(super) fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// Records handed to the processor and not yet back.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records marked and not started.
    pub(super) fn marked(&self) -> usize {
        self.marked
    }

    pub(super) fn has_candidate(&self) -> bool {
        !self.candidates.is_empty()
    }

    pub(super) fn has_startable(&self) -> bool {
        !self.startable.is_empty()
    }

    /// The earliest timer, if any record waits.
    pub(super) fn next_timer(&mut self) -> Option<DateTime<Utc>> {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if self.due[i] == Some(t) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// Makes the records whose timer is due at `now` ready.
    pub(super) fn fire(&mut self, now: DateTime<Utc>) {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.slots[i] == Slot::Waiting && self.due[i] == Some(t) {
                self.due[i] = None;
                self.slots[i] = Slot::Ready;
                self.refresh(self.lane_of[i] as usize);
            }
        }
    }

    /// Record `i` waits until `until` before it can be marked again.
    pub(super) fn wait(&mut self, i: usize, until: DateTime<Utc>) {
        self.slots[i] = Slot::Waiting;
        self.due[i] = Some(until);
        self.timers.push(Reverse((until, i)));
        self.refresh(self.lane_of[i] as usize);
    }

    /// Takes the oldest record that may be marked now.
    pub(super) fn take_candidate(&mut self) -> Option<usize> {
        let i = self.candidates.pop_first()?;
        let l = self.lane_of[i] as usize;
        let lane = &mut self.lanes[l];
        lane.candidate = None;
        if lane.queue.front() == Some(&i) {
            lane.next_claim = lane.next_claim.max(1);
        } else {
            lane.next_claim += 1;
        }
        self.slots[i] = Slot::Marked { durable: false };
        self.marked += 1;
        self.marked_pending.push(i);
        self.refresh(l);
        Some(i)
    }

    /// A record taken by [`take_candidate`](Self::take_candidate) could not
    /// be marked (another owner's lock): it waits until `until`.
    pub(super) fn unmark(&mut self, i: usize, until: DateTime<Utc>) {
        self.marked -= 1;
        self.marked_pending.retain(|&m| m != i);
        let lane = &mut self.lanes[self.lane_of[i] as usize];
        if lane.queue.front() != Some(&i) {
            lane.next_claim -= 1;
        }
        self.wait(i, until);
    }

    /// The write holding every mark made so far returned: those records may
    /// start.
    pub(super) fn made_durable(&mut self) {
        // Taken and put back: the list keeps its capacity (no allocation
        // per write).
        let mut pending = std::mem::take(&mut self.marked_pending);
        for &i in &pending {
            if self.slots[i] == (Slot::Marked { durable: false }) {
                self.slots[i] = Slot::Marked { durable: true };
                self.refresh(self.lane_of[i] as usize);
            }
        }
        pending.clear();
        self.marked_pending = pending;
    }

    /// Every record marked and durable but not started (for a stop).
    pub(super) fn marked_records(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i], Slot::Marked { .. }))
            .collect()
    }

    /// Takes the oldest record that may start now.
    pub(super) fn take_startable(&mut self) -> Option<usize> {
        let i = self.startable.pop_first()?;
        let l = self.lane_of[i] as usize;
        self.lanes[l].startable = None;
        self.slots[i] = Slot::InFlight;
        self.marked -= 1;
        self.in_flight += 1;
        self.refresh(l);
        Some(i)
    }

    /// Record `i` (in flight or exhausted) is done: its lane moves on.
    pub(super) fn done(&mut self, i: usize) {
        if self.slots[i] == Slot::InFlight {
            self.in_flight -= 1;
        }
        self.slots[i] = Slot::Done;
        self.unfinished -= 1;
        let l = self.lane_of[i] as usize;
        let lane = &mut self.lanes[l];
        if lane.queue.front() == Some(&i) {
            lane.queue.pop_front();
            lane.next_claim = lane.next_claim.saturating_sub(1);
        } else {
            lane.queue.retain(|&q| q != i);
        }
        self.refresh(l);
    }

    /// Record `i`, back from the processor, failed: it waits until `until`.
    pub(super) fn failed(&mut self, i: usize, until: DateTime<Utc>) {
        if self.slots[i] == Slot::InFlight {
            self.in_flight -= 1;
        }
        self.wait(i, until);
    }

    /// Record `i` (in flight, or a letter just taken as a candidate) is
    /// exhausted: its lane waits for the dead-letter queue.
    pub(super) fn dead_letter(&mut self, i: usize) {
        match self.slots[i] {
            Slot::InFlight => self.in_flight -= 1,
            Slot::Marked { .. } => {
                self.marked -= 1;
                self.marked_pending.retain(|&m| m != i);
            }
            _ => {}
        }
        self.slots[i] = Slot::DeadLetter;
        self.refresh(self.lane_of[i] as usize);
    }

    fn refresh(&mut self, l: usize) {
        let lane = &mut self.lanes[l];
        let (mut candidate, mut startable) = (None, None);
        if let Some(&front) = lane.queue.front() {
            match self.slots[front] {
                Slot::Ready => candidate = Some(front),
                Slot::Marked { durable: true } => startable = Some(front),
                _ => {}
            }
            if candidate.is_none()
                && self.ahead
                && matches!(self.slots[front], Slot::Marked { .. } | Slot::InFlight)
            {
                let p = lane.next_claim.max(1);
                if let Some(&next) = lane.queue.get(p)
                    && self.slots[next] == Slot::Ready
                    && !self.letter[next]
                {
                    candidate = Some(next);
                }
            }
        }
        if lane.candidate != candidate {
            if let Some(c) = lane.candidate {
                self.candidates.remove(c);
            }
            if let Some(c) = candidate {
                self.candidates.insert(c);
            }
            lane.candidate = candidate;
        }
        if lane.startable != startable {
            if let Some(c) = lane.startable {
                self.startable.remove(c);
            }
            if let Some(c) = startable {
                self.startable.insert(c);
            }
            lane.startable = startable;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_781_446, 0).unwrap_or_default()
    }

    fn mark_all(s: &mut Schedule) -> Vec<usize> {
        let mut v = Vec::new();
        while let Some(i) = s.take_candidate() {
            v.push(i);
        }
        s.made_durable();
        v
    }

    #[test]
    fn only_the_front_of_each_key_runs() {
        // keys: a b a c b
        let mut s = Schedule::new(vec![0, 1, 0, 2, 1], 3, |_| false, false);
        assert_eq!(mark_all(&mut s), vec![0, 1, 3]);
        assert_eq!(s.take_startable(), Some(0));
        assert_eq!(s.take_startable(), Some(1));
        assert_eq!(s.take_startable(), Some(3));
        assert_eq!(s.take_startable(), None);
        assert!(!s.has_candidate());
        s.done(0);
        assert_eq!(mark_all(&mut s), vec![2]);
        s.failed(1, t0());
        assert!(!s.has_candidate(), "a waiting record blocks its key");
        s.fire(t0());
        assert_eq!(mark_all(&mut s), vec![1]);
        assert_eq!(s.take_startable(), Some(1));
        s.done(1);
        assert_eq!(mark_all(&mut s), vec![4]);
    }

    #[test]
    fn a_sequential_lane_marks_ahead_and_starts_in_order() {
        let mut s = Schedule::new(vec![0; 4], 1, |i| i == 1, true);
        assert_eq!(s.unfinished(), 3);
        assert_eq!(mark_all(&mut s), vec![0, 2, 3]);
        assert_eq!(s.take_startable(), Some(0));
        assert_eq!(s.take_startable(), None, "2 waits for 0");
        s.failed(0, t0());
        assert_eq!(s.take_startable(), None, "2 waits for 0's retry");
        s.fire(t0());
        assert_eq!(mark_all(&mut s), vec![0]);
        assert_eq!(s.take_startable(), Some(0));
        s.dead_letter(0);
        assert_eq!(s.take_startable(), None, "the dead letter blocks the lane");
        s.done(0);
        assert_eq!(s.take_startable(), Some(2));
        s.done(2);
        assert_eq!(s.take_startable(), Some(3));
        s.done(3);
        assert_eq!(s.unfinished(), 0);
    }

    #[test]
    fn a_letter_waits_for_the_front() {
        let mut s = Schedule::new(vec![0; 3], 1, |_| false, true);
        s.set_letter(1);
        assert_eq!(mark_all(&mut s), vec![0], "the letter is not marked ahead");
        assert_eq!(s.take_startable(), Some(0));
        s.done(0);
        assert_eq!(s.take_candidate(), Some(1));
        assert!(s.is_letter(1));
        s.dead_letter(1);
        assert_eq!(s.marked(), 0);
        assert_eq!(s.take_candidate(), None);
        s.done(1);
        assert_eq!(mark_all(&mut s), vec![2]);
    }

    #[test]
    fn a_locked_candidate_waits_and_frees_its_claim() {
        let mut s = Schedule::new(vec![0; 3], 1, |_| false, true);
        assert_eq!(s.take_candidate(), Some(0));
        assert_eq!(s.take_candidate(), Some(1));
        s.unmark(1, t0());
        assert_eq!(s.marked(), 1);
        assert_eq!(s.take_candidate(), None, "2 stays behind the waiting 1");
        s.fire(t0());
        assert_eq!(s.take_candidate(), Some(1));
    }
}
