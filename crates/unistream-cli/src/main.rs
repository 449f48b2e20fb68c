//! `unistream`: the operators' command-line tool.
//!
//! ```text
//! unistream wal inspect DIR               what a producer's WAL holds (read only)
//! unistream wal verify DIR                every frame read; corruption: path, offset, exit 1
//! unistream checkpoint show   (--dir DIR --consumer ID | --table T --key K [--bucket B])
//! unistream checkpoint reset  ... --to POINTER --yes
//! unistream checkpoint retry  ... RECORD_ID --yes
//! unistream dlq show          (FILE | --queue-url URL) [--max N]
//! unistream dlq redrive       (FILE | --queue-url URL) (--to-file F | --to-stream S) [--max N]
//! unistream leases show --table T
//! unistream lag --stream S (--table T --app A | --table T --key K)
//! ```
//!
//! Every command takes `--json` (JSON for scripts instead of a table) and,
//! for AWS, `--endpoint URL` (an emulator or a VPC endpoint; real AWS by
//! default, credentials and region from the usual AWS configuration).
//!
//! Exit status: 0 on success, 1 on an error (printed with its causes), 2 on
//! bad arguments (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod aws;
mod checkpoint;
mod consumers;
mod dlq;
mod lag;
mod leases;
mod wal;

#[derive(Parser, Debug)]
#[command(
    name = "unistream",
    version,
    about = "Inspect and repair unistream's write-ahead logs, checkpoints, dead-letter queues and leases"
)]
struct Cli {
    /// JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    aws: aws::AwsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A producer's write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// A consumer's checkpoint.
    #[command(subcommand)]
    Checkpoint(checkpoint::Command),
    /// A dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// The leases of a group of workers.
    #[command(subcommand)]
    Leases(leases::Command),
    /// How far each shard's consumer is behind the stream.
    Lag(lag::Args),
    /// A stream's enhanced fan-out consumers.
    #[command(subcommand)]
    Consumers(consumers::Command),
}

#[derive(Subcommand, Debug)]
enum WalCommand {
    /// Segments, batches waiting to be sent, records and bytes (read
    /// without opening the log: no lock, nothing changed).
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// Reads every frame of every segment; exits 1 with the path and byte
    /// offset of the first corruption.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
    },
}

/// What a command prints: a table for people, JSON for scripts.
#[derive(Default)]
pub(crate) struct Output {
    text: String,
    json: serde_json::Value,
    /// A repair asked for without `--yes`: printed, nothing changed, exit 1.
    not_applied: bool,
}

impl Output {
    /// Prints to stdout. A closed pipe (`unistream … | head`) ends the
    /// output quietly instead of a panic.
    fn print(&self, json: bool) {
        use std::io::Write as _;
        let text = if json {
            let mut j = serde_json::to_string_pretty(&self.json).unwrap_or_default();
            j.push('\n');
            j
        } else {
            self.text.clone()
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

async fn run(cli: Cli) -> unistream_core::Result<Output> {
    match cli.command {
        Command::Wal(WalCommand::Inspect { dir }) => wal::inspect(&dir),
        Command::Wal(WalCommand::Verify { dir }) => wal::verify(&dir),
        Command::Checkpoint(cmd) => checkpoint::run(cmd, &cli.aws).await,
        Command::Dlq(cmd) => dlq::run(cmd, &cli.aws).await,
        Command::Leases(cmd) => leases::run(cmd, &cli.aws).await,
        Command::Lag(args) => lag::run(args, &cli.aws).await,
        Command::Consumers(cmd) => consumers::run(cmd, &cli.aws).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unistream: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            out.print(json);
            if out.not_applied {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("unistream: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
