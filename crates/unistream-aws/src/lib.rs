//! # unistream-aws
//!
//! What every AWS backend of [unistream](https://crates.io/crates/unistream)
//! shares:
//!
//! - [`denial`] tells an AWS answer that means "not allowed" (a missing
//!   permission, credentials the service rejects) from every other error;
//! - [`denied`] does it over any service's [`SdkError`], as
//!   [`Error::Denied`](unistream_core::Error::Denied) naming the IAM action;
//! - [`AwsSetup`] (features `kinesis`, `dynamodb`, `s3`, `sqs`) loads the
//!   SDK configuration for AWS or for emulators — one endpoint for every
//!   service or one per service — and builds the clients.
//!
//! Core knows nothing of AWS; the Kinesis, DynamoDB + S3, SQS and leases
//! crates, the examples and the `unistream` tool use this crate.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[cfg(feature = "config")]
mod setup;
#[cfg(feature = "config")]
pub use setup::{Aws, AwsSetup, Service};

/// Error codes of AWS answers that mean "not allowed": a missing permission,
/// or credentials the service does not accept.
const DENIAL_CODES: [&str; 11] = [
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// Whether an AWS service's error answer is a refusal that retrying cannot
/// fix, and if so what the service said: `Some("code: message")`.
///
/// A refusal is an error code with `AccessDenied` in it (`AccessDenied`,
/// `AccessDeniedException`, `KMSAccessDeniedException`), one of the codes
/// of rejected credentials (`UnrecognizedClientException`,
/// `InvalidClientTokenId`, `ExpiredToken`, `SignatureDoesNotMatch`, ...), or
/// an HTTP 403 without another error code (`OverLimit` is not a denial) (an emulator may answer a JSON API in XML,
/// which the SDK cannot parse: the code and message are then read from the
/// body). The backends (Kinesis, DynamoDB + S3, SQS, leases) turn such
/// answers into [`Error::Denied`](unistream_core::Error::Denied) (through [`denied`]).
pub fn denial(
    code: Option<&str>,
    message: Option<&str>,
    http_status: Option<u16>,
    body: Option<&[u8]>,
) -> Option<String> {
    let by_code = code.is_some_and(|c| c.contains("AccessDenied") || DENIAL_CODES.contains(&c));
    // A 403 that names another error (SQS `OverLimit`, a 403 a service uses
    // for a limit) is that error, not a denial.
    let other_code = !by_code && code.is_some_and(|c| !c.is_empty());
    if !by_code && (http_status != Some(403) || other_code) {
        return None;
    }
    let body = body.map(String::from_utf8_lossy);
    let json: Option<serde_json::Value> =
        body.as_deref().and_then(|b| serde_json::from_str(b).ok());
    // From a JSON body (`__type`/`message`) or an XML one (`<Code>`/`<Message>`).
    let from_body = |json_keys: &[&str], tag: &str| -> Option<String> {
        if let Some(o) = json.as_ref().and_then(|j| j.as_object()) {
            let v = json_keys.iter().find_map(|k| o.get(*k)?.as_str())?;
            return Some(v.rsplit('#').next().unwrap_or(v).to_owned());
        }
        let body = body.as_deref()?;
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let start = body.find(&open)? + open.len();
        let len = body[start..].find(&close)?;
        Some(body[start..start + len].to_owned())
    };
    let code = code
        .map(str::to_owned)
        .or_else(|| from_body(&["__type", "code", "Code"], "Code"));
    let message = message
        .map(str::to_owned)
        .or_else(|| from_body(&["message", "Message"], "Message"));
    Some(match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => "HTTP 403 Forbidden".to_owned(),
    })
}

