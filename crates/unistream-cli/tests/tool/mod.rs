//! Running the `unistream` binary in tests, shared by the test files.

// Each test file uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use unistream_test_support::{Env, Service};

/// Runs `unistream ARGS`.
pub(crate) fn unistream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unistream"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `unistream ARGS --endpoint <the emulator's>`.
pub(crate) fn unistream_at(env: &Env, args: &[&str]) -> Output {
    unistream(&[args, &["--endpoint", &env.endpoint]].concat())
}

/// Its stdout and stderr.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Its stdout as JSON, once it succeeded.
pub(crate) fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The emulator, unless it lacks one of `services` (then a loud skip).
pub(crate) async fn env_with(services: &[Service]) -> Option<Env> {
    let env = Env::from_env().await;
    for s in services {
        if env.skip_unless(*s) {
            return None;
        }
    }
    Some(env)
}
