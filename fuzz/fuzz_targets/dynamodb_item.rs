//! The DynamoDB checkpoint item's `state` attribute and `trackers` map, as
//! `load` reads them: no panic, a state that decodes re-encodes to one
//! that decodes the same, restored trackers are one per slot.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let state: String = u.arbitrary()?;
    let n = u.int_in_range(0..=8)?;
    let mut trackers = Vec::new();
    for _ in 0..n {
        trackers.push((u.int_in_range(0..=16usize)?, u.arbitrary::<String>()?));
    }
    let ids: Option<Vec<String>> = u.arbitrary()?;
    unistream_dynamodb_s3::fuzzing::item(&state, &trackers, ids);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // The whole input as the state, too (most states are JSON).
    if let Ok(text) = std::str::from_utf8(data) {
        unistream_dynamodb_s3::fuzzing::item(text, &[], None);
    }
    let _ = run(data);
});
