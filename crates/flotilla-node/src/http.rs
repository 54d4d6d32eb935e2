//! The node's own HTTP routes (INTERFACE.md): status, log view, events, metrics and the
//! admin endpoints. An app mounts these next to its state machine's routes.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use flotilla_raft::{LogIndex, NodeAddr, NodeId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ClientApi, ClientError, ReadConsistency};
use crate::faults::FaultSpec;
use crate::handle::{AdminError, NodeHandle};

/// Shared state of the node routes.
#[derive(Clone)]
pub struct NodeRoutes {
    pub handle: NodeHandle,
    pub fault_injection: bool,
    /// When set, every `/v1/admin/*` route requires `Authorization: Bearer <token>` and
    /// answers 401 `{"error":"unauthorized"}` otherwise. `None`: admin routes are open
    /// (to whoever can reach the API address, 127.0.0.1 by default).
    pub admin_token: Option<String>,
}

/// Checks the bearer token of an admin request; `Some(401 answer)` when it is missing or
/// wrong. Runs before anything else the route does, so an unauthorized request learns
/// nothing (not even whether fault injection is on).
fn unauthorized(req: &HttpRequest, st: &NodeRoutes) -> Option<HttpResponse> {
    let expected = st.admin_token.as_deref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if given.is_some_and(|g| token_matches(g.as_bytes(), expected.as_bytes())) {
        return None;
    }
    let mut resp = error_json(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "admin routes need the header Authorization: Bearer <token> (--admin-token)",
    );
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Some(resp)
}

/// Compares in time that depends only on the expected token's length, never on where the
/// first difference is (no byte-by-byte timing oracle for the token).
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u64::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= u64::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    std::hint::black_box(diff) == 0
}

/// `{"error": code, "message": text}` with `status`.
pub fn error_json(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": code, "message": message.into()}))
}

/// Maps a client error onto INTERFACE.md's answers (307 to the leader, 503, 504, ...).
pub fn client_error_response(req: &HttpRequest, e: &ClientError) -> HttpResponse {
    match e {
        ClientError::NotLeader { leader, leader_api: Some(api) } => {
            let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let location = crate::forward::api_url(api, pq);
            HttpResponse::TemporaryRedirect().insert_header((header::LOCATION, location)).json(json!({
                "error": "not_leader", "leader": leader.0,
                "message": format!("node {leader} is the leader"),
            }))
        }
        ClientError::NotLeader { leader, leader_api: None } => no_leader(1000, Some(*leader)),
        ClientError::NoLeader { retry_after_ms } => no_leader(*retry_after_ms, None),
        ClientError::Busy => {
            HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, "1")).json(json!({
                "error": "busy", "retry_after_ms": 100, "message": "too many uncommitted entries; retry later"
            }))
        }
        ClientError::Invalid(m) => error_json(StatusCode::BAD_REQUEST, "bad_request", m.clone()),
        ClientError::Timeout => error_json(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
        ClientError::LeadershipLost => {
            error_json(StatusCode::GATEWAY_TIMEOUT, "leadership_lost", e.to_string())
        }
        ClientError::ShuttingDown => {
            error_json(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string())
        }
    }
}

fn no_leader(retry_after_ms: u64, leader: Option<NodeId>) -> HttpResponse {
    let secs = retry_after_ms.div_ceil(1000).max(1);
    HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, secs.to_string())).json(
        json!({"error": "no_leader", "retry_after_ms": retry_after_ms,
                     "leader": leader.map(|l| l.0),
                     "message": "no leader is known; retry after an election"}),
    )
}

fn admin_error(req: &HttpRequest, e: AdminError) -> HttpResponse {
    match e {
        AdminError::Client(c) => client_error_response(req, &c),
        AdminError::ChangeInProgress => error_json(
            StatusCode::CONFLICT,
            "change_in_progress",
            "another membership change is in progress",
        ),
        AdminError::LearnerNotCaughtUp => error_json(
            StatusCode::CONFLICT,
            "learner_not_caught_up",
            "the learner has not caught up with the leader yet",
        ),
        AdminError::NoSuchMember => {
            error_json(StatusCode::NOT_FOUND, "no_such_member", "no such member")
        }
        AdminError::Invalid(m) => error_json(StatusCode::BAD_REQUEST, "bad_request", m),
    }
}

