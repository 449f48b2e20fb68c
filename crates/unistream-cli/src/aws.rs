//! The AWS clients of the commands that talk to AWS: the usual AWS
//! configuration (environment, profile, instance or task role), or an
//! emulator with `--endpoint`.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Where AWS is.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AwsArgs {
    /// An AWS endpoint other than AWS's own (an emulator, a VPC endpoint).
    /// With it, S3 is addressed path-style, and the region defaults to
    /// us-east-1 and the credentials to dummy ones unless the environment
    /// sets them.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub(crate) endpoint: Option<String>,
    /// The AWS region (default: from the AWS configuration).
    #[arg(long, global = true)]
    pub(crate) region: Option<String>,
}

/// The clients, built once per command.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    config: SdkConfig,
    emulator: bool,
}

impl AwsArgs {
    /// Loads the AWS configuration.
    pub(crate) async fn clients(&self) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &self.endpoint {
            loader = loader.endpoint_url(url);
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
                && std::env::var_os("AWS_PROFILE").is_none()
            {
                loader = loader.credentials_provider(aws_sdk_kinesis::config::Credentials::new(
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
        Clients {
            config: loader.load().await,
            emulator: self.endpoint.is_some(),
        }
    }
}

impl Clients {
    pub(crate) fn kinesis(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.config)
    }
    pub(crate) fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }
    pub(crate) fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(self.emulator)
                .build(),
        )
    }
    pub(crate) fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config)
    }
}
