//! The frame layout and the codec.
//!
//! ```text
//! +----------------+---------+------------------------------+
//! | length: u32 BE | version | body: MessagePack (compact)  |
//! +----------------+---------+------------------------------+
//!   4 bytes          1 byte    length - 1 bytes
//! ```
//!
//! `length` counts the version byte and the body, not itself. It is checked against the
//! maximum before any buffer for the frame is reserved, so a peer cannot make us allocate
//! more than the limit. The body must decode to exactly one message: leftover bytes are an
//! error (rmp-serde alone would silently ignore them).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Cursor;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::WireError;
use crate::message::WireMessage;

/// The version byte of every frame this build writes, and the only one it reads. Bump it
/// whenever the encoding of any frame's body changes.
pub const WIRE_VERSION: u8 = 1;

/// Size of the length header.
pub const LEN_PREFIX_BYTES: usize = 4;

/// The default limit on a frame's `length` (version byte plus body): 16 MiB. An
/// AppendEntries batch or a snapshot chunk must fit in one frame.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// How deeply nested a body may be. Our messages nest about ten levels (message, body,
/// entries, entry, payload, membership, address map, address); the bound keeps a hostile
/// body from exhausting the stack.
const MAX_NESTING_DEPTH: usize = 64;

/// Frames [`WireMessage`]s for a `tokio_util::codec::Framed{Read,Write}`.
///
/// Decoding rejects, with a [`WireError`] and without panicking: an oversized length header
/// (before reserving any memory for it), an empty frame, a foreign version byte, a body that
/// is not a valid message, and a body with trailing bytes. A stream that ends inside a frame
/// yields [`WireError::Truncated`]. After any error the connection should be dropped: the
/// framed stream ends there anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireCodec {
    max_frame_bytes: u32,
}

impl WireCodec {
    /// A codec with the default frame limit, [`DEFAULT_MAX_FRAME_BYTES`].
    pub fn new() -> WireCodec {
        WireCodec { max_frame_bytes: DEFAULT_MAX_FRAME_BYTES }
    }

    /// A codec that refuses (both ways) frames whose `length` exceeds `max_frame_bytes`.
    pub fn with_max_frame_bytes(max_frame_bytes: u32) -> WireCodec {
        WireCodec { max_frame_bytes }
    }

    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }
}

impl Default for WireCodec {
    fn default() -> WireCodec {
        WireCodec::new()
    }
}

impl Decoder for WireCodec {
    type Item = WireMessage;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<WireMessage>, WireError> {
        decode_from_buf(src, self.max_frame_bytes)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<WireMessage>, WireError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(truncated(src)),
        }
    }
}

impl Encoder<WireMessage> for WireCodec {
    type Error = WireError;

    fn encode(&mut self, msg: WireMessage, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_into(&msg, self.max_frame_bytes, dst)
    }
}

impl Encoder<&WireMessage> for WireCodec {
    type Error = WireError;

    fn encode(&mut self, msg: &WireMessage, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_into(msg, self.max_frame_bytes, dst)
    }
}

/// Decodes exactly one complete frame (header included) with the default limit. Truncated
/// input and bytes after the frame are errors. This is the entry point for fuzzing: it must
/// return, never panic, for any input.
pub fn decode_frame(bytes: &[u8]) -> Result<WireMessage, WireError> {
    decode_exact(bytes, DEFAULT_MAX_FRAME_BYTES)
}

/// Encodes one message as a complete frame with the default limit.
pub fn encode_frame(msg: &WireMessage) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::new();
    encode_into(msg, DEFAULT_MAX_FRAME_BYTES, &mut buf)?;
    Ok(buf.freeze())
}

/// Appends `msg` to `dst` as one frame. On error `dst` is left as it was.
pub(crate) fn encode_into<T: Serialize>(
    msg: &T,
    max_frame_bytes: u32,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    let start = dst.len();
    dst.reserve(LEN_PREFIX_BYTES + 1 + 64);
    dst.put_u32(0); // patched below, once the body's length is known
    dst.put_u8(WIRE_VERSION);
    if let Err(e) = rmp_serde::encode::write(&mut (&mut *dst).writer(), msg) {
        dst.truncate(start);
        return Err(e.into());
    }
    let len = dst.len() - start - LEN_PREFIX_BYTES;
    if len > max_frame_bytes as usize {
        dst.truncate(start);
        return Err(WireError::FrameTooLarge { len: len as u64, max: max_frame_bytes });
    }
    // Cannot truncate: len <= max_frame_bytes, a u32.
    dst[start..start + LEN_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Reads the length header at the front of `src`: `None` until all four bytes are there.
/// Refuses an empty or oversized frame before anything is reserved for it.
pub(crate) fn frame_len(src: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, WireError> {
    let Some(header) = src.first_chunk::<LEN_PREFIX_BYTES>() else {
        return Ok(None);
    };
    check_len(u32::from_be_bytes(*header), max_frame_bytes).map(Some)
}

/// Validates a frame length taken from a header.
pub(crate) fn check_len(len: u32, max_frame_bytes: u32) -> Result<usize, WireError> {
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > max_frame_bytes {
        return Err(WireError::FrameTooLarge { len: u64::from(len), max: max_frame_bytes });
    }
    Ok(len as usize)
}

/// Decodes a frame's payload: the version byte, then exactly one message.
pub(crate) fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (&version, body) = payload.split_first().ok_or(WireError::EmptyFrame)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion { got: version, expected: WIRE_VERSION });
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    de.set_max_depth(MAX_NESTING_DEPTH);
    let msg = T::deserialize(&mut de)?;
    // Cannot truncate: the position is within `body`, a slice in memory.
    let used = de.position() as usize;
    if used != body.len() {
        return Err(WireError::TrailingBytes { extra: body.len() - used });
    }
    Ok(msg)
}

/// The streaming half of the codec: takes one frame off the front of `src` when it is
/// complete, else reserves room for the rest of it (at most the limit) and waits.
fn decode_from_buf<T: DeserializeOwned>(
    src: &mut BytesMut,
    max_frame_bytes: u32,
) -> Result<Option<T>, WireError> {
    let Some(len) = frame_len(src, max_frame_bytes)? else {
        return Ok(None);
    };
    let total = LEN_PREFIX_BYTES + len;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    let frame = src.split_to(total);
    decode_payload(&frame[LEN_PREFIX_BYTES..]).map(Some)
}

/// Decodes a buffer that must hold exactly one frame.
pub(crate) fn decode_exact<T: DeserializeOwned>(
    bytes: &[u8],
    max_frame_bytes: u32,
) -> Result<T, WireError> {
    let Some(len) = frame_len(bytes, max_frame_bytes)? else {
        return Err(WireError::Truncated { needed: LEN_PREFIX_BYTES as u64, have: bytes.len() });
    };
    let total = LEN_PREFIX_BYTES + len;
    if bytes.len() < total {
        return Err(WireError::Truncated { needed: total as u64, have: bytes.len() });
    }
    if bytes.len() > total {
        return Err(WireError::TrailingBytes { extra: bytes.len() - total });
    }
    decode_payload(&bytes[LEN_PREFIX_BYTES..])
}

/// The error for a stream that ended inside a frame.
fn truncated(src: &BytesMut) -> WireError {
    let needed = match src.first_chunk::<LEN_PREFIX_BYTES>() {
        Some(header) => LEN_PREFIX_BYTES as u64 + u64::from(u32::from_be_bytes(*header)),
        None => LEN_PREFIX_BYTES as u64,
    };
    WireError::Truncated { needed, have: src.len() }
}
