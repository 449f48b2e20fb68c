//! [`Position`]: a place in a shard, typed — what a [`KinesisSource`]
//! keeps as its checkpoint pointer, parsed once.
//!
//! | pointer text | position | read from it |
//! |---|---|---|
//! | `TRIM_HORIZON` | [`Position::TrimHorizon`] | the oldest record kept |
//! | `LATEST` | [`Position::Latest`] | records written after the first read |
//! | `AT_TIMESTAMP:<ms>` | [`Position::AtTimestamp`] | records written at or after that time |
//! | `<sequence>` | [`Position::After`] | records after that one |
//! | `<sequence>:<sub-sequence>` | [`Position::InAggregate`] | user records after that one of a KPL aggregate (the aggregate is read again) |
//!
//! [`KinesisSource`]: crate::KinesisSource

use std::fmt;
use std::str::FromStr;

use aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use chrono::{DateTime, Utc};
use unistream_core::source::Pointer;

/// A place in a shard: where reading goes on from.
///
/// Parsed from and shown as the checkpoint's pointer text (see the module
/// docs); the text of a parsed position is the text it was parsed from.
///
/// ```
/// use unistream_kinesis::Position;
/// let p: Position = "49590338271490256608559692538361571095921575989136588898:3".parse().unwrap();
/// assert_eq!(
///     p,
///     Position::InAggregate {
///         sequence: "49590338271490256608559692538361571095921575989136588898".into(),
///         sub_sequence: 3
///     }
/// );
/// assert_eq!(p.to_string(), "49590338271490256608559692538361571095921575989136588898:3");
/// assert!("12@40".parse::<Position>().is_err()); // a file position
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Records written after the first read.
    Latest,
    /// Records written at or after this time (whole milliseconds).
    AtTimestamp(DateTime<Utc>),
    /// Records after the one with this sequence number.
    After(String),
    /// User records after sub-sequence number `sub_sequence` of the KPL
    /// aggregate at `sequence`.
    InAggregate {
        /// The aggregate's sequence number.
        sequence: String,
        /// The user record's index in the aggregate.
        sub_sequence: u64,
    },
}

/// Text that is no Kinesis position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Kinesis position: {reason}")]
pub struct PositionError {
    /// The text.
    pub text: String,
    /// Why.
    pub reason: &'static str,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `<sequence>:<sub-sequence>` split, both all digits (the sub-sequence
/// not range-checked yet).
fn split_user_record(text: &str) -> Option<(&str, &str)> {
    text.split_once(':')
        .filter(|(sequence, sub)| digits(sequence) && digits(sub))
}

/// The aggregate's sequence number and the user record's index of a
/// `<sequence>:<sub-sequence>` pointer, borrowed from it (no allocation: the
/// source asks this of every pointer it reads back); `None` for any other
/// text.
pub(crate) fn user_record(text: &str) -> Option<(&str, u64)> {
    let (sequence, sub) = split_user_record(text)?;
    Some((sequence, sub.parse().ok()?))
}

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(text: &str) -> Result<Self, PositionError> {
        let error = |reason| PositionError {
            text: text.to_owned(),
            reason,
        };
        match text {
            "TRIM_HORIZON" => return Ok(Position::TrimHorizon),
            "LATEST" => return Ok(Position::Latest),
            _ => {}
        }
        if let Some(ms) = text.strip_prefix("AT_TIMESTAMP:") {
            let time = ms
                .parse::<i64>()
                .ok()
                .filter(|_| digits(ms))
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| error("AT_TIMESTAMP needs milliseconds since the epoch"))?;
            return Ok(Position::AtTimestamp(time));
        }
        if digits(text) {
            return Ok(Position::After(text.to_owned()));
        }
        if let Some((sequence, sub)) = split_user_record(text) {
            let sub_sequence = sub
                .parse()
                .map_err(|_| error("the sub-sequence number is out of range"))?;
            return Ok(Position::InAggregate {
                sequence: sequence.to_owned(),
                sub_sequence,
            });
        }
        Err(error(Position::SHAPES))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::TrimHorizon => f.write_str("TRIM_HORIZON"),
            Position::Latest => f.write_str("LATEST"),
            Position::AtTimestamp(t) => write!(f, "AT_TIMESTAMP:{}", t.timestamp_millis()),
            Position::After(sequence) => f.write_str(sequence),
            Position::InAggregate {
                sequence,
                sub_sequence,
            } => write!(f, "{sequence}:{sub_sequence}"),
        }
    }
}

