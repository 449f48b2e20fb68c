//! Tests of the coordinator over the in-memory lease table, in virtual time.

use super::*;
use crate::lease::MemoryLeaseTable;
use unistream_core::clock::VirtualClock;

async fn table_with(shards: &[(&str, &[&str])]) -> MemoryLeaseTable {
    let t = MemoryLeaseTable::default();
    for (s, parents) in shards {
        t.create(&Lease::new(
            *s,
            parents.iter().map(|p| p.to_string()).collect(),
        ))
        .await
        .unwrap();
    }
    t
}

fn worker(t: &MemoryLeaseTable, name: &str, clock: &VirtualClock) -> Coordinator<MemoryLeaseTable> {
    Coordinator::new(t.clone(), name, LeaseConfig::default()).with_clock(clock.clone())
}

async fn owners(t: &MemoryLeaseTable) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in t.list().await.unwrap() {
        if let Some(o) = l.owner {
            *m.entry(o).or_default() += 1;
        }
    }
    m
}

const FOUR: &[(&str, &[&str])] = &[("s0", &[]), ("s1", &[]), ("s2", &[]), ("s3", &[])];

#[tokio::test]
async fn three_workers_share_four_shards_two_one_one_and_stay_there() {
    let clock = VirtualClock::default();
    let t = table_with(FOUR).await;
    let mut ws = vec![
        worker(&t, "a", &clock),
        worker(&t, "b", &clock),
        worker(&t, "c", &clock),
    ];
    for _round in 0..6 {
        for w in &mut ws {
            w.renew().await;
            w.balance().await.unwrap();
        }
        clock.advance(Duration::from_secs(2));
    }
    let mut counts: Vec<usize> = owners(&t).await.into_values().collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 2]);
    // Each shard held by exactly one worker, as each worker believes.
    let mut held: Vec<String> = ws.iter().flat_map(|w| w.held()).collect();
    held.sort();
    assert_eq!(held, ["s0", "s1", "s2", "s3"]);
    // Stable: more rounds change nothing.
    let before = t.list().await.unwrap();
    for w in &mut ws {
        w.balance().await.unwrap();
    }
    let after = t.list().await.unwrap();
    let who = |v: &[Lease]| v.iter().map(|l| l.owner.clone()).collect::<Vec<_>>();
    assert_eq!(who(&before), who(&after));
}

#[tokio::test]
async fn a_dead_workers_leases_are_taken_at_expiry_not_before() {
    let clock = VirtualClock::default();
    let t = table_with(FOUR).await;
    let mut a = worker(&t, "a", &clock);
    let mut b = worker(&t, "b", &clock);
    a.balance().await.unwrap();
    assert_eq!(a.held().len(), 4);
    b.balance().await.unwrap(); // steals one
    b.balance().await.unwrap(); // and another
    a.renew().await;
    assert_eq!((a.held().len(), b.held().len()), (2, 2));
    // `b` sees a's last renewal; then `a` dies: no more renewals. Just
    // short of the expiry (failover 10 s - one 2.5 s scan), `b` still
    // leaves its leases alone.
    assert_eq!(b.expiry(), Duration::from_millis(7500));
    assert!(b.balance().await.unwrap().taken.is_empty());
    clock.advance(Duration::from_millis(7400));
    b.renew().await;
    assert!(b.balance().await.unwrap().taken.is_empty());
    clock.advance(Duration::from_millis(100));
    b.renew().await;
    let got = b.balance().await.unwrap();
    assert_eq!(got.taken.len(), 2, "{got:?}");
    assert_eq!(b.held().len(), 4);
    assert_eq!(owners(&t).await, BTreeMap::from([("b".to_string(), 4)]));
}

#[tokio::test]
async fn two_two_zero_becomes_two_one_one() {
    let clock = VirtualClock::default();
    let t = table_with(FOUR).await;
    let mut a = worker(&t, "a", &clock);
    let mut b = worker(&t, "b", &clock);
    a.balance().await.unwrap();
    b.balance().await.unwrap();
    b.balance().await.unwrap();
    a.renew().await;
    assert_eq!((a.held().len(), b.held().len()), (2, 2));
    // A third worker: the share is 2 and nobody holds more, but 2 - 0 is
    // uneven: it steals one.
    let mut c = worker(&t, "c", &clock);
    assert_eq!(c.balance().await.unwrap().taken.len(), 1);
    assert!(c.balance().await.unwrap().taken.is_empty());
    a.renew().await;
    b.renew().await;
    let mut counts: Vec<usize> = owners(&t).await.into_values().collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 2]);
}

#[tokio::test]
async fn stealing_moves_one_lease_per_round() {
    let clock = VirtualClock::default();
    let t = table_with(&[
        ("s0", &[]),
        ("s1", &[]),
        ("s2", &[]),
        ("s3", &[]),
        ("s4", &[]),
        ("s5", &[]),
    ])
    .await;
    let mut a = worker(&t, "a", &clock);
    a.balance().await.unwrap();
    let mut b = worker(&t, "b", &clock);
    for expected in [1, 2, 3, 3] {
        b.balance().await.unwrap();
        assert_eq!(b.held().len(), expected);
    }
    a.renew().await;
    assert_eq!(a.held().len(), 3);
}

