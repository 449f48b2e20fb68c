//! The contract every [`IdempotencyStore`] passes (the memory, file and
//! DynamoDB stores do): run [`check_all`] on your store from a test. Keys
//! are prefixed with `prefix`, so a shared table can be used; times are
//! whole seconds from `now`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use unistream_core::idempotency::MemoryIdempotencyStore;
//! use unistream_core::testing::idempotency::check_all;
//!
//! check_all(&MemoryIdempotencyStore::default(), "doc", chrono::Utc::now()).await;
//! # }
//! ```

use chrono::{DateTime, Duration, DurationRound as _, Utc};

use crate::idempotency::{
    Claim, Claimed, Completion, IdempotencyItem, IdempotencyStore, ItemStatus, Owner,
    StoredOutcome, payload_hash,
};

fn owner(pointer: &str, attempt: u32) -> Owner {
    Owner {
        consumer_id: "contract".into(),
        pointer: pointer.into(),
        attempt,
    }
}

fn claim(key: &str, data: &[u8], owner: Owner, now: DateTime<Utc>) -> Claim {
    Claim {
        key: key.into(),
        payload_hash: payload_hash(data),
        owner,
        now,
        in_progress_until: now + Duration::seconds(60),
        expires: now + Duration::seconds(3600),
    }
}

fn completed(c: &Claim, outcome: StoredOutcome) -> Completion {
    let mut item = c.item();
    item.status = ItemStatus::Completed;
    item.outcome = Some(outcome);
    Completion { item }
}

async fn must<T>(what: &str, f: impl std::future::Future<Output = crate::Result<T>>) -> T {
    match f.await {
        Ok(v) => v,
        Err(e) => panic!("{what}: the store failed: {e}"),
    }
}

/// Runs every check; panics saying what broke.
pub async fn check_all<S: IdempotencyStore>(store: &S, prefix: &str, now: DateTime<Utc>) {
    let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
    claims_exclude_other_deliveries(store, &format!("{prefix}-claim"), now).await;
    completed_keys_answer_their_outcome(store, &format!("{prefix}-done"), now).await;
    release_and_forget(store, &format!("{prefix}-release"), now).await;
    many_completions(store, &format!("{prefix}-many"), now).await;
    one_of_concurrent_claims_wins(store, &format!("{prefix}-race"), now).await;
}

/// An in-progress key refuses other deliveries (and the same attempt
/// again), is taken over by a later attempt of its record, and by anyone
/// once its claim lapsed or it expired; the item reads back whole.
pub async fn claims_exclude_other_deliveries<S: IdempotencyStore>(
    store: &S,
    key: &str,
    now: DateTime<Utc>,
) {
    let first = claim(key, b"data", owner("p1", 1), now);
    assert_eq!(must("claim", store.claim(&first)).await, Claimed::Started);
    let item = must("get", store.get(key)).await;
    assert_eq!(item, Some(first.item()), "the claim reads back whole");
    for (who, o) in [
        ("another record", owner("p2", 1)),
        ("the same attempt", owner("p1", 1)),
    ] {
        let c = claim(key, b"data", o, now + Duration::seconds(1));
        assert_eq!(
            must("claim", store.claim(&c)).await,
            Claimed::InProgress {
                owner: owner("p1", 1),
                until: first.in_progress_until
            },
            "{who} must be refused while the claim holds"
        );
    }
    let other_data = claim(key, b"other", owner("p2", 1), now + Duration::seconds(1));
    assert_eq!(
        must("claim", store.claim(&other_data)).await,
        Claimed::PayloadMismatch,
        "a key reused with other data is refused"
    );
    let retry = claim(key, b"data", owner("p1", 2), now + Duration::seconds(2));
    assert_eq!(
        must("claim", store.claim(&retry)).await,
        Claimed::Started,
        "a later attempt of the same record takes the claim over"
    );
    let after_lapse = claim(key, b"data", owner("p3", 1), retry.in_progress_until);
    assert_eq!(
        must("claim", store.claim(&after_lapse)).await,
        Claimed::Started,
        "a lapsed claim is anyone's"
    );
}

