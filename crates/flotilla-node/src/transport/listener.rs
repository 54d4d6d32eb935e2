//! `Listener`: accepts peers' connections, runs the server side of the handshake, then
//! reads frames and hands them to the raft actor. A peer that fails the handshake is
//! refused and logged; a malformed frame closes that connection, nothing else. With TLS on,
//! a peer must first complete a TLS handshake with a client certificate that chains to the
//! CA; one that does not (another CA, plain TCP) is refused the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use flotilla_raft::NodeId;
use flotilla_wire::handshake::{HandshakeConfig, server_handshake};
use flotilla_wire::{WireCodec, WireMessage};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

use super::PeerStream;
use crate::raft_actor::{Inbound, RaftActor};
use crate::shared::Shared;
use crate::tls::TlsSettings;

pub struct Listener {
    pub listener: Option<TcpListener>,
    pub handshake: Arc<HandshakeConfig>,
    pub raft: Addr<RaftActor>,
    pub shared: Arc<Shared>,
    pub tls: Option<TlsSettings>,
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            ctx.stop();
            return;
        };
        let hs = self.handshake.clone();
        let raft = self.raft.clone();
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        let accept_loop = async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        let _ = stream.set_nodelay(true);
                        let (hs, raft, shared) = (hs.clone(), raft.clone(), shared.clone());
                        let tls = tls.clone();
                        actix_rt::spawn(async move {
                            let Some(stream) = secure(stream, remote, tls, &shared).await else {
                                return;
                            };
                            serve_peer(stream, remote, hs, raft, shared).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        };
        ctx.spawn(accept_loop.into_actor(self));
    }
}

/// The stream the handshake runs on: the TCP stream itself, or TLS over it once the peer
/// proved a certificate from our CA. `None`: refused (logged and counted).
async fn secure(
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    tls: Option<TlsSettings>,
    shared: &Shared,
) -> Option<PeerStream> {
    let Some(tls) = tls else { return Some(Box::new(tcp)) };
    match tls.accept(tcp).await {
        Ok(stream) => Some(Box::new(stream)),
        Err(e) => {
            shared.metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, error = %e, "refused a peer connection: TLS handshake failed");
            None
        }
    }
}

async fn serve_peer(
    mut stream: PeerStream,
    remote: std::net::SocketAddr,
    hs: Arc<HandshakeConfig>,
    raft: Addr<RaftActor>,
    shared: Arc<Shared>,
) {
    let peer: NodeId = match server_handshake(&mut stream, &hs).await {
        Ok(est) => est.peer,
        Err(e) => {
            shared.metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, error = %e, "refused a peer connection");
            return;
        }
    };
    shared.peer_is_back(peer);
    let mut frames = FramedRead::new(stream, WireCodec::new());
    while let Some(item) = frames.next().await {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                shared.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, %remote, error = %e, "closing peer connection: bad frame");
                return;
            }
        };
        let faulty = shared.faults.read().map(|f| f.drops_incoming(peer)).unwrap_or(false);
        if faulty {
            shared.metrics.messages_dropped_fault.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A peer may only speak for itself: the handshake proved who it is.
        let from_ok = match &msg {
            WireMessage::Raft(m) => m.from == peer && m.to == shared.id,
            WireMessage::SnapshotChunk(c) => c.from == peer,
            WireMessage::SnapshotAck(_) => true,
        };
        if !from_ok {
            shared.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer, "closing peer connection: message claims another sender");
            return;
        }
        shared.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
        // `send` waits when the raft actor's mailbox is full: backpressure on the socket.
        if raft.send(Inbound { from: peer, msg }).await.is_err() {
            return;
        }
    }
}
