//! `unistream consumers list` and `deregister` against the fast Kinesis
//! emulator (moto keeps no stream consumers' states in time). Run with
//! `cargo xtask it`.

use std::time::Duration;

use unistream_kinesis::register_consumer;
use unistream_test_support::{Env, FastKinesis, poll_until};

mod tool;
use tool::{json, text, unistream};

#[tokio::test]
#[ignore = "needs the fast Kinesis emulator: run with `cargo xtask it`"]
async fn consumers_are_listed_and_deregistered() {
    let fast = FastKinesis::start(&[]);
    let env = Env::from_env().await.with_kinesis_at(fast.url());
    let stream = env.create_stream(1).await;
    let arn = register_consumer(
        &env.kinesis(),
        &stream,
        "cli-app",
        Duration::from_millis(50),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let at = ["--endpoint", fast.url()];
    let list = || {
        json(&unistream(
            &[
                &["consumers", "list", "--stream", &stream, "--json"][..],
                &at,
            ]
            .concat(),
        ))
    };
    let listed = list();
    let c = &listed["consumers"][0];
    assert_eq!(c["name"], "cli-app", "{listed}");
    assert_eq!(c["arn"], arn.as_str(), "{listed}");
    assert_eq!(c["status"], "ACTIVE", "{listed}");
    let out = unistream(&[&["consumers", "list", "--stream", &stream][..], &at].concat());
    assert!(text(&out).contains("cli-app"), "{}", text(&out));

    let deregister = || {
        let out = unistream(
            &[
                &[
                    "consumers",
                    "deregister",
                    "--stream",
                    &stream,
                    "--name",
                    "cli-app",
                ][..],
                &at,
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    deregister();
    poll_until("the consumer is gone", Duration::from_secs(10), || async {
        list()["consumers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Deregistering one that is gone is no error (as documented).
    deregister();
    env.delete_stream(&stream).await;
}
