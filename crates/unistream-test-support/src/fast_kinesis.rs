//! [`FastKinesis`]: an instance of the fast Kinesis emulator (`ferrokinesis`,
//! built by `cargo xtask` from `tools/fast-kinesis`), started by a test or a
//! bench with its own options and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running fast Kinesis emulator on 127.0.0.1.
///
/// ```no_run
/// # async fn demo() {
/// use unistream_test_support::{Env, FastKinesis};
/// let fast = FastKinesis::start(&["--session-ms", "2000"]);
/// let env = Env::from_env().await.with_kinesis_at(fast.url());
/// let stream = env.create_stream(1).await;
/// # }
/// ```
#[derive(Debug)]
pub struct FastKinesis {
    child: Child,
    url: String,
}

impl FastKinesis {
    /// Whether the binary is known (`UNISTREAM_IT_FAST_KINESIS`, set by
    /// `cargo xtask it` and `cargo xtask bench`).
    pub fn available() -> bool {
        std::env::var_os("UNISTREAM_IT_FAST_KINESIS").is_some()
    }

    /// Starts one on a free port with `args` (`--session-ms N`: the longest
    /// `SubscribeToShard` session; `--iterator-ttl-s N`; `--shard-limit N`)
    /// and waits until it listens. Panics, saying how to run the tests, if
    /// `UNISTREAM_IT_FAST_KINESIS` is not set.
    pub fn start(args: &[&str]) -> FastKinesis {
        let Some(exe) = std::env::var_os("UNISTREAM_IT_FAST_KINESIS") else {
            panic!(
                "this test needs the fast Kinesis emulator: run it with `cargo xtask it` \
                 (it builds tools/fast-kinesis and sets UNISTREAM_IT_FAST_KINESIS)"
            );
        };
        let mut child = Command::new(&exe)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.to_string_lossy()));
        let Some(stdout) = child.stdout.take() else {
            panic!("fast-kinesis: no standard output");
        };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let addr = match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(addr)) => addr.to_owned(),
            _ => {
                let _ = child.kill();
                panic!("fast-kinesis did not start: {line:?}");
            }
        };
        // Give the accept loop a moment (it is ready once it printed).
        std::thread::sleep(Duration::from_millis(20));
        FastKinesis {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// Where it listens, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for FastKinesis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
