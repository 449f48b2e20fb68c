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

/// An S3 client; path-style addressing for an emulator (`localhost`
/// endpoints need it).
pub fn s3_client(config: &aws_config::SdkConfig, emulator: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(emulator)
            .build(),
    )
}

fn backend(what: &str, e: impl std::fmt::Display) -> unistream::Error {
    unistream::Error::backend(what.to_owned(), e.to_string())
}

/// Creates an on-demand DynamoDB table with the string partition key `key`
/// unless it exists, and polls until it is active, for up to 10 s (the SDK's
/// waiter waits 20 s at least).
pub async fn create_table_if_missing(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
) -> unistream::Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TableStatus,
    };
    if ddb.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    let attribute = AttributeDefinition::builder()
        .attribute_name(key)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| backend("table definition", e))?;
    let schema = KeySchemaElement::builder()
        .attribute_name(key)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| backend("table definition", e))?;
    ddb.create_table()
        .table_name(table)
        .attribute_definitions(attribute)
        .key_schema(schema)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| {
            backend(
                "CreateTable",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    for _ in 0..100 {
        let status = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .ok()
            .and_then(|t| t.table)
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Creates an S3 bucket unless it exists.
pub async fn create_bucket_if_missing(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> unistream::Result<()> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| backend("CreateBucket", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(())
}
