//! Per-service endpoints reach the SDK's clients: each client's first call
//! arrives at the listener its service was given (a loopback listener that
//! reads the request and closes; the call itself then fails).

use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use unistream_aws::{AwsSetup, Service};

/// The first request's head that `listener` receives.
async fn first_request(listener: TcpListener) -> String {
    let (mut conn, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn each_service_calls_its_own_endpoint() {
    let shared = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kinesis = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shared_url = format!(
        "http://{}",
        shared.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let kinesis_url = format!(
        "http://{}",
        kinesis.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let aws = AwsSetup::new()
        .endpoint(&shared_url)
        .service_endpoint(Service::Kinesis, &kinesis_url)
        .load()
        .await;
    let k = aws.kinesis();
    let q = aws.sqs();
    let calls = async {
        let k_call = tokio::time::timeout(Duration::from_secs(5), k.list_streams().send());
        let q_call = tokio::time::timeout(Duration::from_secs(5), q.list_queues().send());
        let _ = tokio::join!(k_call, q_call);
    };
    let seen = async { tokio::join!(first_request(kinesis), first_request(shared)) };
    let ((to_kinesis, to_shared), ()) = tokio::join!(seen, calls);
    assert!(
        to_kinesis.contains("Kinesis_20131202.ListStreams"),
        "{to_kinesis}"
    );
    assert!(!to_shared.contains("Kinesis_"), "{to_shared}");
    assert!(to_shared.contains("ListQueues"), "{to_shared}");
}
