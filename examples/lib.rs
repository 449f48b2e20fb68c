//! Shared pieces of the example programs: the seed's record type and its
//! demo output blocks.

use std::path::Path;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use unistream::record::{JsonCodec, Record, iso8601};

/// The seed's `MyRecord`: an id, a creation time and a random value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MyRecord {
    /// Unique id.
    pub id: String,
    /// Creation time, in the seed's shape.
    #[serde(with = "iso8601")]
    pub create_at: DateTime<Utc>,
    /// A value from 1 to 100.
    pub value: i64,
}

impl Record for MyRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn create_at(&self) -> DateTime<Utc> {
        self.create_at
    }
}

impl MyRecord {
    /// The record as one line of JSON in the seed's shape.
    pub fn to_json(&self) -> String {
        let bytes = JsonCodec::default().to_vec(self).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Writes `n` sample records with ids `start..start+n` as a JSON-lines file
/// at `path` (atomically: a temporary file renamed into place).
pub fn write_sample_stream(path: &Path, start: u64, n: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let t0 = Utc::now();
    let mut out = Vec::with_capacity(n as usize * 80);
    for i in 0..n {
        let r = MyRecord {
            id: (start + i).to_string(),
            create_at: t0 + chrono::Duration::milliseconds(i as i64),
            value: rng.random_range(1..=100),
        };
        out.extend_from_slice(r.to_json().as_bytes());
        out.push(b'\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

/// A seed-style 80-column banner line: `+----- <title> -----...+`.
pub fn banner(title: &str) -> String {
    let head = format!("+----- {title} ");
    let used = head.chars().count() + 1;
    format!("{head}{}+", "-".repeat(80usize.saturating_sub(used)))
}

/// Deterministic "random" number in `[0, 1)` from a seed and some keys, so
/// that a run restarted with the same seed makes the same choices.
pub fn chance(seed: u64, key: &str, n: u32) -> f64 {
    // FNV-1a over the key, mixed with seed and n by splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.rotate_left(17) ^ u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_are_80_columns_like_the_seed() {
        assert_eq!(banner("⏱ ⏳ Start 'process batch'").chars().count(), 80);
        assert_eq!(
            banner("⏱ ⏳ Start 'process batch'"),
            "+----- ⏱ ⏳ Start 'process batch' ----------------------------------------------+"
        );
    }

    #[test]
    fn chance_is_deterministic_and_spread() {
        assert_eq!(chance(1, "a", 1), chance(1, "a", 1));
        let hits = (0..10_000)
            .filter(|i| chance(7, &i.to_string(), 1) < 0.3)
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