/// A refused leader-only admin request: proxied to the leader when this node forwards
/// (`--forward`), else answered by [`admin_error`].
async fn admin_refusal(
    req: &HttpRequest,
    st: &NodeRoutes,
    e: AdminError,
    body: Bytes,
) -> HttpResponse {
    if let AdminError::Client(c) = &e
        && let Some(f) = st.handle.forwarder()
        && let Some((leader, api)) = f.target(c, req)
    {
        return f.forward(req, body, leader, api, f.admin_timeout()).await;
    }
    admin_error(req, e)
}

async fn method_not_allowed() -> HttpResponse {
    error_json(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Mounts the node routes.
pub fn configure(cfg: &mut web::ServiceConfig, routes: NodeRoutes) {
    cfg.app_data(web::Data::new(routes))
        .service(
            web::resource("/v1/status")
                .route(web::get().to(status))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/ready")
                .route(web::get().to(ready))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/log")
                .route(web::get().to(log_view))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/events")
                .route(web::get().to(events))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(metrics))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/members")
                .route(web::post().to(add_member))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/members/{id}")
                .route(web::delete().to(remove_member))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/transfer-leader")
                .route(web::post().to(transfer_leader))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/read-index")
                .route(web::get().to(read_index))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/snapshot")
                .route(web::post().to(snapshot))
                .route(web::get().to(download_snapshot))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/admin/faults")
                .route(web::post().to(set_faults))
                .route(web::delete().to(clear_faults))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn status(st: web::Data<NodeRoutes>) -> HttpResponse {
    HttpResponse::Ok().json(st.handle.status().await)
}

/// Readiness for load balancers and Kubernetes probes: 200 while this node knows a leader
/// (so it can answer or redirect/forward clients), 503 otherwise: before the first
/// election, while cut off from the majority, and once removed from the cluster.
async fn ready(st: web::Data<NodeRoutes>) -> HttpResponse {
    let s = st.handle.status().await;
    let removed = s["removed"].as_bool() == Some(true);
    match s["leader"].as_u64() {
        Some(leader) if !removed => {
            HttpResponse::Ok().json(json!({"ready": true, "leader": leader, "role": s["role"]}))
        }
        _ => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            if removed { "removed from the cluster" } else { "no leader is known" },
        ),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

async fn log_view(
    st: web::Data<NodeRoutes>,
    q: Result<web::Query<LogQuery>, actix_web::Error>,
) -> HttpResponse {
    let Ok(q) = q else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "from and limit must be integers",
        );
    };
    HttpResponse::Ok().json(st.handle.log(q.from, q.limit.unwrap_or(100)).await)
}

async fn events(st: web::Data<NodeRoutes>) -> HttpResponse {
    let rx = st.handle.shared().subscribe();
    let shared = st.handle.shared().clone();
    let stream = futures_util::stream::unfold((rx, shared), |(mut rx, shared)| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    let mut b = Vec::with_capacity(line.len() + 1);
                    b.extend_from_slice(line.as_bytes());
                    b.push(b'\n');
                    return Some((Ok::<Bytes, actix_web::Error>(Bytes::from(b)), (rx, shared)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    shared.metrics.events_lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream)
}

async fn metrics(st: web::Data<NodeRoutes>) -> HttpResponse {
    let s = st.handle.status().await;
    let g = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let role = s["role"].as_str().unwrap_or("");
    let gauges = [
        ("flotilla_term", "current term", g("term")),
        ("flotilla_commit_index", "commit index", g("commit_index")),
        ("flotilla_applied_index", "applied index", g("applied_index")),
        ("flotilla_last_log_index", "last log index", g("last_log_index")),
        ("flotilla_snapshot_index", "snapshot index", g("snapshot_index")),
        (
            "flotilla_is_leader",
            "1 if this node is the leader",
            if role == "leader" { 1.0 } else { 0.0 },
        ),
        ("flotilla_pending_proposals", "client writes waiting to apply", g("pending_proposals")),
    ];
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(st.handle.shared().metrics.render(&gauges))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: u64,
    raft_addr: String,
    api_addr: String,
    #[serde(default = "default_true")]
    voter: bool,
}

fn default_true() -> bool {
    true
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<HttpResponse>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_json(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        ))
    })
}

async fn add_member(req: HttpRequest, st: web::Data<NodeRoutes>, body: Bytes) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    let m: AddMember = match parse_json(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if m.id == 0 {
        return error_json(StatusCode::BAD_REQUEST, "bad_request", "node ids are positive");
    }
    for a in [&m.raft_addr, &m.api_addr] {
        if a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return error_json(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{a:?} is not HOST:PORT"),
            );
        }
    }
    let addr = NodeAddr { raft_addr: m.raft_addr, api_addr: m.api_addr };
    match st.handle.add_member(NodeId(m.id), addr, m.voter).await {
        Ok(index) => member_ok(&st, index).await,
        Err(e) => admin_refusal(&req, &st, e, body).await,
    }
}

