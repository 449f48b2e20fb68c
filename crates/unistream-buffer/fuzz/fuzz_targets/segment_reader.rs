//! Fuzzes the segment reader: any bytes, as a segment and after a valid
//! header, must give a scan or a corruption report — never a panic — and a
//! scan never claims more valid bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unistream_buffer::frame::{MAGIC, scan_segment};

fuzz_target!(|data: &[u8]| {
    if let Ok(scan) = scan_segment(data) {
        assert!(scan.valid_len <= data.len() as u64);
    }
    let mut with_magic = MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    if let Ok(scan) = scan_segment(&with_magic) {
        assert!(scan.valid_len <= with_magic.len() as u64);
        for i in scan.unsent() {
            assert!(i < scan.records.len());
        }
    }
});
