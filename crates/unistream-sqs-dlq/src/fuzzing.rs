//! Entry point for the fuzz targets (`fuzz/` at the repository's root),
//! behind the `fuzzing` feature: not an API.

use aws_sdk_sqs::types::{Message, MessageAttributeValue};

/// A received message (body and string attributes) read back as a record,
/// as a redrive does: no panic; a plain body keeps its bytes.
pub fn message(body: &str, attributes: &[(String, String)]) {
    let mut m = Message::builder().body(body);
    for (k, v) in attributes {
        if let Ok(value) = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
        {
            m = m.message_attributes(k, value);
        }
    }
    let m = m.build();
    let base64 = attributes
        .iter()
        .rev()
        .find(|(k, _)| k == "body_encoding")
        .is_some_and(|(_, v)| v == "base64");
    if let Ok(r) = crate::redrive::record_of(&m)
        && !base64
    {
        assert_eq!(r.data, body.as_bytes());
    }
}
