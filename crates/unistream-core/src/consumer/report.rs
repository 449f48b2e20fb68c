//! What the engine reports: [`BatchReport`] per batch, [`RunSummary`] per
//! run.

#[cfg(doc)]
use super::Consumer;

/// What one [`Consumer::process_batch`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// The batch worked on (0 if none yet).
    pub batch_sequence: u64,
    /// Records in the batch.
    pub records: usize,
    /// Records newly fetched by this call (0 when an unfinished batch was
    /// resumed).
    pub fetched: usize,
    /// Attempts run.
    pub attempts: u32,
    /// Attempts that failed.
    pub failures: u32,
    /// Records that succeeded in this call.
    pub succeeded: usize,
    /// Records ignored in this call.
    pub ignored: usize,
    /// Records handed to the dead-letter queue in this call.
    pub dead_lettered: usize,
    /// Records of the new batch that a filter dropped (settled as ignored
    /// without an attempt; not counted in `ignored`).
    pub filtered: usize,
    /// Records that reached `max_record_age` and were exhausted without
    /// another attempt (their letters are counted in `dead_lettered`).
    pub aged_out: usize,
    /// The pull found nothing new.
    pub caught_up: bool,
    /// The stream is closed and fully processed.
    pub closed: bool,
    /// Shutdown was requested; the state is saved and the batch unfinished.
    pub interrupted: bool,
    /// How far behind the stream's tip the pull was, if the source knows.
    pub millis_behind: Option<u64>,
    /// After a pull that found nothing: how long to wait before the next,
    /// if the source says ([`Fetched::idle_delay`]; `None`: the consumer's
    /// `delay`).
    ///
    /// [`Fetched::idle_delay`]: crate::source::Fetched::idle_delay
    pub idle_delay: Option<std::time::Duration>,
}

/// Totals of a [`Consumer::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// `process_batch` calls.
    pub pulls: u64,
    /// Records fetched.
    pub fetched: u64,
    /// Attempts run.
    pub attempts: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Records that succeeded.
    pub succeeded: u64,
    /// Records ignored.
    pub ignored: u64,
    /// Records sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Records dropped by a filter.
    pub filtered: u64,
    /// Records that reached `max_record_age`.
    pub aged_out: u64,
    /// The run ended because the stream is closed.
    pub closed: bool,
    /// The run ended on a shutdown request.
    pub interrupted: bool,
}

impl RunSummary {
    pub(super) fn add(&mut self, r: &BatchReport) {
        self.pulls += 1;
        self.fetched += r.fetched as u64;
        self.attempts += u64::from(r.attempts);
        self.failures += u64::from(r.failures);
        self.succeeded += r.succeeded as u64;
        self.ignored += r.ignored as u64;
        self.dead_lettered += r.dead_lettered as u64;
        self.filtered += r.filtered as u64;
        self.aged_out += r.aged_out as u64;
        self.closed = r.closed;
        self.interrupted = r.interrupted;
    }
}
