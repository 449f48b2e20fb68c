//! Project tasks: `cargo xtask <task>`.
//!
//! - `ci`: everything CI checks — formatting, clippy with warnings denied,
//!   rustdoc with warnings denied, every test of the workspace, then the
//!   integration tests against moto (`it`), and the shard-end test against
//!   kinesis-local.
//! - `bench [--quick]`: the benchmarks in release mode; prints their tables
//!   and writes `target/bench/results.json`.
//! - `fuzz [--seconds N] [TARGET…]`: builds the fuzz targets (`fuzz/`, with
//!   the nightly toolchain and `cargo fuzz`, installed if missing) and runs
//!   each on its committed corpus (`fuzz/corpus/<target>`) for N seconds
//!   (20 by default); `ci` runs it too.
//! - `it`: the integration tests (the `#[ignore]`d tests of the workspace)
//!   against an AWS emulator: one it starts (moto by default) or one already
//!   running (`--endpoint`). A started emulator is stopped whatever happens.

mod emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

use emulator::{Emulator, Server};

#[derive(Parser)]
#[command(about = "unistream project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Format check, clippy -D warnings, rustdoc -D warnings, all tests,
    /// then the integration tests against moto.
    Ci,
    /// Integration tests against an AWS emulator.
    It(ItArgs),
    /// The fuzz targets, each run briefly on its corpus (nightly toolchain).
    Fuzz(FuzzArgs),
    /// Benchmarks (release build): producer, consumer, and Kinesis and the
    /// production path when an endpoint is set; a table, and
    /// target/bench/results.json.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Fewer records and one run per case (well under 3 minutes).
    #[arg(long)]
    quick: bool,
}

#[derive(clap::Args, Debug)]
struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Targets to run (all when none is given).
    targets: Vec<String>,
}

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`).
const FUZZ_TARGETS: &[&str] = &[
    "wal_recovery",
    "journal_replay",
    "dynamodb_item",
    "s3_records_object",
    "kpl_aggregate",
    "dead_letter",
    "cli_inputs",
];

#[derive(clap::Args, Debug)]
struct ItArgs {
    /// Use an emulator that is already running (e.g. LocalStack on
    /// http://localhost:4566) and start nothing. Defaults to $AWS_ENDPOINT_URL.
    #[arg(long)]
    endpoint: Option<String>,
    /// Which emulator to start when no endpoint is given.
    #[arg(long, value_enum, default_value_t = Emulator::Moto)]
    emulator: Emulator,
    /// Only run tests whose name contains this (passed to the test harness).
    #[arg(last = true)]
    filter: Vec<String>,
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace", "--all-targets"], &[])?;
    cargo(&["test", "--workspace", "--doc"], &[])?;
    fuzz(FuzzArgs {
        seconds: 20,
        targets: Vec::new(),
    })?;
    it(ItArgs {
        endpoint: None,
        emulator: Emulator::Moto,
        filter: Vec::new(),
    })?;
    // What moto does not model: the end of a shard after a split.
    it(ItArgs {
        endpoint: None,
        emulator: Emulator::KinesisLocal,
        filter: vec!["split_shard".into()],
    })
}

/// Runs `cargo +nightly <args>` in `fuzz/` (the project's pinned toolchain
/// is overridden for the fuzz targets only).
fn nightly(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: cargo +nightly {}", args.join(" "));
    // rustup's cargo proxy, so that `+nightly` is understood.
    let status = Command::new("cargo")
        .arg("+nightly")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo +nightly: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo +nightly {}` failed ({status})",
            args.join(" ")
        ))
    }
}

fn fuzz(args: FuzzArgs) -> Result<(), String> {
    let has_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        // cargo-fuzz itself builds with the pinned toolchain.
        cargo(&["install", "cargo-fuzz", "--locked"], &[])?;
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    // No sanitizer: the code is safe Rust (but for the mapping, which
    // the targets do not reach); libFuzzer's coverage guidance is what
    // finds inputs.
    nightly(&["fuzz", "build", "-s", "none"])?;
    let max_time = format!("-max_total_time={}", args.seconds);
    for target in targets {
        // New inputs go to a scratch directory: the committed corpus is
        // only read.
        let scratch = root()
            .join("fuzz")
            .join("target")
            .join("scratch")
            .join(target);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let corpus = root().join("fuzz").join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let (scratch, corpus) = (scratch.to_string_lossy(), corpus.to_string_lossy());
        nightly(&[
            "fuzz",
            "run",
            "-s",
            "none",
            target,
            scratch.as_ref(),
            corpus.as_ref(),
            "--",
            &max_time,
            "-timeout=10",
        ])?;
    }
    Ok(())
}

