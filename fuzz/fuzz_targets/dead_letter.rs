//! Dead letters as they are read back: a line of a file DLQ
//! (`DeadLetter::from_json`) and an SQS message (`record_of`, body and
//! attributes). No panic; a letter that parses writes back to a line that
//! parses to the same letter.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use unistream_core::dlq::DeadLetter;

fn sqs(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let body: String = u.arbitrary()?;
    let mut attributes = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let k = *u.choose(&["record_id", "partition_key", "body_encoding", "other"])?;
        let v: String = if k == "body_encoding" && u.arbitrary()? {
            "base64".into()
        } else {
            u.arbitrary()?
        };
        attributes.push((k.to_owned(), v));
    }
    unistream_sqs_dlq::fuzzing::message(&body, &attributes);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(letter) = DeadLetter::from_json(data) {
        let line = letter.to_json();
        match DeadLetter::from_json(&line) {
            Ok(again) => assert!(again == letter, "a letter changed through its line"),
            Err(e) => panic!("a letter's own line does not parse: {e}"),
        }
    }
    let _ = sqs(data);
});
