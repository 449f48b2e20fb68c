//! A batch's records object read from S3: any bytes, no panic; ids, when
//! present, one per record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    unistream_dynamodb_s3::fuzzing::records_object(data);
});
