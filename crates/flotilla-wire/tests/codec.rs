//! The frame codec: round trips for every message kind, and every way a frame can be bad.

mod common;

use bytes::{BufMut, BytesMut};
use flotilla_raft::message::{Message, MessageBody};
use flotilla_raft::types::{NodeId, Term};
use flotilla_wire::handshake::{decode_handshake_frame, encode_handshake_frame};
use flotilla_wire::{
    DEFAULT_MAX_FRAME_BYTES, LEN_PREFIX_BYTES, WIRE_VERSION, WireCodec, WireError, WireMessage,
    decode_frame, encode_frame,
};
use futures_util::StreamExt;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

fn encode(msg: &WireMessage) -> BytesMut {
    let mut buf = BytesMut::new();
    WireCodec::new().encode(msg, &mut buf).expect("encodes");
    buf
}

fn timeout_now() -> WireMessage {
    WireMessage::Raft(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(5),
        body: MessageBody::TimeoutNow,
    })
}

/// Rewrites a frame's length header to match its (edited) contents.
fn fix_header(frame: &mut [u8]) {
    let len = (frame.len() - LEN_PREFIX_BYTES) as u32;
    frame[..LEN_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
}

/// Runs the streaming decoder over `input` delivered in pieces of the given sizes (cycled),
/// collecting messages until the input is used up or an error occurs.
fn decode_in_pieces(input: &[u8], piece_sizes: &[usize]) -> (Vec<WireMessage>, Option<WireError>) {
    let mut codec = WireCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = piece_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("non-empty")).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(msg)) => out.push(msg),
        Ok(None) => {}
        Err(e) => return (out, Some(e)),
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_wire_message_round_trips(msg in common::wire_message(512)) {
        let frame = encode(&msg);
        let mut buf = frame.clone();
        let decoded = WireCodec::new().decode(&mut buf).expect("decodes");
        prop_assert_eq!(decoded.as_ref(), Some(&msg));
        prop_assert!(buf.is_empty(), "the decoder consumed exactly one frame");
        prop_assert_eq!(decode_frame(&frame).expect("decodes"), msg.clone());
        prop_assert_eq!(&encode_frame(&msg).expect("encodes")[..], &frame[..]);
        prop_assert_eq!(frame[LEN_PREFIX_BYTES], WIRE_VERSION);
    }

    #[test]
    fn every_handshake_frame_round_trips(frame in common::handshake_frame()) {
        let bytes = encode_handshake_frame(&frame).expect("encodes");
        prop_assert_eq!(decode_handshake_frame(&bytes).expect("decodes"), frame);
    }

    #[test]
    fn frames_split_across_many_small_reads_decode(
        msgs in proptest::collection::vec(common::wire_message(300), 1..6),
        pieces in proptest::collection::vec(1usize..9, 1..8),
    ) {
        let mut input = BytesMut::new();
        for m in &msgs {
            input.extend_from_slice(&encode(m));
        }
        let (decoded, error) = decode_in_pieces(&input, &pieces);
        prop_assert!(error.is_none(), "unexpected error {:?}", error);
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&input);
        let _ = decode_handshake_frame(&input);
        let _ = decode_in_pieces(&input, &[3, 1, 64]);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut frame = vec![0; LEN_PREFIX_BYTES];
        frame.push(WIRE_VERSION);
        frame.extend_from_slice(&body);
        fix_header(&mut frame);
        let _ = decode_frame(&frame);
        let _ = decode_handshake_frame(&frame);
    }

    #[test]
    fn corrupted_frames_are_decoded_or_refused_never_panic(
        msg in common::wire_message(200),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let frame = encode(&msg);
        let mut corrupted = frame.to_vec();
        for (at, byte) in &flips {
            let i = at.index(corrupted.len());
            corrupted[i] ^= byte | 1; // always changes the byte
        }
        let _ = decode_frame(&corrupted);
        let _ = decode_in_pieces(&corrupted, &[7]);
        // Cut the body short and fix the header: the body is now incomplete.
        let mut short = frame[..LEN_PREFIX_BYTES + 1 + cut.index(frame.len() - LEN_PREFIX_BYTES - 1)].to_vec();
        fix_header(&mut short);
        prop_assert!(decode_frame(&short).is_err(), "a cut body must not decode");
    }
}

#[test]
fn big_entries_round_trip_under_the_default_limit() {
    // One 8 MiB entry, then 64 entries of 128 KiB: realistic worst cases for a batch.
    for msg in [common::append_entries(1, 8 << 20), common::append_entries(64, 128 << 10)] {
        let frame = encode(&msg);
        assert!(frame.len() <= DEFAULT_MAX_FRAME_BYTES as usize + LEN_PREFIX_BYTES);
        assert_eq!(decode_frame(&frame).expect("decodes"), msg);
    }
}

#[test]
fn compact_encoding_costs_a_few_bytes_per_entry() {
    // The reason for the compact encoding: field names are not repeated per entry. With maps
    // ("term", "index", "payload") every entry would cost about 20 bytes more (measured: 9,158
    // bytes compact against 10,452 named for this batch).
    let frame = encode(&common::append_entries(64, 128));
    let overhead_per_entry = (frame.len() - 64 * 128) / 64;
    assert!(overhead_per_entry <= 16, "{overhead_per_entry} bytes per entry");
}