fn it(args: ItArgs) -> Result<(), String> {
    let given = args.endpoint.clone().or_else(|| {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty())
    });
    // The server (if we start one) lives until the tests are done; dropping
    // it stops it, on success, failure or panic. Ctrl-C is handled too.
    let (endpoint, emulator, _server): (String, Emulator, Option<Server>) = match given {
        Some(url) => {
            eprintln!("xtask: using the emulator at {url} (starting nothing)");
            (url, args.emulator, None)
        }
        None => {
            let server = emulator::start(args.emulator)?;
            (server.url(), args.emulator, Some(server))
        }
    };
    // The reference KPL aggregation library, for the interop tests.
    let python = emulator::interop_python()?;
    let python = python.to_string_lossy();
    // moto, for the IAM test's own server (IAM enforcement is per server).
    let moto = emulator::moto_server()?;
    let moto = moto.to_string_lossy();
    // The fast Kinesis emulator, for the tests that need speed or
    // SubscribeToShard (each starts its own instance).
    let fast = emulator::fast_kinesis()?;
    let fast = fast.to_string_lossy();
    // Build first, so that the emulator's readiness is not spent compiling.
    cargo(&["test", "--workspace", "--tests", "--no-run"], &[])?;
    // --show-output: a test that skips (a service the emulator lacks) says so.
    let mut test_args = vec![
        "test",
        "--workspace",
        "--tests",
        "--",
        "--ignored",
        "--show-output",
    ];
    test_args.extend(args.filter.iter().map(String::as_str));
    cargo(
        &test_args,
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("UNISTREAM_IT_EMULATOR", emulator.name()),
            ("UNISTREAM_IT_PYTHON", python.as_ref()),
            ("UNISTREAM_IT_MOTO_SERVER", moto.as_ref()),
            ("UNISTREAM_IT_FAST_KINESIS", fast.as_ref()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

/// Runs a bench binary through `cargo bench`, echoing its output; returns
/// its `BENCH {json}` lines.
fn bench(
    package: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["bench", "--package", package, "--bench", name, "--"];
    args.extend_from_slice(extra);
    eprintln!("xtask: cargo {}", args.join(" "));
    let out = Command::new(cargo)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("BENCH ") {
            Some(json) => rows.push(json.to_owned()),
            None => println!("{line}"),
        }
    }
    if !out.status.success() {
        return Err(format!("the {name} bench failed ({})", out.status));
    }
    Ok(rows)
}

fn bench_all(args: BenchArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    // Quick: fewer records, still medians of 3 interleaved runs, and the
    // full 1,000,000-record backlog (it takes about a second).
    let (put, consumer): (&[&str], &[&str]) = if args.quick {
        (
            &["--records", "200000", "--fsync-records", "20000"],
            &["--records", "100000"],
        )
    } else {
        (&[], &[])
    };
    rows.extend(bench("unistream-buffer", "put", put, &[])?);
    rows.extend(bench("unistream-core", "consumer", consumer, &[])?);
    // The read bench: the fast Kinesis emulator behind the read-quota
    // proxy, the checkpoint store on moto (started here unless an endpoint
    // is given).
    {
        let given = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty());
        let (endpoint, _moto) = match given {
            Some(url) => (url, None),
            None => {
                let server = emulator::start(Emulator::Moto)?;
                (server.url(), Some(server))
            }
        };
        let fast = emulator::fast_kinesis()?;
        let env = [
            ("AWS_ENDPOINT_URL", endpoint),
            (
                "UNISTREAM_IT_FAST_KINESIS",
                fast.to_string_lossy().into_owned(),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ];
        rows.extend(bench(
            "unistream-aws-examples",
            "read",
            if args.quick { &["--quick"] } else { &[] },
            &env,
        )?);
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        rows.extend(bench(
            "unistream-kinesis",
            "kinesis",
            if args.quick {
                &["--records", "5000"]
            } else {
                &[]
            },
            &[],
        )?);
        // The producer against a quota-enforcing proxy in front of the
        // emulator (KPL aggregation, per-shard rate limits).
        rows.extend(bench(
            "unistream-kinesis",
            "quota",
            if args.quick {
                &["--records", "20000", "--plain-records", "5000"]
            } else {
                &[]
            },
            &[],
        )?);
        // The production path (Kinesis + DynamoDB/S3 checkpoint + SQS DLQ,
        // 5 ms added to each DynamoDB, S3 and SQS call).
        rows.extend(bench(
            "unistream-aws-examples",
            "production",
            if args.quick { &["--quick"] } else { &[] },
            &[],
        )?);
    } else {
        println!(
            "(Kinesis and production benches skipped: set AWS_ENDPOINT_URL to an emulator to run them)"
        );
    }
    let dir = root().join("target").join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let json = format!(
        "{{\"unix_time\":{when},\"cpus\":{cpus},\"quick\":{},\"results\":[\n  {}\n]}}\n",
        args.quick,
        rows.join(",\n  ")
    );
    let path = dir.join("results.json");
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: {} results in {}", rows.len(), path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Ci => ci(),
        Task::It(args) => it(args),
        Task::Fuzz(args) => fuzz(args),
        Task::Bench(args) => bench_all(args),
    };
    match result {
        Ok(()) => {
            eprintln!("xtask: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
