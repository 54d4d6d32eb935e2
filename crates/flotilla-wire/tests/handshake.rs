//! The connection handshake: the pure machines frame by frame, then the async helpers over a
//! real in-memory pipe and over TCP on 127.0.0.1.

mod common;

use flotilla_raft::message::{Message, MessageBody};
use flotilla_raft::types::{NodeId, Term};
use flotilla_wire::handshake::{
    ClientHandshake, Established, HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig, HandshakeFrame,
    HandshakeStep, Nonce, PROTOCOL_VERSION, Proof, ServerHandshake, client_handshake,
    decode_handshake_frame, encode_handshake_frame, server_handshake,
};
use flotilla_wire::{HandshakeError, WIRE_VERSION, WireCodec, WireError, WireMessage};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

const CLUSTER: &str = "cluster-a";

fn node(id: u64) -> HandshakeConfig {
    HandshakeConfig::new(CLUSTER, NodeId(id)).accept_only([1, 2, 3].map(NodeId))
}

fn secret_node(id: u64, secret: &str) -> HandshakeConfig {
    node(id).with_secret(secret)
}

// ---- the pure machines ----------------------------------------------------------------

/// Runs a client and a server machine against each other until both finish.
fn run_machines(
    client_cfg: &HandshakeConfig,
    to: NodeId,
    server_cfg: &HandshakeConfig,
) -> (Result<Established, HandshakeError>, Result<Established, HandshakeError>) {
    let (mut client, hello) = ClientHandshake::start(client_cfg, to, Nonce([0xc1; 32]));
    let mut server = ServerHandshake::new(server_cfg, Nonce([0x5e; 32]));
    let (mut client_out, mut server_out) = (None, None);
    // Frames in flight towards each side; at most four frames pass in any handshake.
    let mut to_server = Some(hello);
    let mut to_client = None;
    for _ in 0..8 {
        if let Some(frame) = to_server.take() {
            match server.on_frame(frame) {
                HandshakeStep::Send(f) => to_client = Some(f),
                HandshakeStep::Done { reply, established } => {
                    to_client = reply;
                    server_out = Some(Ok(established));
                }
                HandshakeStep::Fail { reply, error } => {
                    to_client = reply;
                    server_out = Some(Err(error));
                }
            }
        }
        if let Some(frame) = to_client.take() {
            match client.on_frame(frame) {
                HandshakeStep::Send(f) => to_server = Some(f),
                HandshakeStep::Done { reply, established } => {
                    to_server = reply;
                    client_out = Some(Ok(established));
                }
                HandshakeStep::Fail { reply, error } => {
                    to_server = reply;
                    client_out = Some(Err(error));
                }
            }
        }
        if to_server.is_none() && to_client.is_none() {
            break;
        }
    }
    (client_out.expect("client finished"), server_out.expect("server finished"))
}

#[test]
fn machines_agree_with_a_shared_secret() {
    let (c, s) = run_machines(&secret_node(1, "s3cret"), NodeId(2), &secret_node(2, "s3cret"));
    assert_eq!(c.expect("client"), Established { peer: NodeId(2), authenticated: true });
    assert_eq!(s.expect("server"), Established { peer: NodeId(1), authenticated: true });
}

#[test]
fn machines_agree_without_a_secret_unauthenticated() {
    let (c, s) = run_machines(&node(1), NodeId(2), &node(2));
    assert_eq!(c.expect("client"), Established { peer: NodeId(2), authenticated: false });
    assert_eq!(s.expect("server"), Established { peer: NodeId(1), authenticated: false });
}

#[test]
fn wrong_secret_fails_at_the_client_which_tells_the_server() {
    // The server proves first; the client cannot verify it and refuses.
    let (c, s) = run_machines(&secret_node(1, "one"), NodeId(2), &secret_node(2, "other"));
    assert!(matches!(c, Err(HandshakeError::BadProof)), "{c:?}");
    assert!(
        matches!(&s, Err(HandshakeError::RefusedByPeer { reason }) if reason.contains("prove")),
        "{s:?}"
    );
}

