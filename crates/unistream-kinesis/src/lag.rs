//! [`shard_lag`]: how many records of a shard lie after a position.
//!
//! Kinesis has no call that returns a shard's latest sequence number, so
//! the shard is read from the position on (`GetRecords`, at most `max_read`
//! records, 10,000 per call) until its tip (`MillisBehindLatest` 0 with a
//! short page, or the end of a closed shard): the records behind are
//! counted exactly when the tip is reached, and as "at least" when not.
//! Each call counts against the shard's 5 reads a second, shared with its
//! consumer.

use aws_sdk_kinesis::Client;

use crate::aggregation;
use crate::error::KinesisError;
use crate::position::Position;

/// How far a position is from its shard's tip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardLag {
    /// Kinesis records after the position (a KPL aggregate counts once; the
    /// aggregate a user-record position is inside counts unless that user
    /// record is its last).
    pub records_behind: usize,
    /// The tip was reached: `records_behind` is exact (else it is a lower
    /// bound: `max_read` records, or the call bound, came first).
    pub at_tip: bool,
    /// The sequence number of the last record read (the tip's when
    /// `at_tip`); `None` if none was read.
    pub latest_sequence: Option<String>,
    /// `MillisBehindLatest` of the first read.
    pub millis_behind: Option<i64>,
    /// `GetRecords` calls made.
    pub get_records_calls: u32,
}

impl ShardLag {
    /// Nothing behind, the tip reached: a shard its consumer finished.
    pub fn caught_up() -> Self {
        ShardLag {
            at_tip: true,
            ..ShardLag::default()
        }
    }
}

/// Reads `shard` of `stream` from `from` towards its tip, reading at most
/// `max_read` records (and `10 + max_read / 10,000` calls, so that a long
/// empty shard is not walked forever), and says how far behind `from` is.
///
/// # Errors
///
/// [`unistream_core::Error::Denied`] if `kinesis:GetShardIterator` or
/// `kinesis:GetRecords` is not allowed, else [`KinesisError::Api`].
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) -> unistream_core::Result<()> {
/// use unistream_kinesis::{Position, shard_lag};
/// let from: Position = "TRIM_HORIZON".parse().unwrap();
/// let lag = shard_lag(&client, "orders", "shardId-000000000000", &from, 10_000).await?;
/// println!("{}{} records behind", if lag.at_tip { "" } else { ">" }, lag.records_behind);
/// # Ok(())
/// # }
/// ```
pub async fn shard_lag(
    client: &Client,
    stream: &str,
    shard: &str,
    from: &Position,
    max_read: usize,
) -> Result<ShardLag, unistream_core::Error> {
    let request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let out = from
        .iterator_request(request)
        .send()
        .await
        .map_err(|e| api_error(stream, shard, "GetShardIterator", e))?;
    // A user record's aggregate is read again: it counts as behind unless
    // that user record is its last.
    let mut inside = from.in_aggregate();
    let mut lag = ShardLag::default();
    let mut iterator = out.shard_iterator;
    let max_calls = 10 + max_read / 10_000;
    while let Some(it) = iterator.take() {
        if lag.records_behind >= max_read || lag.get_records_calls as usize >= max_calls {
            return Ok(lag);
        }
        lag.get_records_calls += 1;
        let limit = (max_read - lag.records_behind).clamp(1, 10_000);
        let out = client
            .get_records()
            .shard_iterator(it)
            .limit(i32::try_from(limit).unwrap_or(10_000))
            .send()
            .await
            .map_err(|e| api_error(stream, shard, "GetRecords", e))?;
        if lag.millis_behind.is_none() {
            lag.millis_behind = out.millis_behind_latest;
        }
        let mut behind = out.records().len();
        if let Some((sequence, sub)) = inside.take()
            && let Some(first) = out.records().first()
            && first.sequence_number() == sequence
            && aggregation::decode(first.data().as_ref())
                .ok()
                .flatten()
                .is_none_or(|users| sub.saturating_add(1) >= users.len() as u64)
        {
            // Past the aggregate's last user record (or past a record
            // handed out whole).
            behind -= 1;
        }
        lag.records_behind += behind;
        if let Some(last) = out.records().last() {
            lag.latest_sequence = Some(last.sequence_number().to_owned());
        }
        // The tip: nothing after this page (`MillisBehindLatest` 0 is in
        // whole milliseconds, so a full page may still have records after
        // it: read once more), or the end of a closed shard.
        let short_page = out.records().len() < limit;
        if out.next_shard_iterator.is_none() || (out.millis_behind_latest == Some(0) && short_page)
        {
            lag.at_tip = true;
            return Ok(lag);
        }
        iterator = out.next_shard_iterator;
    }
    lag.at_tip = true;
    Ok(lag)
}

/// A failed call: [`unistream_core::Error::Denied`] if refused, else
/// [`KinesisError::Api`].
fn api_error<E>(
    stream: &str,
    shard: &str,
    operation: &'static str,
    e: aws_sdk_kinesis::error::SdkError<E>,
) -> unistream_core::Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
    aws_sdk_kinesis::error::SdkError<E>: Into<aws_sdk_kinesis::Error>,
{
    unistream_aws::denied(&e, &format!("kinesis:{operation}"), || {
        format!("stream {stream} shard {shard}")
    })
    .unwrap_or_else(|| {
        KinesisError::Api {
            operation,
            stream: stream.to_owned(),
            shard: Some(shard.to_owned()),
            source: Box::new(e.into()),
        }
        .into()
    })
}
