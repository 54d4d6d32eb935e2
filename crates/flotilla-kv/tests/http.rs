//! The KV routes over `actix_web::test` with a fake single-node `ClientApi`.

mod common;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::{body::MessageBody, dev::ServiceResponse};
use bytes::Bytes;
use common::{FakeNode, app};
use flotilla_node::ClientError;
use flotilla_raft::NodeId;
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// Checks an INTERFACE.md error answer: status, `error` code and a `message`.
    fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body {:?}", String::from_utf8_lossy(&self.body));
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].is_string(), "{body}");
        body
    }
}

async fn call(node: &FakeNode, req: TestRequest) -> Answer {
    let service = test::init_service(app(node)).await;
    let resp: ServiceResponse = test::call_service(&service, req.to_request()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().try_into_bytes().unwrap_or_else(|_| panic!("streamed body"));
    Answer { status, headers, body }
}

fn put(path: &str, body: impl Into<Bytes>) -> TestRequest {
    TestRequest::put().uri(path).set_payload(body.into())
}

fn cas(path: &str, body: Value) -> TestRequest {
    TestRequest::post().uri(path).set_json(body)
}

#[actix_web::test]
async fn put_then_get_returns_the_raw_value_and_the_index() {
    let node = FakeNode::new();
    let a = call(&node, put("/v1/kv/k", &b"\x00\xffbinary"[..])).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({"index": 1, "term": 3}));
    for consistency in ["", "?consistency=linearizable", "?consistency=lease", "?consistency=stale"]
    {
        let a = call(&node, TestRequest::get().uri(&format!("/v1/kv/k{consistency}"))).await;
        assert_eq!(a.status, 200, "{consistency}");
        assert_eq!(&a.body[..], b"\x00\xffbinary");
        assert_eq!(a.header("x-flotilla-index"), Some("1"));
    }
}

#[actix_web::test]
async fn missing_key_is_404_not_found_with_the_index() {
    let node = FakeNode::new();
    call(&node, put("/v1/kv/other", "v")).await;
    let a = call(&node, TestRequest::get().uri("/v1/kv/nope")).await;
    a.assert_error(404, "not_found");
    assert_eq!(a.header("x-flotilla-index"), Some("1"));
}

#[actix_web::test]
async fn delete_answers_index_term_and_deleted() {
    let node = FakeNode::new();
    call(&node, put("/v1/kv/k", "v")).await;
    let a = call(&node, TestRequest::delete().uri("/v1/kv/k")).await;
    assert_eq!(
        (a.status.as_u16(), a.json()),
        (200, json!({"index": 2, "term": 3, "deleted": true}))
    );
    let a = call(&node, TestRequest::delete().uri("/v1/kv/k")).await;
    assert_eq!(a.json(), json!({"index": 3, "term": 3, "deleted": false}));
    assert_eq!(node.get("k"), None);
}

#[actix_web::test]
async fn cas_null_means_absent_and_current_is_the_value_after() {
    let node = FakeNode::new();
    let a = call(&node, cas("/v1/kv/k/cas", json!({"expected": null, "value": "a"}))).await;
    assert_eq!(
        (a.status.as_u16(), a.json()),
        (200, json!({"succeeded": true, "current": "a", "index": 1}))
    );
    let a = call(&node, cas("/v1/kv/k/cas", json!({"expected": null, "value": "b"}))).await;
    assert_eq!(a.json(), json!({"succeeded": false, "current": "a", "index": 2}));
    let a = call(&node, cas("/v1/kv/k/cas", json!({"expected": "a", "value": "b"}))).await;
    assert_eq!(a.json(), json!({"succeeded": true, "current": "b", "index": 3}));
    let a = call(&node, cas("/v1/kv/absent/cas", json!({"expected": "x", "value": "b"}))).await;
    assert_eq!(a.json(), json!({"succeeded": false, "current": null, "index": 4}));
    assert_eq!(node.get("k").as_deref(), Some(&b"b"[..]));
}

