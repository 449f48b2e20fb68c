//! The Python with the reference implementation of the KPL aggregated
//! format (`aws-kinesis-agg`), which `cargo xtask it` installs into its
//! virtualenv and names in `UNISTREAM_IT_PYTHON`, and a way to run a script
//! on it with JSON in and out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python that has `aws-kinesis-agg` (set by `cargo xtask it`); `None`,
/// after a loud notice, outside the xtask. Under the xtask a missing one is
/// a failure, never a skip.
pub fn interop_python() -> Option<PathBuf> {
    match std::env::var_os("UNISTREAM_IT_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("UNISTREAM_IT_EMULATOR").is_some() => panic!(
            "UNISTREAM_IT_PYTHON is not set, yet UNISTREAM_IT_EMULATOR is: `cargo xtask it` installs aws-kinesis-agg and sets both"
        ),
        None => {
            eprintln!(
                "SKIPPED: needs the aws-kinesis-agg Python package: run with `cargo xtask it` (it installs it and sets UNISTREAM_IT_PYTHON)"
            );
            None
        }
    }
}

/// Runs `script` with `input` as JSON on its standard input; its standard
/// output, parsed as JSON. Panics, with the script's standard error, if it
/// fails.
pub fn run_python(python: &Path, script: &str, input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let input = serde_json::to_vec(input).unwrap_or_else(|e| panic!("{e}"));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin for {}", python.display()))
        .write_all(&input)
        .unwrap_or_else(|e| panic!("writing to {}: {e}", python.display()));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the Python script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the Python script's output is not JSON: {e}"))
}