#[test]
fn a_secret_on_one_side_only_is_refused_either_way() {
    let (c, s) = run_machines(&node(1), NodeId(2), &secret_node(2, "s"));
    assert!(matches!(c, Err(HandshakeError::SecretNotConfigured)), "{c:?}");
    assert!(matches!(s, Err(HandshakeError::RefusedByPeer { .. })), "{s:?}");

    // A client with a secret will not accept a server that proves nothing (no downgrade).
    let (c, s) = run_machines(&secret_node(1, "s"), NodeId(2), &node(2));
    assert!(matches!(c, Err(HandshakeError::ProofMissing)), "{c:?}");
    assert!(matches!(s, Err(HandshakeError::RefusedByPeer { .. })), "{s:?}");
}

#[test]
fn server_refuses_each_bad_hello_with_its_own_error() {
    type Case = (&'static str, HandshakeConfig, NodeId, fn(&HandshakeError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "wrong cluster",
            HandshakeConfig::new("cluster-b", NodeId(1)),
            NodeId(2),
            |e| matches!(e, HandshakeError::ClusterMismatch { ours, theirs } if ours == CLUSTER && theirs == "cluster-b"),
        ),
        ("wrong target", node(1), NodeId(3), |e| {
            matches!(e, HandshakeError::WrongTarget { ours: NodeId(2), wanted: NodeId(3) })
        }),
        ("unknown peer", node(7), NodeId(2), |e| {
            matches!(e, HandshakeError::UnknownPeer(NodeId(7)))
        }),
        ("itself", node(2), NodeId(2), |e| matches!(e, HandshakeError::PeerIsSelf(NodeId(2)))),
    ];
    for (i, (name, client_cfg, to, expected)) in cases.into_iter().enumerate() {
        let (c, s) = run_machines(&client_cfg, to, &node(2));
        let s = s.expect_err(name);
        assert!(expected(&s), "#{i} {name}: server error {s:?}");
        // The client hears the server's reason, not just "refused".
        let Err(HandshakeError::RefusedByPeer { reason }) = &c else {
            panic!("#{i} {name}: client {c:?}")
        };
        assert_eq!(reason, &s.to_string(), "#{i} {name}");
    }
}

#[test]
fn server_refuses_a_protocol_version_it_does_not_speak() {
    let mut server = ServerHandshake::new(&node(2), Nonce([2; 32]));
    let hello = HandshakeFrame::Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        cluster_id: CLUSTER.into(),
        from: NodeId(1),
        to: NodeId(2),
        nonce: Nonce([1; 32]),
    };
    let HandshakeStep::Fail { reply: Some(HandshakeFrame::Refused { .. }), error } =
        server.on_frame(hello)
    else {
        panic!("expected a refusal")
    };
    assert!(
        matches!(error, HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs } if theirs == PROTOCOL_VERSION + 1),
        "{error:?}"
    );
}

/// Drives a server machine through `Hello` to its `Challenge`.
fn server_after_hello(cfg: &HandshakeConfig, client_nonce: Nonce) -> (ServerHandshake, Proof) {
    let mut server = ServerHandshake::new(cfg, Nonce::random());
    let (_, hello) = ClientHandshake::start(&secret_node(1, "s3cret"), NodeId(2), client_nonce);
    let HandshakeStep::Send(HandshakeFrame::Challenge { proof: Some(proof), .. }) =
        server.on_frame(hello)
    else {
        panic!("expected a challenge with a proof")
    };
    (server, proof)
}