#[actix_web::test]
async fn cas_bodies_are_checked() {
    let node = FakeNode::new();
    call(&node, cas("/v1/kv/k/cas", json!({"value": "a"}))).await.assert_error(400, "bad_request");
    call(&node, cas("/v1/kv/k/cas", json!({"expected": 5, "value": "a"})))
        .await
        .assert_error(400, "bad_request");
    call(&node, cas("/v1/kv/k/cas", json!({"expected": null})))
        .await
        .assert_error(400, "bad_request");
    let garbage = TestRequest::post().uri("/v1/kv/k/cas").set_payload("{not json");
    call(&node, garbage).await.assert_error(400, "bad_request");
    let big = "x".repeat(flotilla_kv::MAX_VALUE_BYTES + 1);
    call(&node, cas("/v1/kv/k/cas", json!({"expected": null, "value": big})))
        .await
        .assert_error(413, "too_large");
    call(&node, cas("/v1/kv/k/cas", json!({"expected": big, "value": "v"})))
        .await
        .assert_error(413, "too_large");
    assert_eq!(node.lock().proposals, 0, "nothing was proposed");
}

#[actix_web::test]
async fn not_leader_redirects_to_the_same_path_and_query_on_the_leader() {
    let node = FakeNode::new();
    let not_leader =
        ClientError::NotLeader { leader: NodeId(2), leader_api: Some("127.0.0.1:8102".into()) };
    node.lock().always = Some(not_leader.clone());
    node.lock().read_error = Some(not_leader);
    let cases = [
        (put("/v1/kv/a%2Fb", "v"), "http://127.0.0.1:8102/v1/kv/a%2Fb"),
        (TestRequest::delete().uri("/v1/kv/k"), "http://127.0.0.1:8102/v1/kv/k"),
        (
            cas("/v1/kv/k/cas", json!({"expected": null, "value": "v"})),
            "http://127.0.0.1:8102/v1/kv/k/cas",
        ),
        (
            TestRequest::get().uri("/v1/kv/k?consistency=lease"),
            "http://127.0.0.1:8102/v1/kv/k?consistency=lease",
        ),
        (TestRequest::get().uri("/v1/kv/k"), "http://127.0.0.1:8102/v1/kv/k"),
    ];
    for (i, (req, location)) in cases.into_iter().enumerate() {
        let a = call(&node, req).await;
        let body = a.assert_error(307, "not_leader");
        assert_eq!(body["leader"], 2, "#{i}");
        assert_eq!(a.header("location"), Some(location), "#{i}");
    }
}

#[actix_web::test]
async fn stale_reads_are_served_locally_on_a_follower() {
    let node = FakeNode::new();
    call(&node, put("/v1/kv/k", "v")).await;
    node.lock().read_error =
        Some(ClientError::NotLeader { leader: NodeId(2), leader_api: Some("h:1".into()) });
    let a = call(&node, TestRequest::get().uri("/v1/kv/k?consistency=stale")).await;
    assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"v"[..]));
    let a = call(&node, TestRequest::get().uri("/v1/kv/absent?consistency=stale")).await;
    a.assert_error(404, "not_found");
    assert_eq!(a.header("x-flotilla-index"), Some("1"));
}

#[actix_web::test]
async fn client_errors_map_to_the_documented_statuses() {
    let cases = [
        (ClientError::NoLeader { retry_after_ms: 1500 }, 503, "no_leader", Some("2")),
        (ClientError::NoLeader { retry_after_ms: 0 }, 503, "no_leader", Some("1")),
        (
            ClientError::NotLeader { leader: NodeId(4), leader_api: None },
            503,
            "no_leader",
            Some("1"),
        ),
        (ClientError::Busy, 503, "busy", Some("1")),
        (ClientError::ShuttingDown, 503, "shutting_down", Some("1")),
        (ClientError::Invalid("nope".into()), 400, "bad_request", None),
        (ClientError::Timeout, 504, "timeout", None),
        (ClientError::LeadershipLost, 504, "leadership_lost", None),
    ];
    for (i, (err, status, code, retry_after)) in cases.into_iter().enumerate() {
        let node = FakeNode::new();
        node.lock().always = Some(err.clone());
        let a = call(&node, put("/v1/kv/k", "v")).await;
        let body = a.assert_error(status, code);
        assert_eq!(a.header("retry-after"), retry_after, "#{i} {err:?}");
        if let ClientError::NoLeader { retry_after_ms } = err {
            assert_eq!(body["retry_after_ms"], retry_after_ms, "#{i}");
        }
        if code == "no_leader" {
            assert!(body["retry_after_ms"].is_u64(), "#{i} {body}");
        }
    }
}

