//! The lease metrics follow what the coordinators do: takes, a steal to
//! balance, the loss the robbed worker notices, a release, and the held
//! gauge (metrics-util's debugging recorder; the only test of this binary,
//! since a recorder is global).

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use unistream_core::clock::VirtualClock;
use unistream_leases::{Coordinator, Lease, LeaseConfig, LeaseTable, MemoryLeaseTable};

#[tokio::test]
async fn lease_events_are_counted_per_worker() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    let table = MemoryLeaseTable::default();
    for s in ["s0", "s1"] {
        table.create(&Lease::new(s, Vec::new())).await.unwrap();
    }
    let clock = VirtualClock::default();
    let config = LeaseConfig::new(Duration::from_secs(8));
    let mut a = Coordinator::new(table.clone(), "a", config.clone()).with_clock(clock.clone());
    let mut b = Coordinator::new(table.clone(), "b", config).with_clock(clock.clone());
    a.balance().await.unwrap(); // a takes both
    b.balance().await.unwrap(); // b steals one (2 > share 1)
    let lost = a.renew().await; // a finds it gone
    assert_eq!(lost.len(), 1);
    let held_by_b = b.held();
    b.release(&held_by_b[0]).await.unwrap();

    let mut counters: HashMap<(String, String), u64> = HashMap::new();
    let mut gauges: HashMap<(String, String), f64> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let worker = key
            .key()
            .labels()
            .find(|l| l.key() == "worker")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let name = key.key().name().to_owned();
        match value {
            DebugValue::Counter(n) => {
                counters.insert((name, worker), n);
            }
            DebugValue::Gauge(g) => {
                gauges.insert((name, worker), g.into_inner());
            }
            DebugValue::Histogram(_) => {}
        }
    }
    let c = |name: &str, w: &str| {
        counters
            .get(&(name.to_owned(), w.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let g = |w: &str| {
        gauges
            .get(&("unistream_leases_held".to_owned(), w.to_owned()))
            .copied()
    };
    assert_eq!(c("unistream_leases_taken_total", "a"), 2);
    assert_eq!(c("unistream_leases_taken_total", "b"), 1);
    assert_eq!(c("unistream_leases_stolen_total", "b"), 1);
    assert_eq!(c("unistream_leases_lost_total", "a"), 1);
    assert_eq!(c("unistream_leases_released_total", "b"), 1);
    assert_eq!(g("a"), Some(1.0));
    assert_eq!(g("b"), Some(0.0));
}
