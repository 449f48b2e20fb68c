//! Tests of the state machine, transition by transition.

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_781_446, 0).unwrap()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

fn batch(n: usize, max_attempts: u32) -> Checkpoint {
    let mut cp = Checkpoint::new(
        "c",
        Pointer::from("p0"),
        max_attempts,
        Duration::from_secs(30),
    );
    cp.start_batch(
        (0..n).map(|i| format!("r{i}")),
        Some(Pointer::from("p1")),
        t0(),
    )
    .unwrap();
    cp
}

#[test]
fn status_codes_are_the_seeds() {
    let all = [
        (Status::Pending, 0),
        (Status::InProgress, 10),
        (Status::Failed, 20),
        (Status::Exhausted, 30),
        (Status::Succeeded, 40),
        (Status::Ignored, 50),
    ];
    for (s, code) in all {
        assert_eq!(s.code(), code);
        assert_eq!(Status::from_code(code), Some(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), code.to_string());
    }
    assert_eq!(Status::from_code(7), None);
    assert!(serde_json::from_str::<Status>("7").is_err());
}

#[test]
fn fresh_checkpoint_is_finished_committed_and_not_closed() {
    let cp = Checkpoint::new("c", Pointer::from("p0"), 3, Duration::from_secs(30));
    assert!(cp.is_batch_finished());
    assert!(cp.is_committed());
    assert!(!cp.is_closed());
    assert_eq!(cp.batch_sequence(), 0);
    assert_eq!(cp.start_pointer().as_str(), "p0");
}

#[test]
fn new_batch_sets_every_tracker_pending_and_counts_the_batch() {
    let cp = batch(3, 3);
    assert_eq!(cp.batch_sequence(), 1);
    assert_eq!(cp.next_pointer().unwrap().as_str(), "p1");
    assert_eq!(cp.start_pointer().as_str(), "p0");
    assert!(!cp.is_committed());
    for t in cp.trackers() {
        assert_eq!((t.status, t.attempts), (Status::Pending, 0));
    }
}

#[test]
fn begin_attempt_locks_for_lock_expire_seconds() {
    let mut cp = batch(1, 3);
    let t = cp.begin_attempt(0, "L", t0()).unwrap();
    assert_eq!(t.status, Status::InProgress);
    assert_eq!(t.attempts, 1);
    assert_eq!(t.lock.as_deref(), Some("L"));
    assert_eq!(t.lock_time, Some(t0()));
    // Seconds, not days (defect 1 of the original).
    assert_eq!(t.lock_expire_time, Some(t0() + secs(30)));
    assert_eq!(t.first_attempt_time, Some(t0()));
}

#[test]
fn an_unexpired_foreign_lock_forbids_an_attempt() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    let err = cp.begin_attempt(0, "B", t0() + secs(29)).unwrap_err();
    assert!(
        matches!(err, Error::RecordLocked { ref lock, .. } if lock == "A"),
        "{err}"
    );
    // Once expired, another owner may take it; the attempt counts.
    let t = cp.begin_attempt(0, "B", t0() + secs(30)).unwrap();
    assert_eq!((t.attempts, t.lock.as_deref()), (2, Some("B")));
}

#[test]
fn only_the_lock_holder_records_a_result() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    assert!(matches!(
        cp.succeed(0, "B", None, t0()),
        Err(Error::InvalidTransition(_))
    ));
    assert!(matches!(
        cp.fail(0, "B", ErrorInfo::new("x"), t0()),
        Err(Error::InvalidTransition(_))
    ));
    // Nothing recorded without an attempt either.
    let mut cp = batch(1, 3);
    assert!(cp.succeed(0, "A", None, t0()).is_err());
}

#[test]
fn success_unlocks_and_clears_errors() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.fail(0, "A", ErrorInfo::new("first"), t0()).unwrap();
    cp.begin_attempt(0, "B", t0() + secs(1)).unwrap();
    let t = cp
        .succeed(0, "B", Some(serde_json::json!({"ok": 1})), t0() + secs(2))
        .unwrap();
    assert_eq!(t.status, Status::Succeeded);
    assert_eq!(t.attempts, 2);
    assert_eq!(t.errors, None);
    assert_eq!(t.lock, None);
    assert_eq!(t.lock_expire_time, None);
    assert_eq!(t.update_time, t0() + secs(2));
    assert!(cp.is_batch_finished());
}

