//! How entries and metadata look on disk: a version byte, a CRC32C, then the body.
//!
//! Entry value (key = the index as 8 big-endian bytes):
//!
//! ```text
//! byte 0      FRAME_VERSION (1)
//! bytes 1..5  CRC32C, little-endian, of: key (8 bytes) ++ bytes 5..
//! bytes 5..13 term, u64 big-endian
//! byte 13     payload kind: 0 = Noop, 1 = Command, 2 = Config
//! bytes 14..  Noop: nothing; Command: the command's bytes as they are;
//!             Config: the `Membership`, rmp-serde with field names (`to_vec_named`)
//! ```
//!
//! The checksum covers the key, so a value that lands under the wrong index is caught too.
//! The term sits at a fixed offset so that the term of an entry can be read (and its
//! checksum checked) without decoding the payload. Commands, nearly every entry, are stored
//! raw: decoding one is a checksum and a copy. Any change to this layout bumps
//! `FRAME_VERSION`; a reader refuses versions it does not know.
//!
//! Metadata values use the same frame without term and kind: version, CRC32C of
//! (key name ++ body), body (rmp-serde with field names, or raw bytes for user blobs).
//!
//! Decoding never panics: every length is checked, and every failure is an error that
//! names the index (or the metadata key).

use bytes::Bytes;
use flotilla_raft::{Entry, EntryPayload, LogIndex, Term};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::LogError;

/// The frame layout version. A reader refuses any other value rather than guess.
pub const FRAME_VERSION: u8 = 1;

const CRC_AT: usize = 1;
const TERM_AT: usize = 5;
const KIND_AT: usize = 13;
const ENTRY_BODY_AT: usize = 14;

const KIND_NOOP: u8 = 0;
const KIND_COMMAND: u8 = 1;
const KIND_CONFIG: u8 = 2;
const META_BODY_AT: usize = 5;

/// The key of the entry at `index`: big-endian, so the keyspace's byte order is index order.
pub fn entry_key(index: LogIndex) -> [u8; 8] {
    index.0.to_be_bytes()
}

/// The index stored in a key, or `None` if the key is not 8 bytes.
pub fn key_index(key: &[u8]) -> Option<LogIndex> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(LogIndex(u64::from_be_bytes(bytes)))
}

/// Encodes `entry` into a framed value, reusing `buf`.
pub fn encode_entry(entry: &Entry, buf: &mut Vec<u8>) -> Result<(), LogError> {
    buf.clear();
    buf.push(FRAME_VERSION);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&entry.term.0.to_be_bytes());
    match &entry.payload {
        EntryPayload::Noop => buf.push(KIND_NOOP),
        EntryPayload::Command(bytes) => {
            buf.push(KIND_COMMAND);
            buf.extend_from_slice(bytes);
        }
        EntryPayload::Config(membership) => {
            buf.push(KIND_CONFIG);
            rmp_serde::encode::write_named(buf, membership).map_err(|e| LogError::Corrupt {
                index: entry.index,
                reason: format!("cannot encode membership: {e}"),
            })?;
        }
    }
    let crc = entry_crc(&entry_key(entry.index), &buf[TERM_AT..]);
    buf[CRC_AT..TERM_AT].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks the frame of the value stored at `index` and returns its term, without decoding
/// the payload.
pub fn verify_entry(index: LogIndex, value: &[u8]) -> Result<Term, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { index, reason };
    if value.len() < ENTRY_BODY_AT {
        return Err(corrupt(format!(
            "value is {} bytes, shorter than a frame header",
            value.len()
        )));
    }
    if value[0] != FRAME_VERSION {
        return Err(corrupt(format!(
            "unknown frame version {} (this build reads version {FRAME_VERSION})",
            value[0]
        )));
    }
    let stored = u32::from_le_bytes(read_array(&value[CRC_AT..TERM_AT]));
    let actual = entry_crc(&entry_key(index), &value[TERM_AT..]);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(Term(u64::from_be_bytes(read_array(&value[TERM_AT..KIND_AT]))))
}

/// Checks and decodes the value stored at `index`.
pub fn decode_entry(index: LogIndex, value: &[u8]) -> Result<Entry, LogError> {
    let term = verify_entry(index, value)?;
    let body = &value[ENTRY_BODY_AT..];
    let corrupt = |reason: String| LogError::Corrupt { index, reason };
    let payload = match value[KIND_AT] {
        KIND_NOOP if body.is_empty() => EntryPayload::Noop,
        KIND_NOOP => return Err(corrupt(format!("a no-op entry carries {} bytes", body.len()))),
        KIND_COMMAND => EntryPayload::Command(Bytes::copy_from_slice(body)),
        KIND_CONFIG => EntryPayload::Config(
            rmp_serde::from_slice(body)
                .map_err(|e| corrupt(format!("membership does not decode: {e}")))?,
        ),
        other => return Err(corrupt(format!("unknown payload kind {other}"))),
    };
    Ok(Entry { term, index, payload })
}

/// Encodes a metadata value stored under `key` (rmp-serde with field names).
pub fn encode_meta<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, LogError> {
    let body = rmp_serde::to_vec_named(value).map_err(|e| LogError::CorruptMeta {
        key: key.to_owned(),
        reason: format!("cannot encode: {e}"),
    })?;
    Ok(frame_meta(key, &body))
}

