use std::io::{Read, Write};
use std::net::TcpListener;

use actix_web::test::TestRequest;
use flotilla_raft::LogIndex;

use super::*;

const ME: &str = "127.0.0.1:8101";

fn forwarder(mode: ForwardMode) -> Forwarder {
    let shared = Shared::new(NodeId(1), LogIndex::ZERO);
    Forwarder::new(mode, ME.into(), Duration::from_secs(2), 300, shared, None)
}

fn not_leader(api: &str) -> ClientError {
    ClientError::NotLeader { leader: NodeId(2), leader_api: Some(api.into()) }
}

#[test]
fn the_mode_the_host_and_the_loop_guard_decide() {
    use ForwardMode::*;
    let cases = [
        // (mode, Host, already forwarded, forward?)
        (Auto, ME, false, false),
        (Auto, "127.0.0.1:8101 ", false, false),
        (Auto, "localhost:8101", false, true),
        (Auto, "flotilla.example.com", false, true),
        (Auto, "localhost:8101", true, false),
        (Always, ME, false, true),
        (Always, "localhost:8101", true, false),
        (Never, "localhost:8101", false, false),
    ];
    for (i, (mode, host, forwarded, want)) in cases.into_iter().enumerate() {
        let mut req = TestRequest::put().uri("/v1/kv/a").insert_header(("host", host));
        if forwarded {
            req = req.insert_header((FORWARDED_BY_HEADER, "3"));
        }
        let req = req.to_http_request();
        let err = not_leader("127.0.0.1:8102");
        let got = forwarder(mode).target(&err, &req);
        assert_eq!(got.is_some(), want, "#{i} {mode:?} {host:?} forwarded={forwarded}");
    }
}

#[test]
fn only_a_known_leader_address_is_a_target() {
    let req = TestRequest::get().uri("/v1/kv/a").to_http_request();
    let f = forwarder(ForwardMode::Always);
    assert_eq!(f.target(&not_leader("h:1"), &req), Some((NodeId(2), "h:1")));
    let unknown = ClientError::NotLeader { leader: NodeId(2), leader_api: None };
    assert_eq!(f.target(&unknown, &req), None);
    assert_eq!(f.target(&ClientError::NoLeader { retry_after_ms: 10 }, &req), None);
    assert_eq!(f.target(&ClientError::Timeout, &req), None);
}

#[test]
fn modes_parse() {
    assert_eq!("auto".parse(), Ok(ForwardMode::Auto));
    assert_eq!("always".parse(), Ok(ForwardMode::Always));
    assert_eq!("never".parse(), Ok(ForwardMode::Never));
    assert!("yes".parse::<ForwardMode>().is_err());
}

/// A one-shot server: accepts one connection, reads one request, answers `answer` (or
/// closes without answering when it is `None`); returns the request it read.
fn one_shot_server(answer: Option<&'static str>) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !request_complete(&got) {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if let Some(a) = answer {
            s.write_all(a.as_bytes()).unwrap();
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    (addr, thread)
}

fn request_complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

fn put_request() -> HttpRequest {
    TestRequest::put()
        .uri("/v1/kv/a%2Fb?x=1")
        .insert_header(("host", "lb:80"))
        .insert_header(("x-flotilla-client", "5"))
        .insert_header(("x-flotilla-seq", "9"))
        .insert_header(("x-not-passed", "1"))
        .to_http_request()
}

