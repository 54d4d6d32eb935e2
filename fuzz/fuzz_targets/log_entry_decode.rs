//! Log entry and metadata decoding, as bytes come back from disk. The first byte picks a
//! mode: raw bytes (the checksum must refuse them), or bytes wrapped in a frame with a
//! correct checksum, so that the payload decoders behind the checksum are reached too.
//! Nothing may panic; an entry that decodes must round-trip.
#![no_main]

use flotilla_log::frame::{FRAME_VERSION, decode_entry, decode_meta, encode_entry, verify_entry};
use flotilla_raft::{HardState, LogIndex, Membership, SnapshotMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let index = LogIndex(u64::from_le_bytes(data[1..9].try_into().expect("8 bytes")));
    let rest = &data[9..];
    let value: Vec<u8> = if data[0] & 1 == 0 {
        rest.to_vec()
    } else {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&index.0.to_be_bytes()), rest);
        let mut v = vec![FRAME_VERSION];
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(rest);
        v
    };
    let term = verify_entry(index, &value);
    if let Ok(entry) = decode_entry(index, &value) {
        assert_eq!(term.ok(), Some(entry.term));
        let mut buf = Vec::new();
        encode_entry(&entry, &mut buf).expect("a decoded entry encodes");
        assert_eq!(decode_entry(index, &buf).expect("and decodes again"), entry);
    }
    let _ = decode_meta::<HardState>("hard_state", &value);
    let _ = decode_meta::<SnapshotMeta>("snapshot", &value);
    let _ = decode_meta::<Membership>("membership", &value);
});
