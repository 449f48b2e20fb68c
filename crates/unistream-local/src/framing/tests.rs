use super::*;

const NAME: &[u8; 7] = b"TEST\0\0\0";

fn file(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = magic(NAME).to_vec();
    for (i, p) in payloads.iter().enumerate() {
        encode(&mut out, i as u8 + 1, |o| o.extend_from_slice(p)).unwrap();
    }
    out
}

/// A format 2 file, as the code before issue 22 wrote it.
fn file_v2(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = magic_of(NAME, Version::V2).to_vec();
    for (i, p) in payloads.iter().enumerate() {
        let mut body = vec![i as u8 + 1];
        body.extend_from_slice(p);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn kinds(bytes: &[u8]) -> (Vec<u8>, u64, Option<String>, Option<Corruption>) {
    let mut it = raw_frames(bytes, NAME);
    let mut kinds = Vec::new();
    let mut err = None;
    for f in it.by_ref() {
        match f {
            Ok((_, k, _)) => kinds.push(k),
            Err(c) => err = Some(c),
        }
    }
    (kinds, it.valid_len(), it.torn().map(str::to_owned), err)
}

#[test]
fn frames_round_trip_with_offsets_aligned() {
    let out = file(&[b"a", b"", b"xyz"]);
    let got: Vec<_> = raw_frames(&out, NAME).map(|r| r.unwrap()).collect();
    assert_eq!(
        got,
        vec![(8, 1, &b"a"[..]), (24, 2, &b""[..]), (40, 3, &b"xyz"[..])]
    );
    assert_eq!(out.len() % ALIGN, 0);
}

#[test]
fn no_length_has_a_zero_header_word() {
    for len in 0..=100_000u32 {
        assert_ne!(len_crc(len), 0, "length {len}");
    }
}

#[test]
fn a_cut_at_every_offset_of_the_last_frame_is_a_torn_tail() {
    for build in [file, file_v2] {
        let out = build(&[b"first", b"second frame"]);
        let last = raw_frames(&out, NAME).nth(1).unwrap().unwrap().0 as usize;
        for cut in last + 1..out.len() {
            let (k, valid, torn, err) = kinds(&out[..cut]);
            assert_eq!((k.len(), err), (1, None), "cut at {cut}");
            assert_eq!(valid, last as u64);
            assert!(torn.is_some());
        }
    }
}

#[test]
fn every_change_to_a_length_is_corruption_unless_the_frame_is_whole() {
    let out = file(&[b"first", b"second", b"third"]);
    let offsets: Vec<usize> = raw_frames(&out, NAME)
        .map(|f| f.unwrap().0 as usize)
        .collect();
    for frame in offsets {
        for byte in frame..frame + 4 {
            for v in 0..=255u8 {
                if v == out[byte] {
                    continue;
                }
                let mut bad = out.clone();
                bad[byte] = v;
                let (_, _, torn, err) = kinds(&bad);
                assert!(torn.is_none(), "byte {byte} = {v}: torn {torn:?}");
                assert_eq!(
                    err.map(|e| e.offset),
                    Some(frame as u64),
                    "byte {byte} = {v}"
                );
            }
        }
    }
}

#[test]
fn a_garbled_last_frame_is_corruption_but_a_zeroed_sector_is_a_tear() {
    let out = file(&[b"first", &[7u8; 1200]]);
    let last = 8 + frame_size(5);
    let mut garbled = out.clone();
    garbled[last + 100] ^= 1;
    let (_, _, torn, err) = kinds(&garbled);
    assert_eq!((torn, err.map(|e| e.offset)), (None, Some(last as u64)));
    // A power loss kept the file's length but not its last sector.
    let mut lost = out.clone();
    lost[1024..].fill(0);
    let (k, valid, torn, err) = kinds(&lost);
    assert_eq!((k.len(), valid, err), (1, last as u64, None));
    assert!(torn.unwrap().contains("power loss"));
}

#[test]
fn a_bad_frame_before_others_is_corruption_with_its_offset_and_what_follows() {
    let mut out = file(&[b"first", b"second", b"third"]);
    out[8 + FRAME_HEADER + 2] ^= 1;
    let mut it = raw_frames(&out, NAME);
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(err.offset, 8);
    assert!(err.reason.contains("checksum"), "{}", err.reason);
    assert!(
        err.reason.contains("2 valid frames follow"),
        "{}",
        err.reason
    );
    let second = 8 + frame_size(5) as u64;
    let third = second + frame_size(6) as u64;
    assert_eq!(it.valid_after(8), vec![(second, 2), (third, 3)]);
}

#[test]
fn a_zero_header_ends_the_frames_only_when_nothing_valid_follows() {
    let mut out = file(&[b"first"]);
    let good = out.len() as u64;
    // A frame whose header was never published, then preallocated zeros.
    let mut unpublished = Vec::new();
    encode(&mut unpublished, 2, |o| o.extend_from_slice(b"unpublished")).unwrap();
    unpublished[..8].fill(0);
    out.extend_from_slice(&unpublished);
    out.extend_from_slice(&[0; 64]);
    let (k, valid, torn, err) = kinds(&out);
    assert_eq!((k, valid, err), (vec![1], good, None));
    assert!(torn.is_some());
    // A frame after it makes the zeros damage.
    out.truncate(out.len() - 64);
    encode(&mut out, 3, |o| o.extend_from_slice(b"published later")).unwrap();
    let (_, _, torn, err) = kinds(&out);
    assert_eq!((torn, err.map(|e| e.offset)), (None, Some(good)));
}

#[test]
fn format_2_is_read_and_its_length_damage_is_caught_when_frames_follow() {
    let out = file_v2(&[b"first", b"second", b"third"]);
    let (k, valid, torn, err) = kinds(&out);
    assert_eq!(
        (k, valid, torn, err),
        (vec![1, 2, 3], out.len() as u64, None, None)
    );
    // The length of the second frame pointing past the end.
    let mut bad = out.clone();
    bad[8 + 9 + 5..8 + 9 + 5 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (k, _, torn, err) = kinds(&bad);
    assert_eq!((k, torn), (vec![1], None));
    assert_eq!(err.unwrap().offset, (8 + 9 + 5) as u64);
    // A format 2 unpublished append: zero header, its frames, one padding
    // frame, zeros.
    let mut mapped = file_v2(&[b"first"]);
    let good = mapped.len() as u64;
    let group = file_v2(&[b"a", b"b"]);
    let mut group = group[8..].to_vec();
    let mut pad = vec![0u8; 4];
    pad.extend_from_slice(&crc32c::crc32c(&[0]).to_le_bytes());
    pad.push(0);
    group.extend_from_slice(&pad);
    group[..8].fill(0);
    mapped.extend_from_slice(&group);
    mapped.extend_from_slice(&[0; 40]);
    let (k, valid, torn, err) = kinds(&mapped);
    assert_eq!((k, valid, err), (vec![1], good, None));
    assert!(torn.is_some());
}

#[test]
fn a_wrong_magic_or_version_is_corruption_at_zero() {
    let out = file(&[b"x"]);
    let err = raw_frames(&out, b"OTHER\0\0").next().unwrap().unwrap_err();
    assert_eq!(err.offset, 0);
    let mut v9 = out.clone();
    v9[7] = 9;
    let err = raw_frames(&v9, NAME).next().unwrap().unwrap_err();
    assert!(err.reason.contains("version 9"), "{}", err.reason);
}

#[test]
fn cursor_stops_at_the_end() {
    let mut out = Vec::new();
    put_str(&mut out, "ab");
    out.push(9);
    let mut c = Cursor::new(&out);
    assert_eq!(c.str(), Some("ab"));
    assert_eq!(c.u8(), Some(9));
    assert_eq!(c.u32(), None);
    assert!(c.is_empty());
    assert_eq!(Cursor::new(&[255, 255, 255, 255, 1]).bytes(), None);
}

#[test]
fn a_version_byte_damaged_from_3_to_2_is_corruption_not_a_torn_tail() {
    // Found by the wal_recovery fuzz target: read as format 2, the first
    // format 3 frame looked cut short, and every frame was dropped.
    for payload in [&b"first"[..], &[b'x'; 3000][..]] {
        let mut out = file(&[payload, b"second"]);
        out[7] = 2;
        let (k, _, torn, err) = kinds(&out);
        assert_eq!((k, torn, err.map(|e| e.offset)), (vec![], None, Some(8)));
    }
    // Where the first frame's length points past the end, the format 3
    // frames behind it are what tells.
    let mut out = file(&[&[b'x'; 3000][..]]);
    out.truncate(8 + 24);
    encode(&mut out, 2, |o| o.extend_from_slice(b"after")).unwrap();
    out[7] = 2;
    out[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_, _, torn, err) = kinds(&out);
    assert_eq!(torn, None);
    assert!(err.unwrap().reason.contains("damaged version byte"));
    // A format 2 file whose version byte reads 3 is damage too.
    let mut v2 = file_v2(&[b"first", b"second"]);
    v2[7] = 3;
    let (_, _, torn, err) = kinds(&v2);
    assert_eq!((torn, err.map(|e| e.offset)), (None, Some(8)));
}

#[test]
fn a_version_byte_and_the_only_length_damaged_are_corruption() {
    // Found by the wal_recovery fuzz target: version 3 -> 2 and the only
    // frame's length past the end read as a format 2 frame cut short.
    let mut out = file(&[b"\x01\x000\x02\x00k0aaa"]);
    out[7] = 2;
    out[11] ^= 1;
    let (k, _, torn, err) = kinds(&out);
    assert_eq!((k, torn), (vec![], None));
    assert!(err.unwrap().reason.contains("damaged version byte"));
    // A real format 2 frame cut short stays a torn tail.
    let v2 = file_v2(&[b"first", b"second frame"]);
    let (k, _, torn, err) = kinds(&v2[..v2.len() - 3]);
    assert_eq!((k, err), (vec![1], None));
    assert!(torn.is_some());
}
