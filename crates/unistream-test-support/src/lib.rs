//! Test support for unistream's integration tests (a dev-dependency only).
//!
//! Integration tests talk to a real AWS emulator over HTTP through the real
//! AWS SDK. `cargo xtask it` starts one (or uses `--endpoint`) and sets
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, dummy credentials and
//! `UNISTREAM_IT_EMULATOR`; tests that need it are `#[ignore]`d so that a
//! plain `cargo test` lists them as ignored instead of passing silently, and
//! [`Env::from_env`] panics with instructions when no endpoint is set.
//!
//! Every resource gets a unique name ([`unique_name`]), so runs and tests
//! never collide; tests delete what they create.
//!
//! ```no_run
//! # async fn demo() {
//! use unistream_test_support::{Env, Service};
//!
//! let env = Env::from_env().await;
//! if env.skip_unless(Service::Kinesis) {
//!     return;
//! }
//! let stream = env.create_stream(1).await;
//! // ... use env.kinesis() ...
//! env.delete_stream(&stream).await;
//! # }
//! ```

mod fast_kinesis;
mod latency;
mod python;
mod read_quota;

pub use fast_kinesis::FastKinesis;
pub use latency::LatencyHttpClient;
pub use python::{interop_python, run_python};
pub use read_quota::{READ_BYTES_PER_SECOND, READ_CALLS_PER_SECOND, ReadCounts, ReadQuotaProxy};
/// The checkpoint store contract suite, published as
/// [`unistream_core::testing`] (feature `testing`); kept at this path for
/// the tests that use it.
pub use unistream_core::testing as checkpoint_contract;

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_sdk_sqs::types::QueueAttributeName;

/// An AWS service an emulator may or may not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The emulator the tests run against, and SDK configuration for it.
#[derive(Debug, Clone)]
pub struct Env {
    /// The endpoint, e.g. `http://127.0.0.1:5000`.
    pub endpoint: String,
    /// `moto`, `kinesis-local`, `localstack` (or what `UNISTREAM_IT_EMULATOR` says).
    pub emulator: String,
    config: SdkConfig,
    /// Where Kinesis calls go when not to `endpoint` ([`Env::with_kinesis_at`]).
    kinesis_at: Option<String>,
}

