//! [`SqsError`]: what the SQS dead-letter queue and redrive's calls can
//! fail with, with the queue each one was about.

/// A failed SQS call. It reaches callers as
/// [`unistream_core::Error::Backend`], whose `source` downcasts to this
/// type (and, for a service error, its `source` to the SDK's error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqsError {
    /// An SQS API call failed.
    #[error("SQS {operation} on {queue_url} failed")]
    Api {
        /// `SendMessageBatch`, `ReceiveMessage`, `DeleteMessage`.
        operation: &'static str,
        /// The queue.
        queue_url: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
    /// SQS refused some messages of a batch, for good (a sender fault, or
    /// after every retry).
    #[error("SQS SendMessageBatch on {queue_url}: {failed} of {sent} messages failed: {detail}")]
    Refused {
        /// The queue.
        queue_url: String,
        /// Messages refused.
        failed: usize,
        /// Messages sent.
        sent: usize,
        /// Each refused record with SQS's code and message.
        detail: String,
    },
    /// A message could not be built (the SDK's builder refused it).
    #[error("cannot build the SQS {what} of record {record_id:?}")]
    Build {
        /// `message` or `message attribute`.
        what: &'static str,
        /// The record.
        record_id: String,
        /// The builder's error.
        #[source]
        source: aws_sdk_sqs::error::BuildError,
    },
}

impl SqsError {
    /// An SQS call's failure: [`unistream_core::Error::Denied`] if the
    /// service refused it for lack of permission or of valid credentials
    /// ([`unistream_aws::denial`]; the IAM action of a `…Batch` call is its
    /// single form's), else [`SqsError::Api`].
    pub(crate) fn api<E>(
        operation: &'static str,
        queue_url: &str,
        source: aws_sdk_sqs::error::SdkError<E>,
    ) -> unistream_core::Error
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata,
        aws_sdk_sqs::error::SdkError<E>: Into<aws_sdk_sqs::Error>,
    {
        let action = operation.strip_suffix("Batch").unwrap_or(operation);
        if let Some(denied) = unistream_aws::denied(&source, &format!("sqs:{action}"), || {
            format!("queue {queue_url}")
        }) {
            return denied;
        }
        SqsError::Api {
            operation,
            queue_url: queue_url.to_owned(),
            source: Box::new(source.into()),
        }
        .into()
    }
}

impl From<SqsError> for unistream_core::Error {
    fn from(e: SqsError) -> Self {
        unistream_core::Error::backend("SQS", e)
    }
}
