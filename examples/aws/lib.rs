//! What the AWS examples share: the clients for AWS or emulators. (Kept apart from the local examples so that those build without
//! the AWS SDK.)

/// The AWS clients: the default AWS configuration (environment, profile,
/// instance role), or, with `endpoint` (or `AWS_ENDPOINT_URL`, and per
/// service `AWS_ENDPOINT_URL_KINESIS`, `…_DYNAMODB`, `…_S3`, `…_SQS`),
/// emulators — with dummy credentials, `us-east-1` and path-style S3 unless
/// the environment sets others ([`unistream::aws::AwsSetup`]).
pub async fn aws_clients(endpoint: Option<&str>) -> unistream::aws::Aws {
    let mut setup = unistream::aws::AwsSetup::from_env();
    if let Some(url) = endpoint {
        setup = setup.endpoint(url);
    }
    setup.load().await
}

/// A Kinesis client, as [`aws_clients`] configures it.
pub async fn kinesis_client(endpoint: Option<&str>) -> aws_sdk_kinesis::Client {
    aws_clients(endpoint).await.kinesis()
}

/// The id of the first shard of `stream` (its name or ARN).
pub async fn first_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> unistream::Result<String> {
    unistream::kinesis::list_shards(client, stream)
        .await?
        .first()
        .map(|s| s.shard_id().to_owned())
        .ok_or_else(|| unistream::Error::Config(format!("stream {stream} has no shard")))
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

/// `source`, reading by enhanced fan-out as the stream consumer `efo` if one
/// is given (registered if missing: `--efo NAME` of the examples).
pub async fn with_efo(
    source: unistream::kinesis::KinesisSource,
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    efo: Option<&str>,
) -> unistream::Result<unistream::kinesis::KinesisSource> {
    let Some(name) = efo else {
        return Ok(source);
    };
    let arn = unistream::kinesis::register_consumer(
        client,
        stream,
        name,
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(120),
    )
    .await?;
    Ok(source.with_fan_out(arn))
}