fn expect_refusal(step: HandshakeStep) -> HandshakeError {
    match step {
        HandshakeStep::Fail { reply: Some(HandshakeFrame::Refused { .. }), error } => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn server_refuses_a_forged_proof_and_a_missing_one() {
    let cfg = secret_node(2, "s3cret");
    let (mut server, _) = server_after_hello(&cfg, Nonce([1; 32]));
    let forged = HandshakeFrame::Proof { proof: Some(Proof([0x42; 32])) };
    assert!(matches!(expect_refusal(server.on_frame(forged)), HandshakeError::BadProof));

    let (mut server, _) = server_after_hello(&cfg, Nonce([1; 32]));
    let missing = HandshakeFrame::Proof { proof: None };
    assert!(matches!(expect_refusal(server.on_frame(missing)), HandshakeError::ProofMissing));
}

#[test]
fn the_servers_own_proof_reflected_back_is_refused() {
    // An attacker without the secret echoes the server's proof as its own: the role label in
    // the transcript makes the two proofs differ.
    let (mut server, server_proof) = server_after_hello(&secret_node(2, "s3cret"), Nonce([1; 32]));
    let reflected = HandshakeFrame::Proof { proof: Some(server_proof) };
    assert!(matches!(expect_refusal(server.on_frame(reflected)), HandshakeError::BadProof));
}

#[test]
fn a_client_proof_recorded_on_one_connection_is_refused_on_another() {
    let cfg = secret_node(2, "s3cret");
    // Connection 1: a real client completes, and an eavesdropper records its proof.
    let nonce = Nonce([9; 32]);
    let (mut client, hello) = ClientHandshake::start(&secret_node(1, "s3cret"), NodeId(2), nonce);
    let mut server1 = ServerHandshake::new(&cfg, Nonce([0xa1; 32]));
    let HandshakeStep::Send(challenge) = server1.on_frame(hello.clone()) else { panic!() };
    let HandshakeStep::Send(recorded) = client.on_frame(challenge) else { panic!() };
    // Connection 2: the same Hello and the recorded proof, but the server's nonce is new.
    let mut server2 = ServerHandshake::new(&cfg, Nonce([0xa2; 32]));
    assert!(matches!(server2.on_frame(hello), HandshakeStep::Send(_)));
    assert!(matches!(expect_refusal(server2.on_frame(recorded)), HandshakeError::BadProof));
}

#[test]
fn out_of_order_frames_are_refused() {
    let mut server = ServerHandshake::new(&node(2), Nonce([2; 32]));
    let err = expect_refusal(server.on_frame(HandshakeFrame::Welcome));
    assert!(
        matches!(err, HandshakeError::UnexpectedFrame { expected: "Hello", got: "Welcome" }),
        "{err:?}"
    );

    let (mut client, hello) = ClientHandshake::start(&node(1), NodeId(2), Nonce([1; 32]));
    let err = expect_refusal(client.on_frame(hello));
    assert!(
        matches!(err, HandshakeError::UnexpectedFrame { expected: "Challenge", got: "Hello" }),
        "{err:?}"
    );
    // Once failed, a machine accepts nothing and sends nothing more.
    assert!(matches!(
        client.on_frame(HandshakeFrame::Welcome),
        HandshakeStep::Fail { reply: None, error: HandshakeError::UnexpectedFrame { .. } }
    ));
}

#[test]
fn a_long_refusal_reason_is_cut_short() {
    let (mut client, _) = ClientHandshake::start(&node(1), NodeId(2), Nonce([1; 32]));
    let step = client.on_frame(HandshakeFrame::Refused { reason: "é".repeat(3000) });
    let HandshakeStep::Fail { reply: None, error: HandshakeError::RefusedByPeer { reason } } = step
    else {
        panic!("{step:?}")
    };
    assert_eq!(reason.chars().count(), 257, "256 characters and an ellipsis");
}

#[test]
fn the_config_never_prints_the_secret() {
    let text = format!("{:?}", secret_node(1, "hunter2-very-secret"));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redacted"), "{text}");
}

// ---- the async helpers over real streams ---------------------------------------------

fn ping(from: u64, to: u64) -> WireMessage {
    WireMessage::Raft(Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(4),
        body: MessageBody::TimeoutNow,
    })
}

/// Handshakes over a pipe, then checks that WireMessage frames flow both ways, including one
/// the server sends right behind its Welcome (which the client must not swallow).
async fn handshake_then_talk<S>(
    mut dialled: S,
    mut accepted: S,
    client_cfg: HandshakeConfig,
    server_cfg: HandshakeConfig,
) -> (Established, Established)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = tokio::spawn(async move {
        let est = server_handshake(&mut accepted, &server_cfg).await.expect("server side");
        let mut framed = Framed::new(accepted, WireCodec::new());
        framed.send(ping(2, 1)).await.expect("server sends");
        let got = framed.next().await.expect("a frame").expect("decodes");
        assert_eq!(got, ping(1, 2));
        est
    });
    let est = client_handshake(&mut dialled, &client_cfg, NodeId(2)).await.expect("client side");
    let mut framed = Framed::new(dialled, WireCodec::new());
    let got = framed.next().await.expect("a frame").expect("decodes");
    assert_eq!(got, ping(2, 1));
    framed.send(ping(1, 2)).await.expect("client sends");
    (est, server.await.expect("server task"))
}

