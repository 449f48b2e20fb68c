//! The producer's metrics, through the [`metrics`](::metrics) facade: the
//! handles are taken when the producer is built, and the buffer is asked
//! for its sizes only if a recorder took the backlog gauges. Names, units
//! and labels: `docs/operations.md`.

use ::metrics::{Counter, Gauge, Histogram};

use crate::buffer::Buffer;

/// The producer's metric handles (`docs/operations.md`).
pub(super) struct ProducerMetrics {
    pub(super) put: Counter,
    pub(super) sent: Counter,
    pub(super) rejected: Counter,
    pub(super) sends_failed: Counter,
    pub(super) send_seconds: Histogram,
    pub(super) hold_seconds: Histogram,
    backlog_records: Gauge,
    backlog_bytes: Gauge,
    /// Only for a buffer made of segment files.
    backlog_segments: Option<Gauge>,
    /// Whether a recorder took the backlog gauges (else the buffer is not
    /// asked for its sizes).
    backlog_live: bool,
}

/// Sets `gauge` to `value`; returns whether a recorder took it (it is not a
/// no-op handle: a handle works the value out only when it has somewhere to
/// record it).
fn set_live(gauge: &Gauge, value: f64) -> bool {
    struct Probe<'a>(f64, &'a std::cell::Cell<bool>);
    impl ::metrics::IntoF64 for Probe<'_> {
        fn into_f64(self) -> f64 {
            self.1.set(true);
            self.0
        }
    }
    let live = std::cell::Cell::new(false);
    gauge.set(Probe(value, &live));
    live.get()
}

impl ProducerMetrics {
    /// Registers the handles and sets the backlog gauges to what `buffer`
    /// holds (e.g. records recovered from a write-ahead log).
    pub(super) fn new(buffer: &impl Buffer) -> Self {
        let stats = buffer.stats();
        let backlog_records = ::metrics::gauge!("unistream_producer_backlog_records");
        let backlog_live = set_live(&backlog_records, stats.records as f64);
        let m = ProducerMetrics {
            put: ::metrics::counter!("unistream_producer_records_put_total"),
            sent: ::metrics::counter!("unistream_producer_records_sent_total"),
            rejected: ::metrics::counter!("unistream_producer_records_rejected_total"),
            sends_failed: ::metrics::counter!("unistream_producer_sends_failed_total"),
            send_seconds: ::metrics::histogram!("unistream_producer_send_seconds"),
            hold_seconds: ::metrics::histogram!("unistream_producer_hold_seconds"),
            backlog_records,
            backlog_bytes: ::metrics::gauge!("unistream_producer_backlog_bytes"),
            backlog_segments: stats
                .segments
                .map(|_| ::metrics::gauge!("unistream_producer_backlog_segments")),
            backlog_live,
        };
        m.backlog(buffer);
        m
    }

    /// Sets the backlog gauges from what the buffer holds (its own counters:
    /// no file is read), if a recorder took them.
    pub(super) fn backlog(&self, buffer: &impl Buffer) {
        if !self.backlog_live {
            return;
        }
        let stats = buffer.stats();
        self.backlog_records.set(stats.records as f64);
        self.backlog_bytes.set(stats.bytes as f64);
        if let (Some(gauge), Some(segments)) = (&self.backlog_segments, stats.segments) {
            gauge.set(segments as f64);
        }
    }
}
