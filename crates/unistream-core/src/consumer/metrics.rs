//! The consumer's metrics, through the [`metrics`](::metrics) facade (the
//! library installs no exporter; an application installs one, e.g.
//! `metrics-exporter-prometheus`). Recorded once per `process_batch` step
//! from its report, so nothing is added to the per-record path. Names,
//! units and labels: `docs/operations.md`.

use std::time::Duration;

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
