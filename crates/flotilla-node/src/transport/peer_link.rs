//! `PeerLink` (the `ReplicationActor` of DESIGN.md): the stream of messages to one peer.
//!
//! The raft core already bounds what it sends (an in-flight window per follower, a byte cap
//! per AppendEntries); the link adds a bounded queue in front of the socket. When the queue
//! is full or the peer is unreachable, messages are dropped and counted: Raft retransmits.
//! A connection failure stops the actor; its `Supervisor` restarts it, which re-arms the
//! connection with exponential back-off. With TLS on, the connection is mutual TLS and the
//! handshake and frames run inside it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use flotilla_raft::NodeId;
use flotilla_wire::handshake::{HandshakeConfig, client_handshake};
use flotilla_wire::{WireCodec, WireMessage};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

use super::PeerStream;
use crate::shared::Shared;
use crate::tls::TlsSettings;

/// Messages queued per peer before new ones are dropped.
const QUEUE_MAX: usize = 1024;
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PeerLink {
    pub peer: NodeId,
    pub addr: String,
    pub handshake: Arc<HandshakeConfig>,
    pub shared: Arc<Shared>,
    tls: Option<TlsSettings>,
    tx: Option<mpsc::Sender<WireMessage>>,
    backoff_ms: u64,
    /// Consecutive failures, for the back-off and the log.
    failures: u32,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound(pub WireMessage);

/// The connection task ended (the peer closed it, or it never came up).
#[derive(Message)]
#[rtype(result = "()")]
struct Disconnected {
    was_connected: bool,
}

impl PeerLink {
    pub fn new(
        peer: NodeId,
        addr: String,
        handshake: Arc<HandshakeConfig>,
        shared: Arc<Shared>,
        tls: Option<TlsSettings>,
    ) -> Self {
        PeerLink { peer, addr, handshake, shared, tls, tx: None, backoff_ms: 0, failures: 0 }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::channel::<WireMessage>(QUEUE_MAX);
        self.tx = Some(tx);
        let addr = self.addr.clone();
        let hs = self.handshake.clone();
        let peer = self.peer;
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        // Weak: a strong address here would keep the mailbox connected after the raft
        // actor dropped this link (`Shutdown`), and the Supervisor would restart it,
        // reconnecting to a removed peer forever.
        let me = ctx.address().downgrade();
        let delay = Duration::from_millis(self.backoff_ms);
        let back = self.shared.peer_back(peer);
        actix_rt::spawn(async move {
            if !delay.is_zero() {
                // The peer connecting to us cuts the back-off short (`Shared::peer_is_back`).
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = back.notified() => {}
                }
            }
            let was_connected = run_connection(&addr, &hs, tls.as_ref(), peer, &shared, rx).await;
            if let Some(me) = me.upgrade() {
                me.do_send(Disconnected { was_connected });
            }
        });
    }
}

/// Dials, handshakes (TLS first when on), then writes queued messages until the queue
/// closes or a write fails. Returns whether the connection was ever established.
async fn run_connection(
    addr: &str,
    hs: &HandshakeConfig,
    tls: Option<&TlsSettings>,
    peer: NodeId,
    shared: &Shared,
    mut rx: mpsc::Receiver<WireMessage>,
) -> bool {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, super::dial(addr)).await {
        Ok(Ok(s)) => s,
        _ => return false,
    };
    let _ = stream.set_nodelay(true);
    let mut stream: PeerStream = match tls {
        None => Box::new(stream),
        Some(tls) => match tls.connect(stream, addr).await {
            Ok(s) => Box::new(s),
            Err(e) => {
                shared.metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, %addr, error = %e, "TLS handshake with peer failed");
                return false;
            }
        },
    };
    if let Err(e) = client_handshake(&mut stream, hs, peer).await {
        shared.metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer, %addr, error = %e, "peer refused our handshake");
        return false;
    }
    tracing::info!(peer = %peer, %addr, "connected to peer");
    let (read_half, write_half) = tokio::io::split(stream);
    let mut sink = FramedWrite::new(write_half, WireCodec::new());
    // The peer never writes on this connection; reading tells us when it goes away.
    let mut closed = Box::pin(async move {
        let mut read_half = read_half;
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut read_half, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = &mut closed => return true,
        };
        let Some(msg) = msg else { return true };
        // Feed everything that is queued, then flush once: fewer syscalls under load.
        if sink.feed(msg).await.is_err() {
            return true;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(more).await.is_err() {
                return true;
            }
        }
        if SinkExt::<WireMessage>::flush(&mut sink).await.is_err() {
            return true;
        }
    }
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }
}

impl Supervised for PeerLink {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.tx = None;
        self.failures += 1;
        self.backoff_ms = if self.backoff_ms == 0 {
            BACKOFF_MIN_MS
        } else {
            (self.backoff_ms * 2).min(BACKOFF_MAX_MS)
        };
    }
}

impl Handler<Outbound> for PeerLink {
    type Result = ();
    fn handle(&mut self, Outbound(msg): Outbound, ctx: &mut Context<Self>) {
        let faults = self.shared.faults.read().map(|f| f.clone()).unwrap_or_default();
        if !faults.is_clear() {
            if faults.drops_outgoing(self.peer, rand::random::<f64>()) {
                self.shared.metrics.messages_dropped_fault.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if faults.delay_ms > 0 {
                ctx.run_later(Duration::from_millis(faults.delay_ms), move |act, _| {
                    act.enqueue(msg)
                });
                return;
            }
        }
        self.enqueue(msg);
    }
}

impl PeerLink {
    fn enqueue(&mut self, msg: WireMessage) {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.try_send(msg).is_ok());
        if sent {
            self.shared.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.metrics.messages_dropped_unconnected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler<Disconnected> for PeerLink {
    type Result = ();
    fn handle(&mut self, d: Disconnected, ctx: &mut Context<Self>) {
        if d.was_connected {
            tracing::info!(peer = %self.peer, "connection to peer lost");
            self.backoff_ms = 0;
            self.failures = 0;
        }
        // Stopping hands us to the Supervisor, which restarts us with back-off.
        ctx.stop();
    }
}

/// Stop the link for good (the peer left the cluster).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for PeerLink {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.tx = None;
        ctx.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::LogIndex;

    /// A link that sleeps out a reconnect back-off dials as soon as the peer connects to us
    /// (the listener calls `peer_is_back` after the peer's handshake).
    #[actix_rt::test]
    async fn a_peer_that_connects_to_us_cuts_the_reconnect_back_off_short() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Shared::new(NodeId(1), LogIndex::ZERO);
        let hs = Arc::new(HandshakeConfig::new("test", NodeId(1)));
        let mut link = PeerLink::new(NodeId(2), addr, hs, shared.clone(), None);
        link.backoff_ms = 600_000; // far past the deadlines below
        let _link = link.start();
        let quiet = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(quiet.is_err(), "dialed during the back-off");
        // Another peer coming back does not wake this link.
        shared.peer_is_back(NodeId(3));
        let quiet = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(quiet.is_err(), "woken by another peer");
        shared.peer_is_back(NodeId(2));
        let dialed = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
        dialed.expect("dials once the peer is back").expect("accepts");
    }
}