/// A completed key answers its outcome (data included) to the same
/// payload, refuses other data, and is void after it expires.
pub async fn completed_keys_answer_their_outcome<S: IdempotencyStore>(
    store: &S,
    key: &str,
    now: DateTime<Utc>,
) {
    let c = claim(key, b"{\"n\": 1}", owner("p1", 1), now);
    assert_eq!(must("claim", store.claim(&c)).await, Claimed::Started);
    let outcome = StoredOutcome::SucceededWith(serde_json::json!({"total": 42, "tags": ["a"]}));
    must("complete", store.complete(&completed(&c, outcome.clone()))).await;
    for o in [owner("p1", 2), owner("p9", 1)] {
        let again = claim(key, b"{\"n\": 1}", o, now + Duration::seconds(5));
        assert_eq!(
            must("claim", store.claim(&again)).await,
            Claimed::Completed(outcome.clone()),
            "a completed key answers its outcome"
        );
    }
    let other = claim(
        key,
        b"{\"n\": 2}",
        owner("p9", 1),
        now + Duration::seconds(5),
    );
    assert_eq!(
        must("claim", store.claim(&other)).await,
        Claimed::PayloadMismatch
    );
    let late = claim(key, b"{\"n\": 2}", owner("p9", 1), c.expires);
    assert_eq!(
        must("claim", store.claim(&late)).await,
        Claimed::Started,
        "an expired key is void"
    );
}

/// Release deletes only its owner's in-progress claim; forget deletes
/// anything.
pub async fn release_and_forget<S: IdempotencyStore>(store: &S, key: &str, now: DateTime<Utc>) {
    let c = claim(key, b"x", owner("p1", 1), now);
    assert_eq!(must("claim", store.claim(&c)).await, Claimed::Started);
    must("release", store.release(key, &owner("p2", 1))).await;
    assert!(
        must("get", store.get(key)).await.is_some(),
        "another owner's release changes nothing"
    );
    must("release", store.release(key, &owner("p1", 1))).await;
    assert_eq!(must("get", store.get(key)).await, None, "released");
    let c = claim(key, b"x", owner("p2", 1), now);
    assert_eq!(must("claim", store.claim(&c)).await, Claimed::Started);
    must(
        "complete",
        store.complete(&completed(&c, StoredOutcome::Ignored)),
    )
    .await;
    must("release", store.release(key, &owner("p2", 1))).await;
    assert!(
        matches!(
            must("get", store.get(key)).await,
            Some(IdempotencyItem {
                status: ItemStatus::Completed,
                ..
            })
        ),
        "a release never deletes a completed key"
    );
    must("forget", store.forget(key)).await;
    assert_eq!(must("get", store.get(key)).await, None, "forgotten");
}

/// `complete_many` stores every completion (more than one batch's worth).
pub async fn many_completions<S: IdempotencyStore>(store: &S, prefix: &str, now: DateTime<Utc>) {
    let mut completions = Vec::new();
    for n in 0..60 {
        let c = claim(
            &format!("{prefix}-{n}"),
            b"y",
            owner(&n.to_string(), 1),
            now,
        );
        assert_eq!(must("claim", store.claim(&c)).await, Claimed::Started);
        completions.push(completed(&c, StoredOutcome::Succeeded));
    }
    must("complete_many", store.complete_many(&completions)).await;
    for c in &completions {
        let got = must("get", store.get(&c.item.key)).await;
        assert_eq!(got.as_ref(), Some(&c.item), "{} completed", c.item.key);
    }
}

/// Of 16 concurrent claims of a fresh key by different records, exactly
/// one starts.
pub async fn one_of_concurrent_claims_wins<S: IdempotencyStore>(
    store: &S,
    key: &str,
    now: DateTime<Utc>,
) {
    let claims: Vec<Claim> = (0..16)
        .map(|n| claim(key, b"z", owner(&format!("r{n}"), 1), now))
        .collect();
    let answers = futures_util::future::join_all(claims.iter().map(|c| store.claim(c))).await;
    let started = answers
        .iter()
        .filter(|a| matches!(a, Ok(Claimed::Started)))
        .count();
    assert_eq!(started, 1, "{answers:?}");
}
