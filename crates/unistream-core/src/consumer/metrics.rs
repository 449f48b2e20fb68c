//! The consumer's metrics, through the [`metrics`](::metrics) facade (the
//! library installs no exporter; an application installs one, e.g.
//! `metrics-exporter-prometheus`). The step's counters are recorded once
//! per `process_batch` step from its report; checkpoint writes are timed
//! around the store calls themselves — one clock read per call (a call's
//! end is the next call's start), one for the `save_tracker` calls of a
//! write together, and none at all when no recorder took the histograms —
//! and the in-flight gauge is set when records start and settle. Names,
//! units and labels: `docs/operations.md`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, IntoF64};

use super::report::BatchReport;

/// Records what one step did (also a failed one: what it did before the
/// error).
pub(super) fn batch(consumer: &str, r: &BatchReport, took: Duration, failed: bool) {
    let labels = [("consumer", consumer.to_owned())];
    let count = |name: &'static str, n: u64| {
        if n > 0 {
            ::metrics::counter!(name, &labels).increment(n);
        }
    };
    count("unistream_consumer_records_fetched_total", r.fetched as u64);
    count(
        "unistream_consumer_records_succeeded_total",
        r.succeeded as u64,
    );
    count("unistream_consumer_records_ignored_total", r.ignored as u64);
    count(
        "unistream_consumer_records_dead_lettered_total",
        r.dead_lettered as u64,
    );
    count(
        "unistream_consumer_records_filtered_total",
        r.filtered as u64,
    );
    count(
        "unistream_consumer_records_aged_out_total",
        r.aged_out as u64,
    );
    count("unistream_consumer_attempts_total", u64::from(r.attempts));
    count(
        "unistream_consumer_failed_attempts_total",
        u64::from(r.failures),
    );
    count("unistream_consumer_step_errors_total", u64::from(failed));
    ::metrics::histogram!("unistream_consumer_step_seconds", &labels).record(took.as_secs_f64());
    ::metrics::gauge!("unistream_consumer_batch_records", &labels).set(r.records as f64);
    if let Some(behind) = r.millis_behind {
        ::metrics::gauge!("unistream_consumer_millis_behind_latest", &labels).set(behind as f64);
    }
}

/// Which [`CheckpointStore`](crate::checkpoint::CheckpointStore) method a
/// checkpoint write called (the `kind` label).
#[derive(Debug, Clone, Copy)]
pub(super) enum Write {
    /// `save_batch`.
    Batch,
    /// `save_tracker`.
    Tracker,
    /// `sync`.
    Sync,
    /// `save_commit`.
    Commit,
}

/// The latency histogram and call counter of one kind of write.
struct Timed {
    seconds: Histogram,
    calls: Counter,
}

/// Whether a recorder took `histogram` (it is not a no-op handle): asks it
/// to record a value zero times, and a handle works the value out only when
/// it has somewhere to record it. So the engine reads no clock for a
/// latency nothing would keep.
fn records(histogram: &Histogram) -> bool {
    struct Probe<'a>(&'a Cell<bool>);
    impl IntoF64 for Probe<'_> {
        fn into_f64(self) -> f64 {
            self.0.set(true);
            0.0
        }
    }
    let live = Cell::new(false);
    histogram.record_many(Probe(&live), 0);
    live.get()
}

impl Timed {
    fn new(consumer: &str, kind: &'static str) -> Self {
        Timed {
            seconds: ::metrics::histogram!(
                "unistream_consumer_checkpoint_write_seconds",
                "consumer" => consumer.to_owned(),
                "kind" => kind
            ),
            calls: ::metrics::counter!(
                "unistream_consumer_checkpoint_writes_total",
                "consumer" => consumer.to_owned(),
                "kind" => kind
            ),
        }
    }
}

/// The handles the engine records into while records run, registered when
/// the consumer is built (on the per-record path: no registration, no
/// allocation, and no clock read unless a recorder took the histograms).
pub(super) struct EngineMetrics {
    batch: Timed,
    tracker: Timed,
    sync: Timed,
    commit: Timed,
    /// Records whose attempt is running now.
    in_flight: Gauge,
    /// Calls cancelled at the attempt timeout.
    pub(super) timed_out: Counter,
    /// Extra calls made by bisecting failed slices.
    pub(super) bisect_calls: Counter,
    /// Whether writes are timed (a recorder took a latency histogram).
    timing: bool,
}

impl EngineMetrics {
    pub(super) fn new(consumer: &str) -> Self {
        let [batch, tracker, sync, commit] =
            ["batch", "tracker", "sync", "commit"].map(|kind| Timed::new(consumer, kind));
        let timing = [&batch, &tracker, &sync, &commit]
            .iter()
            .any(|t| records(&t.seconds));
        EngineMetrics {
            batch,
            tracker,
            sync,
            commit,
            in_flight: ::metrics::gauge!(
                "unistream_consumer_records_in_flight",
                "consumer" => consumer.to_owned()
            ),
            timed_out: ::metrics::counter!(
                "unistream_consumer_attempts_timed_out_total",
                "consumer" => consumer.to_owned()
            ),
            bisect_calls: ::metrics::counter!(
                "unistream_consumer_bisect_calls_total",
                "consumer" => consumer.to_owned()
            ),
            timing,
        }
    }

    /// The start of a store call: now, if writes are timed.
    #[inline]
    pub(super) fn start(&self) -> Option<Instant> {
        self.timing.then(Instant::now)
    }

    /// Records `calls` store calls of `kind` (failed ones too) made one
    /// after the other from `since` until now, as one latency sample (one
    /// call but for a group of `save_tracker`); returns now, the start of a
    /// call that follows at once (`None` if writes are not timed).
    #[inline]
    pub(super) fn wrote(&self, kind: Write, since: Option<Instant>, calls: u64) -> Option<Instant> {
        let timed = match kind {
            Write::Batch => &self.batch,
            Write::Tracker => &self.tracker,
            Write::Sync => &self.sync,
            Write::Commit => &self.commit,
        };
        timed.calls.increment(calls);
        let since = since?;
        let now = Instant::now();
        timed
            .seconds
            .record(now.saturating_duration_since(since).as_secs_f64());
        Some(now)
    }

    /// Sets the in-flight gauge.
    #[inline]
    pub(super) fn in_flight(&self, records: usize) {
        self.in_flight.set(records as f64);
    }
}