#[test]
fn failure_keeps_error_and_cause_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);
    let e = Outer(std::io::Error::other("inner"));
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    let t = cp.fail(0, "A", ErrorInfo::from_error(&e), t0()).unwrap();
    assert_eq!(t.status, Status::Failed);
    assert_eq!(t.lock, None);
    let errors = t.errors.clone().unwrap();
    assert_eq!(errors.message, "outer");
    assert_eq!(errors.causes, vec!["inner".to_string()]);
    assert_eq!(errors.to_string(), "outer: inner");
}

#[test]
fn last_failure_exhausts_and_forbids_more_attempts() {
    let mut cp = batch(1, 2);
    for lock in ["A", "B"] {
        cp.begin_attempt(0, lock, t0()).unwrap();
        cp.fail(0, lock, ErrorInfo::new("x"), t0()).unwrap();
    }
    assert_eq!(cp.trackers()[0].status, Status::Exhausted);
    assert!(matches!(
        cp.begin_attempt(0, "C", t0()),
        Err(Error::InvalidTransition(_))
    ));
    // Exhausted but not delivered: the batch is not finished.
    assert!(!cp.is_batch_finished());
    assert!(cp.commit().is_err());
    cp.mark_dead_lettered(0, t0()).unwrap();
    assert!(cp.is_batch_finished());
}

#[test]
fn ignore_is_final() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    assert_eq!(cp.ignore(0, "A", t0()).unwrap().status, Status::Ignored);
    assert!(cp.is_batch_finished());
    assert!(cp.begin_attempt(0, "B", t0()).is_err());
}

#[test]
fn only_exhausted_records_are_dead_lettered() {
    let mut cp = batch(1, 3);
    assert!(cp.mark_dead_lettered(0, t0()).is_err());
    cp.exhaust(0, ErrorInfo::new("undecodable"), t0()).unwrap();
    assert_eq!(cp.trackers()[0].attempts, 0);
    cp.mark_dead_lettered(0, t0()).unwrap();
    assert!(cp.trackers()[0].is_done());
}

#[test]
fn commit_moves_start_pointer_and_is_idempotent() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    assert!(cp.commit().is_err(), "unfinished batch must not commit");
    cp.succeed(0, "A", None, t0()).unwrap();
    cp.commit().unwrap();
    cp.commit().unwrap();
    assert_eq!(cp.start_pointer().as_str(), "p1");
    assert!(cp.is_committed());
    assert!(!cp.is_closed());
}

#[test]
fn starting_a_batch_commits_a_finished_one_and_refuses_an_unfinished_one() {
    let mut cp = batch(1, 3);
    assert!(cp.start_batch(["x".into()], None, t0()).is_err());
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.succeed(0, "A", None, t0()).unwrap();
    cp.start_batch(["x".into()], Some(Pointer::from("p2")), t0())
        .unwrap();
    assert_eq!(cp.start_pointer().as_str(), "p1");
    assert_eq!(cp.batch_sequence(), 2);
}

#[test]
fn restart_in_progress_with_expired_lock_is_retried_with_attempts_kept() {
    let mut cp = batch(2, 3);
    cp.begin_attempt(0, "dead", t0()).unwrap();
    // Not exclusive, lock still valid: left alone.
    assert!(cp.recover(t0() + secs(10), false).is_empty());
    assert_eq!(cp.trackers()[0].status, Status::InProgress);
    // Expired: failed, attempts kept, error explains.
    assert_eq!(cp.recover(t0() + secs(31), false), vec![0]);
    let t = &cp.trackers()[0];
    assert_eq!((t.status, t.attempts), (Status::Failed, 1));
    assert!(t.errors.as_ref().unwrap().message.contains("interrupted"));
    assert_eq!(
        cp.begin_attempt(0, "new", t0() + secs(31))
            .unwrap()
            .attempts,
        2
    );
}

#[test]
fn restart_in_progress_under_an_exclusive_store_is_retried_at_once() {
    let mut cp = batch(1, 3);
    cp.begin_attempt(0, "dead", t0()).unwrap();
    assert_eq!(cp.recover(t0(), true), vec![0]);
    assert_eq!(cp.trackers()[0].status, Status::Failed);
}

