//! The failure controls of Lambda's Kinesis event source mapping as
//! command-line flags, shared by the consumer examples ([`Controls`]), and
//! the demo processor in slices ([`DemoSlices`]).

use std::time::Duration;

use unistream::BoxError;
use unistream::consumer::{ConsumerConfig, Outcome, SliceItem, SliceProcessor, SliceResult};
use unistream::filter::FilterCriteria;

use crate::{DemoProcessor, MyRecord, RandomError};

/// `--max-record-age-s`, `--attempt-timeout-ms`, `--slice-size`,
/// `--bisect`, `--filter`, `--idempotent` (see docs/lambda.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Controls {
    /// Records older than this many seconds go to the dead-letter queue
    /// without another attempt (Lambda's MaximumRecordAgeInSeconds).
    #[arg(long, value_name = "SECONDS")]
    pub max_record_age_s: Option<u64>,
    /// An attempt running longer than this is cancelled and counts as
    /// failed (Lambda's function timeout).
    #[arg(long, value_name = "MS")]
    pub attempt_timeout_ms: Option<u64>,
    /// Process in slices of this many records, each slice one bulk call that
    /// fails as a whole when one of its records fails (0: one record per
    /// call).
    #[arg(long, default_value_t = 0)]
    pub slice_size: usize,
    /// Split a slice that failed as a whole in halves until the failing
    /// records are alone (Lambda's BisectBatchOnFunctionError).
    #[arg(long)]
    pub bisect: bool,
    /// Keep only the records that match one of these patterns: Lambda's
    /// FilterCriteria JSON (`{"Filters": [{"Pattern": "..."}]}`) or a
    /// pattern object.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Run each record's effect (the target write) at most once per record
    /// id, across retries, crashes and redrives.
    #[arg(long)]
    pub idempotent: bool,
}

impl Controls {
    /// The configuration with these controls.
    ///
    /// # Errors
    ///
    /// [`unistream::Error::Config`] if `--filter` is not a valid pattern,
    /// or `--bisect` is given without `--slice-size`.
    pub fn apply(&self, config: ConsumerConfig) -> unistream::Result<ConsumerConfig> {
        if self.bisect && self.slice_size == 0 {
            return Err(unistream::Error::Config(
                "--bisect splits slices: give --slice-size too".into(),
            ));
        }
        let filter = match &self.filter {
            Some(json) => Some(
                FilterCriteria::from_json(json)
                    .map_err(|e| unistream::Error::Config(format!("--filter: {e}")))?,
            ),
            None => None,
        };
        let mut config = config
            .max_record_age(self.max_record_age_s.map(Duration::from_secs))
            .attempt_timeout(self.attempt_timeout_ms.map(Duration::from_millis))
            .bisect_on_error(self.bisect)
            .filter(filter);
        if self.slice_size > 0 {
            config = config.slice_size(self.slice_size);
        }
        Ok(config)
    }
}

/// The demo processor as one bulk call per slice: the slice fails as a whole
/// (no per-record outcomes) if one of its records fails, else every record
/// is appended to the target. It writes no attempt log.
#[derive(Debug)]
pub struct DemoSlices(pub DemoProcessor);

impl SliceProcessor for DemoSlices {
    type Record = MyRecord;

    async fn process_slice(&self, slice: &[SliceItem<'_, MyRecord>]) -> SliceResult {
        let p = &self.0;
        if !p.work.is_zero() {
            tokio::time::sleep(p.work).await;
        }
        if let Some(bad) = slice.iter().find(|i| p.fails(i.record, i.attempt.number)) {
            p.failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let e: BoxError = Box::new(RandomError(bad.record.id.clone()));
            return Err(format!("bulk write of {} records failed: {e}", slice.len()).into());
        }
        let mut lines = String::new();
        for i in slice {
            lines.push_str(&i.record.to_json());
            lines.push('\n');
        }
        p.target.append(lines.as_bytes())?;
        Ok(slice.iter().map(|_| Ok(Outcome::Succeeded)).collect())
    }
}
