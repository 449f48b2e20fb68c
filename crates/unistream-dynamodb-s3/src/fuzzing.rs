//! Entry points for the fuzz targets (`fuzz/` at the repository's root),
//! behind the `fuzzing` feature: not an API. Each takes what arrives from
//! DynamoDB or S3 and checks what it can: no panic, and what decodes
//! encodes back to the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::item::Mirror;
use crate::layout;

/// The item's `state` attribute and `trackers` map (index -> JSON), and the
/// batch's record ids: decoded as `load` does, then the trackers restored.
pub fn item(state: &str, trackers: &[(usize, String)], ids: Option<Vec<String>>) {
    let Ok((created, slots)) = layout::decode(state) else {
        return;
    };
    // What decodes re-encodes to a state that decodes the same.
    let again = layout::encode(created, &slots);
    match layout::decode(&again) {
        Ok((c, s)) => assert!(c == created && s == slots, "state round trip: {state:?}"),
        Err(e) => panic!("re-encoded state {again:?} does not decode: {e}"),
    }
    let mirror = Mirror {
        created,
        ids: ids.map(Arc::from),
        slots,
        full: trackers.iter().cloned().collect::<BTreeMap<_, _>>(),
        state: state.to_owned(),
        meta: String::new(),
        records_key: String::new(),
    };
    if let Ok(restored) = mirror.trackers() {
        assert_eq!(restored.len(), mirror.slots.len());
    }
}

/// A records object's bytes, as `load` reads them from S3.
pub fn records_object(body: &[u8]) {
    if let Ok((records, ids)) = crate::load::records_object(body) {
        if let Some(ids) = ids {
            assert_eq!(ids.len(), records.len());
        }
    }
}