impl Position {
    /// The shapes of a position's text, for messages.
    pub const SHAPES: &'static str = "expected a sequence number, <sequence number>:<sub-sequence number>, TRIM_HORIZON, LATEST or AT_TIMESTAMP:<ms>";

    /// The position a checkpoint pointer holds.
    ///
    /// # Errors
    ///
    /// [`PositionError`] if it is no Kinesis position.
    pub fn from_pointer(pointer: &Pointer) -> Result<Self, PositionError> {
        pointer.as_str().parse()
    }

    /// As a checkpoint pointer.
    pub fn to_pointer(&self) -> Pointer {
        Pointer::new(self.to_string())
    }

    /// The sequence number of a user record inside an aggregate, and its
    /// index (`None` for every other position).
    pub fn in_aggregate(&self) -> Option<(&str, u64)> {
        match self {
            Position::InAggregate {
                sequence,
                sub_sequence,
            } => Some((sequence, *sub_sequence)),
            _ => None,
        }
    }

    /// A `GetShardIterator` request that reads from here: the aggregate of
    /// a user record is read again (`AT_SEQUENCE_NUMBER`), a whole record's
    /// successors `AFTER_SEQUENCE_NUMBER`.
    pub fn iterator_request(
        &self,
        request: GetShardIteratorFluentBuilder,
    ) -> GetShardIteratorFluentBuilder {
        match self {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AtTimestamp(t) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(AwsDateTime::from_millis(t.timestamp_millis())),
            Position::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            Position::InAggregate { sequence, .. } => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
        }
    }
}

impl From<crate::StartingPosition> for Position {
    fn from(start: crate::StartingPosition) -> Self {
        match start {
            crate::StartingPosition::TrimHorizon => Position::TrimHorizon,
            crate::StartingPosition::Latest => Position::Latest,
            crate::StartingPosition::AtTimestamp(t) => {
                // Whole milliseconds, as stored.
                Position::AtTimestamp(
                    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_round_trips_through_its_text() {
        for text in [
            "TRIM_HORIZON",
            "LATEST",
            "AT_TIMESTAMP:1704781446123",
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588898:0",
            "1:18446744073709551615",
        ] {
            let p: Position = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.to_string(), text);
            assert_eq!(Position::from_pointer(&p.to_pointer()), Ok(p));
        }
    }

    #[test]
    fn other_text_is_refused_with_its_reason() {
        for (text, reason) in [
            ("", "expected"),
            ("12@40", "expected"),
            ("12:", "expected"),
            (":3", "expected"),
            ("-5", "expected"),
            ("trim_horizon", "expected"),
            ("AT_TIMESTAMP:", "milliseconds"),
            ("AT_TIMESTAMP:-1", "milliseconds"),
            ("AT_TIMESTAMP:1e3", "milliseconds"),
            ("1:18446744073709551616", "out of range"),
        ] {
            let e = text
                .parse::<Position>()
                .err()
                .unwrap_or_else(|| panic!("{text:?} parsed"));
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_starting_position_is_the_same_position() {
        let t = DateTime::from_timestamp_millis(1_704_781_446_123).unwrap_or_default();
        for (start, text) in [
            (crate::StartingPosition::TrimHorizon, "TRIM_HORIZON"),
            (crate::StartingPosition::Latest, "LATEST"),
            (
                crate::StartingPosition::AtTimestamp(t),
                "AT_TIMESTAMP:1704781446123",
            ),
        ] {
            assert_eq!(Position::from(start).to_string(), text);
            assert_eq!(start.to_pointer().as_str(), text);
        }
    }
}
