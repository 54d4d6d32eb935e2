//! `KvClient` against real actix servers on loopback, each backed by a fake node.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{FakeNode, app};
use flotilla_kv::{KvClient, KvClientError};
use flotilla_node::{ClientError, ReadConsistency};
use flotilla_raft::NodeId;

/// Serves `node`'s KV routes on an ephemeral port from a thread of its own; the server
/// lives until the test process ends.
fn serve(node: &FakeNode) -> SocketAddr {
    let node = node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || app(&node))
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        })
    });
    rx.recv().unwrap()
}

/// An address nobody listens on.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn round_trip_through_http() {
    let node = FakeNode::new();
    let client = KvClient::new(&[serve(&node).to_string()]).unwrap();
    let w = client.put("a/b c", b"\x00value").unwrap();
    assert_eq!((w.index, w.term, w.deleted), (1, 3, None));
    let r = client.get("a/b c", ReadConsistency::Linearizable).unwrap();
    assert_eq!((r.value.as_deref(), r.index), (Some(&b"\x00value"[..]), 1));
    let c = client.cas("a/b c", Some("nope"), "x").unwrap();
    assert!(!c.succeeded);
    let c = client.cas("new", None, "x").unwrap();
    assert_eq!((c.succeeded, c.current.as_deref(), c.index), (true, Some("x"), 3));
    assert_eq!(client.delete("a/b c").unwrap().deleted, Some(true));
    let r = client.get("a/b c", ReadConsistency::Stale).unwrap();
    assert_eq!((r.value, r.index), (None, 4));
}

#[test]
fn follows_redirects_to_the_leader_and_remembers_it() {
    let leader = FakeNode::new();
    let leader_addr = serve(&leader);
    let follower = FakeNode::new();
    let not_leader =
        ClientError::NotLeader { leader: NodeId(2), leader_api: Some(leader_addr.to_string()) };
    follower.lock().always = Some(not_leader.clone());
    follower.lock().read_error = Some(not_leader);
    let client = KvClient::new(&[serve(&follower).to_string()]).unwrap();
    client.put("k", b"v").unwrap();
    client.put("k2", b"v").unwrap();
    assert_eq!(
        client.get("k", ReadConsistency::Linearizable).unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(leader.lock().proposals, 2);
    assert_eq!(follower.lock().proposals, 1, "after one redirect the client goes to the leader");
    assert_eq!(follower.get("k"), None);
}

#[test]
fn retries_through_an_election_and_past_a_dead_endpoint() {
    let node = FakeNode::new();
    node.lock().refuse.extend([
        ClientError::NoLeader { retry_after_ms: 30 },
        ClientError::Busy,
        ClientError::NoLeader { retry_after_ms: 30 },
    ]);
    let client = KvClient::new(&[closed_port().to_string(), serve(&node).to_string()]).unwrap();
    let w = client.put("k", b"v").unwrap();
    assert_eq!(w.index, 1);
    assert_eq!(node.lock().proposals, 4);
    assert_eq!(node.applied(), 1);
}

#[test]
fn a_session_makes_an_unknown_write_safe_to_retry() {
    let node = FakeNode::new();
    let client = KvClient::new(&[serve(&node).to_string()]).unwrap().with_session_id(77, 1);
    // The CAS applies, but the answer is lost (504 timeout): the client retries with the
    // same seq and gets the original success, not "the key exists".
    node.lock().apply_then_fail.push_back(ClientError::Timeout);
    let c = client.cas("k", None, "x").unwrap();
    assert_eq!((c.succeeded, c.index), (true, 1));
    assert_eq!(node.lock().proposals, 2);
    // The next write uses the next seq and applies.
    node.lock().apply_then_fail.push_back(ClientError::LeadershipLost);
    let w = client.put("k", b"y").unwrap();
    assert_eq!(w.index, 3, "entry 3 applied it; entry 4 was the replay");
    assert_eq!(node.get("k").as_deref(), Some(&b"y"[..]));
    assert_eq!(node.lock().sm.session(77).map(|s| s.0), Some(2));
}

#[test]
fn without_a_session_an_unknown_write_is_reported_not_retried() {
    let node = FakeNode::new();
    let client = KvClient::new(&[serve(&node).to_string()]).unwrap();
    node.lock().apply_then_fail.push_back(ClientError::Timeout);
    let err = client.cas("k", None, "x").unwrap_err();
    assert!(matches!(err, KvClientError::Unknown(_)), "{err:?}");
    assert!(err.outcome_unknown());
    assert_eq!(node.lock().proposals, 1);
}

#[test]
fn definite_refusals_are_returned_at_once() {
    let node = FakeNode::new();
    let client = KvClient::new(&[serve(&node).to_string()]).unwrap();
    let err = client.put(&"k".repeat(1025), b"v").unwrap_err();
    assert!(matches!(err, KvClientError::Refused { status: 414, .. }), "{err:?}");
    let err = client.put("k", &vec![0u8; flotilla_kv::MAX_VALUE_BYTES + 1]).unwrap_err();
    assert!(
        matches!(err, KvClientError::Refused { status: 413, ref code, .. } if code == "too_large"),
        "{err:?}"
    );
    let err = client.put("", b"v").unwrap_err();
    assert!(matches!(err, KvClientError::Refused { status: 400, .. }), "{err:?}");
}

#[test]
fn gives_up_at_the_deadline_when_nobody_answers() {
    let client = KvClient::new(&[closed_port().to_string(), closed_port().to_string()])
        .unwrap()
        .with_deadline(Duration::from_millis(400));
    let start = Instant::now();
    let err = client.put("k", b"v").unwrap_err();
    assert!(matches!(err, KvClientError::Unavailable(_)), "{err:?}");
    assert!(!err.outcome_unknown());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(3), "{took:?}");
}

/// The server refuses a body whose declared length is over the limit without reading it:
/// the answer comes back although the client never sends the body.
#[test]
fn a_huge_declared_body_is_refused_without_being_read() {
    let node = FakeNode::new();
    let addr = serve(&node);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n").unwrap();
    s.write_all(&[0u8; 4096]).unwrap();
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too_large"), "{text}");
    assert_eq!(node.lock().proposals, 0);
}

/// The same for a chunked body that keeps coming: refused once it passes 1 MiB.
#[test]
fn an_endless_chunked_body_is_cut_off_past_the_limit() {
    let node = FakeNode::new();
    let addr = serve(&node);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    // Send up to 4 MiB; the server must answer before the end (writes may then fail).
    while sent < 4 << 20 {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(node.lock().proposals, 0);
}

#[test]
fn status_of_a_dead_endpoint_is_an_error_not_a_hang() {
    let client = KvClient::new(&[closed_port().to_string()]).unwrap();
    let all = client.status_all();
    assert_eq!(all.len(), 1);
    assert!(all[0].1.is_err());
}
