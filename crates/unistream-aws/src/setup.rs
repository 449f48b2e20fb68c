//! [`AwsSetup`]: the SDK configuration for AWS or for emulators, and the
//! clients built from it.
//!
//! With no endpoint, the usual AWS configuration (environment, profile,
//! instance or task role) is loaded and nothing is changed. With an
//! endpoint — one for every service, or one per service — the clients talk
//! to it: S3 is addressed path-style (a `localhost` endpoint needs it), and
//! the region defaults to `us-east-1` and the credentials to dummy ones
//! unless the environment sets them. Per-service endpoints let Kinesis be
//! served by one emulator and DynamoDB, S3 and SQS by another.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// An AWS service that unistream's backends call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Service {
    /// Kinesis Data Streams.
    Kinesis,
    /// DynamoDB.
    DynamoDb,
    /// S3.
    S3,
    /// SQS.
    Sqs,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 4] = [
        Service::Kinesis,
        Service::DynamoDb,
        Service::S3,
        Service::Sqs,
    ];

    /// The environment variable of this service's endpoint, as the AWS SDKs
    /// name it (`AWS_ENDPOINT_URL_KINESIS`, …).
    pub fn endpoint_env(self) -> &'static str {
        match self {
            Service::Kinesis => "AWS_ENDPOINT_URL_KINESIS",
            Service::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
            Service::Sqs => "AWS_ENDPOINT_URL_SQS",
        }
    }
}

/// Where AWS is: the endpoints and region to use, before the configuration
/// is loaded ([`load`](Self::load)).
///
/// ```no_run
/// # async fn demo() {
/// use unistream_aws::{AwsSetup, Service};
/// // Kinesis from one emulator, DynamoDB, S3 and SQS from another.
/// let aws = AwsSetup::new()
///     .endpoint("http://127.0.0.1:5000")
///     .service_endpoint(Service::Kinesis, "http://127.0.0.1:4567")
///     .load()
///     .await;
/// let kinesis = aws.kinesis();
/// let s3 = aws.s3(); // path-style addressing: an endpoint is set
/// # let _ = (kinesis, s3);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSetup {
    endpoint: Option<String>,
    services: BTreeMap<Service, String>,
    region: Option<String>,
}

impl AwsSetup {
    /// AWS itself, configured the usual way (nothing set).
    pub fn new() -> Self {
        AwsSetup::default()
    }

    /// The endpoints the environment sets, as the AWS SDKs read them:
    /// `AWS_ENDPOINT_URL` for every service, `AWS_ENDPOINT_URL_<SERVICE>`
    /// for one (it wins). Empty values are ignored.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut setup = AwsSetup {
            endpoint: var("AWS_ENDPOINT_URL"),
            ..AwsSetup::default()
        };
        for s in Service::ALL {
            if let Some(url) = var(s.endpoint_env()) {
                setup.services.insert(s, url);
            }
        }
        setup
    }

    /// Every service at `url` (an emulator, a VPC endpoint), unless a
    /// service has its own ([`service_endpoint`](Self::service_endpoint)).
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// `service` at `url`.
    #[must_use]
    pub fn service_endpoint(mut self, service: Service, url: impl Into<String>) -> Self {
        self.services.insert(service, url.into());
        self
    }

    /// The region (default: from the AWS configuration; `us-east-1` with an
    /// endpoint and none configured).
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The endpoint `service` is called at, if not AWS's own.
    pub fn endpoint_of(&self, service: Service) -> Option<&str> {
        self.services
            .get(&service)
            .or(self.endpoint.as_ref())
            .map(String::as_str)
    }

    /// Whether any service is called elsewhere than at AWS's own endpoint.
    pub fn has_endpoint(&self) -> bool {
        self.endpoint.is_some() || !self.services.is_empty()
    }

    /// Loads the SDK configuration (credentials, region, retry settings).
    pub async fn load(&self) -> Aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &self.endpoint {
            loader = loader.endpoint_url(url);
        }
        if self.has_endpoint() {
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
                && std::env::var_os("AWS_PROFILE").is_none()
            {
                loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                    "test", "test", None, None, "emulator",
                ));
            }
            if self.region.is_none() && std::env::var_os("AWS_REGION").is_none() {
                loader = loader.region(Region::new("us-east-1"));
            }
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        Aws {
            config: loader.load().await,
            setup: self.clone(),
        }
    }
}

/// A loaded AWS configuration: the clients of each service.
#[derive(Debug, Clone)]
pub struct Aws {
    config: SdkConfig,
    setup: AwsSetup,
}

impl Aws {
    /// The SDK configuration, for clients of other services.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// What it was loaded from.
    pub fn setup(&self) -> &AwsSetup {
        &self.setup
    }

    /// A Kinesis client.
    #[cfg(feature = "kinesis")]
    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let mut b = aws_sdk_kinesis::config::Builder::from(&self.config);
        if let Some(url) = self.setup.services.get(&Service::Kinesis) {
            b = b.endpoint_url(url);
        }
        aws_sdk_kinesis::Client::from_conf(b.build())
    }

    /// A DynamoDB client.
    #[cfg(feature = "dynamodb")]
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let mut b = aws_sdk_dynamodb::config::Builder::from(&self.config);
        if let Some(url) = self.setup.services.get(&Service::DynamoDb) {
            b = b.endpoint_url(url);
        }
        aws_sdk_dynamodb::Client::from_conf(b.build())
    }

    /// An S3 client; path-style addressing when an endpoint is set.
    #[cfg(feature = "s3")]
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut b = aws_sdk_s3::config::Builder::from(&self.config)
            .force_path_style(self.setup.endpoint_of(Service::S3).is_some());
        if let Some(url) = self.setup.services.get(&Service::S3) {
            b = b.endpoint_url(url);
        }
        aws_sdk_s3::Client::from_conf(b.build())
    }

    /// An SQS client.
    #[cfg(feature = "sqs")]
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let mut b = aws_sdk_sqs::config::Builder::from(&self.config);
        if let Some(url) = self.setup.services.get(&Service::Sqs) {
            b = b.endpoint_url(url);
        }
        aws_sdk_sqs::Client::from_conf(b.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_endpoint_wins_over_the_shared_one() {
        let s = AwsSetup::new()
            .endpoint("http://127.0.0.1:1")
            .service_endpoint(Service::Kinesis, "http://127.0.0.1:2");
        assert_eq!(s.endpoint_of(Service::Kinesis), Some("http://127.0.0.1:2"));
        assert_eq!(s.endpoint_of(Service::Sqs), Some("http://127.0.0.1:1"));
        assert!(s.has_endpoint());
        let only = AwsSetup::new().service_endpoint(Service::DynamoDb, "http://127.0.0.1:3");
        assert_eq!(only.endpoint_of(Service::Kinesis), None);
        assert!(only.has_endpoint());
        assert!(!AwsSetup::new().has_endpoint());
    }
}
