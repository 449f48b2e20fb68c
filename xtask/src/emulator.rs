//! Starting and stopping AWS emulators for the integration tests.
//!
//! Every emulator is started in its own process group, bound to 127.0.0.1 on
//! a free port, polled until it answers (10 s at most), and stopped by its
//! process group when the [`Server`] is dropped — or on Ctrl-C.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::root;

/// The moto release the project is tested with.
const MOTO: &str = "moto[server]==5.2.1";
/// The reference implementation of the KPL aggregated record format the
/// interop tests compare with (PyPI `aws-kinesis-agg`; it imports `six`
/// without declaring it), pinned with what it needs.
const KINESIS_AGG: [&str; 3] = ["aws-kinesis-agg==1.2.3", "six==1.17.0", "protobuf==7.36.2"];
/// The kinesis-local (kinesis-mock) release the project is tested with.
const KINESIS_LOCAL: &str = "kinesis-local@0.6.2";
/// The fast Kinesis emulator: `tools/fast-kinesis`, ferrokinesis (pinned in
/// its manifest and lock file) served without its server stack.
const FAST_KINESIS: &str = "tools/fast-kinesis";

/// An emulator the xtask can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Emulator {
    /// `moto_server`: Kinesis, DynamoDB, S3, SQS, offline.
    Moto,
    /// The npm package `kinesis-local` (kinesis-mock): Kinesis only, with
    /// shard ends, child shards and iterator expiry.
    KinesisLocal,
    /// LocalStack in Docker (needs a Docker engine and the image).
    Localstack,
}

impl Emulator {
    /// The name the tests see in `UNISTREAM_IT_EMULATOR`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Emulator::Moto => "moto",
            Emulator::KinesisLocal => "kinesis-local",
            Emulator::Localstack => "localstack",
        }
    }
}

/// The process groups of the running emulators, for the Ctrl-C handler.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A started emulator; dropping it stops it.
pub(crate) struct Server {
    url: String,
    kind: Kind,
}

enum Kind {
    Process(Child),
    Docker(String),
}

impl Server {
    /// Where it listens.
    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Process(child) => {
                let pgid = child.id();
                kill_group(pgid, "-TERM");
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                kill_group(pgid, "-KILL");
                let _ = child.wait();
                running().retain(|&p| p != pgid);
                eprintln!("xtask: stopped the emulator (process group {pgid})");
            }
            Kind::Docker(id) => {
                let _ = Command::new("docker")
                    .args(["stop", id.as_str()])
                    .stdout(Stdio::null())
                    .status();
                eprintln!("xtask: stopped the LocalStack container {id}");
            }
        }
    }
}

