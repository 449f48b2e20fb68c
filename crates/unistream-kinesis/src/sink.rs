//! [`KinesisSink`]: the producer's sink over `PutRecords` (limits, per-key
//! ordering, partial failures; see `docs/kinesis.md`).

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tracing::{debug, error, warn};
use unistream_core::BoxError;
use unistream_core::ErrorInfo;
use unistream_core::sink::{Delivery, EncodedRecord, Refusal, SetAside, Sink};

/// Most records in one `PutRecords` call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data and partition keys) in one `PutRecords` call.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Most bytes of one record (data and partition key), the Kinesis default.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// How a batch is split into `PutRecords` calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    /// No call holds two records of the same partition key, and after a
    /// record fails, later records of its key are held back: a later record
    /// of a key is never stored before an earlier one. Batches where one key
    /// repeats need more calls.
    #[default]
    PerKey,
    /// Calls as full as the limits allow; after a partial failure, a later
    /// record of a key may be stored before an earlier one that is retried.
    None,
}

/// A producer sink over Kinesis `PutRecords`.
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) {
/// use unistream_kinesis::KinesisSink;
/// let sink = KinesisSink::new(client, "my-stream");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: Client,
    stream: String,
    max_record_bytes: usize,
    ordering: Ordering,
    rejected: Option<Arc<dyn SetAside>>,
}

impl KinesisSink {
    /// A sink into `stream` (a name or an ARN).
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        KinesisSink {
            client,
            stream: stream.into(),
            max_record_bytes: MAX_RECORD_BYTES,
            ordering: Ordering::PerKey,
            rejected: None,
        }
    }

    /// Where records too large for the stream go if they are already in the
    /// producer's buffer (`validate` refuses new ones at `put`; old ones can
    /// be there after the limit was lowered): one JSON line each, with the
    /// record's id, key, size and bytes (base64) — into a file with
    /// `unistream_local::AppendFile`. Without it, such a record makes `send`
    /// fail with an error naming it and this setting, so that nothing is
    /// dropped.
    pub fn with_rejected(mut self, target: impl SetAside + 'static) -> Self {
        self.rejected = Some(Arc::new(target));
        self
    }

    fn set_aside(&self, r: &EncodedRecord, size: usize) -> Result<(), BoxError> {
        let Some(file) = &self.rejected else {
            return Err(format!(
                "record {:?} is {size} bytes, over the stream's {} bytes; it can never be sent: \
                 configure KinesisSink::with_rejected to set such records aside",
                r.id, self.max_record_bytes
            )
            .into());
        };
        let line = serde_json::json!({
            "record_id": r.id,
            "partition_key": r.partition_key,
            "bytes": size,
            "max_record_bytes": self.max_record_bytes,
            "stream": self.stream,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&r.data),
        });
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        file.set_aside(&bytes)?;
        error!(record_id = %r.id, size, max = self.max_record_bytes, to = %file.location(), "record too large for the stream; set aside");
        Ok(())
    }

    /// The stream's maximum record size, if it is not the default 1 MiB.
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// How batches are split (default [`Ordering::PerKey`]).
    pub fn with_ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Splits the records of `batch` at `indexes` into the calls to make.
    fn calls(&self, batch: &[EncodedRecord], indexes: &[usize]) -> Vec<Vec<usize>> {
        let mut calls = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut bytes = 0;
        let mut keys: HashSet<&str> = HashSet::new();
        for &i in indexes {
            let r = &batch[i];
            let size = r.data.len() + r.partition_key.len();
            let repeat =
                self.ordering == Ordering::PerKey && keys.contains(r.partition_key.as_str());
            if !current.is_empty()
                && (current.len() == MAX_RECORDS_PER_CALL
                    || bytes + size > MAX_REQUEST_BYTES
                    || repeat)
            {
                calls.push(std::mem::take(&mut current));
                bytes = 0;
                keys.clear();
            }
            current.push(i);
            bytes += size;
            keys.insert(&r.partition_key);
        }
        if !current.is_empty() {
            calls.push(current);
        }
        calls
    }
}

fn entry(r: &EncodedRecord) -> Result<PutRecordsRequestEntry, BoxError> {
    Ok(PutRecordsRequestEntry::builder()
        .data(Blob::new(r.data.clone()))
        .partition_key(&r.partition_key)
        .set_explicit_hash_key(r.explicit_hash_key.clone())
        .build()?)
}

impl Sink for KinesisSink {
    fn validate(&self, r: &EncodedRecord) -> Result<(), Refusal> {
        let key_chars = r.partition_key.chars().count();
        if !(1..=256).contains(&key_chars) {
            return Err(Refusal::PartitionKey(format!(
                "a Kinesis partition key has 1 to 256 characters; this one has {key_chars}"
            )));
        }
        let size = r.data.len() + r.partition_key.len();
        if size > self.max_record_bytes {
            return Err(Refusal::TooLarge {
                bytes: size,
                max: self.max_record_bytes,
            });
        }
        Ok(())
    }