#[actix_web::test]
async fn key_limits_and_encoding() {
    let node = FakeNode::new();
    let max = "k".repeat(1024);
    assert_eq!(call(&node, put(&format!("/v1/kv/{max}"), "v")).await.status, 200);
    let over = "k".repeat(1025);
    call(&node, put(&format!("/v1/kv/{over}"), "v")).await.assert_error(414, "key_too_long");
    call(&node, TestRequest::get().uri(&format!("/v1/kv/{over}")))
        .await
        .assert_error(414, "key_too_long");
    // 1024 bytes once decoded, 3072 characters on the wire.
    let encoded = "%41".repeat(1024);
    assert_eq!(call(&node, put(&format!("/v1/kv/{encoded}"), "v")).await.status, 200);
    assert_eq!(node.get(&"A".repeat(1024)).as_deref(), Some(&b"v"[..]));
    for bad in [
        "/v1/kv/%zz",
        "/v1/kv/%4",
        "/v1/kv/%FF",
        "/v1/kv/%C3",
        "/v1/kv/",
        "/v1/kv",
        "/v1/kv/a/b",
        "/v1/kv//cas",
        "/v1/kv/a/cas/x",
    ] {
        call(&node, put(bad, "v")).await.assert_error(400, "bad_key");
        call(&node, TestRequest::get().uri(bad)).await.assert_error(400, "bad_key");
    }
    // %2F is part of the key, not a separator.
    assert_eq!(call(&node, put("/v1/kv/a%2Fb", "slash")).await.status, 200);
    assert_eq!(node.get("a/b").as_deref(), Some(&b"slash"[..]));
    let a = call(&node, TestRequest::get().uri("/v1/kv/a%2fb")).await;
    assert_eq!(&a.body[..], b"slash");
    // UTF-8 keys, encoded or not, and an encoded %.
    assert_eq!(call(&node, put("/v1/kv/%C3%A9t%C3%A9%25", "summer")).await.status, 200);
    assert_eq!(node.get("été%").as_deref(), Some(&b"summer"[..]));
}

#[actix_web::test]
async fn value_limit_is_one_mebibyte() {
    let node = FakeNode::new();
    let max = vec![7u8; flotilla_kv::MAX_VALUE_BYTES];
    assert_eq!(call(&node, put("/v1/kv/k", max.clone())).await.status, 200);
    assert_eq!(node.get("k").map(|v| v.len()), Some(max.len()));
    let over = vec![7u8; flotilla_kv::MAX_VALUE_BYTES + 1];
    call(&node, put("/v1/kv/k", over)).await.assert_error(413, "too_large");
    // A declared length over the limit is refused before any byte is read.
    let liar = TestRequest::put().uri("/v1/kv/k").insert_header(("content-length", "5000000000"));
    call(&node, liar).await.assert_error(413, "too_large");
    assert_eq!(node.lock().proposals, 1);
}

#[actix_web::test]
async fn wrong_method_on_a_known_route_is_405_and_unknown_routes_404() {
    let node = FakeNode::new();
    for req in [
        TestRequest::post().uri("/v1/kv/k"),
        TestRequest::patch().uri("/v1/kv/k"),
        TestRequest::get().uri("/v1/kv/k/cas"),
        TestRequest::put().uri("/v1/kv/k/cas"),
    ] {
        call(&node, req).await.assert_error(405, "method_not_allowed");
    }
    call(&node, TestRequest::get().uri("/v2/kv/k")).await.assert_error(404, "no_route");
    call(&node, TestRequest::get().uri("/")).await.assert_error(404, "no_route");
}

