//! The error types of `unistream-core`: [`Error`], and the errors the
//! other modules return and re-export at their own paths
//! ([`CodecError`] as `record::CodecError`, [`Refusal`] as `sink::Refusal`).
//! This module depends on no other module of the crate.
//!
//! Every variant carries the context a user needs to act on it: which file and
//! byte offset, which checkpoint store and key, which record id.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A boxed error from user code or a backend (processor, sink, AWS SDK, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a [`CodecError`] happened while encoding or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecDirection {
    /// Record to bytes.
    Encode,
    /// Bytes to record.
    Decode,
}

/// A record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} record: {source}", match direction { CodecDirection::Encode => "encode", CodecDirection::Decode => "decode" })]
pub struct CodecError {
    /// Which way.
    pub direction: CodecDirection,
    /// The codec's error.
    #[source]
    pub source: BoxError,
}

impl CodecError {
    /// A decode error.
    pub fn decode(source: impl Into<BoxError>) -> Self {
        CodecError {
            direction: CodecDirection::Decode,
            source: source.into(),
        }
    }
    /// An encode error.
    pub fn encode(source: impl Into<BoxError>) -> Self {
        CodecError {
            direction: CodecDirection::Encode,
            source: source.into(),
        }
    }
}

/// Why a sink (or the buffer) refuses a record before the producer accepts
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The record (data and partition key) is larger than the sink takes.
    #[error("the record is {bytes} bytes (data and partition key); the sink takes at most {max}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// The most the sink takes.
        max: usize,
    },
    /// The partition key is not one the sink accepts.
    #[error("bad partition key: {0}")]
    PartitionKey(String),
    /// The record holds what the sink's (or the buffer's) format cannot
    /// carry, e.g. a newline in a JSON-lines file.
    #[error("{0}")]
    Unrepresentable(String),
}