#[tokio::test]
async fn a_lost_lease_cannot_be_renewed_released_or_ended() {
    let clock = VirtualClock::default();
    let t = table_with(&[("s0", &[])]).await;
    let mut a = worker(&t, "a", &clock);
    a.balance().await.unwrap();
    let stale = t.list().await.unwrap().remove(0);
    // Another worker takes it over (as after an expiry).
    let mut b = worker(&t, "b", &clock);
    clock.advance(Duration::from_secs(5));
    b.balance().await.unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(b.balance().await.unwrap().taken.len(), 1);
    assert!(!t.release(&stale).await.unwrap());
    assert!(!t.end(&stale).await.unwrap());
    assert_eq!(t.renew(&stale).await.unwrap(), None);
    assert_eq!(a.renew().await, vec!["s0".to_string()]);
    assert!(a.held().is_empty());
}

#[tokio::test]
async fn children_wait_for_every_parent_to_end() {
    let clock = VirtualClock::default();
    // s0 split into s1 and s2; s1 and s2 later merged into s3.
    let t = table_with(&[
        ("s0", &[]),
        ("s1", &["s0"]),
        ("s2", &["s0"]),
        ("s3", &["s1", "s2"]),
    ])
    .await;
    let mut a = worker(&t, "a", &clock);
    let got = a.balance().await.unwrap();
    assert_eq!(
        got.taken
            .iter()
            .map(|l| l.shard_id.as_str())
            .collect::<Vec<_>>(),
        ["s0"]
    );
    assert!(a.end("s0").await.unwrap());
    let got = a.balance().await.unwrap();
    let mut ids: Vec<&str> = got.taken.iter().map(|l| l.shard_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["s1", "s2"]);
    assert!(a.end("s1").await.unwrap());
    assert!(
        a.balance().await.unwrap().taken.is_empty(),
        "s3 waits for s2"
    );
    assert!(a.end("s2").await.unwrap());
    let got = a.balance().await.unwrap();
    assert_eq!(
        got.taken
            .iter()
            .map(|l| l.shard_id.as_str())
            .collect::<Vec<_>>(),
        ["s3"]
    );
    // An ended lease is retired: nobody takes it again.
    let mut b = worker(&t, "b", &clock);
    clock.advance(Duration::from_secs(60));
    assert!(b.balance().await.unwrap().taken.is_empty());
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let clock = VirtualClock::default();
    let t = table_with(&[("s0", &[]), ("s1", &[])]).await;
    let mut a = worker(&t, "a", &clock);
    let mut b = worker(&t, "b", &clock);
    a.balance().await.unwrap();
    b.balance().await.unwrap();
    a.renew().await;
    assert_eq!((a.held().len(), b.held().len()), (1, 1));
    let shard = a.held()[0].clone();
    a.release(&shard).await.unwrap();
    // No failover wait: the lease is free.
    let got = b.balance().await.unwrap();
    assert_eq!(got.taken.len(), 1);
    assert_eq!(got.taken[0].shard_id, shard);
}

#[tokio::test]
async fn a_worker_that_cannot_renew_gives_up_before_others_may_take_over() {
    #[derive(Clone)]
    struct Failing(MemoryLeaseTable, Arc<std::sync::atomic::AtomicBool>);
    impl LeaseTable for Failing {
        async fn list(&self) -> Result<Vec<Lease>> {
            self.0.list().await
        }
        async fn create(&self, l: &Lease) -> Result<bool> {
            self.0.create(l).await
        }
        async fn take(&self, l: &Lease, o: &str) -> Result<Option<Lease>> {
            self.0.take(l, o).await
        }
        async fn renew(&self, l: &Lease) -> Result<Option<Lease>> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(unistream_core::Error::backend("test", "network down"));
            }
            self.0.renew(l).await
        }
        async fn release(&self, l: &Lease) -> Result<bool> {
            self.0.release(l).await
        }
        async fn end(&self, l: &Lease) -> Result<bool> {
            self.0.end(l).await
        }
    }
    let clock = VirtualClock::default();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = Failing(table_with(&[("s0", &[])]).await, down.clone());
    let mut a = Coordinator::new(t, "a", LeaseConfig::default()).with_clock(clock.clone());
    a.balance().await.unwrap();
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    // It gives up after expiry - renew_every = 7.5 - 2.5 s: before any
    // other worker may take the lease.
    assert_eq!(a.give_up_after(), Duration::from_secs(5));
    clock.advance(Duration::from_millis(4900));
    assert!(a.renew().await.is_empty(), "still trying");
    clock.advance(Duration::from_millis(100));
    assert_eq!(a.renew().await, vec!["s0".to_string()]);
}
