//! `fast-kinesis`: the Kinesis emulator `ferrokinesis` (in memory, every
//! Kinesis operation, `SubscribeToShard` over HTTP/1.1) bound to 127.0.0.1.
//!
//! ```text
//! fast-kinesis --port 4567 [--session-ms 300000] [--iterator-ttl-s 300] [--shard-limit 2000]
//! ```
//!
//! Prints `listening on 127.0.0.1:<port>` once it accepts connections
//! (`--port 0` picks a free port). Streams are created and deleted at once
//! (no simulated delay). It stops on SIGTERM or SIGINT.

use std::process::ExitCode;

use ferrokinesis::create_app;
use ferrokinesis::store::StoreOptions;

fn value(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fast-kinesis: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = value(&args, "--port", 4567)?;
    let port = u16::try_from(port).map_err(|e| format!("--port: {e}"))?;
    let options = StoreOptions {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        shard_limit: u32::try_from(value(&args, "--shard-limit", 2_000)?)
            .map_err(|e| format!("--shard-limit: {e}"))?,
        iterator_ttl_seconds: value(&args, "--iterator-ttl-s", 300)?,
        subscribe_to_shard_session_ms: value(&args, "--session-ms", 300_000)?,
        ..StoreOptions::default()
    };
    let (app, _store) = create_app(options);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|e| e.to_string())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
