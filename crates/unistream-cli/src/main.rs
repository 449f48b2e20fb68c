//! `unistream`: the operators' command-line tool.
//!
//! ```text
//! unistream wal inspect DIR [--json]      what a producer's WAL holds (read only)
//! unistream wal verify DIR [--json]       every frame read; corruption: path, offset, exit 1
//! unistream checkpoint show --dir DIR --consumer ID [--json]
//! unistream dlq show FILE [--json] [--max N]
//! ```
//!
//! Exit status: 0 on success, 1 on an error (printed with its causes), 2 on
//! bad arguments (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod checkpoint;
mod dlq;
mod wal;

#[derive(Parser, Debug)]
#[command(
    name = "unistream",
    version,
    about = "Inspect and verify unistream's write-ahead logs, checkpoints and dead-letter queues"
)]
struct Cli {
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
    Checkpoint(CheckpointCommand),
    /// A dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand, Debug)]
enum WalCommand {
    /// Segments, batches waiting to be sent, records and bytes (read
    /// without opening the log: no lock, nothing changed).
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Reads every frame of every segment; exits 1 with the path and byte
    /// offset of the first corruption.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CheckpointCommand {
    /// The batch, its pointers, counts per status, and the records that are
    /// failing or exhausted with their attempts and last error.
    Show {
        /// The file checkpoint store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The consumer id.
        #[arg(long)]
        consumer: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// The letters of a file dead-letter queue (JSON lines).
    Show {
        /// The dead-letter file.
        file: PathBuf,
        /// JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many letters (the oldest first).
        #[arg(long)]
        max: Option<usize>,
    },
}

/// What a command prints: a table for people, JSON for scripts.
pub(crate) struct Output {
    text: String,
    json: serde_json::Value,
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

fn run(cli: Cli) -> unistream_core::Result<(Output, bool)> {
    match cli.command {
        Command::Wal(WalCommand::Inspect { dir, json }) => Ok((wal::inspect(&dir)?, json)),
        Command::Wal(WalCommand::Verify { dir, json }) => Ok((wal::verify(&dir)?, json)),
        Command::Checkpoint(CheckpointCommand::Show {
            dir,
            consumer,
            json,
        }) => Ok((checkpoint::show(&dir, &consumer)?, json)),
        Command::Dlq(DlqCommand::Show { file, json, max }) => Ok((dlq::show(&file, max)?, json)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok((out, json)) => {
            out.print(json);
            ExitCode::SUCCESS
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