#[test]
fn restart_in_progress_on_the_last_attempt_is_exhausted() {
    let mut cp = batch(1, 2);
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
    cp.begin_attempt(0, "dead", t0()).unwrap();
    cp.recover(t0(), true);
    let t = &cp.trackers()[0];
    assert_eq!((t.status, t.attempts), (Status::Exhausted, 2));
}

#[test]
fn restart_failed_with_attempts_left_and_exhausted_are_untouched() {
    let mut cp = batch(2, 2);
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
    cp.exhaust(1, ErrorInfo::new("y"), t0()).unwrap();
    let before = cp.clone();
    assert!(cp.recover(t0() + secs(1000), true).is_empty());
    assert_eq!(cp, before);
    assert_eq!(cp.trackers()[0].status, Status::Failed);
    assert_eq!(cp.trackers()[1].status, Status::Exhausted);
}

#[test]
fn finished_batch_with_no_next_pointer_closes_the_stream() {
    let mut cp = Checkpoint::new("c", Pointer::from("p0"), 3, Duration::from_secs(30));
    cp.start_batch(["a".into()], None, t0()).unwrap();
    assert!(!cp.is_closed());
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.succeed(0, "A", None, t0()).unwrap();
    assert!(!cp.is_closed(), "closed only once committed");
    cp.commit().unwrap();
    assert!(cp.is_closed());
    assert_eq!(cp.start_pointer().as_str(), "p0");
    assert!(cp.start_batch(["b".into()], None, t0()).is_err());
}

#[test]
fn serde_round_trip_keeps_everything() {
    let mut cp = batch(3, 3);
    cp.begin_attempt(0, "A", t0()).unwrap();
    cp.fail(0, "A", ErrorInfo::new("x"), t0()).unwrap();
    cp.begin_attempt(1, "B", t0()).unwrap();
    let json = serde_json::to_string(&cp).unwrap();
    let back: Checkpoint = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cp);
}

#[test]
fn release_takes_back_an_attempt_that_never_ran() {
    let mut cp = batch(2, 3);
    cp.begin_attempt(0, "me-1", t0()).unwrap();
    let t = cp.release(0, "me-1", t0() + secs(1)).unwrap();
    assert_eq!(
        (t.status, t.attempts, t.first_attempt_time),
        (Status::Pending, 0, None)
    );
    assert!(t.lock.is_none());
    // A failed record goes back to failed, its earlier attempt kept.
    cp.begin_attempt(1, "me-2", t0()).unwrap();
    cp.fail(1, "me-2", ErrorInfo::new("boom"), t0()).unwrap();
    cp.begin_attempt(1, "me-3", t0()).unwrap();
    let t = cp.release(1, "me-3", t0()).unwrap();
    assert_eq!((t.status, t.attempts), (Status::Failed, 1));
    assert!(t.first_attempt_time.is_some());
    // Only the holder releases.
    cp.begin_attempt(1, "me-4", t0()).unwrap();
    assert!(cp.release(1, "other-1", t0()).is_err());
}

#[test]
fn recover_owned_fails_only_this_owners_attempts() {
    let mut cp = batch(3, 2);
    cp.begin_attempt(0, "me-1", t0()).unwrap();
    cp.begin_attempt(1, "other-1", t0()).unwrap();
    cp.begin_attempt(2, "me-2", t0()).unwrap();
    cp.fail(2, "me-2", ErrorInfo::new("boom"), t0()).unwrap();
    cp.begin_attempt(2, "me-3", t0()).unwrap();
    assert_eq!(cp.recover_owned("me-", t0()), vec![0, 2]);
    assert_eq!(cp.trackers()[0].status, Status::Failed);
    assert_eq!(
        cp.trackers()[1].status,
        Status::InProgress,
        "another owner's lock holds"
    );
    assert_eq!(
        cp.trackers()[2].status,
        Status::Exhausted,
        "no attempts left"
    );
    assert!(
        cp.trackers()[0]
            .errors
            .as_ref()
            .unwrap()
            .message
            .contains("interrupted")
    );
}
