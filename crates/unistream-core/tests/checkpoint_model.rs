//! A property test of the checkpoint state machine: random transitions,
//! valid or not, applied to a [`Checkpoint`] and to a small model of what
//! each may change. Invariants: attempts never decrease (and grow by one
//! per attempt begun), a done record never changes, an invalid transition
//! changes nothing, and the pointer moves only when a finished batch is
//! committed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use unistream_core::ErrorInfo;
use unistream_core::checkpoint::{Checkpoint, Status, Tracker};
use unistream_core::source::Pointer;

const RECORDS: usize = 4;
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Begin(usize, u8),
    Succeed(usize, u8),
    Ignore(usize, u8),
    Fail(usize, u8),
    Exhaust(usize),
    DeadLetter(usize),
    Recover { exclusive: bool },
    Advance(i64),
    Commit,
    NextBatch,
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..RECORDS + 1; // one past the end: an invalid index
    let lock = 0u8..3;
    prop_oneof![
        4 => (i.clone(), lock.clone()).prop_map(|(i, l)| Op::Begin(i, l)),
        3 => (i.clone(), lock.clone()).prop_map(|(i, l)| Op::Succeed(i, l)),
        1 => (i.clone(), lock.clone()).prop_map(|(i, l)| Op::Ignore(i, l)),
        3 => (i.clone(), lock).prop_map(|(i, l)| Op::Fail(i, l)),
        1 => i.clone().prop_map(Op::Exhaust),
        2 => i.prop_map(Op::DeadLetter),
        1 => any::<bool>().prop_map(|exclusive| Op::Recover { exclusive }),
        1 => (0i64..120).prop_map(Op::Advance),
        2 => Just(Op::Commit),
        1 => Just(Op::NextBatch),
    ]
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_781_446, 0).unwrap()
}

fn start(cp: &mut Checkpoint, batch: u64, now: DateTime<Utc>) -> Result<(), unistream_core::Error> {
    let ids = (0..RECORDS).map(|i| format!("{batch}-{i}"));
    cp.start_batch(ids, Some(Pointer::new((batch + 1).to_string())), now)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_transitions_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut now = t0();
        let mut cp = Checkpoint::new("c", Pointer::from("0"), MAX_ATTEMPTS, Duration::from_secs(30));
        let mut batch = 0u64;
        start(&mut cp, batch, now).unwrap();
        for op in ops {
            let before: Vec<Tracker> = cp.trackers().to_vec();
            let pointer = cp.start_pointer().clone();
            let was_finished = cp.is_batch_finished();
            let lock = |l: u8| format!("L{l}");
            let result = match &op {
                Op::Begin(i, l) => cp.begin_attempt(*i, &lock(*l), now).map(|_| ()),
                Op::Succeed(i, l) => cp.succeed(*i, &lock(*l), Some(serde_json::json!(1)), now).map(|_| ()),
                Op::Ignore(i, l) => cp.ignore(*i, &lock(*l), now).map(|_| ()),
                Op::Fail(i, l) => cp.fail(*i, &lock(*l), ErrorInfo::new("boom"), now).map(|_| ()),
                Op::Exhaust(i) => cp.exhaust(*i, ErrorInfo::new("undecodable"), now).map(|_| ()),
                Op::DeadLetter(i) => cp.mark_dead_lettered(*i, now).map(|_| ()),
                Op::Recover { exclusive } => {
                    cp.recover(now, *exclusive);
                    Ok(())
                }
                Op::Advance(s) => {
                    now += chrono::Duration::seconds(*s);
                    Ok(())
                }
                Op::Commit => cp.commit(),
                Op::NextBatch => {
                    let r = start(&mut cp, batch + 1, now);
                    if r.is_ok() {
                        batch += 1;
                    }
                    r
                }
            };
            if let Op::NextBatch = op {
                if result.is_ok() {
                    prop_assert!(was_finished, "a new batch started over an unfinished one");
                    prop_assert_eq!(cp.start_pointer().as_str(), batch.to_string());
                    prop_assert!(cp.trackers().iter().all(|t| t.status == Status::Pending && t.attempts == 0));
                } else {
                    prop_assert!(!was_finished, "a finished batch refused the next: {:?}", result);
                    prop_assert_eq!(cp.trackers(), &before[..]);
                }
                continue;
            }
            // The pointer moves only by committing a finished batch.
            if cp.start_pointer() != &pointer {
                prop_assert!(matches!(op, Op::Commit) && was_finished, "pointer moved by {:?}", op);
            }
            if matches!(op, Op::Commit) {
                prop_assert_eq!(result.is_ok(), was_finished, "commit of a batch finished={}", was_finished);
            }
            if result.is_err() {
                prop_assert_eq!(cp.trackers(), &before[..], "a refused {:?} changed trackers", op);
            }
            for (i, (b, a)) in before.iter().zip(cp.trackers()).enumerate() {
                prop_assert!(a.attempts >= b.attempts, "record {} attempts went down: {:?}", i, op);
                prop_assert!(a.attempts <= MAX_ATTEMPTS, "record {} over max attempts", i);
                if let Op::Begin(j, _) = op {
                    let grew = a.attempts - b.attempts;
                    prop_assert!(grew == u32::from(i == j && result.is_ok()), "attempts grew by {} on {:?}", grew, op);
                } else {
                    prop_assert_eq!(a.attempts, b.attempts, "attempts changed without an attempt: {:?}", op);
                }
                if b.is_done() {
                    prop_assert_eq!(a, b, "done record {} changed by {:?}", i, op);
                }
                if a.status == Status::Exhausted && b.status != Status::Exhausted {
                    prop_assert!(
                        matches!(op, Op::Exhaust(_)) || a.attempts >= MAX_ATTEMPTS,
                        "record {} exhausted with attempts left by {:?}", i, op
                    );
                }
            }
        }
    }
}