    async fn send(&self, batch: &[EncodedRecord]) -> Result<Delivery, BoxError> {
        let mut rejected: Vec<usize> = Vec::new();
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let mut accepted = 0usize;
        let mut last_error: Option<String> = None;
        let mut sendable = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            let size = r.data.len() + r.partition_key.len();
            if size > self.max_record_bytes {
                self.set_aside(r, size)?;
                accepted += 1;
            } else {
                sendable.push(i);
            }
        }
        let calls = self.calls(batch, &sendable);
        for (n, call) in calls.iter().enumerate() {
            // Held back: a record whose key already failed in this batch.
            let (held, send): (Vec<usize>, Vec<usize>) = call.iter().partition(|&&i| {
                self.ordering == Ordering::PerKey
                    && failed_keys.contains(batch[i].partition_key.as_str())
            });
            rejected.extend(held);
            if send.is_empty() {
                continue;
            }
            let entries = send
                .iter()
                .map(|&i| entry(&batch[i]))
                .collect::<Result<Vec<_>, _>>()?;
            let out = match self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    let e = aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
                    if accepted == 0 {
                        return Err(format!("PutRecords into {}: {e}", self.stream).into());
                    }
                    // Something was stored already: report the rest as not accepted.
                    rejected.extend(calls[n..].iter().flatten().copied());
                    last_error = Some(e);
                    break;
                }
            };
            for (&i, result) in send.iter().zip(out.records()) {
                if let Some(code) = result.error_code() {
                    rejected.push(i);
                    failed_keys.insert(&batch[i].partition_key);
                    last_error = Some(format!(
                        "{code}: {}",
                        result.error_message().unwrap_or_default()
                    ));
                } else {
                    accepted += 1;
                }
            }
            if out.records().len() < send.len() {
                // A malformed answer: treat the records without a result as failed.
                rejected.extend(&send[out.records().len()..]);
            }
            debug!(stream = %self.stream, records = send.len(), failed = out.failed_record_count().unwrap_or(0), "PutRecords");
        }
        if rejected.is_empty() {
            return Ok(Delivery::All);
        }
        rejected.sort_unstable();
        rejected.dedup();
        if accepted == 0 && rejected.len() == batch.len() {
            return Err(last_error
                .unwrap_or_else(|| "every record failed".into())
                .into());
        }
        warn!(stream = %self.stream, rejected = rejected.len(), of = batch.len(), "PutRecords partly failed");
        Ok(Delivery::Partial {
            rejected,
            error: ErrorInfo::new(last_error.unwrap_or_else(|| "records failed".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(ordering: Ordering) -> KinesisSink {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .build();
        KinesisSink::new(Client::from_conf(config), "s").with_ordering(ordering)
    }

    fn rec(id: usize, key: &str, size: usize) -> EncodedRecord {
        EncodedRecord::new(id.to_string(), key, vec![b'x'; size])
    }

    #[test]
    fn calls_respect_the_record_and_byte_limits() {
        let s = sink(Ordering::None);
        let batch: Vec<_> = (0..1200).map(|i| rec(i, &i.to_string(), 10)).collect();
        let calls = s.calls(&batch, &(0..batch.len()).collect::<Vec<_>>());
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let big: Vec<_> = (0..12).map(|i| rec(i, "k", 1_000_000)).collect();
        let calls = s.calls(&big, &(0..big.len()).collect::<Vec<_>>());
        assert!(calls.iter().all(|c| c.len() <= 5), "{calls:?}");
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 12);
    }

    #[test]
    fn per_key_ordering_never_puts_a_key_twice_in_a_call() {
        let s = sink(Ordering::PerKey);
        let batch = vec![
            rec(0, "a", 1),
            rec(1, "b", 1),
            rec(2, "a", 1),
            rec(3, "c", 1),
            rec(4, "a", 1),
        ];
        assert_eq!(
            s.calls(&batch, &[0, 1, 2, 3, 4]),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn validate_checks_size_and_key() {
        let s = sink(Ordering::PerKey).with_max_record_bytes(100);
        assert!(s.validate(&rec(1, "k", 99)).is_ok());
        assert!(
            s.validate(&rec(1, "k", 100))
                .unwrap_err()
                .to_string()
                .contains("101 bytes")
        );
        assert!(s.validate(&rec(1, "", 1)).is_err());
        assert!(s.validate(&rec(1, &"k".repeat(257), 1)).is_err());
    }
}
