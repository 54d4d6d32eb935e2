//! The raft transport: one outbound connection per peer (`PeerLink`), and a `Listener` that
//! accepts peers' connections. Each direction of a pair of nodes has its own connection, so
//! a node's messages to a peer always leave in order on one stream.
//!
//! With TLS on (`NodeConfig::tls`) every connection is mutual TLS first; the HMAC handshake
//! and the frames then run inside it, on the same code as over plain TCP ([`PeerStream`]).

pub mod listener;
pub mod peer_link;

pub use listener::Listener;
pub use peer_link::{Outbound, PeerLink};

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream a peer connection runs on: TCP, or TLS over TCP.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// A peer connection's stream, whichever it is.
pub type PeerStream = Box<dyn PeerIo>;

/// Refuses a dialed connection that reached its own socket. Dialing a local port nobody
/// listens on can pick that same port as the source (it lies in the ephemeral range), and
/// TCP's simultaneous open then connects the socket to itself: the dialer would talk to
/// its own handshake, and the port stays taken, so the node that should listen there
/// cannot start. Such a connection is reset (SO_LINGER 0: a plain close would leave the
/// port in TIME_WAIT for a minute) and reported as refused, as Go's `net` does.
pub fn refuse_self<S: AsFd>(stream: &S) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let (local, peer) = (sock.local_addr()?.as_socket(), sock.peer_addr()?.as_socket());
    if local.is_some() && local == peer {
        let _ = sock.set_linger(Some(Duration::ZERO));
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the dial reached itself: nothing listens there yet",
        ));
    }
    Ok(())
}

/// Dials `addr`, refusing a connection to itself ([`refuse_self`]).
pub async fn dial(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    refuse_self(&stream)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpSocket;

    /// A socket bound to a port and then connected to that same port is the self-connected
    /// socket an unlucky dial produces; `refuse_self` must drop it and free the port.
    #[tokio::test]
    async fn a_connection_to_itself_is_refused_and_frees_the_port() {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let stream = socket.connect(addr).await.expect("Linux connects a socket to itself");
        assert_eq!(stream.peer_addr().unwrap(), addr);
        let err = refuse_self(&stream).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        drop(stream);
        // The port is free at once: the node meant to listen there can bind it.
        std::net::TcpListener::bind(addr).expect("the port is free after the refusal");
    }

    #[tokio::test]
    async fn a_connection_to_a_listener_is_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stream = dial(&addr).await.expect("dials the listener");
        assert_eq!(stream.peer_addr().unwrap().to_string(), addr);
    }
}
