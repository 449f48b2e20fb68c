//! KPL aggregate decoding.
//!
//! - Any bytes: `decode` never panics; what decodes encodes back to an
//!   aggregate that decodes to the same user records.
//! - Loss check: user records from the input, encoded, decode to exactly
//!   those records.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use unistream_kinesis::aggregation::{MAGIC, UserRecord, decode, encode};

fn records(u: &mut Unstructured<'_>) -> Result<Vec<UserRecord>> {
    let n = u.int_in_range(1..=20)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key: String = u.arbitrary()?;
        let hash: Option<u128> = u.arbitrary()?;
        let data: Vec<u8> = u.arbitrary()?;
        out.push(UserRecord::new(key, hash.map(|h| h.to_string()), data));
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    for bytes in [data.to_vec(), [&MAGIC[..], data].concat()] {
        if let Ok(Some(got)) = decode(&bytes) {
            let again = decode(&encode(&got));
            assert!(
                matches!(&again, Ok(Some(r)) if *r == got),
                "re-encoded aggregate differs"
            );
        }
    }
    if let Ok(recs) = records(&mut Unstructured::new(data)) {
        let got = decode(&encode(&recs));
        assert!(
            matches!(&got, Ok(Some(r)) if *r == recs),
            "records lost in an aggregate"
        );
    }
});
