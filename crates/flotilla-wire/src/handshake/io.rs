//! Async drivers for the handshake machines over any byte stream.
//!
//! They read exactly one frame at a time (header, then body), never past the last handshake
//! frame, so when they return the stream is positioned at the first `WireMessage` and can be
//! wrapped in a `Framed` with [`WireCodec`](crate::WireCodec) as is.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::machine::{ClientHandshake, Established, HandshakeStep, ServerHandshake};
use super::{HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig, HandshakeFrame, Nonce};
use crate::error::{HandshakeError, WireError};
use crate::frame::{LEN_PREFIX_BYTES, check_len, decode_payload, encode_into};
use flotilla_raft::types::NodeId;

/// How long we try to deliver a `Refused` to a peer that may not be reading. The refusal
/// is a courtesy; the error we return does not wait for it longer than this.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// Dials: runs the client side of the handshake with node `to` over `stream`, within
/// `config.timeout`. On success the stream carries `WireMessage` frames from the next byte
/// on. On failure the server has been sent a `Refused` where that makes sense; close the
/// stream. Needs a tokio runtime with time enabled.
pub async fn client_handshake<S>(
    stream: &mut S,
    config: &HandshakeConfig,
    to: NodeId,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut machine, hello) = ClientHandshake::start(config, to, Nonce::random());
    let result = drive(stream, &mut machine, Some(hello), config.timeout).await;
    if let Err(e) = &result {
        tracing::debug!(node = %config.node_id, peer = %to, error = %e, "peer handshake failed");
    }
    result
}

/// Listens: runs the server side of the handshake over an accepted `stream`, within
/// `config.timeout`. A refused peer has been sent `Refused { reason }` and is logged at warn
/// level; close the stream. On success the stream carries `WireMessage` frames from the next
/// byte on. Needs a tokio runtime with time enabled.
pub async fn server_handshake<S>(
    stream: &mut S,
    config: &HandshakeConfig,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut machine = ServerHandshake::new(config, Nonce::random());
    let result = drive(stream, &mut machine, None, config.timeout).await;
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

/// The two machines, as the driver sees them.
trait Machine {
    fn on_frame(&mut self, frame: HandshakeFrame) -> HandshakeStep;
    fn on_bad_frame(&mut self, error: WireError) -> HandshakeStep;
}

impl Machine for ClientHandshake {
    fn on_frame(&mut self, frame: HandshakeFrame) -> HandshakeStep {
        ClientHandshake::on_frame(self, frame)
    }
    fn on_bad_frame(&mut self, error: WireError) -> HandshakeStep {
        ClientHandshake::on_bad_frame(self, error)
    }
}

impl Machine for ServerHandshake {
    fn on_frame(&mut self, frame: HandshakeFrame) -> HandshakeStep {
        ServerHandshake::on_frame(self, frame)
    }
    fn on_bad_frame(&mut self, error: WireError) -> HandshakeStep {
        ServerHandshake::on_bad_frame(self, error)
    }
}

/// Runs the exchange under `timeout`; then, if it failed with a refusal to send, sends it
/// under its own short limit, so a peer that does not read cannot turn our precise error
/// into a timeout.
async fn drive<S, M>(
    stream: &mut S,
    machine: &mut M,
    first: Option<HandshakeFrame>,
    timeout: Duration,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Machine,
{
    let exchange = tokio::time::timeout(timeout, exchange(stream, machine, first)).await;
    match exchange {
        Err(_elapsed) => Err(HandshakeError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Ok(established))) => Ok(established),
        Ok(Ok(Err((refusal, error)))) => {
            if let Some(frame) = refusal {
                // Best effort: the peer may be gone or not reading.
                let refuse = async {
                    write_frame(stream, &frame).await?;
                    stream.shutdown().await.map_err(WireError::Io)?;
                    Ok::<(), HandshakeError>(())
                };
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, refuse).await;
            }
            Err(error)
        }
    }
}

/// A finished exchange: the peer, or the refusal still to send and the error.
type Finished = Result<Established, (Option<HandshakeFrame>, HandshakeError)>;

/// Sends and receives frames until the machine is done. The outer error is a failure of the
/// stream itself, with nothing left to tell the peer.
async fn exchange<S, M>(
    stream: &mut S,
    machine: &mut M,
    first: Option<HandshakeFrame>,
) -> Result<Finished, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Machine,
{
    if let Some(frame) = first {
        write_frame(stream, &frame).await?;
    }
    loop {
        let step = match read_frame(stream).await {
            Ok(frame) => machine.on_frame(frame),
            Err(ReadError::Frame(e)) => machine.on_bad_frame(e),
            Err(ReadError::Stream(e)) => return Err(e),
        };
        match step {
            HandshakeStep::Send(frame) => write_frame(stream, &frame).await?,
            HandshakeStep::Done { reply, established } => {
                if let Some(frame) = reply {
                    write_frame(stream, &frame).await?;
                }
                return Ok(Ok(established));
            }
            HandshakeStep::Fail { reply, error } => return Ok(Err((reply, error))),
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