#[actix_web::test]
async fn bad_consistency_is_400() {
    let node = FakeNode::new();
    for q in ["?consistency=strong", "?consistency=", "?consistency"] {
        call(&node, TestRequest::get().uri(&format!("/v1/kv/k{q}")))
            .await
            .assert_error(400, "bad_consistency");
    }
}

fn with_session(req: TestRequest, client: &str, seq: &str) -> TestRequest {
    req.insert_header(("X-Flotilla-Client", client)).insert_header(("X-Flotilla-Seq", seq))
}

#[actix_web::test]
async fn session_headers_make_retries_apply_once() {
    let node = FakeNode::new();
    let first = call(&node, with_session(put("/v1/kv/k", "v1"), "42", "7")).await;
    assert_eq!(first.json(), json!({"index": 1, "term": 3}));
    call(&node, put("/v1/kv/k", "other")).await;
    let retry = call(&node, with_session(put("/v1/kv/k", "v1"), "42", "7")).await;
    assert_eq!(retry.json(), first.json(), "the original answer");
    assert_eq!(node.get("k").as_deref(), Some(&b"other"[..]), "not applied again");
    let stale = call(&node, with_session(put("/v1/kv/k", "v0"), "42", "6")).await;
    stale.assert_error(409, "stale_sequence");
    assert_eq!(node.get("k").as_deref(), Some(&b"other"[..]));
    // The same seq reused for another operation is refused, not misreported.
    let reused = call(&node, with_session(TestRequest::delete().uri("/v1/kv/k"), "42", "7")).await;
    reused.assert_error(409, "stale_sequence");
    let cas1 = with_session(cas("/v1/kv/c/cas", json!({"expected": null, "value": "x"})), "9", "1");
    let a = call(&node, cas1).await;
    let cas2 = with_session(cas("/v1/kv/c/cas", json!({"expected": null, "value": "x"})), "9", "1");
    assert_eq!(call(&node, cas2).await.json(), a.json());
    assert_eq!(a.json()["succeeded"], true);
}

#[actix_web::test]
async fn session_headers_are_parsed_strictly() {
    let node = FakeNode::new();
    let bad = [
        ("1", "x"),
        ("-1", "1"),
        ("+1", "1"),
        (" 1", "1"),
        ("1", "18446744073709551616"),
        ("", "1"),
    ];
    for (client, seq) in bad {
        let a = call(&node, with_session(put("/v1/kv/k", "v"), client, seq)).await;
        a.assert_error(400, "bad_session");
    }
    let only_client = put("/v1/kv/k", "v").insert_header(("X-Flotilla-Client", "1"));
    call(&node, only_client).await.assert_error(400, "bad_session");
    let only_seq = TestRequest::delete().uri("/v1/kv/k").insert_header(("X-Flotilla-Seq", "1"));
    call(&node, only_seq).await.assert_error(400, "bad_session");
    let max = with_session(put("/v1/kv/k", "v"), "18446744073709551615", "18446744073709551615");
    assert_eq!(call(&node, max).await.status, 200);
    assert_eq!(node.lock().proposals, 1);
}

#[actix_web::test]
async fn every_get_answer_carries_the_applied_index() {
    let node = FakeNode::new();
    call(&node, put("/v1/kv/k", "v")).await;
    call(&node, put("/v1/kv/k", "w")).await;
    node.lock().read_error = Some(ClientError::NoLeader { retry_after_ms: 10 });
    let a = call(&node, TestRequest::get().uri("/v1/kv/k")).await;
    a.assert_error(503, "no_leader");
    assert_eq!(a.header("x-flotilla-index"), Some("2"));
    let a = call(&node, TestRequest::get().uri("/v1/kv/%FF")).await;
    a.assert_error(400, "bad_key");
    assert_eq!(a.header("x-flotilla-index"), Some("2"));
}