async fn member_ok(st: &NodeRoutes, index: flotilla_raft::LogIndex) -> HttpResponse {
    let s = st.handle.status().await;
    HttpResponse::Ok().json(json!({"index": index.0, "members": s["members"].clone()}))
}

async fn remove_member(
    req: HttpRequest,
    st: web::Data<NodeRoutes>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    let Ok(id) = id.parse::<u64>() else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "member id must be a positive integer",
        );
    };
    match st.handle.remove_member(NodeId(id)).await {
        Ok(index) => member_ok(&st, index).await,
        Err(e) => admin_refusal(&req, &st, e, Bytes::new()).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferReq {
    to: u64,
}

async fn transfer_leader(req: HttpRequest, st: web::Data<NodeRoutes>, body: Bytes) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    let t: TransferReq = match parse_json(&body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    match st.handle.transfer_leader(NodeId(t.to)).await {
        Ok(leader) => HttpResponse::Ok().json(json!({"leader": leader.0})),
        Err(e) => admin_refusal(&req, &st, e, body).await,
    }
}

/// `GET /v1/admin/read-index` (an extension of INTERFACE.md): on the leader, a ReadIndex
/// round, then `{"index"}`: this node has applied at least `index`, and every write
/// acknowledged before the request is at or below it. Followers redirect or forward it like
/// the other leader-only admin calls. A follower asks it for
/// `POST /v1/admin/snapshot?consistency=linearizable`.
async fn read_index(req: HttpRequest, st: web::Data<NodeRoutes>) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    match st.handle.read_barrier(ReadConsistency::Linearizable).await {
        Ok(index) => HttpResponse::Ok().json(json!({"index": index.0})),
        Err(e) => admin_refusal(&req, &st, AdminError::Client(e), Bytes::new()).await,
    }
}

/// `POST /v1/admin/snapshot[?consistency=stale|linearizable]`. `stale` (the default, as in
/// INTERFACE.md): a snapshot of what this node has applied when asked. `linearizable`
/// (an extension): first make this node hold every write acknowledged before the request
/// (the leader runs a ReadIndex round; a follower asks the leader for a read index and
/// waits until it has applied it), then snapshot, so a backup from any node misses no
/// acknowledged write. That needs a reachable leader: `503 no_leader` otherwise.
async fn snapshot(req: HttpRequest, st: web::Data<NodeRoutes>) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    let linearizable = match web::Query::<SnapshotQuery>::from_query(req.query_string()) {
        Ok(q) => match q.consistency.as_deref() {
            None | Some("stale") => false,
            Some("linearizable") => true,
            Some(other) => {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("consistency {other:?}: expected stale or linearizable"),
                );
            }
        },
        Err(e) => return error_json(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    let mut barrier = None;
    if linearizable {
        match snapshot_barrier(&req, &st).await {
            Ok(index) => barrier = Some(index),
            Err(resp) => return resp,
        }
    }
    match st.handle.snapshot_now().await {
        Ok(mut v) => {
            if let (Some(index), Some(obj)) = (barrier, v.as_object_mut()) {
                obj.insert("read_index".into(), json!(index.0));
            }
            HttpResponse::Ok().json(v)
        }
        Err(e) => client_error_response(&req, &e),
    }
}