/// [`Error::Denied`](unistream_core::Error::Denied) if the service refused
/// `action` (the IAM action a policy must allow, e.g. `kinesis:GetRecords`)
/// for lack of permission or of valid credentials ([`denial`]); `None` for
/// any other error, which the caller reports as its own.
///
/// One function for every service: each SDK crate's `SdkError<E>` is this
/// [`SdkError<E, HttpResponse>`].
///
/// ```
/// use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
/// use aws_smithy_runtime_api::client::result::SdkError;
/// use aws_smithy_runtime_api::http::StatusCode;
/// use aws_smithy_types::body::SdkBody;
/// use aws_smithy_types::error::ErrorMetadata;
///
/// let body = r#"{"__type":"AccessDeniedException","message":"not authorized"}"#;
/// let raw = HttpResponse::new(StatusCode::try_from(403).unwrap(), SdkBody::from(body));
/// let e: SdkError<ErrorMetadata, HttpResponse> =
///     SdkError::service_error(ErrorMetadata::builder().build(), raw);
/// let denied = unistream_aws::denied(&e, "kinesis:GetRecords", || "stream s".into());
/// assert_eq!(
///     denied.map(|e| e.to_string()).as_deref(),
///     Some("kinesis:GetRecords on stream s was denied: AccessDeniedException: not authorized")
/// );
/// ```
pub fn denied<E: ProvideErrorMetadata>(
    e: &SdkError<E, HttpResponse>,
    action: &str,
    resource: impl FnOnce() -> String,
) -> Option<unistream_core::Error> {
    let raw = e.raw_response();
    let message = denial(
        e.code(),
        e.message(),
        raw.map(|r| r.status().as_u16()),
        raw.and_then(|r| r.body().bytes()),
    )?;
    Some(unistream_core::Error::Denied {
        action: action.to_owned(),
        resource: resource(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_told_from_other_errors() {
        // A service error the SDK parsed.
        assert_eq!(
            denial(
                Some("AccessDeniedException"),
                Some("User: u is not authorized to perform: kinesis:PutRecords"),
                Some(400),
                None
            )
            .as_deref(),
            Some("AccessDeniedException: User: u is not authorized to perform: kinesis:PutRecords")
        );
        assert!(denial(Some("UnrecognizedClientException"), None, Some(400), None).is_some());
        assert!(denial(Some("KMSAccessDeniedException"), None, Some(400), None).is_some());
        // A 403 in XML to a JSON API (moto): read from the body.
        let xml = b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: u is not authorized to perform: sqs:SendMessage</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            denial(None, None, Some(403), Some(xml)).as_deref(),
            Some("AccessDenied: User: u is not authorized to perform: sqs:SendMessage")
        );
        let json = br#"{"__type":"com.amazonaws.dynamodb.v20120810#AccessDeniedException","message":"no"}"#;
        assert_eq!(
            denial(None, None, Some(403), Some(json)).as_deref(),
            Some("AccessDeniedException: no")
        );
        assert_eq!(
            denial(None, None, Some(403), Some(b"")).as_deref(),
            Some("HTTP 403 Forbidden")
        );
        // Throttling, a missing resource, a server error: not denials.
        for (code, status) in [
            ("ProvisionedThroughputExceededException", 400),
            ("ThrottlingException", 400),
            ("ResourceNotFoundException", 400),
            ("InternalFailure", 500),
            ("OverLimit", 403),
        ] {
            assert_eq!(denial(Some(code), None, Some(status), None), None, "{code}");
        }
        assert_eq!(denial(None, None, None, None), None);
    }

    #[test]
    fn a_parsed_service_error_is_a_denial_by_its_code_only() {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let error = |code: &str, status: u16| {
            let raw = HttpResponse::new(
                StatusCode::try_from(status).unwrap_or_else(|e| panic!("{e}")),
                SdkBody::empty(),
            );
            let meta = ErrorMetadata::builder().code(code).message("m").build();
            SdkError::<ErrorMetadata, HttpResponse>::service_error(meta, raw)
        };
        let d = denied(
            &error("ExpiredTokenException", 400),
            "sqs:SendMessage",
            || "queue q".into(),
        );
        assert!(
            matches!(d, Some(unistream_core::Error::Denied { ref action, ref message, .. })
                if action == "sqs:SendMessage" && message == "ExpiredTokenException: m"),
            "{d:?}"
        );
        assert!(denied(&error("ThrottlingException", 400), "a", String::new).is_none());
        assert!(denied(&error("OverLimit", 403), "a", String::new).is_none());
    }
}
