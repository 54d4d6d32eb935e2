//! The sans-I/O handshake state machines: frames in, steps out. No clock, no randomness
//! (the caller supplies the nonce), so every path can be tested frame by frame.

use flotilla_raft::types::NodeId;

use super::proof::{self, Role, Transcript};
use super::{HandshakeConfig, HandshakeFrame, MAX_REASON_CHARS, Nonce, PROTOCOL_VERSION, Proof};
use crate::error::{HandshakeError, WireError};

/// What the caller must do after feeding a frame to a handshake.
#[derive(Debug)]
pub enum HandshakeStep {
    /// Send this frame, then wait for the peer's next one.
    Send(HandshakeFrame),
    /// The handshake succeeded. Send `reply` if there is one, then exchange `WireMessage`s.
    Done { reply: Option<HandshakeFrame>, established: Established },
    /// The handshake failed. Send `reply` if there is one (a `Refused`), then close.
    Fail { reply: Option<HandshakeFrame>, error: HandshakeError },
}

/// Who is on the other end of a successful handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Established {
    /// The peer's node id: checked against `accept_peer` by a server, the dialled id for a
    /// client.
    pub peer: NodeId,
    /// True when both sides proved the cluster secret; false when the cluster runs without
    /// one, in which case `peer` is only what the peer claimed.
    pub authenticated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    AwaitChallenge,
    AwaitWelcome,
    Finished,
}

/// The dialling side of a handshake.
///
/// ```
/// use flotilla_raft::types::NodeId;
/// use flotilla_wire::handshake::{
///     ClientHandshake, HandshakeConfig, HandshakeStep, Nonce, ServerHandshake,
/// };
///
/// let a = HandshakeConfig::new("c1", NodeId(1)).with_secret("s3cret");
/// let b = HandshakeConfig::new("c1", NodeId(2)).with_secret("s3cret");
/// let (mut client, hello) = ClientHandshake::start(&a, NodeId(2), Nonce([1; 32]));
/// let mut server = ServerHandshake::new(&b, Nonce([2; 32]));
///
/// let HandshakeStep::Send(challenge) = server.on_frame(hello) else { panic!() };
/// let HandshakeStep::Send(proof) = client.on_frame(challenge) else { panic!() };
/// let HandshakeStep::Done { reply: Some(welcome), established } = server.on_frame(proof)
/// else { panic!() };
/// assert_eq!(established.peer, NodeId(1));
/// let HandshakeStep::Done { established, .. } = client.on_frame(welcome) else { panic!() };
/// assert!(established.authenticated);
/// ```
#[derive(Debug)]
pub struct ClientHandshake {
    config: HandshakeConfig,
    to: NodeId,
    nonce: Nonce,
    state: ClientState,
}

impl ClientHandshake {
    /// Begins a handshake with node `to`; returns the machine and the `Hello` to send.
    pub fn start(
        config: &HandshakeConfig,
        to: NodeId,
        nonce: Nonce,
    ) -> (ClientHandshake, HandshakeFrame) {
        let hello = HandshakeFrame::Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: config.cluster_id.clone(),
            from: config.node_id,
            to,
            nonce,
        };
        let machine = ClientHandshake {
            config: config.clone(),
            to,
            nonce,
            state: ClientState::AwaitChallenge,
        };
        (machine, hello)
    }

    /// Feeds the server's next frame.
    pub fn on_frame(&mut self, frame: HandshakeFrame) -> HandshakeStep {
        match (self.state, frame) {
            (ClientState::Finished, frame) => finished(frame),
            (_, HandshakeFrame::Refused { reason }) => self.refused(reason),
            (ClientState::AwaitChallenge, HandshakeFrame::Challenge { nonce, proof }) => {
                self.on_challenge(nonce, proof)
            }
            (ClientState::AwaitWelcome, HandshakeFrame::Welcome) => {
                self.state = ClientState::Finished;
                let established =
                    Established { peer: self.to, authenticated: self.config.secret.is_some() };
                HandshakeStep::Done { reply: None, established }
            }
            (ClientState::AwaitChallenge, frame) => self.fail(unexpected("Challenge", &frame)),
            (ClientState::AwaitWelcome, frame) => self.fail(unexpected("Welcome", &frame)),
        }
    }

    /// Reports a frame from the server that could not be decoded.
    pub fn on_bad_frame(&mut self, error: WireError) -> HandshakeStep {
        self.fail(HandshakeError::Wire(error))
    }

    fn on_challenge(&mut self, server_nonce: Nonce, server_proof: Option<Proof>) -> HandshakeStep {
        let transcript = Transcript {
            cluster_id: &self.config.cluster_id,
            client: self.config.node_id,
            server: self.to,
            client_nonce: &self.nonce,
            server_nonce: &server_nonce,
        };
        let our_proof = match (&self.config.secret, server_proof) {
            // The server proves itself first, so a node that lacks the secret learns nothing
            // from us, not even a proof over its own nonce.
            (Some(secret), Some(p)) => {
                if !proof::verify(secret, Role::Server, &transcript, &p) {
                    return self.fail(HandshakeError::BadProof);
                }
                Some(proof::prove(secret, Role::Client, &transcript))
            }
            (Some(_), None) => return self.fail(HandshakeError::ProofMissing),
            (None, Some(_)) => return self.fail(HandshakeError::SecretNotConfigured),
            (None, None) => None,
        };
        self.state = ClientState::AwaitWelcome;
        HandshakeStep::Send(HandshakeFrame::Proof { proof: our_proof })
    }

    fn refused(&mut self, reason: String) -> HandshakeStep {
        self.state = ClientState::Finished;
        HandshakeStep::Fail { reply: None, error: refused_by_peer(reason) }
    }

    fn fail(&mut self, error: HandshakeError) -> HandshakeStep {
        self.state = ClientState::Finished;
        refuse(error)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    AwaitHello,
    AwaitProof { client: NodeId, client_nonce: Nonce },
    Finished,
}