fn install_ctrl_c_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            for &pgid in running().iter() {
                eprintln!("xtask: interrupted; stopping the emulator (process group {pgid})");
                kill_group(pgid, "-KILL");
            }
            std::process::exit(130);
        });
    });
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether an HTTP server answers on 127.0.0.1:`port` (any status).
fn answers(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Spawns `cmd` in its own process group, logging to `log`, and waits until
/// `port` answers HTTP on `probe`.
fn spawn_and_wait(
    mut cmd: Command,
    port: u16,
    probe: &str,
    log: &Path,
    what: &str,
) -> Result<Server, String> {
    install_ctrl_c_handler();
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    running().push(child.id());
    let mut server = Server {
        url: format!("http://127.0.0.1:{port}"),
        kind: Kind::Process(child),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if answers(port, probe) {
            eprintln!(
                "xtask: {what} answers on {} (log: {})",
                server.url,
                log.display()
            );
            return Ok(server);
        }
        if let Kind::Process(child) = &mut server.kind
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "{what} exited ({status}) before answering:\n{}",
                log_tail(log)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not answer within 10 s:\n{}",
                log_tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `moto_server` on PATH if moto is importable there, else one installed
/// (once) into a virtualenv under `target/`. (The IAM test starts one of its
/// own, with IAM enforcement on: `UNISTREAM_IT_MOTO_SERVER`.)
pub(crate) fn moto_server() -> Result<PathBuf, String> {
    let importable =
        run_ok(Command::new("python3").args(["-c", "import moto.server, flask, flask_cors"]));
    if importable && run_ok(Command::new("moto_server").arg("--help")) {
        return Ok(PathBuf::from("moto_server"));
    }
    let venv = target_dir().join("it-venv");
    let exe = venv.join("bin").join("moto_server");
    // Written last: an install cut short (a kill, a lost network) has no
    // marker, and is removed and done again.
    let marker = venv.join(format!("installed-{MOTO}"));
    if marker.exists() && exe.exists() {
        return Ok(exe);
    }
    remove_partial_install(&venv)?;
    eprintln!(
        "xtask: moto is not importable; installing {MOTO} into {}",
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run python3 -m venv: {e}"))?;
    if !status.success() {
        return Err(format!("python3 -m venv {} failed", venv.display()));
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", MOTO])
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() || !exe.exists() {
        return Err(format!("pip install {MOTO} failed"));
    }
    std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(exe)
}

/// A Python with `aws-kinesis-agg` importable: the virtualenv under
/// `target/` (moto's, created if moto came from the PATH), where the package
/// is installed once (the marker file is written last).
pub(crate) fn interop_python() -> Result<PathBuf, String> {
    let venv = target_dir().join("it-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!("installed-{}", KINESIS_AGG.join("+")));
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("cannot run python3 -m venv: {e}"))?;
        if !status.success() {
            return Err(format!("python3 -m venv {} failed", venv.display()));
        }
    }
    eprintln!(
        "xtask: installing {} into {} (for the KPL aggregation interop tests)",
        KINESIS_AGG.join(" "),
        venv.display()
    );
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet"])
        .args(KINESIS_AGG)
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    let importable = run_ok(Command::new(&python).args([
        "-c",
        "import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator",
    ]));
    if !status.success() || !importable {
        return Err(format!("pip install {} failed", KINESIS_AGG.join(" ")));
    }
    std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(python)
}

/// Removes `dir`, the leftovers of an install that did not finish.
fn remove_partial_install(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            eprintln!("xtask: removed an unfinished install in {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

/// The fast Kinesis emulator's binary, built (release, its own lock file,
/// under `target/fast-kinesis`) if it is missing or out of date — cargo
/// makes this a no-op once built. The integration tests and benches start
/// their own instances of it (each with its options, e.g. short
/// `SubscribeToShard` sessions), from `UNISTREAM_IT_FAST_KINESIS`.
pub(crate) fn fast_kinesis() -> Result<PathBuf, String> {
    let dir = target_dir().join("fast-kinesis");
    let manifest = root().join(FAST_KINESIS).join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {FAST_KINESIS} failed ({status})"));
    }
    let exe = dir.join("release").join("fast-kinesis");
    if !exe.exists() {
        return Err(format!("{} is missing after its build", exe.display()));
    }
    if started.elapsed() > Duration::from_secs(5) {
        eprintln!(
            "xtask: built the fast Kinesis emulator in {:.0} s ({})",
            started.elapsed().as_secs_f64(),
            exe.display()
        );
    }
    Ok(exe)
}

fn start_moto() -> Result<Server, String> {
    let exe = moto_server()?;
    let port = free_port()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    spawn_and_wait(
        cmd,
        port,
        "/moto-api/",
        &target_dir().join("it-moto.log"),
        "moto_server",
    )
}

fn start_kinesis_local() -> Result<Server, String> {
    let prefix = target_dir().join("it-npm");
    let main = prefix
        .join("node_modules")
        .join("kinesis-local")
        .join("main.js");
    let marker = prefix.join(format!("installed-{KINESIS_LOCAL}"));
    if !(marker.exists() && main.exists()) {
        remove_partial_install(&prefix)?;
        eprintln!(
            "xtask: installing {KINESIS_LOCAL} into {}",
            prefix.display()
        );
        std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(KINESIS_LOCAL)
            .status()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !status.success() || !main.exists() {
            return Err(format!("npm install {KINESIS_LOCAL} failed"));
        }
        std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    let (port, tls_port) = (free_port()?, free_port()?);
    let package = prefix.join("node_modules").join("kinesis-local");
    let mut cmd = Command::new("node");
    // kinesis-mock reads its TLS certificate (server.json) from the working
    // directory. It has no bind-address setting: it listens on all
    // interfaces; the tests only contact 127.0.0.1.
    eprintln!(
        "xtask: note: kinesis-local cannot be told to bind 127.0.0.1 only; it listens on all interfaces (ports {port}, {tls_port}) while the tests run"
    );
    cmd.arg(&main)
        .current_dir(&package)
        .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
        .env("KINESIS_MOCK_TLS_PORT", tls_port.to_string())
        .env("CREATE_STREAM_DURATION", "0ms")
        .env("DELETE_STREAM_DURATION", "0ms")
        .env("UPDATE_SHARD_COUNT_DURATION", "0ms")
        .env("AWS_REGION", "us-east-1");
    spawn_and_wait(
        cmd,
        port,
        "/",
        &target_dir().join("it-kinesis-local.log"),
        "kinesis-local",
    )
}

fn start_localstack() -> Result<Server, String> {
    const IMAGE: &str = "localstack/localstack";
    let how = "run it yourself (`docker run --rm -p 4566:4566 localstack/localstack`) and pass `--endpoint http://localhost:4566`, or use the default emulator (moto)";
    if !run_ok(Command::new("docker").arg("info")) {
        return Err(format!("no Docker engine answers `docker info`: {how}"));
    }
    if !run_ok(Command::new("docker").args(["image", "inspect", IMAGE])) {
        return Err(format!(
            "the image {IMAGE} is not present locally (`docker pull {IMAGE}`): {how}"
        ));
    }
    let port = free_port()?;
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "-p",
            &format!("127.0.0.1:{port}:4566"),
            IMAGE,
        ])
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let server = Server {
        url: format!("http://127.0.0.1:{port}"),
        kind: Kind::Docker(id),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers(port, "/_localstack/health") {
        if Instant::now() > deadline {
            return Err("LocalStack did not answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(server)
}

/// Starts an emulator.
pub(crate) fn start(emulator: Emulator) -> Result<Server, String> {
    match emulator {
        Emulator::Moto => start_moto(),
        Emulator::KinesisLocal => start_kinesis_local(),
        Emulator::Localstack => start_localstack(),
    }
}
