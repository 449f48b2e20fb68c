//! Writes a producer's write-ahead log of N unsent records into DIR, to try
//! `unistream wal inspect` / `verify` on (and to time them):
//!
//! ```text
//! cargo run --release -p unistream-cli --example make_wal -- DIR 1000000
//! time target/release/unistream wal verify DIR
//! ```

use unistream_buffer::{FileBuffer, FileBufferConfig};
use unistream_core::buffer::{Buffer, BufferLimits};
use unistream_core::sink::EncodedRecord;
use unistream_local::Durability;

#[tokio::main(flavor = "current_thread")]
async fn main() -> unistream_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: make_wal DIR RECORDS");
        std::process::exit(2);
    };
    let wal = FileBuffer::open(
        dir,
        FileBufferConfig::new(BufferLimits::records(500), Durability::Process),
    )?;
    let mut chunk = Vec::with_capacity(500);
    for i in 0..n {
        chunk.push(EncodedRecord::new(
            i.to_string(),
            format!("key-{}", i % 1000),
            format!(
                "{{\"id\": \"{i}\", \"value\": {}, \"note\": \"lorem ipsum dolor sit\"}}",
                i % 100
            )
            .into_bytes(),
        ));
        if chunk.len() == 500 {
            wal.put_many(&chunk).await?;
            chunk.clear();
        }
    }
    wal.put_many(&chunk).await?;
    println!("{n} records in {dir}");
    Ok(())
}
