//! Bad input, from every side a node listens to: the raft port (garbage, oversized frames,
//! wrong secrets, wrong cluster ids, unknown node ids, messages that lie about their
//! sender), the HTTP API (malformed and huge bodies and keys, missing or wrong admin tokens),
//! and the disk (flipped bytes, a failing fsync). Each must end in a clear refusal, with
//! the node still serving and nothing changed.
//!
//! The property tests at the end feed the same decoders as the cargo-fuzz targets in
//! `fuzz/` (frames, messages, log entries, keys): what CI runs of them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flotilla_raft::message::{Message, MessageBody};
use flotilla_raft::types::{NodeId, Term};
use flotilla_tests::*;
use flotilla_wire::handshake::{HandshakeConfig, client_handshake};
use flotilla_wire::{HandshakeError, WireCodec, WireMessage};
use serde_json::{Value, json};

/// Writes `bytes`, then reads until the peer closes; true if it closed within `timeout`.
/// Whatever it sent before closing (a `Refused` frame) is ignored.
fn peer_closes_after(addr: &str, bytes: &[u8], timeout: Duration) -> bool {
    let mut s = TcpStream::connect(addr).expect("connect to the raft port");
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // The node may close while we still write (an oversized header is refused at once).
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

/// Writes `key` until a write is acknowledged (a 504 on a loaded machine is retried: the
/// value is the same, so a double apply is harmless here).
fn put_ok(c: &Cluster, key: &str, value: &str) {
    let apis: Vec<String> = c.running().iter().map(|id| c.api(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match put_retry(&apis, key, value, deadline) {
            WriteOutcome::Ok => return,
            other if Instant::now() >= deadline => {
                panic!("writing {key}: {other:?} until the deadline{}", c.logs())
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The cluster still works: a leader, no term inflation, a new write commits, `sentinel`
/// holds. (The term may move by an election or two on a loaded machine; a forged message
/// that reached a core would move it by a thousand.)
fn still_serving(c: &Cluster, term: u64, what: &str) {
    let all = c.ids();
    let (_, t) = c.wait_leader(&all, Duration::from_secs(15));
    assert!(t < term + 50, "{what} inflated the term: {term} -> {t}");
    let key = format!("after-{}", what.replace(' ', "-"));
    put_ok(c, &key, "ok");
    for id in &all {
        let (st, body, _) = get_key(&c.api(*id), "sentinel", "stale");
        assert_eq!((st, body.as_str()), (200, "kept"), "node {id} after {what}");
    }
}

fn frame(version: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(version);
    f.extend_from_slice(body);
    f
}

#[test]
fn garbage_and_oversized_frames_on_the_raft_port_are_refused_and_change_nothing() {
    let c = Cluster::start(3, &["--cluster-secret", "right-secret"]);
    let all = c.ids();
    let (_, term) = c.wait_leader(&all, Duration::from_secs(15));
    put_ok(&c, "sentinel", "kept");

    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random(64 * 1024)),
        ("an oversized length header", vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]),
        ("a frame just over 16 MiB", {
            let mut f = (16u32 * 1024 * 1024 + 1).to_be_bytes().to_vec();
            f.extend(random(1024));
            f
        }),
        ("an empty frame", vec![0, 0, 0, 0]),
        ("a foreign version byte", frame(99, &random(32))),
        ("a garbage body", frame(1, &random(200))),
        ("HTTP on the raft port", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for id in &all {
        let raft = c.nodes[id].raft.clone();
        let before = counter(&c.api(*id), "flotilla_handshake_failures_total");
        for (what, bytes) in &cases {
            assert!(
                peer_closes_after(&raft, bytes, Duration::from_secs(10)),
                "node {id} kept the connection open after {what}"
            );
        }
        // A frame that never completes is dropped at the handshake timeout.
        assert!(
            peer_closes_after(&raft, &[0, 0, 1, 0, 1, 2], Duration::from_secs(12)),
            "node {id} waited forever for a truncated frame"
        );
        let after = counter(&c.api(*id), "flotilla_handshake_failures_total");
        assert!(after >= before + cases.len() as u64, "node {id} counted {before} -> {after}");
    }
    still_serving(&c, term, "garbage on the raft port");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Runs the client side of a handshake against `addr` as node `me` of `cluster`.
fn dial(
    addr: &str,
    cluster: &str,
    me: u64,
    secret: Option<&str>,
    to: u64,
) -> Result<(), HandshakeError> {
    runtime().block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut cfg = HandshakeConfig::new(cluster, NodeId(me));
        if let Some(secret) = secret {
            cfg = cfg.with_secret(secret);
        }
        client_handshake(&mut s, &cfg, NodeId(to)).await.map(|_| ())
    })
}

#[test]
fn handshakes_with_a_wrong_secret_cluster_id_or_node_id_are_refused() {
    let c = Cluster::start(3, &["--cluster-secret", "right-secret"]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    put_ok(&c, "sentinel", "kept");
    let target = *all.iter().find(|id| **id != leader).unwrap();
    let other = *all.iter().find(|id| **id != leader && **id != target).unwrap();
    let addr = c.nodes[&target].raft.clone();
    let before = counter(&c.api(target), "flotilla_handshake_failures_total");

    // The wrong secret: the node's proof does not check out for us, and ours not for it.
    let e = dial(&addr, "flotilla", other, Some("wrong-secret"), target).unwrap_err();
    assert!(matches!(e, HandshakeError::BadProof | HandshakeError::RefusedByPeer { .. }), "{e:?}");
    // No secret at all.
    let e = dial(&addr, "flotilla", other, None, target).unwrap_err();
    assert!(
        e.to_string().contains("secret") || matches!(e, HandshakeError::RefusedByPeer { .. }),
        "{e:?}"
    );
    // Another cluster.
    match dial(&addr, "another-cluster", other, Some("right-secret"), target).unwrap_err() {
        HandshakeError::RefusedByPeer { reason } => {
            assert!(reason.contains("cluster id"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    // A node id that is not a member, even with the right secret.
    match dial(&addr, "flotilla", 99, Some("right-secret"), target).unwrap_err() {
        HandshakeError::RefusedByPeer { reason } => {
            assert!(reason.contains("unknown peer"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    // The node's own id, and a dial meant for another node.
    assert!(dial(&addr, "flotilla", target, Some("right-secret"), target).is_err());
    assert!(dial(&addr, "flotilla", other, Some("right-secret"), other).is_err());
    let after = counter(&c.api(target), "flotilla_handshake_failures_total");
    assert!(after >= before + 5, "handshake failures counted: {before} -> {after}");

    // A peer that knows the secret may only speak for itself: a message claiming another
    // sender (or addressed to another node) closes its connection.
    // So does an oversized or malformed frame after the handshake.
    let bad_before = counter(&c.api(target), "flotilla_bad_frames_total");
    let lie = |from: u64, to: u64| {
        let m = WireMessage::Raft(Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term + 1000),
            body: MessageBody::TimeoutNow,
        });
        wire_frames::encode(&m)
    };
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("a message from another sender", lie(leader, target)),
        ("a message for another node", lie(other, leader)),
        ("an oversized frame header", vec![0xFF, 0xFF, 0xFF, 0xFF, 0]),
        ("a garbage frame", frame(1, b"\xc1\xc1\xc1 not msgpack")),
    ];
    for (what, payload) in &payloads {
        let closed = runtime().block_on(async {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            let cfg = HandshakeConfig::new("flotilla", NodeId(other)).with_secret("right-secret");
            client_handshake(&mut s, &cfg, NodeId(target))
                .await
                .expect("a member with the secret is accepted");
            let _ = s.write_all(payload).await;
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
            )
            .await;
            matches!(read, Ok(Ok(0)) | Ok(Err(_)))
        });
        assert!(closed, "{what} on node {other}'s connection did not close it");
    }
    let bad_after = counter(&c.api(target), "flotilla_bad_frames_total");
    assert!(
        bad_after >= bad_before + payloads.len() as u64,
        "bad frames counted: {bad_before} -> {bad_after}"
    );
    // The lie's huge term never reached the core: same leader, same term.
    still_serving(&c, term, "bad handshakes");
}

/// Encodes one message as a frame with the wire codec.
mod wire_frames {
    use super::*;
    use tokio_util::codec::Encoder;

    pub fn encode(msg: &WireMessage) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        WireCodec::new().encode(msg, &mut buf).expect("encodes");
        buf.to_vec()
    }
}

/// Sends raw bytes to an HTTP address and returns the status code (0 if the connection
/// closed without an answer) and the body.
fn raw_http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: stop at the end of a Content-Length body.
                let text = String::from_utf8_lossy(&out).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok());
                    if len.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn malformed_and_huge_http_requests_are_refused_and_change_nothing() {
    let c = Cluster::start(3, &[]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    put_ok(&c, "sentinel", "kept");
    let last_before = c.status(leader).unwrap()["last_log_index"].as_u64().unwrap();
    let addr = c.nodes[&leader].api.clone();
    let req = |head: &str, body: &[u8]| -> Vec<u8> {
        let mut r = head.replace('\n', "\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    // A request with a body and its true Content-Length.
    let with_body = |line: &str, body: &[u8]| -> Vec<u8> {
        let mut r = format!("{line} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let big = vec![b'x'; 1024 * 1024 + 1];
    let long_key = "k".repeat(1025);
    // actix-http buffers at most 128 KiB of request head; beyond that it must refuse.
    let huge_header =
        format!("GET /v1/status HTTP/1.1\nHost: x\nX-Big: {}\n\n", "h".repeat(256 * 1024));
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\n")).collect();
    let many_headers = format!("GET /v1/status HTTP/1.1\nHost: x\n{many_headers}\n");
    // (what, request, accepted statuses, error code when the answer is ours)
    let cases: Vec<(&str, Vec<u8>, &[u16], &str)> = vec![
        (
            "a value over 1 MiB",
            req(
                &format!("PUT /v1/kv/big HTTP/1.1\nHost: x\nContent-Length: {}\n\n", big.len()),
                &big,
            ),
            &[413],
            "too_large",
        ),
        (
            "a Content-Length of a terabyte, no body",
            req("PUT /v1/kv/big HTTP/1.1\nHost: x\nContent-Length: 1099511627776\n\n", b""),
            &[413],
            "too_large",
        ),
        (
            "a CAS body of 20 MB announced",
            req("POST /v1/kv/big/cas HTTP/1.1\nHost: x\nContent-Length: 20000000\n\n", b"{"),
            &[413],
            "too_large",
        ),
        (
            "a Content-Length that is not a number",
            req("PUT /v1/kv/big HTTP/1.1\nHost: x\nContent-Length: abc\n\n", b""),
            &[400],
            "",
        ),
        (
            "a key over 1024 bytes",
            req(&format!("PUT /v1/kv/{long_key} HTTP/1.1\nHost: x\nContent-Length: 1\n\n"), b"v"),
            &[414],
            "key_too_long",
        ),
        (
            "a bad %-escape",
            req("PUT /v1/kv/%zz HTTP/1.1\nHost: x\nContent-Length: 1\n\n", b"v"),
            &[400],
            "bad_key",
        ),
        (
            "a key that is not UTF-8",
            req("PUT /v1/kv/%FF%FE HTTP/1.1\nHost: x\nContent-Length: 1\n\n", b"v"),
            &[400],
            "bad_key",
        ),
        (
            "an empty key",
            req("PUT /v1/kv/ HTTP/1.1\nHost: x\nContent-Length: 1\n\n", b"v"),
            &[400],
            "bad_key",
        ),
        (
            "a key of two segments",
            req("PUT /v1/kv/a/b HTTP/1.1\nHost: x\nContent-Length: 1\n\n", b"v"),
            &[400],
            "bad_key",
        ),
        (
            "a CAS body that is not JSON",
            with_body("POST /v1/kv/big/cas", b"not json"),
            &[400],
            "bad_request",
        ),
        (
            "a CAS without expected",
            with_body("POST /v1/kv/big/cas", br#"{"value":"x"}"#),
            &[400],
            "bad_request",
        ),
        (
            "a CAS with a number for a value",
            with_body("POST /v1/kv/big/cas", br#"{"expected":null,"value":7}"#),
            &[400],
            "bad_request",
        ),
        (
            "a half session",
            req(
                "PUT /v1/kv/big HTTP/1.1\nHost: x\nX-Flotilla-Client: 7\nContent-Length: 1\n\n",
                b"v",
            ),
            &[400],
            "bad_session",
        ),
        (
            "a negative sequence",
            req(
                "PUT /v1/kv/big HTTP/1.1\nHost: x\nX-Flotilla-Client: 7\nX-Flotilla-Seq: -1\nContent-Length: 1\n\n",
                b"v",
            ),
            &[400],
            "bad_session",
        ),
        (
            "an unknown consistency",
            req("GET /v1/kv/big?consistency=bogus HTTP/1.1\nHost: x\n\n", b""),
            &[400],
            "bad_consistency",
        ),
        (
            "a wrong method",
            req("DELETE /v1/status HTTP/1.1\nHost: x\n\n", b""),
            &[405],
            "method_not_allowed",
        ),
        ("an unknown route", req("GET /v2/nothing HTTP/1.1\nHost: x\n\n", b""), &[404], "no_route"),
        (
            "a member with id 0",
            with_body(
                "POST /v1/admin/members",
                br#"{"id":0,"raft_addr":"h:1","api_addr":"h:2","voter":true}"#,
            ),
            &[400],
            "bad_request",
        ),
        (
            "a member that is not JSON",
            with_body("POST /v1/admin/members", b"\xff\xfe"),
            &[400],
            "bad_request",
        ),
        (
            "a fault spec out of range",
            with_body("POST /v1/admin/faults", br#"{"loss": 2.0}"#),
            &[400],
            "bad_request",
        ),
        (
            "a fault spec with unknown fields",
            with_body("POST /v1/admin/faults", br#"{"explode": true}"#),
            &[400],
            "bad_request",
        ),
        ("a 256 KiB header", huge_header.replace('\n', "\r\n").into_bytes(), &[431, 400, 0], ""),
        ("200 headers", many_headers.replace('\n', "\r\n").into_bytes(), &[431, 400, 0], ""),
        ("bytes that are not HTTP", b"\x00\x01\x02GARBAGE\r\n\r\n".to_vec(), &[400, 0], ""),
        (
            "a request line of 256 KiB",
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(256 * 1024)).into_bytes(),
            &[400, 414, 431, 0],
            "",
        ),
    ];
    for (what, bytes, statuses, code) in &cases {
        let (status, body) = raw_http(&addr, bytes);
        assert!(statuses.contains(&status), "{what}: answered {status} {body}");
        if !code.is_empty() {
            assert_eq!(error_code(&body), *code, "{what}: {body}");
        }
        // The node still answers after each one.
        assert!(c.status(leader).is_some(), "node {leader} stopped serving after {what}");
    }
    // Nothing was written: no key from above exists anywhere, and (if no election happened
    // meanwhile) the leader's log did not grow.
    for id in &all {
        for key in ["big", "a", &long_key[..]] {
            let (st, _, _) = get_key(&c.api(*id), key, "stale");
            assert!(st == 404 || st == 414, "node {id} has key {key}: {st}");
        }
    }
    let st = c.status(leader).unwrap();
    if st["term"].as_u64() == Some(term) {
        assert_eq!(
            st["last_log_index"].as_u64(),
            Some(last_before),
            "bad requests reached the log"
        );
    }
    still_serving(&c, term, "bad HTTP requests");
}

#[test]
fn admin_routes_need_the_bearer_token_when_one_is_set() {
    let mut c = Cluster::start(1, &["--admin-token", "tok-123"]);
    let (leader, _) = c.wait_leader(&[1], Duration::from_secs(15));
    let api = c.api(leader);
    let agent = http();
    let call =
        |method: &str, path: &str, auth: Option<&str>, body: Option<Value>| -> (u16, Value, bool) {
            let url = format!("{api}{path}");
            let r = match (method, auth) {
                ("POST", Some(a)) => {
                    agent.post(&url).header("Authorization", a).send_json(body.unwrap_or(json!({})))
                }
                ("POST", None) => agent.post(&url).send_json(body.unwrap_or(json!({}))),
                ("DELETE", Some(a)) => agent.delete(&url).header("Authorization", a).call(),
                ("DELETE", None) => agent.delete(&url).call(),
                ("GET", Some(a)) => agent.get(&url).header("Authorization", a).call(),
                ("GET", None) => agent.get(&url).call(),
                _ => unreachable!(),
            };
            let mut r = r.expect("request");
            let challenge = r.headers().contains_key("www-authenticate");
            (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null), challenge)
        };
    let routes: [(&str, &str, Option<Value>); 9] = [
        ("POST", "/v1/admin/faults", Some(json!({"delay_ms": 1}))),
        ("DELETE", "/v1/admin/faults", None),
        ("POST", "/v1/admin/snapshot", None),
        ("POST", "/v1/admin/snapshot?consistency=linearizable", None),
        ("GET", "/v1/admin/read-index", None),
        ("GET", "/v1/admin/snapshot", None),
        ("POST", "/v1/admin/transfer-leader", Some(json!({"to": 1}))),
        (
            "POST",
            "/v1/admin/members",
            Some(
                json!({"id": 9, "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2", "voter": false}),
            ),
        ),
        ("DELETE", "/v1/admin/members/9", None),
    ];
    for (method, path, body) in &routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer tok-1234"),
            Some("Bearer tok-12"),
            Some("Basic tok-123"),
            Some("tok-123"),
        ] {
            let (status, v, challenge) = call(method, path, auth, body.clone());
            assert_eq!(
                (status, v["error"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} with {auth:?}"
            );
            assert!(challenge, "{method} {path}: 401 without WWW-Authenticate");
        }
    }
    // Nothing an unauthorized caller asked for happened.
    let st = c.status(leader).unwrap();
    assert_eq!(st["snapshot_index"].as_u64(), Some(0), "{st}");
    assert_eq!(st["members"].as_array().map(Vec::len), Some(1), "{st}");
    // With the token: the routes work (either scheme spelling).
    let (s, v, _) =
        call("POST", "/v1/admin/faults", Some("Bearer tok-123"), Some(json!({"delay_ms": 1})));
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = call("DELETE", "/v1/admin/faults", Some("bearer tok-123"), None);
    assert_eq!(s, 200, "{v}");
    // A snapshot needs something applied: on a loaded box the leader's first entry can
    // still be on its way to the state machine right after the election.
    eventually(Duration::from_secs(15), "the leader's first entry is applied", || {
        c.status(leader).is_some_and(|st| st["applied_index"].as_u64() >= Some(1))
    });
    let (s, v, _) = call("GET", "/v1/admin/snapshot", Some("Bearer tok-123"), None);
    assert_eq!((s, v["error"].as_str()), (404, Some("no_snapshot")), "no snapshot yet: {v}");
    let (s, v, _) = call("GET", "/v1/admin/read-index", Some("Bearer tok-123"), None);
    assert!(s == 200 && v["index"].as_u64() >= Some(1), "{s} {v}");
    let (s, v, _) = call("POST", "/v1/admin/snapshot", Some("Bearer tok-123"), None);
    assert_eq!(s, 200, "{v}");
    // The download is that snapshot: its index, its CRC32C, its length.
    let mut r = agent
        .get(&format!("{api}/v1/admin/snapshot"))
        .header("Authorization", "Bearer tok-123")
        .call()
        .expect("GET /v1/admin/snapshot");
    assert_eq!(r.status().as_u16(), 200);
    let header = |name: &str| r.headers().get(name).and_then(|h| h.to_str().ok()?.parse().ok());
    assert_eq!(header("x-flotilla-snapshot-index"), v["index"].as_u64());
    assert_eq!(header("x-flotilla-snapshot-checksum"), v["checksum"].as_u64());
    let body = r.body_mut().read_to_vec().expect("snapshot body");
    assert_eq!(Some(body.len() as u64), v["bytes"].as_u64());
    assert_eq!(Some(u64::from(crc32c::crc32c(&body))), v["checksum"].as_u64());
    // The rest of the API needs no token.
    assert!(c.status(leader).is_some());
    put_ok(&c, "k", "v");
    assert_eq!(get_key(&api, "k", "linearizable").0, 200);

    // The token from the environment works the same; fault injection stays off unless
    // enabled, token or not.
    c.kill9(1);
    c.extra.clear();
    c.env.insert(1, vec![("FLOTILLA_ADMIN_TOKEN".into(), "from-env".into())]);
    c.fault_injection = false;
    c.spawn(1);
    c.wait_leader(&[1], Duration::from_secs(15));
    let (s, _, _) = call("POST", "/v1/admin/faults", Some("Bearer tok-123"), Some(json!({})));
    assert_eq!(s, 401);
    let (s, v, _) =
        call("POST", "/v1/admin/faults", Some("Bearer from-env"), Some(json!({"isolate": true})));
    assert_eq!((s, v["error"].as_str()), (403, Some("fault_injection_disabled")), "{v}");
    let (s, v, _) = call("DELETE", "/v1/admin/faults", Some("Bearer from-env"), None);
    assert_eq!((s, v["error"].as_str()), (403, Some("fault_injection_disabled")), "{v}");
}

#[test]
fn an_empty_admin_token_is_a_bad_argument() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(flotilla_bin())
        .args([
            "node",
            "--id",
            "1",
            "--admin-token",
            " ",
            "--initial-cluster",
            "1=127.0.0.1:1@127.0.0.1:2",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
}

#[test]
fn a_node_binds_loopback_unless_told_otherwise() {
    // Node 877 with no --listen/--api and no --initial-cluster entry: the defaults apply
    // (raft 7100+id, api 8100+id, both on 127.0.0.1).
    let (raft_port, api_port) = (7100 + 877, 8100 + 877);
    if std::net::TcpListener::bind(("127.0.0.1", raft_port)).is_err()
        || std::net::TcpListener::bind(("127.0.0.1", api_port)).is_err()
    {
        eprintln!("ports {raft_port}/{api_port} are busy; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(flotilla_bin())
        .args(["node", "--id", "877", "--join", "http://127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = |port: u16| -> Vec<String> {
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (addr, state) = (f.get(1)?, f.get(3)?);
                let (ip, p) = addr.rsplit_once(':')?;
                (*state == "0A" && u16::from_str_radix(p, 16).ok()? == port).then(|| ip.to_string())
            })
            .collect()
    };
    let mut seen = (Vec::new(), Vec::new());
    eventually(Duration::from_secs(15), "the node listens", || {
        seen = (listening(raft_port), listening(api_port));
        !seen.0.is_empty() && !seen.1.is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    // 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
    assert_eq!(seen.0, vec!["0100007F".to_string()], "raft port bound to {:?}", seen.0);
    assert_eq!(seen.1, vec!["0100007F".to_string()], "api port bound to {:?}", seen.1);
}

/// Starts a 3-node cluster, writes marked values, stops node 3, and returns the cluster.
fn cluster_with_marked_values() -> Cluster {
    let mut c = Cluster::start(3, &[]);
    let all = c.ids();
    let (leader, _) = c.wait_leader(&all, Duration::from_secs(15));
    for i in 0..60 {
        put_ok(&c, &format!("m{i}"), &format!("MARKED-VALUE-{i:03}-abcdefghijklmnopqrstuvwxyz"));
    }
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "node 3 applied everything", || {
        c.status(3).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= commit)
    });
    c.kill9(3);
    c
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_data_dir_with_flipped_bytes_is_refused_with_a_message_naming_the_damage() {
    let mut c = cluster_with_marked_values();
    let db = c.nodes[&3].data_dir.join("db");
    let pristine = c.dir.path().join("node-3-pristine");
    std::fs::create_dir_all(&pristine).unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(to);
        for f in files_under(from) {
            let dest = to.join(f.strip_prefix(from).unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&f, &dest).unwrap();
        }
    };
    copy(&db, &pristine);
    // Each damage: which file, how, and what the refusal must name.
    type Damage = fn(&std::path::Path) -> std::path::PathBuf;
    let flip_in_value: Damage = |db| {
        // A stored value in the journal (the log entry's copy, then the state machine's).
        let jnl = files_under(db)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "jnl"))
            .unwrap();
        let mut b = std::fs::read(&jnl).unwrap();
        let at =
            b.windows(16).position(|w| w == b"MARKED-VALUE-017").expect("marker in the journal");
        b[at + 7] ^= 0x01;
        std::fs::write(&jnl, b).unwrap();
        jnl
    };
    let flip_second_copy: Damage = |db| {
        let jnl = files_under(db)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "jnl"))
            .unwrap();
        let mut b = std::fs::read(&jnl).unwrap();
        let first = b.windows(16).position(|w| w == b"MARKED-VALUE-042").unwrap();
        let at = first
            + 16
            + b[first + 16..]
                .windows(16)
                .position(|w| w == b"MARKED-VALUE-042")
                .expect("second copy");
        b[at + 3] ^= 0x40;
        std::fs::write(&jnl, b).unwrap();
        jnl
    };
    let cut_journal: Damage = |db| {
        // Cut off in the middle of the batches: acknowledged writes lost.
        let jnl = files_under(db)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "jnl"))
            .unwrap();
        let b = std::fs::read(&jnl).unwrap();
        let at = b.windows(16).position(|w| w == b"MARKED-VALUE-030").unwrap();
        std::fs::write(&jnl, &b[..at]).unwrap();
        jnl
    };
    let flip_mark: Damage = |db| {
        let mark = db.join("flotilla-log.mark");
        let mut b = std::fs::read(&mark).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&mark, b).unwrap();
        mark
    };
    let flip_version: Damage = |db| {
        let v = db.join("version");
        let mut b = std::fs::read(&v).unwrap();
        b[1] ^= 0x01;
        std::fs::write(&v, b).unwrap();
        v
    };
    let cases: [(&str, Damage, &[&str]); 5] = [
        ("a flipped bit in a stored value", flip_in_value, &["ChecksumMismatch", "checksum"]),
        (
            "a flipped bit in the state machine's copy",
            flip_second_copy,
            &["ChecksumMismatch", "checksum"],
        ),
        ("a journal cut short", cut_journal, &["lost acknowledged writes"]),
        ("a damaged durable-write mark", flip_mark, &["flotilla-log.mark", "corrupt"]),
        ("a damaged version file", flip_version, &["InvalidVersion", "version"]),
    ];
    for (what, damage, names) in cases {
        copy(&pristine, &db);
        let damaged = damage(&db);
        let bytes_before = std::fs::read(&damaged).unwrap_or_default();
        let log_before = c.log_of(3).len();
        c.spawn(3);
        let status = c.wait_exit(3, Duration::from_secs(20));
        let log = c.log_of(3)[log_before..].to_string();
        let Some(status) = status else {
            c.kill9(3);
            panic!("node 3 started on a data dir with {what}:\n{log}");
        };
        assert_eq!(status.code(), Some(1), "{what}: {status}\n{log}");
        assert!(
            names.iter().any(|n| log.contains(n)),
            "{what}: the refusal does not name the damage:\n{log}"
        );
        assert!(
            log.contains(&db.display().to_string()),
            "{what}: the refusal does not name the directory:\n{log}"
        );
        // Refused, and left for the operator to look at: at most an incomplete batch at the
        // journal's tail is cut off by the engine's recovery (it cannot be read anyway).
        let bytes_after = std::fs::read(&damaged).unwrap_or_default();
        assert!(
            bytes_before.starts_with(&bytes_after) && bytes_before.len() - bytes_after.len() < 4096,
            "{what}: the damaged file was rewritten ({} -> {} bytes)",
            bytes_before.len(),
            bytes_after.len()
        );
    }
    // The other two go on: a majority still commits.
    let (leader, _) = c.wait_leader(&[1, 2], Duration::from_secs(10));
    put_ok(&c, "still", "up");
    // And the pristine copy starts and catches up.
    copy(&pristine, &db);
    c.spawn(3);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(15), "the repaired node catches up", || {
        c.status(3).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= commit)
    });
}

#[test]
fn a_failing_fsync_stops_the_node_and_every_acknowledged_write_survives() {
    let mut c = Cluster::start(3, &[]);
    let all = c.ids();
    // Node 1's disk fails at its 40th durable write (boot, votes and a few batches first).
    let victim = 1;
    c.kill9(victim);
    c.env.insert(victim, vec![("FLOTILLA_TEST_FAIL_LOG_WRITE_AFTER".into(), "40".into())]);
    c.spawn(victim);
    c.wait_leader(&all, Duration::from_secs(15));
    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let mut acked = Vec::new();
    let mut exit = None;
    for i in 0..400 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let key = format!("f{i}");
        if put_retry(&apis, &key, &format!("v{i}"), deadline) == WriteOutcome::Ok {
            acked.push(key);
        }
        if let Some(st) = c.wait_exit(victim, Duration::from_millis(1)) {
            exit = Some(st);
            break;
        }
    }
    let status = exit.or_else(|| c.wait_exit(victim, Duration::from_secs(10)));
    let log = c.log_of(victim);
    let status = status
        .unwrap_or_else(|| panic!("node {victim} kept running after its fsync failed:\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("durable log write failed") && log.contains("fsync failed"), "{log}");
    // The others carry on; every acknowledged write is there, on the majority at once and
    // on the failed node once it restarts with a working disk.
    let rest: Vec<u64> = all.iter().copied().filter(|id| *id != victim).collect();
    let (leader, _) = c.wait_leader(&rest, Duration::from_secs(15));
    put_ok(&c, "after", "1");
    c.env.remove(&victim);
    c.spawn(victim);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(20), "the restarted node catches up", || {
        c.status(victim).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= commit)
    });
    assert!(acked.len() > 10, "only {} writes were acknowledged", acked.len());
    for id in &all {
        for key in &acked {
            let (st, body, _) = get_key(&c.api(*id), key, "stale");
            assert_eq!(st, 200, "acknowledged {key} is missing on node {id}: {body}");
        }
    }
}

// ---- Property tests of the decoders (the fuzz targets' entry points) ----

mod props {
    use bytes::{Bytes, BytesMut};
    use flotilla_log::frame::{decode_entry, decode_meta, encode_entry, verify_entry};
    use flotilla_raft::message::{Message, MessageBody};
    use flotilla_raft::types::{HardState, LogIndex, NodeId, Term};
    use flotilla_raft::{Entry, EntryPayload, Membership};
    use flotilla_wire::handshake::decode_handshake_frame;
    use flotilla_wire::{WireCodec, WireMessage, decode_frame, encode_frame};
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        let payload = prop_oneof![
            Just(EntryPayload::Noop),
            proptest::collection::vec(any::<u8>(), 0..200)
                .prop_map(|b| EntryPayload::Command(Bytes::from(b))),
            proptest::collection::btree_set(1u64..10, 1..5).prop_map(|ids| EntryPayload::Config(
                Membership::with_voters(ids.into_iter().map(NodeId))
            )),
        ];
        (1u64..1000, 1u64..u64::MAX, payload).prop_map(|(term, index, payload)| Entry {
            term: Term(term),
            index: LogIndex(index),
            payload,
        })
    }

    fn message_strategy() -> impl Strategy<Value = WireMessage> {
        let body = prop_oneof![
            Just(MessageBody::TimeoutNow),
            (any::<bool>(), any::<u64>(), any::<u64>()).prop_map(|(p, i, t)| {
                MessageBody::RequestVote {
                    pre_vote: p,
                    last_log_index: LogIndex(i),
                    last_log_term: Term(t),
                    transfer: false,
                }
            }),
            (any::<u64>(), proptest::collection::vec(entry_strategy(), 0..4)).prop_map(
                |(c, entries)| {
                    MessageBody::AppendEntries {
                        prev_log_index: LogIndex(c / 2),
                        prev_log_term: Term(1),
                        entries,
                        leader_commit: LogIndex(c),
                        read_seq: 3,
                    }
                }
            ),
        ];
        (1u64..8, 1u64..8, any::<u64>(), body).prop_map(|(f, t, term, body)| {
            WireMessage::Raft(Message { from: NodeId(f), to: NodeId(t), term: Term(term), body })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn frame_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode_frame(&bytes);
            let _ = decode_handshake_frame(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut codec = WireCodec::new();
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }

        #[test]
        fn damaged_frames_are_refused_or_decode_to_a_message(
            msg in message_strategy(),
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        ) {
            let good = encode_frame(&msg).unwrap().to_vec();
            prop_assert_eq!(decode_frame(&good).unwrap(), msg);
            let mut bad = good.clone();
            for (at, x) in flips {
                let i = at % bad.len();
                bad[i] ^= x;
            }
            // Frames carry no checksum (TCP does): a flip may decode to another message,
            // but never panics and never reads past the frame.
            let _ = decode_frame(&bad);
        }

        #[test]
        fn log_entry_decoding_never_panics(index in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = verify_entry(LogIndex(index), &bytes);
            let _ = decode_entry(LogIndex(index), &bytes);
            let _ = decode_meta::<HardState>("hard_state", &bytes);
            let _ = decode_meta::<Membership>("membership", &bytes);
        }

        #[test]
        fn a_damaged_log_entry_is_always_refused(
            e in entry_strategy(),
            at in any::<usize>(),
            x in 1u8..=255,
        ) {
            let mut buf = Vec::new();
            encode_entry(&e, &mut buf).unwrap();
            prop_assert_eq!(decode_entry(e.index, &buf).unwrap(), e.clone());
            // Under another index: refused (the checksum covers the key).
            prop_assert!(decode_entry(LogIndex(e.index.0 ^ 1), &buf).is_err());
            // Any one damaged byte: refused, never silently different (CRC32C catches every
            // error burst up to 32 bits).
            let i = at % buf.len();
            buf[i] ^= x;
            prop_assert!(decode_entry(e.index, &buf).is_err());
        }

        #[test]
        fn kv_commands_and_keys_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), key in "\\PC{0,64}|[%0-9a-fA-F/]{0,32}") {
            let _ = flotilla_kv::KvCommand::decode(&bytes);
            let _ = flotilla_kv::KvResponse::decode(&bytes);
            let _ = flotilla_kv::http::decode_key(&key);
        }
    }
}
