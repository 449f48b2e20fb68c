//! What the `unistream` tool reads from its user and its files, through
//! the library: a file position typed for `checkpoint reset --to`
//! (`FilePosition::parse`), and a WAL directory read by `wal inspect` /
//! `wal verify` (`unistream_buffer::inspect`, read-only: nothing is
//! changed, whatever the bytes). No panic; what inspect reads is never
//! changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unistream_buffer::frame::NAME;
use unistream_core::source::Pointer;
use unistream_local::FilePosition;

/// A directory in memory (`/dev/shm`) where there is one: the targets
/// write files (and power-loss mode syncs them) on every run.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = FilePosition::parse(&Pointer::new(text), std::path::Path::new("x")) {
            let again = FilePosition::parse(&p.to_pointer(), std::path::Path::new("x"));
            assert!(
                again.is_ok_and(|a| a == p),
                "a position changed through its pointer"
            );
        }
    }
    let dir = scratch();
    let mut segment = NAME.to_vec();
    segment.push(if data.first().is_some_and(|b| b % 2 == 0) {
        2
    } else {
        3
    });
    segment.extend_from_slice(data);
    let path = dir.path().join("00000000000000000001.wal");
    std::fs::write(&path, &segment).unwrap();
    let _ = unistream_buffer::inspect(dir.path());
    assert!(
        std::fs::read(&path).unwrap() == segment,
        "inspect changed the segment"
    );
});
