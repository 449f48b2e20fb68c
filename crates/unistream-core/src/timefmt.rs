//! Fast RFC 3339 (UTC, nanoseconds) serde helpers for checkpoint times.
//!
//! chrono's `Display` goes through its generic `strftime` machinery, which
//! showed up as the largest user-space cost of the file checkpoint (a tracker
//! change holds up to five times). Formatting the fixed shape
//! `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` by hand is an order of magnitude cheaper;
//! parsing (only on load) stays with chrono and accepts any RFC 3339 time.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

fn put2(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Writes `YYYY-MM-DDTHH:MM:SS.` and `digits` fractional digits of `t`
/// into `buf`, which must already hold the template (separators and suffix).
fn fill<'a>(t: &DateTime<Utc>, buf: &'a mut [u8], digits: u32) -> Option<&'a str> {
    // One conversion to the naive UTC time: every accessor of `DateTime`
    // would otherwise apply the (zero) offset again.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    put2(&mut buf[0..2], year / 100);
    put2(&mut buf[2..4], year % 100);
    put2(&mut buf[5..7], t.month());
    put2(&mut buf[8..10], t.day());
    put2(&mut buf[11..13], t.hour());
    put2(&mut buf[14..16], t.minute());
    put2(&mut buf[17..19], t.second());
    // Leap seconds are clamped into the last representable fraction.
    let mut n = t.and_utc().nanosecond().min(999_999_999) / 10u32.pow(9 - digits);
    for i in (20..20 + digits as usize).rev() {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    std::str::from_utf8(buf).ok()
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (checkpoint times).
fn format<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
    *buf = *b"0000-00-00T00:00:00.000000000Z";
    fill(t, buf, 9)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, the seed's record time shape (Python's
/// `isoformat()` of an aware UTC time); `None` for years outside 0..=9999.
pub(crate) fn format_seed<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; 32]) -> Option<&'a str> {
    *buf = *b"0000-00-00T00:00:00.000000+00:00";
    fill(t, buf, 6)
}

/// Serializes a time (years outside 0..=9999 fall back to chrono).
pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match format(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => s.collect_str(&t.to_rfc3339()),
    }
}

/// Parses any RFC 3339 time.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
}

/// The same for `Option<DateTime<Utc>>`.
pub(crate) mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes an optional time.
    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Parses an optional time.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super")] DateTime<Utc>);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_chrono_and_round_trips() {
        for (secs, nanos) in [
            (0, 0),
            (1_704_781_446, 759_449_000),
            (4_102_444_799, 999_999_999),
            (951_782_400, 1),
        ] {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut buf = [0u8; 30];
            let s = format(&t, &mut buf).unwrap().to_owned();
            assert_eq!(s, t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
            let back = DateTime::parse_from_rfc3339(&s)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(back, t);
            let mut buf = [0u8; 32];
            assert_eq!(
                format_seed(&t, &mut buf).unwrap(),
                t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
            );
        }
    }
}
