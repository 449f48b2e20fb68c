//! [`LatencyHttpClient`]: an AWS SDK HTTP client that waits a fixed time
//! before every request, then sends it for real.
//!
//! It injects latency; it is a test and bench device, not a mock: every
//! request still goes over HTTP to the endpoint (an emulator) and every
//! answer is the endpoint's own. Emulators answer from the same machine in
//! well under a millisecond of network time, where AWS takes a few
//! milliseconds per call; the benches give the checkpoint and dead-letter
//! clients this client so that the number of calls costs what it would.
//!
//! ```no_run
//! # async fn demo(env: unistream_test_support::Env) {
//! use std::time::Duration;
//! use unistream_test_support::LatencyHttpClient;
//!
//! let config = aws_sdk_dynamodb::config::Builder::from(env.sdk_config())
//!     .http_client(LatencyHttpClient::new(Duration::from_millis(5)))
//!     .build();
//! let ddb = aws_sdk_dynamodb::Client::from_conf(config); // every call 5 ms slower
//! # }
//! ```

use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;

/// An SDK HTTP client that sleeps `delay` (a tokio timer) before each
/// request and then hands it to another client — by default the SDK's own
/// HTTPS client (hyper with rustls). Injects latency: a test and bench
/// device, not a mock (see the module docs).
#[derive(Debug, Clone)]
pub struct LatencyHttpClient {
    inner: SharedHttpClient,
    delay: Duration,
}

impl LatencyHttpClient {
    /// The SDK's default HTTPS client (hyper, rustls with aws-lc: what
    /// the SDK builds with its `default-https-client` feature), each request
    /// `delay` later.
    pub fn new(delay: Duration) -> Self {
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        Self::wrapping(inner, delay)
    }

    /// `inner`, each request `delay` later.
    pub fn wrapping(inner: impl HttpClient + 'static, delay: Duration) -> Self {
        LatencyHttpClient {
            inner: SharedHttpClient::new(inner),
            delay,
        }
    }

    /// The latency added to each request.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl HttpClient for LatencyHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The inner client caches its connectors (and their connection
        // pools) by settings; this only wraps the one it hands out.
        SharedHttpConnector::new(LatencyConnector {
            inner: self.inner.http_connector(settings, components),
            delay: self.delay,
        })
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner
            .validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

/// The connector of a [`LatencyHttpClient`]: sleep, then the inner one.
#[derive(Debug)]
struct LatencyConnector {
    inner: SharedHttpConnector,
    delay: Duration,
}

impl HttpConnector for LatencyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let delay = self.delay;
        HttpConnectorFuture::new(async move {
            tokio::time::sleep(delay).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use aws_smithy_runtime_api::client::result::ConnectorError;

    use super::*;

    /// Counts its calls and refuses each (no response is needed here).
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicU32>);

    impl HttpConnector for Counting {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            self.0.fetch_add(1, Ordering::SeqCst);
            HttpConnectorFuture::ready(Err(ConnectorError::other("refused".into(), None)))
        }
    }

    #[tokio::test]
    async fn each_request_waits_the_delay_then_reaches_the_inner_connector() {
        let calls = Arc::new(AtomicU32::new(0));
        let connector = LatencyConnector {
            inner: SharedHttpConnector::new(Counting(calls.clone())),
            delay: Duration::from_millis(5),
        };
        let t = Instant::now();
        for _ in 0..3 {
            let call = connector.call(HttpRequest::empty());
            assert!(call.await.is_err(), "the inner connector's answer");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            t.elapsed() >= Duration::from_millis(15),
            "{:?}",
            t.elapsed()
        );
    }
}