/// The number after `name` on the command line (`--records 5000`), or
/// `default`: the benches' argument parsing.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A name nobody else uses: `prefix-` and 12 random hex digits.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Polls `check` every 50 ms until it returns true; panics after `within`.
pub async fn poll_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Env {
    /// Reads the emulator's endpoint from the environment. Panics, saying how
    /// to run the integration tests, when there is none.
    pub async fn from_env() -> Env {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty());
        let Some(endpoint) = endpoint else {
            panic!(
                "this integration test needs an AWS emulator: run it with `cargo xtask it` \
                 (it starts moto), or `cargo xtask it --endpoint URL` for one already running"
            );
        };
        let emulator = std::env::var("UNISTREAM_IT_EMULATOR").unwrap_or_else(|_| "moto".into());
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let credentials =
            aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "unistream-it");
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new(region))
            .credentials_provider(credentials)
            .load()
            .await;
        Env {
            endpoint,
            emulator,
            config,
            kinesis_at: None,
        }
    }

    /// The same environment with its Kinesis clients talking to `url` (e.g.
    /// a [`FastKinesis`]); DynamoDB, S3 and SQS stay where they were.
    pub fn with_kinesis_at(&self, url: &str) -> Env {
        Env {
            kinesis_at: Some(url.to_owned()),
            ..self.clone()
        }
    }

    /// Where Kinesis calls go.
    pub fn kinesis_endpoint(&self) -> &str {
        self.kinesis_at.as_deref().unwrap_or(&self.endpoint)
    }

    /// The same environment with the SDK's retries turned off, for tests
    /// that expect a specific error.
    pub fn without_retries(&self) -> Env {
        let config = self
            .config
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        Env {
            config,
            ..self.clone()
        }
    }

    /// The same environment with `delay` added to every request of its
    /// clients ([`LatencyHttpClient`]): an emulator on this machine answers
    /// without the few milliseconds AWS takes per call.
    pub fn with_latency(&self, delay: Duration) -> Env {
        let config = self
            .config
            .to_builder()
            .http_client(LatencyHttpClient::new(delay))
            .build();
        Env {
            config,
            ..self.clone()
        }
    }

    /// The SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// Whether the emulator serves `service` (kinesis-local serves Kinesis only).
    pub fn serves(&self, service: Service) -> bool {
        self.emulator != "kinesis-local" || service == Service::Kinesis
    }

    /// Prints a loud skip notice and returns true if the emulator does not
    /// serve `service`.
    pub fn skip_unless(&self, service: Service) -> bool {
        let skip = !self.serves(service);
        if skip {
            eprintln!("SKIPPED: {} does not serve {service:?}", self.emulator);
        }
        skip
    }

    /// A Kinesis client.
    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let mut config = aws_sdk_kinesis::config::Builder::from(&self.config);
        if let Some(url) = &self.kinesis_at {
            config = config.endpoint_url(url);
        }
        aws_sdk_kinesis::Client::from_conf(config.build())
    }

    /// A DynamoDB client.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }

    /// An S3 client with path-style addressing (needed for local endpoints).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.config)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An SQS client.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config)
    }

    /// Creates a uniquely named stream and waits until it is active.
    pub async fn create_stream(&self, shards: i32) -> String {
        let name = unique_name("it-stream");
        let k = self.kinesis();
        k.create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create stream {name}: {e:?}"));
        poll_until(
            &format!("stream {name} active"),
            Duration::from_secs(10),
            || async {
                k.describe_stream_summary()
                    .stream_name(&name)
                    .send()
                    .await
                    .ok()
                    .and_then(|d| d.stream_description_summary)
                    .is_some_and(|s| s.stream_status == StreamStatus::Active)
            },
        )
        .await;
        name
    }

    /// The shards of `stream`: `(shard id, parent shard id)`.
    pub async fn shards(&self, stream: &str) -> Vec<(String, Option<String>)> {
        self.kinesis()
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list shards of {stream}: {e:?}"))
            .shards()
            .iter()
            .map(|s| {
                (
                    s.shard_id().to_owned(),
                    s.parent_shard_id().map(str::to_owned),
                )
            })
            .collect()
    }

    /// Splits `shard` of `stream` at the middle of the hash key space
    /// (`SplitShard`; the fast emulator names the parent of the children
    /// only this way) and waits for the children.
    pub async fn split_shard(&self, stream: &str, shard: &str) {
        self.kinesis()
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key((1u128 << 127).to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("split {stream}/{shard}: {e:?}"));
        poll_until("the split", Duration::from_secs(20), || async {
            self.shards(stream).await.len() >= 3
        })
        .await;
    }

    /// Splits a one-shard stream into two (uniform scaling) and waits until
    /// the children are listed. Only kinesis-local (or AWS) ends the parent
    /// and names it in the children.
    pub async fn split_in_two(&self, stream: &str) {
        self.kinesis()
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(2)
            .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
            .send()
            .await
            .unwrap_or_else(|e| panic!("split {stream}: {e:?}"));
        poll_until("the split", Duration::from_secs(20), || async {
            self.shards(stream).await.len() >= 3
        })
        .await;
    }

    /// Puts `(partition key, data)` records with plain `PutRecords` calls of
    /// up to 500, one call at a time (moto loses records under concurrent
    /// calls to one shard); panics if any record is refused.
    pub async fn put_raw(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) {
        let entries: Vec<PutRecordsRequestEntry> = records
            .into_iter()
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data))
                    .partition_key(key)
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for chunk in entries.chunks(500) {
            let out = self
                .kinesis()
                .put_records()
                .stream_name(stream)
                .set_records(Some(chunk.to_vec()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("put records to {stream}: {e:?}"));
            assert_eq!(out.failed_record_count(), Some(0), "refused records");
        }
    }

    /// Deletes a stream.
    pub async fn delete_stream(&self, name: &str) {
        let _ = self
            .kinesis()
            .delete_stream()
            .stream_name(name)
            .enforce_consumer_deletion(true)
            .send()
            .await;
    }

    /// Creates a uniquely named on-demand table with a string partition key
    /// named `pk` and waits until it is active.
    pub async fn create_table(&self, pk: &str) -> String {
        let name = unique_name("it-table");
        let d = self.dynamodb();
        let attribute = AttributeDefinition::builder()
            .attribute_name(pk)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let key = KeySchemaElement::builder()
            .attribute_name(pk)
            .key_type(KeyType::Hash)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        d.create_table()
            .table_name(&name)
            .attribute_definitions(attribute)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
        poll_until(
            &format!("table {name} active"),
            Duration::from_secs(10),
            || async {
                d.describe_table()
                    .table_name(&name)
                    .send()
                    .await
                    .ok()
                    .and_then(|t| t.table)
                    .and_then(|t| t.table_status)
                    == Some(TableStatus::Active)
            },
        )
        .await;
        name
    }

    /// Deletes a table.
    pub async fn delete_table(&self, name: &str) {
        let _ = self.dynamodb().delete_table().table_name(name).send().await;
    }

    /// Creates a uniquely named bucket.
    pub async fn create_bucket(&self) -> String {
        let name = unique_name("it-bucket");
        self.s3()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        name
    }

    /// Deletes a bucket and every object in it.
    pub async fn delete_bucket(&self, name: &str) {
        let s3 = self.s3();
        if let Ok(list) = s3.list_objects_v2().bucket(name).send().await {
            for o in list.contents() {
                if let Some(key) = o.key() {
                    let _ = s3.delete_object().bucket(name).key(key).send().await;
                }
            }
        }
        let _ = s3.delete_bucket().bucket(name).send().await;
    }

    /// Creates a uniquely named queue (a FIFO queue if `fifo`); returns its URL.
    pub async fn create_queue(&self, fifo: bool) -> String {
        let mut name = unique_name("it-queue");
        let mut req = self.sqs().create_queue();
        if fifo {
            name.push_str(".fifo");
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        req.queue_name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
            .queue_url
            .unwrap_or_else(|| panic!("create queue {name}: no URL"))
    }

    /// Deletes a queue.
    pub async fn delete_queue(&self, url: &str) {
        let _ = self.sqs().delete_queue().queue_url(url).send().await;
    }
}
