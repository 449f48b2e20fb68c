//! Fuzzes the segment reader: any bytes, as a segment and after a valid
//! header, must give frames, a torn tail or a corruption report — never a
//! panic — and the reader never claims more valid bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unistream_buffer::frame::{MAGIC, frames};

fn scan(bytes: &[u8]) {
    let mut it = frames(bytes);
    for item in it.by_ref() {
        if item.is_err() {
            return;
        }
    }
    assert!(it.valid_len() <= bytes.len() as u64);
}

fuzz_target!(|data: &[u8]| {
    scan(data);
    let mut with_magic = MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    scan(&with_magic);
});
