//! Async drivers for the handshake machines over any byte stream.
//!
//! They read exactly one frame at a time (header, then body), never past the last handshake
//! frame, so when they return the stream is positioned at the first `WireMessage` and can be
//! wrapped in a `Framed` with [`WireCodec`](crate::WireCodec) as is.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::machine::{ClientHandshake, Established, HandshakeStep, ServerHandshake};
use super::{HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig, HandshakeFrame, Nonce};
use crate::error::{HandshakeError, WireError};
use crate::frame::{LEN_PREFIX_BYTES, check_len, decode_payload, encode_into};
use flotilla_raft::types::NodeId;

/// Dials: runs the client side of the handshake with node `to` over `stream`, within
/// `config.timeout`. On success the stream carries `WireMessage` frames from the next byte
/// on. On failure the server has been sent a `Refused` where that makes sense; close the
/// stream.
pub async fn client_handshake<S>(
    stream: &mut S,
    config: &HandshakeConfig,
    to: NodeId,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut machine, hello) = ClientHandshake::start(config, to, Nonce::random());
    let run = async {
        write_frame(stream, &hello).await?;
        loop {
            let step = match read_frame(stream).await {
                Ok(frame) => machine.on_frame(frame),
                Err(ReadError::Frame(e)) => machine.on_bad_frame(e),
                Err(ReadError::Stream(e)) => return Err(e),
            };
            if let Some(done) = perform(stream, step).await {
                return done;
            }
        }
    };
    let result =
        tokio::time::timeout(config.timeout, run).await.unwrap_or(Err(HandshakeError::Timeout));
    if let Err(e) = &result {
        tracing::debug!(node = %config.node_id, peer = %to, error = %e, "peer handshake failed");
    }
    result
}

/// Listens: runs the server side of the handshake over an accepted `stream`, within
/// `config.timeout`. A refused peer has been sent `Refused { reason }` and is logged at warn
/// level; close the stream. On success the stream carries `WireMessage` frames from the next
/// byte on.
pub async fn server_handshake<S>(
    stream: &mut S,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut machine = ServerHandshake::new(config, Nonce::random());
    let run = async {
        loop {
            let step = match read_frame(stream).await {
                Ok(frame) => machine.on_frame(frame),
                Err(ReadError::Frame(e)) => machine.on_bad_frame(e),
                Err(ReadError::Stream(e)) => return Err(e),
            };
            if let Some(done) = perform(stream, step).await {
                return done;
            }
        }
    };
    let result =
        tokio::time::timeout(config.timeout, run).await.unwrap_or(Err(HandshakeError::Timeout));
    match &result {
        Ok(est) => tracing::debug!(
            node = %config.node_id, peer = %est.peer, authenticated = est.authenticated,
            "peer handshake accepted"
        ),
        Err(e) => tracing::warn!(
            node = %config.node_id, claimed_peer = ?machine.claimed_peer(), error = %e,
            "refused peer connection"
        ),
    }
    result
}

/// Sends what a step asks for; returns the outcome once the handshake has ended.
async fn perform<S>(
    stream: &mut S,
    step: HandshakeStep,
) -> Option<Result<Established, HandshakeError>>
where
    S: AsyncWrite + Unpin,
{
    match step {
        HandshakeStep::Send(frame) => match write_frame(stream, &frame).await {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        },
        HandshakeStep::Done { reply, established } => {
            if let Some(frame) = reply
                && let Err(e) = write_frame(stream, &frame).await
            {
                return Some(Err(e));
            }
            Some(Ok(established))
        }
        HandshakeStep::Fail { reply, error } => {
            if let Some(frame) = reply {
                // Best effort: the peer may already be gone, and the error we return is
                // the one that matters.
                let _ = write_frame(stream, &frame).await;
                let _ = stream.shutdown().await;
            }
            Some(Err(error))
        }
    }
}

/// A frame that could not be read: either the peer sent something bad (answered with
/// `Refused`) or the stream itself failed (nothing to answer).
enum ReadError {
    Frame(WireError),
    Stream(HandshakeError),
}

async fn read_frame<S>(stream: &mut S) -> Result<HandshakeFrame, ReadError>
where
    S: AsyncRead + Unpin,
{
    let mut header = [0u8; LEN_PREFIX_BYTES];
    stream.read_exact(&mut header).await.map_err(stream_error)?;
    let len = check_len(u32::from_be_bytes(header), HANDSHAKE_MAX_FRAME_BYTES)
        .map_err(ReadError::Frame)?;
    // Bounded by HANDSHAKE_MAX_FRAME_BYTES, checked just above.
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.map_err(stream_error)?;
    decode_payload(&payload).map_err(ReadError::Frame)
}

fn stream_error(e: std::io::Error) -> ReadError {
    ReadError::Stream(match e.kind() {
        std::io::ErrorKind::UnexpectedEof => HandshakeError::ConnectionClosed,
        _ => HandshakeError::Wire(WireError::Io(e)),
    })
}

async fn write_frame<S>(stream: &mut S, frame: &HandshakeFrame) -> Result<(), HandshakeError>
where
    S: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    encode_into(frame, HANDSHAKE_MAX_FRAME_BYTES, &mut buf)?;
    stream.write_all(&buf).await.map_err(WireError::Io)?;
    stream.flush().await.map_err(WireError::Io)?;
    Ok(())
}