/// The listening side of a handshake. See [`ClientHandshake`] for an example.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
    nonce: Nonce,
    state: ServerState,
    /// The id the client claimed in its `Hello`, kept for logs even after a refusal.
    claimed: Option<NodeId>,
}

impl ServerHandshake {
    /// Waits for a `Hello`; `nonce` must be fresh for every connection.
    pub fn new(config: &HandshakeConfig, nonce: Nonce) -> ServerHandshake {
        ServerHandshake {
            config: config.clone(),
            nonce,
            state: ServerState::AwaitHello,
            claimed: None,
        }
    }

    /// Feeds the client's next frame.
    pub fn on_frame(&mut self, frame: HandshakeFrame) -> HandshakeStep {
        match (self.state, frame) {
            (ServerState::Finished, frame) => finished(frame),
            (_, HandshakeFrame::Refused { reason }) => {
                self.state = ServerState::Finished;
                HandshakeStep::Fail { reply: None, error: refused_by_peer(reason) }
            }
            (
                ServerState::AwaitHello,
                HandshakeFrame::Hello { protocol_version, cluster_id, from, to, nonce },
            ) => self.on_hello(protocol_version, cluster_id, from, to, nonce),
            (ServerState::AwaitProof { client, client_nonce }, HandshakeFrame::Proof { proof }) => {
                self.on_proof(client, client_nonce, proof)
            }
            (ServerState::AwaitHello, frame) => self.fail(unexpected("Hello", &frame)),
            (ServerState::AwaitProof { .. }, frame) => self.fail(unexpected("Proof", &frame)),
        }
    }

    /// Reports a frame from the client that could not be decoded.
    pub fn on_bad_frame(&mut self, error: WireError) -> HandshakeStep {
        self.fail(HandshakeError::Wire(error))
    }

    /// The node id the client claimed in its `Hello`, once one arrived: unverified, for logs.
    pub fn claimed_peer(&self) -> Option<NodeId> {
        self.claimed
    }

    fn on_hello(
        &mut self,
        protocol_version: u16,
        cluster_id: String,
        from: NodeId,
        to: NodeId,
        client_nonce: Nonce,
    ) -> HandshakeStep {
        self.claimed = Some(from);
        let ours = self.config.node_id;
        // The version first: under another version the other fields may mean other things.
        let check = if protocol_version != PROTOCOL_VERSION {
            Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: protocol_version,
            })
        } else if cluster_id != self.config.cluster_id {
            let theirs = shorten(cluster_id);
            Err(HandshakeError::ClusterMismatch { ours: self.config.cluster_id.clone(), theirs })
        } else if to != ours {
            Err(HandshakeError::WrongTarget { ours, wanted: to })
        } else if from == ours {
            Err(HandshakeError::PeerIsSelf(from))
        } else if !(self.config.accept_peer)(from) {
            Err(HandshakeError::UnknownPeer(from))
        } else {
            Ok(())
        };
        if let Err(e) = check {
            return self.fail(e);
        }
        let proof = self.config.secret.as_ref().map(|secret| {
            let transcript = Transcript {
                cluster_id: &self.config.cluster_id,
                client: from,
                server: ours,
                client_nonce: &client_nonce,
                server_nonce: &self.nonce,
            };
            proof::prove(secret, Role::Server, &transcript)
        });
        self.state = ServerState::AwaitProof { client: from, client_nonce };
        HandshakeStep::Send(HandshakeFrame::Challenge { nonce: self.nonce, proof })
    }

    fn on_proof(
        &mut self,
        client: NodeId,
        client_nonce: Nonce,
        client_proof: Option<Proof>,
    ) -> HandshakeStep {
        let authenticated = match (&self.config.secret, client_proof) {
            (Some(secret), Some(p)) => {
                let transcript = Transcript {
                    cluster_id: &self.config.cluster_id,
                    client,
                    server: self.config.node_id,
                    client_nonce: &client_nonce,
                    server_nonce: &self.nonce,
                };
                if !proof::verify(secret, Role::Client, &transcript, &p) {
                    return self.fail(HandshakeError::BadProof);
                }
                true
            }
            (Some(_), None) => return self.fail(HandshakeError::ProofMissing),
            (None, Some(_)) => return self.fail(HandshakeError::SecretNotConfigured),
            (None, None) => false,
        };
        self.state = ServerState::Finished;
        HandshakeStep::Done {
            reply: Some(HandshakeFrame::Welcome),
            established: Established { peer: client, authenticated },
        }
    }

    fn fail(&mut self, error: HandshakeError) -> HandshakeStep {
        self.state = ServerState::Finished;
        refuse(error)
    }
}

/// A failure that we tell the peer about.
fn refuse(error: HandshakeError) -> HandshakeStep {
    let reply = HandshakeFrame::Refused { reason: error.refusal_reason() };
    HandshakeStep::Fail { reply: Some(reply), error }
}

/// A frame after the handshake ended: nothing more is sent.
fn finished(frame: HandshakeFrame) -> HandshakeStep {
    HandshakeStep::Fail { reply: None, error: unexpected("nothing", &frame) }
}

fn unexpected(expected: &'static str, got: &HandshakeFrame) -> HandshakeError {
    HandshakeError::UnexpectedFrame { expected, got: got.name() }
}

fn refused_by_peer(reason: String) -> HandshakeError {
    HandshakeError::RefusedByPeer { reason: shorten(reason) }
}

/// Peer-supplied text ends up in our logs and errors: keep a bounded prefix.
fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_REASON_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}
