//! Helpers shared by the tests that run the example programs.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
