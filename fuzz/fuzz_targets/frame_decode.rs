//! Frame decoding, as a peer's bytes reach it: `decode_frame` (one whole frame), the
//! handshake frame decoder, and the streaming `WireCodec` fed in pieces. Nothing may panic,
//! and a frame that decodes must encode back to the same message.
#![no_main]

use bytes::BytesMut;
use flotilla_wire::handshake::decode_handshake_frame;
use flotilla_wire::{WireCodec, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_frame(data) {
        let again = encode_frame(&msg).expect("a decoded message encodes");
        assert_eq!(decode_frame(&again).expect("and decodes again"), msg);
    }
    let _ = decode_handshake_frame(data);
    // The streaming decoder, fed in pieces whose size the input picks.
    let mut codec = WireCodec::with_max_frame_bytes(64 * 1024);
    let mut buf = BytesMut::new();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