/// Everything that can go wrong in the engines and the local backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call on a local file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A file holds bytes that are not what this library wrote there.
    #[error("corrupt data in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first bad byte (start of the bad frame or line).
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A stored checkpoint exists but cannot be read. Never silently reset.
    #[error("cannot read the checkpoint in {store} (key {key:?}): {reason}")]
    CheckpointUnreadable {
        /// Which store (e.g. a directory, a table).
        store: String,
        /// Which key inside the store (e.g. a file name, a partition key value).
        key: String,
        /// Why.
        reason: String,
    },

    /// Another live consumer owns this checkpoint.
    #[error("the checkpoint {key:?} in {store} is owned by another consumer: {detail}")]
    CheckpointOwned {
        /// Which store.
        store: String,
        /// Which key.
        key: String,
        /// Who holds it, if known.
        detail: String,
    },

    /// A file another process holds an exclusive lock on (a running
    /// producer's write-ahead log, a consumer's checkpoint, or an append-only
    /// line file such as a stream or dead-letter file).
    #[error("{} is locked by another process ({what})", path.display())]
    Locked {
        /// The locked file (or its lock file).
        path: PathBuf,
        /// What it protects.
        what: String,
    },

    /// A checkpoint transition was asked for that the state machine forbids.
    #[error("invalid checkpoint transition: {0}")]
    InvalidTransition(String),

    /// A record's lock is held by someone else and has not expired.
    #[error("record {record_id:?} is locked by {lock:?} until {until}")]
    RecordLocked {
        /// The record.
        record_id: String,
        /// The lock id that holds it.
        lock: String,
        /// When that lock expires.
        until: chrono::DateTime<chrono::Utc>,
    },

    /// A pointer does not fit the source (file truncated, wrong format, ...).
    #[error("invalid pointer {pointer:?} for {source_name}: {reason}")]
    InvalidPointer {
        /// The pointer.
        pointer: String,
        /// Which source.
        source_name: String,
        /// Why.
        reason: String,
    },

    /// A backend (stream, store, queue) reported an error.
    #[error("{backend}: {source}")]
    Backend {
        /// Which backend and operation.
        backend: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// The dead-letter queue kept rejecting a record; it stays exhausted and
    /// is sent again on the next `process_batch`.
    #[error("dead-letter queue rejected record {record_id:?}: {source}")]
    DeadLetter {
        /// The record.
        record_id: String,
        /// The last error of the queue.
        #[source]
        source: Box<Error>,
    },

    /// Strict-ordering mode stopped the consumer after a record was exhausted
    /// (it is in the dead-letter queue).
    #[error(
        "consumer halted: record {record_id:?} failed {attempts} attempts and was sent to the dead-letter queue"
    )]
    Halted {
        /// The exhausted record.
        record_id: String,
        /// How many attempts it had.
        attempts: u32,
    },

    /// The buffer holds as many bytes as it may (`max_total_bytes`); the
    /// record was NOT accepted. Nothing was dropped.
    #[error(
        "buffer full: {buffered} bytes buffered, {incoming} more would exceed the cap of {cap} bytes"
    )]
    BufferFull {
        /// Bytes held now.
        buffered: u64,
        /// Bytes of the refused record(s).
        incoming: u64,
        /// The cap.
        cap: u64,
    },

    /// Sending a batch failed. Its records are still in the buffer and will
    /// be sent again: this error never means a record was lost.
    #[error(
        "sending {records} records failed after {failures} consecutive failures (they stay buffered): {source}"
    )]
    SendFailed {
        /// Records of the batch that were not accepted.
        records: usize,
        /// Consecutive failed sends so far.
        failures: u32,
        /// The sink's error.
        #[source]
        source: BoxError,
    },

    /// A record cannot be stored or sent as given (too large for the sink,
    /// an id longer than the buffer's format allows, ...); it was not
    /// accepted.
    #[error("record {record_id:?} rejected: {reason}")]
    InvalidRecord {
        /// The record.
        record_id: String,
        /// Why.
        reason: Refusal,
    },

    /// A record could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The service refused a call for lack of permission or of credentials
    /// it accepts (`AccessDenied`, an unknown or expired key, a bad
    /// signature; `unistream_aws::denial` tells them from other errors). Retrying cannot help, so nothing retries
    /// it: the producer returns it at once (the batch stays buffered) and
    /// the stream consumer stops on it (releasing its leases).
    #[error("{action} on {resource} was denied: {message}")]
    Denied {
        /// The call, as the IAM action a policy must allow
        /// (`kinesis:PutRecords`).
        action: String,
        /// What it was about (`stream orders`, `table checkpoints`,
        /// `s3://bucket/key`, a queue's URL).
        resource: String,
        /// What the service answered (its error code and message).
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// `value` if a builder was given it (and it is not empty), else
    /// [`Error::Config`] naming the builder's setter: `required(None,
    /// "StreamConsumerBuilder::stream")`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `value` is `None` or empty.
    pub fn required(value: Option<String>, setter: &str) -> Result<String> {
        match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Error::Config(format!("{setter} is required"))),
        }
    }

    /// Wraps a backend error with the name of the backend and operation.
    pub fn backend(backend: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend: backend.into(),
            source: source.into(),
        }
    }

    /// A copy of the [`Error::Denied`] that `error` is or is caused by (a
    /// sink's error, a dead-letter error wrapping the queue's, ...).
    pub fn denied_in(error: &(dyn std::error::Error + 'static)) -> Option<Error> {
        let mut next = Some(error);
        while let Some(e) = next {
            // A `Box<Error>` source (as in `DeadLetter`) is its own type.
            let this = e
                .downcast_ref::<Error>()
                .or_else(|| e.downcast_ref::<Box<Error>>().map(|b| &**b));
            if let Some(Error::Denied {
                action,
                resource,
                message,
            }) = this
            {
                return Some(Error::Denied {
                    action: action.clone(),
                    resource: resource.clone(),
                    message: message.clone(),
                });
            }
            next = e.source();
        }
        None
    }
}

/// An error as stored in a tracker: its text and its cause chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `to_string()` of the error.
    pub message: String,
    /// `to_string()` of each `source()`, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl ErrorInfo {
    /// An error with no cause.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorInfo {
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// The text and cause chain of an error.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(e) = source {
            causes.push(e.to_string());
            source = e.source();
        }
        ErrorInfo {
            message: error.to_string(),
            causes,
        }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_is_found_among_the_causes() {
        let denied = Error::Denied {
            action: "sqs:SendMessage".into(),
            resource: "queue q".into(),
            message: "AccessDenied".into(),
        };
        assert_eq!(
            denied.to_string(),
            "sqs:SendMessage on queue q was denied: AccessDenied"
        );
        let wrapped = Error::DeadLetter {
            record_id: "r1".into(),
            source: Box::new(denied),
        };
        let found = Error::denied_in(&wrapped).expect("found");
        assert!(matches!(found, Error::Denied { ref action, .. } if action == "sqs:SendMessage"));
        let boxed: BoxError = Box::new(wrapped);
        assert!(Error::denied_in(&*boxed).is_some());
        assert!(Error::denied_in(&Error::Config("x".into())).is_none());
    }
}
