//! Message decoding past the framing: the input is a frame body (MessagePack), decoded as a
//! `WireMessage` and as a handshake frame, and as the KV state machine's command and
//! response encodings (what a log entry's payload holds). Nothing may panic; what decodes
//! must survive an encode/decode round trip unchanged.
#![no_main]

use flotilla_kv::{KvCommand, KvResponse};
use flotilla_wire::handshake::decode_handshake_frame;
use flotilla_wire::{WIRE_VERSION, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framed = Vec::with_capacity(data.len() + 5);
    framed.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    framed.push(WIRE_VERSION);
    framed.extend_from_slice(data);
    if let Ok(msg) = decode_frame(&framed) {
        let again = encode_frame(&msg).expect("a decoded message encodes");
        assert_eq!(decode_frame(&again).expect("and decodes again"), msg);
    }
    let _ = decode_handshake_frame(&framed);
    if let Ok(cmd) = KvCommand::decode(data) {
        assert_eq!(KvCommand::decode(&cmd.encode()).expect("re-decodes"), cmd);
    }
    if let Ok(resp) = KvResponse::decode(data) {
        assert_eq!(KvResponse::decode(&resp.encode()).expect("re-decodes"), resp);
    }
});
