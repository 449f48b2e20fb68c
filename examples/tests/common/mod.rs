//! Helpers shared by the tests that run the example programs.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// Builds the example (a no-op when it is up to date, so the binary is never
/// stale even when only this test target was built) and returns its path.
pub(crate) fn example_bin(name: &str) -> PathBuf {
    example_bin_of("unistream-examples", name)
}

/// [`example_bin`] for an example of another package of the workspace.
pub(crate) fn example_bin_of(package: &str, name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--package", package, "--example", name]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name} failed");
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}

/// The random generator of a kill test: seeded by `KILL_TEST_SEED` if set,
/// so that a failing run can be replayed; the seed is printed.
pub(crate) fn kill_test_rng() -> rand::rngs::SmallRng {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("KILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("kill test seed {seed} (set KILL_TEST_SEED to replay)");
    rand::rngs::SmallRng::seed_from_u64(seed)
}

/// How one run of a program under a kill test ended.
pub(crate) enum RunEnd {
    /// Killed after `progress` grew: mid-work.
    KilledMidWork,
    /// Killed before it made progress (start-up, recovery).
    KilledEarly,
    /// It finished by itself, successfully.
    Finished,
}

/// Runs `bin` once and kills it with SIGKILL `0..max_delay_us` after
/// `progress` first grows (or, without `wait_for_progress`, after start;
/// waiting at most 5 s for progress); a run that ends by itself must
/// succeed.
pub(crate) fn run_and_kill(
    bin: &Path,
    args: &[&str],
    rng: &mut impl Rng,
    progress: impl Fn() -> u64,
    wait_for_progress: bool,
    max_delay_us: u64,
) -> RunEnd {
    let wait = if wait_for_progress {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    };
    run_and_kill_within(bin, args, rng, progress, wait, max_delay_us)
}

/// [`run_and_kill`] waiting up to `wait_for_progress` for `progress` to
/// grow (for programs that take long to start, e.g. against an emulator).
pub(crate) fn run_and_kill_within(
    bin: &Path,
    args: &[&str],
    rng: &mut impl Rng,
    progress: impl Fn() -> u64,
    wait_for_progress: Duration,
    max_delay_us: u64,
) -> RunEnd {
    let before = progress();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < wait_for_progress
        && progress() == before
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(Duration::from_micros(rng.random_range(0..max_delay_us)));
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if progress() > before {
            RunEnd::KilledMidWork
        } else {
            RunEnd::KilledEarly
        }
    } else {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a run failed to start or finish: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RunEnd::Finished
    }
}

/// `field` of every line of the JSON-lines file at `path` (none if it is
/// missing); panics on a line that does not parse.
pub(crate) fn ids_in(path: &Path, field: impl Fn(&serde_json::Value) -> String) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .map(|l| {
                field(
                    &serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("bad line {l:?} in {}: {e}", path.display())),
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