/// Other parameters are ignored, as they were before `consistency` existed.
#[derive(Deserialize)]
struct SnapshotQuery {
    consistency: Option<String>,
}

/// Makes this node hold every write acknowledged before now; returns the read index it
/// waited for. `Err`: the answer for the client.
async fn snapshot_barrier(req: &HttpRequest, st: &NodeRoutes) -> Result<LogIndex, HttpResponse> {
    let e = match st.handle.read_barrier(ReadConsistency::Linearizable).await {
        Ok(index) => return Ok(index),
        Err(e) => e,
    };
    let ClientError::NotLeader { leader, leader_api: Some(api) } = &e else {
        return Err(client_error_response(req, &e));
    };
    let Some(f) = st.handle.forwarder() else { return Err(client_error_response(req, &e)) };
    let index = f.leader_read_index(req, *leader, api).await?;
    st.handle.wait_applied(index).await.map_err(|e| client_error_response(req, &e))?;
    Ok(index)
}

/// Headers of `GET /v1/admin/snapshot`: the snapshot's index, term and CRC32C (the
/// `checksum` of `POST /v1/admin/snapshot`'s answer).
pub const SNAPSHOT_INDEX_HEADER: &str = "x-flotilla-snapshot-index";
pub const SNAPSHOT_TERM_HEADER: &str = "x-flotilla-snapshot-term";
pub const SNAPSHOT_CHECKSUM_HEADER: &str = "x-flotilla-snapshot-checksum";

/// `GET /v1/admin/snapshot` (an extension of INTERFACE.md, like etcd's `snapshot save`):
/// streams this node's current snapshot file, the input of `flotilla restore`. 404 before
/// the node has one. The file is opened once and read through that handle, so a newer
/// snapshot that replaces it meanwhile does not cut the download.
async fn download_snapshot(req: HttpRequest, st: web::Data<NodeRoutes>) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    // A newer snapshot may delete the file between the answer and the open: ask again.
    for _ in 0..3 {
        let Some(file) = st.handle.current_snapshot().await else {
            return error_json(
                StatusCode::NOT_FOUND,
                "no_snapshot",
                "this node holds no snapshot yet; POST /v1/admin/snapshot makes one",
            );
        };
        match tokio::fs::File::open(&file.path).await {
            Ok(f) => {
                let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024);
                return HttpResponse::Ok()
                    .content_type("application/octet-stream")
                    .insert_header((SNAPSHOT_INDEX_HEADER, file.meta.last_index.0))
                    .insert_header((SNAPSHOT_TERM_HEADER, file.meta.last_term.0))
                    .insert_header((SNAPSHOT_CHECKSUM_HEADER, u64::from(file.checksum)))
                    .no_chunking(file.len)
                    .streaming(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let m = format!("opening the snapshot {:?}: {e}", file.path);
                return error_json(StatusCode::INTERNAL_SERVER_ERROR, "internal", m);
            }
        }
    }
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "newer snapshots kept replacing the one to send; retry",
    )
}

async fn set_faults(req: HttpRequest, st: web::Data<NodeRoutes>, body: Bytes) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    if !st.fault_injection {
        return fault_injection_off();
    }
    let spec: FaultSpec = match parse_json(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(m) = spec.validate() {
        return error_json(StatusCode::BAD_REQUEST, "bad_request", m);
    }
    let v: Value = serde_json::to_value(&spec).unwrap_or(Value::Null);
    st.handle.set_faults(spec);
    HttpResponse::Ok().json(v)
}

async fn clear_faults(req: HttpRequest, st: web::Data<NodeRoutes>) -> HttpResponse {
    if let Some(denied) = unauthorized(&req, &st) {
        return denied;
    }
    if !st.fault_injection {
        return fault_injection_off();
    }
    st.handle.set_faults(FaultSpec::default());
    HttpResponse::Ok().json(json!({"healed": true}))
}

fn fault_injection_off() -> HttpResponse {
    error_json(
        StatusCode::FORBIDDEN,
        "fault_injection_disabled",
        "fault injection is off; start the node with --enable-fault-injection",
    )
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x3cret", b"s3crex"] {
            assert!(!token_matches(wrong, b"s3cret"), "{wrong:?}");
        }
    }
}
