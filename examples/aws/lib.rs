//! What the AWS examples share: the SDK configuration for AWS or an
//! emulator. (Kept apart from the local examples so that those build without
//! the AWS SDK.)

/// The AWS configuration: the default one (environment, profile, instance
/// role), or, with `endpoint`, an emulator — with dummy credentials and
/// `us-east-1` unless the environment sets others.
pub async fn aws_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "test", "test", None, None, "emulator",
            ));
        }
        if std::env::var_os("AWS_REGION").is_none() {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}

/// A Kinesis client: the default AWS configuration (environment, profile,
/// instance role), or, with `endpoint`, an emulator — with dummy
/// credentials and `us-east-1` unless the environment sets others.
pub async fn kinesis_client(endpoint: Option<&str>) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&aws_config(endpoint).await)
}

/// The id of the first shard of `stream`.
pub async fn first_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> unistream::Result<String> {
    client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| {
            unistream::Error::backend(
                "ListShards",
                aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
            )
        })?
        .shards()
        .first()
        .map(|s| s.shard_id().to_owned())
        .ok_or_else(|| unistream::Error::Config(format!("stream {stream} has no shard")))
}
