//! The AWS clients of the commands that talk to AWS: the usual AWS
//! configuration (environment, profile, instance or task role), or
//! emulators with `--endpoint` / `AWS_ENDPOINT_URL` and per service
//! `AWS_ENDPOINT_URL_KINESIS`, `…_DYNAMODB`, `…_S3`, `…_SQS`
//! (`unistream_aws::AwsSetup`).

use unistream_aws::{Aws, AwsSetup};

/// Where AWS is.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AwsArgs {
    /// An AWS endpoint other than AWS's own (an emulator, a VPC endpoint)
    /// for every service; one service's own endpoint is read from
    /// AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB,
    /// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL_SQS. With an endpoint, S3 is
    /// addressed path-style, and the region defaults to us-east-1 and the
    /// credentials to dummy ones unless the environment sets them.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub(crate) endpoint: Option<String>,
    /// The AWS region (default: from the AWS configuration).
    #[arg(long, global = true)]
    pub(crate) region: Option<String>,
}

impl AwsArgs {
    /// Loads the AWS configuration.
    pub(crate) async fn clients(&self) -> Aws {
        let mut setup = AwsSetup::from_env();
        if let Some(url) = &self.endpoint {
            setup = setup.endpoint(url);
        }
        if let Some(region) = &self.region {
            setup = setup.region(region);
        }
        setup.load().await
    }
}
