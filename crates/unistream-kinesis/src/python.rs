//! The codec for records written by the Python `unistream` library.

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use unistream_core::record::{Codec, CodecError, JsonCodec};

/// Reads records written by the Python `unistream` library, which put the
/// base64 text of the JSON record into the Kinesis data (so the bytes on the
/// wire were encoded twice). Decoding takes plain JSON as is and otherwise
/// base64-decodes first; encoding writes plain JSON (the seed's shape), never
/// base64.
///
/// ```
/// use unistream_core::record::Codec;
/// use unistream_kinesis::PythonCompatCodec;
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct R { id: String }
///
/// let codec = PythonCompatCodec::default();
/// let from_python = b"eyJpZCI6ICIxIn0="; // base64 of {"id": "1"}
/// let r: R = codec.decode(from_python)?;
/// assert_eq!(r, R { id: "1".into() });
/// assert_eq!(codec.encode(&r)?, br#"{"id": "1"}"#.to_vec());
/// # Ok::<(), unistream_core::record::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonCompatCodec {
    json: JsonCodec,
}

impl<R: Serialize + DeserializeOwned + Send + Sync + 'static> Codec<R> for PythonCompatCodec {
    fn encode(&self, record: &R) -> Result<Vec<u8>, CodecError> {
        self.json.encode(record)
    }

    fn decode(&self, bytes: &[u8]) -> Result<R, CodecError> {
        match Codec::<R>::decode(&self.json, bytes) {
            Ok(r) => Ok(r),
            Err(plain) => {
                let text = bytes.trim_ascii();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| plain)?;
                Codec::<R>::decode(&self.json, &decoded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct R {
        id: String,
    }

    #[test]
    fn plain_json_base64_json_and_garbage() {
        let c = PythonCompatCodec::default();
        let r: R = c.decode(br#"{"id": "7"}"#).unwrap();
        assert_eq!(r.id, "7");
        let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"id": "8"}"#);
        let r: R = c.decode(b64.as_bytes()).unwrap();
        assert_eq!(r.id, "8");
        let err =
            <PythonCompatCodec as Codec<R>>::decode(&c, b"not json, not base64!").unwrap_err();
        assert!(err.to_string().starts_with("cannot decode record"), "{err}");
    }
}