#[tokio::test]
async fn handshake_with_a_secret_over_a_pipe_then_messages_flow() {
    let (a, b) = tokio::io::duplex(1024);
    let (c, s) = handshake_then_talk(a, b, secret_node(1, "k"), secret_node(2, "k")).await;
    assert_eq!(c, Established { peer: NodeId(2), authenticated: true });
    assert_eq!(s, Established { peer: NodeId(1), authenticated: true });
}

#[tokio::test]
async fn handshake_without_a_secret_over_a_pipe_then_messages_flow() {
    let (a, b) = tokio::io::duplex(1024);
    let (c, s) = handshake_then_talk(a, b, node(1), node(2)).await;
    assert_eq!(c, Established { peer: NodeId(2), authenticated: false });
    assert_eq!(s, Established { peer: NodeId(1), authenticated: false });
}

async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let (dialled, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (dialled.expect("connects"), accepted.expect("accepts").0)
}

#[tokio::test]
async fn handshake_with_a_secret_over_tcp_then_messages_flow() {
    let (a, b) = tcp_pair().await;
    let (c, s) = handshake_then_talk(a, b, secret_node(1, "k"), secret_node(2, "k")).await;
    assert_eq!(c.peer, NodeId(2));
    assert_eq!(s, Established { peer: NodeId(1), authenticated: true });
}

/// Runs both helpers over TCP and returns both results.
async fn tcp_handshake(
    client_cfg: HandshakeConfig,
    to: NodeId,
    server_cfg: HandshakeConfig,
) -> (Result<Established, HandshakeError>, Result<Established, HandshakeError>) {
    let (mut a, mut b) = tcp_pair().await;
    tokio::join!(client_handshake(&mut a, &client_cfg, to), server_handshake(&mut b, &server_cfg))
}

#[tokio::test]
async fn wrong_secret_over_tcp_is_refused_on_both_sides() {
    let (c, s) = tcp_handshake(secret_node(1, "mine"), NodeId(2), secret_node(2, "yours")).await;
    assert!(matches!(c, Err(HandshakeError::BadProof)), "{c:?}");
    assert!(matches!(s, Err(HandshakeError::RefusedByPeer { .. })), "{s:?}");
}