#[test]
fn oversized_length_header_is_refused_before_reserving_memory() {
    let mut codec = WireCodec::with_max_frame_bytes(1024);
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u32(1025);
    buf.put_u8(WIRE_VERSION);
    let err = codec.decode(&mut buf).expect_err("oversized");
    assert!(matches!(err, WireError::FrameTooLarge { len: 1025, max: 1024 }), "{err:?}");
    assert!(buf.capacity() < 1024, "nothing was reserved for the frame");

    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let err = WireCodec::new().decode(&mut buf).expect_err("oversized");
    assert!(
        matches!(err, WireError::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == DEFAULT_MAX_FRAME_BYTES),
        "{err:?}"
    );
    assert!(buf.capacity() < 1 << 20);

    // Exactly at the limit is fine: the decoder waits for the rest.
    let mut buf = BytesMut::new();
    buf.put_u32(1024);
    buf.put_u8(WIRE_VERSION);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
}

#[test]
fn encoder_refuses_a_message_over_the_limit_and_keeps_the_buffer() {
    let mut codec = WireCodec::with_max_frame_bytes(1024);
    let mut buf = BytesMut::from(&b"earlier frames"[..]);
    let err = codec.encode(common::append_entries(1, 2048), &mut buf).expect_err("too big");
    assert!(matches!(err, WireError::FrameTooLarge { max: 1024, .. }), "{err:?}");
    assert_eq!(&buf[..], b"earlier frames");
    codec.encode(timeout_now(), &mut buf).expect("a small one still fits");
}

#[test]
fn foreign_version_byte_is_refused() {
    let mut frame = encode(&timeout_now());
    for version in [0, WIRE_VERSION + 1, 0xff] {
        frame[LEN_PREFIX_BYTES] = version;
        let err = decode_frame(&frame).expect_err("foreign version");
        assert!(
            matches!(err, WireError::UnsupportedVersion { got, expected: WIRE_VERSION } if got == version),
            "{err:?}"
        );
        let err = WireCodec::new().decode(&mut frame.clone()).expect_err("foreign version");
        assert!(matches!(err, WireError::UnsupportedVersion { .. }), "{err:?}");
    }
}

#[test]
fn empty_frame_is_refused() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = WireCodec::new().decode(&mut buf).expect_err("empty");
    assert!(matches!(err, WireError::EmptyFrame), "{err:?}");
}

#[test]
fn trailing_bytes_inside_a_frame_are_refused() {
    let mut frame = encode(&timeout_now()).to_vec();
    frame.extend_from_slice(&[0xc0, 0xc0]); // two msgpack nils
    fix_header(&mut frame);
    let err = decode_frame(&frame).expect_err("trailing");
    assert!(matches!(err, WireError::TrailingBytes { extra: 2 }), "{err:?}");
    let err = WireCodec::new().decode(&mut BytesMut::from(&frame[..])).expect_err("trailing");
    assert!(matches!(err, WireError::TrailingBytes { extra: 2 }), "{err:?}");
}

#[test]
fn decode_frame_wants_exactly_one_whole_frame() {
    let frame = encode(&timeout_now());
    let err = decode_frame(&frame[..frame.len() - 1]).expect_err("truncated");
    assert!(matches!(err, WireError::Truncated { have, .. } if have == frame.len() - 1), "{err:?}");
    let err = decode_frame(&frame[..2]).expect_err("truncated header");
    assert!(matches!(err, WireError::Truncated { needed: 4, have: 2 }), "{err:?}");
    let mut two = frame.to_vec();
    two.extend_from_slice(&frame);
    let err = decode_frame(&two).expect_err("two frames");
    assert!(matches!(err, WireError::TrailingBytes { extra } if extra == frame.len()), "{err:?}");
}

#[test]
fn stream_ending_inside_a_frame_is_a_truncation_error() {
    let frame = encode(&timeout_now());
    let (msgs, err) = decode_in_pieces(&frame[..frame.len() - 3], &[5]);
    assert!(msgs.is_empty());
    let err = err.expect("truncated");
    assert!(
        matches!(err, WireError::Truncated { needed, have } if needed == frame.len() as u64 && have == frame.len() - 3),
        "{err:?}"
    );
}

#[test]
fn a_handshake_frame_is_not_a_wire_message_and_vice_versa() {
    let welcome = encode_handshake_frame(&flotilla_wire::HandshakeFrame::Welcome).expect("encodes");
    assert!(matches!(decode_frame(&welcome), Err(WireError::Decode(_))));
    let msg = encode(&timeout_now());
    assert!(matches!(decode_handshake_frame(&msg), Err(WireError::Decode(_))));
}

#[tokio::test]
async fn framed_read_decodes_a_big_frame_arriving_a_few_bytes_at_a_time() {
    // A 7-byte pipe forces the frame through many partial reads.
    let (mut tx, rx) = tokio::io::duplex(7);
    let msgs = vec![common::append_entries(3, 10_000), timeout_now(), common::append_entries(1, 1)];
    let mut wire = BytesMut::new();
    for m in &msgs {
        wire.extend_from_slice(&encode(m));
    }
    let writer = tokio::spawn(async move {
        tx.write_all(&wire).await.expect("writes");
        // dropping tx ends the stream
    });
    let got: Vec<WireMessage> =
        FramedRead::new(rx, WireCodec::new()).map(|r| r.expect("decodes")).collect().await;
    writer.await.expect("writer");
    assert_eq!(got, msgs);
}

#[tokio::test]
async fn framed_read_ends_with_an_error_on_garbage() {
    let (mut tx, rx) = tokio::io::duplex(64);
    let mut input = encode(&timeout_now()).to_vec();
    input.extend_from_slice(&[0, 0, 0, 3, WIRE_VERSION, 0xff, 0xff]);
    tx.write_all(&input).await.expect("writes");
    drop(tx);
    let mut framed = FramedRead::new(rx, WireCodec::new());
    assert_eq!(framed.next().await.map(|r| r.expect("first frame is fine")), Some(timeout_now()));
    assert!(matches!(framed.next().await, Some(Err(WireError::Decode(_)))));
    assert!(framed.next().await.is_none(), "the stream ends after an error");
}