/// Checks and decodes a metadata value stored under `key`.
pub fn decode_meta<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, LogError> {
    rmp_serde::from_slice(unframe_meta(key, value)?).map_err(|e| LogError::CorruptMeta {
        key: key.to_owned(),
        reason: format!("does not decode: {e}"),
    })
}

/// Frames raw `body` bytes stored under `key`.
pub fn frame_meta(key: &str, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(META_BODY_AT + body.len());
    buf.push(FRAME_VERSION);
    buf.extend_from_slice(&meta_crc(key, body).to_le_bytes());
    buf.extend_from_slice(body);
    buf
}

/// Checks the frame of a value stored under `key` and returns its body.
pub fn unframe_meta<'a>(key: &str, value: &'a [u8]) -> Result<&'a [u8], LogError> {
    let corrupt = |reason: String| LogError::CorruptMeta { key: key.to_owned(), reason };
    if value.len() < META_BODY_AT {
        return Err(corrupt(format!(
            "value is {} bytes, shorter than a frame header",
            value.len()
        )));
    }
    if value[0] != FRAME_VERSION {
        return Err(corrupt(format!(
            "unknown frame version {} (this build reads version {FRAME_VERSION})",
            value[0]
        )));
    }
    let stored = u32::from_le_bytes(read_array(&value[CRC_AT..META_BODY_AT]));
    let body = &value[META_BODY_AT..];
    let actual = meta_crc(key, body);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(body)
}

fn meta_crc(key: &str, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key.as_bytes()), body)
}

fn entry_crc(key: &[u8; 8], rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), rest)
}

/// Copies a slice whose length the caller has already checked into an array.
fn read_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::{Membership, NodeId};

    fn entries() -> Vec<Entry> {
        vec![
            Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Noop },
            Entry {
                term: Term(2),
                index: LogIndex(2),
                payload: EntryPayload::Command(Bytes::from_static(b"set x 1")),
            },
            Entry {
                term: Term(u64::MAX),
                index: LogIndex(u64::MAX),
                payload: EntryPayload::Config(Membership::with_voters([NodeId(1), NodeId(2)])),
            },
        ]
    }

    #[test]
    fn entry_frames_round_trip() {
        let mut buf = Vec::new();
        for e in entries() {
            encode_entry(&e, &mut buf).unwrap();
            assert_eq!(buf[0], FRAME_VERSION);
            assert_eq!(verify_entry(e.index, &buf).unwrap(), e.term);
            assert_eq!(decode_entry(e.index, &buf).unwrap(), e);
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught_and_names_the_index() {
        let e = &entries()[1];
        let mut buf = Vec::new();
        encode_entry(e, &mut buf).unwrap();
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode_entry(e.index, &bad) {
                    Err(LogError::Corrupt { index, .. }) => assert_eq!(index, e.index),
                    other => panic!("flip of byte {byte} bit {bit} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_value_under_the_wrong_index_is_corrupt() {
        let e = &entries()[1];
        let mut buf = Vec::new();
        encode_entry(e, &mut buf).unwrap();
        let err = decode_entry(LogIndex(3), &buf).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { index: LogIndex(3), .. }), "{err}");
        assert!(err.to_string().contains("log entry 3"), "{err}");
    }

    #[test]
    fn truncated_and_unknown_version_frames_are_corrupt() {
        let e = &entries()[0];
        let mut buf = Vec::new();
        encode_entry(e, &mut buf).unwrap();
        for len in 0..buf.len() {
            assert!(decode_entry(e.index, &buf[..len]).is_err(), "prefix of {len} bytes");
        }
        buf[0] = 2;
        let err = decode_entry(e.index, &buf).unwrap_err();
        assert!(err.to_string().contains("unknown frame version 2"), "{err}");
    }

    /// Bytes that a buggy writer stored with a good checksum are still refused, never
    /// decoded into something else and never a panic.
    #[test]
    fn a_valid_checksum_over_garbage_is_still_an_error_not_a_panic() {
        let index = LogIndex(7);
        let cases: [(&[u8], &str); 3] = [
            (&[KIND_CONFIG, 0xc1, 0xff, 0x00], "membership does not decode"),
            (&[KIND_NOOP, 1], "no-op entry carries 1 bytes"),
            (&[9], "unknown payload kind 9"),
        ];
        for (body, want) in cases {
            let mut value = vec![FRAME_VERSION, 0, 0, 0, 0];
            value.extend_from_slice(&1u64.to_be_bytes());
            value.extend_from_slice(body);
            let crc = entry_crc(&entry_key(index), &value[TERM_AT..]);
            value[CRC_AT..TERM_AT].copy_from_slice(&crc.to_le_bytes());
            let err = decode_entry(index, &value).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn meta_frames_round_trip_and_catch_flips() {
        let buf = encode_meta("hard_state", &(5u64, Some(3u64))).unwrap();
        assert_eq!(decode_meta::<(u64, Option<u64>)>("hard_state", &buf).unwrap(), (5, Some(3)));
        assert!(decode_meta::<(u64, Option<u64>)>("other_key", &buf).is_err());
        for byte in 0..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            assert!(
                matches!(
                    decode_meta::<(u64, Option<u64>)>("hard_state", &bad),
                    Err(LogError::CorruptMeta { .. })
                ),
                "flip at {byte}"
            );
        }
    }
}