#[tokio::test]
async fn wrong_cluster_wrong_target_and_unknown_peer_are_refused_over_tcp() {
    let other_cluster = HandshakeConfig::new("cluster-b", NodeId(1)).with_secret("k");
    let (c, s) = tcp_handshake(other_cluster, NodeId(2), secret_node(2, "k")).await;
    assert!(matches!(s, Err(HandshakeError::ClusterMismatch { .. })), "{s:?}");
    assert!(
        matches!(&c, Err(HandshakeError::RefusedByPeer { reason }) if reason.contains("cluster id mismatch")),
        "{c:?}"
    );

    let (c, s) = tcp_handshake(secret_node(1, "k"), NodeId(3), secret_node(2, "k")).await;
    assert!(matches!(s, Err(HandshakeError::WrongTarget { wanted: NodeId(3), .. })), "{s:?}");
    assert!(matches!(c, Err(HandshakeError::RefusedByPeer { .. })), "{c:?}");

    let (c, s) = tcp_handshake(secret_node(9, "k"), NodeId(2), secret_node(2, "k")).await;
    assert!(matches!(s, Err(HandshakeError::UnknownPeer(NodeId(9)))), "{s:?}");
    assert!(matches!(c, Err(HandshakeError::RefusedByPeer { .. })), "{c:?}");
}

/// Reads one handshake frame from a raw stream.
async fn read_raw_frame<S: AsyncRead + Unpin>(s: &mut S) -> HandshakeFrame {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.expect("header");
    let mut frame = header.to_vec();
    frame.resize(4 + u32::from_be_bytes(header) as usize, 0);
    s.read_exact(&mut frame[4..]).await.expect("body");
    decode_handshake_frame(&frame).expect("a handshake frame")
}

#[tokio::test]
async fn garbage_is_refused_with_a_reason() {
    let cfg = node(2);
    let (mut peer, mut ours) = tokio::io::duplex(4096);
    let garbage = [0u8, 0, 0, 6, WIRE_VERSION, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1];
    peer.write_all(&garbage).await.expect("writes");
    let err = server_handshake(&mut ours, &cfg).await.expect_err("garbage");
    assert!(matches!(err, HandshakeError::Wire(WireError::Decode(_))), "{err:?}");
    assert!(matches!(read_raw_frame(&mut peer).await, HandshakeFrame::Refused { .. }));
}

#[tokio::test]
async fn an_oversized_or_foreign_version_hello_is_refused() {
    let cfg = node(2);
    let (mut peer, mut ours) = tokio::io::duplex(4096);
    peer.write_all(&(HANDSHAKE_MAX_FRAME_BYTES + 1).to_be_bytes()).await.expect("writes");
    let err = server_handshake(&mut ours, &cfg).await.expect_err("oversized");
    assert!(matches!(err, HandshakeError::Wire(WireError::FrameTooLarge { .. })), "{err:?}");

    let (mut peer, mut ours) = tokio::io::duplex(4096);
    let (_, hello) = ClientHandshake::start(&node(1), NodeId(2), Nonce([1; 32]));
    let mut frame = encode_handshake_frame(&hello).expect("encodes").to_vec();
    frame[4] = WIRE_VERSION + 1;
    peer.write_all(&frame).await.expect("writes");
    let err = server_handshake(&mut ours, &cfg).await.expect_err("foreign version");
    assert!(
        matches!(err, HandshakeError::Wire(WireError::UnsupportedVersion { got, .. }) if got == WIRE_VERSION + 1),
        "{err:?}"
    );
    assert!(matches!(read_raw_frame(&mut peer).await, HandshakeFrame::Refused { .. }));
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    let cfg = node(2).with_timeout(Duration::from_millis(100));
    let (_peer, mut ours) = tokio::io::duplex(64);
    let err = server_handshake(&mut ours, &cfg).await.expect_err("silent");
    assert!(matches!(err, HandshakeError::Timeout), "{err:?}");
}

#[tokio::test]
async fn a_peer_hanging_up_mid_handshake_is_reported() {
    let (mut peer, mut ours) = tokio::io::duplex(4096);
    let (_, hello) = ClientHandshake::start(&node(1), NodeId(2), Nonce([1; 32]));
    let frame = encode_handshake_frame(&hello).expect("encodes");
    peer.write_all(&frame[..frame.len() / 2]).await.expect("writes");
    drop(peer);
    let err = server_handshake(&mut ours, &node(2)).await.expect_err("hung up");
    assert!(matches!(err, HandshakeError::ConnectionClosed), "{err:?}");
}