async fn body_json(resp: HttpResponse) -> serde_json::Value {
    let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

#[actix_rt::test]
async fn the_leaders_answer_is_relayed_with_the_headers_that_matter() {
    let (addr, server) = one_shot_server(Some(
        "HTTP/1.1 307 Temporary Redirect\r\ncontent-type: application/json\r\n\
         location: http://h:3/v1/kv/a%2Fb?x=1\r\nx-flotilla-index: 7\r\nx-other: 1\r\n\
         content-length: 2\r\n\r\n{}",
    ));
    let f = forwarder(ForwardMode::Always);
    let resp = f
        .forward(&put_request(), Bytes::from_static(b"v"), NodeId(2), &addr, f.client_timeout())
        .await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    let h = resp.headers();
    assert_eq!(h.get("location").unwrap(), "http://h:3/v1/kv/a%2Fb?x=1");
    assert_eq!(h.get("x-flotilla-index").unwrap(), "7");
    assert!(h.get("x-other").is_none());
    let sent = server.join().unwrap().to_ascii_lowercase();
    assert!(sent.starts_with("put /v1/kv/a%2fb?x=1 http/1.1\r\n"), "{sent}");
    for line in [
        format!("host: {addr}"),
        "x-flotilla-forwarded-by: 1".into(),
        "x-flotilla-client: 5".into(),
        "x-flotilla-seq: 9".into(),
    ] {
        assert!(sent.contains(&line), "{line:?} missing in {sent}");
    }
    assert!(!sent.contains("x-not-passed"), "{sent}");
    assert!(sent.ends_with("\r\n\r\nv"), "{sent}");
}

#[actix_rt::test]
async fn an_unreachable_leader_means_nothing_was_proposed() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let f = forwarder(ForwardMode::Always);
    let resp = f
        .forward(&put_request(), Bytes::from_static(b"v"), NodeId(2), &addr, f.client_timeout())
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    let v = body_json(resp).await;
    assert_eq!(
        (v["error"].as_str(), v["retry_after_ms"].as_u64(), v["leader"].as_u64()),
        (Some("no_leader"), Some(300), Some(2))
    );
}

#[actix_rt::test]
async fn a_connection_lost_after_sending_means_the_outcome_is_unknown() {
    let (addr, server) = one_shot_server(None);
    let f = forwarder(ForwardMode::Always);
    let resp = f
        .forward(&put_request(), Bytes::from_static(b"v"), NodeId(2), &addr, f.client_timeout())
        .await;
    assert!(server.join().unwrap().contains("x-flotilla-forwarded-by"));
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body_json(resp).await["error"], "timeout");
}

fn snapshot_request(auth: &str) -> HttpRequest {
    TestRequest::post()
        .uri("/v1/admin/snapshot?consistency=linearizable")
        .insert_header(("authorization", auth))
        .to_http_request()
}

#[actix_rt::test]
async fn a_read_index_is_asked_of_the_leader_with_the_callers_token() {
    let (addr, server) = one_shot_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n\
         {\"index\":417}",
    ));
    let f = forwarder(ForwardMode::Never);
    let got = f.leader_read_index(&snapshot_request("Bearer t0k"), NodeId(2), &addr).await;
    assert_eq!(got.ok(), Some(LogIndex(417)));
    let sent = server.join().unwrap().to_ascii_lowercase();
    assert!(sent.starts_with("get /v1/admin/read-index http/1.1\r\n"), "{sent}");
    for line in ["authorization: bearer t0k", "x-flotilla-forwarded-by: 1"] {
        assert!(sent.contains(line), "{line:?} missing in {sent}");
    }
}

#[actix_rt::test]
async fn a_leader_that_will_not_give_a_read_index_is_no_leader_and_a_refused_token_is_relayed() {
    // It just lost leadership: its redirect is not followed; the caller may retry.
    let (addr, _server) = one_shot_server(Some(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://h:3/v1/admin/read-index\r\n\
         content-length: 2\r\n\r\n{}",
    ));
    let f = forwarder(ForwardMode::Never);
    let resp = f.leader_read_index(&snapshot_request("Bearer x"), NodeId(2), &addr).await;
    let resp = resp.expect_err("no index from a 307");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(resp).await;
    assert_eq!(body["error"], "no_leader");
    // It answered, so the message does not say it could not be reached.
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave no read index (it answered 307"), "{body}");
    // An answer without an index is not one.
    let (addr, _server) = one_shot_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"));
    let resp = f.leader_read_index(&snapshot_request("Bearer x"), NodeId(2), &addr).await;
    assert_eq!(resp.expect_err("no index").status(), StatusCode::SERVICE_UNAVAILABLE);
    let (addr, _server) = one_shot_server(Some(
        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\ncontent-type: application/json\r\n\
         content-length: 24\r\n\r\n{\"error\":\"unauthorized\"}",
    ));
    let resp = f.leader_read_index(&snapshot_request("Bearer x"), NodeId(2), &addr).await;
    let resp = resp.expect_err("refused");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(body_json(resp).await["error"], "unauthorized");
}
