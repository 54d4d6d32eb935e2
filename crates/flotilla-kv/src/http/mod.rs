//! The KV routes of INTERFACE.md for actix-web 4, generic over the node's [`ClientApi`].
//!
//! Mount them next to the node's own routes:
//!
//! ```no_run
//! # fn demo<C: flotilla_node::ClientApi + Send>(api: C, reader: flotilla_kv::KvReader) {
//! use actix_web::{App, web};
//! use flotilla_kv::http::{self, KvHttpState};
//! let state = KvHttpState::new(api, reader);
//! let app = App::new()
//!     .configure(|cfg| http::configure(cfg, state.clone()))
//!     .default_service(web::to(http::no_route));
//! # }
//! ```
//!
//! Every answer is decided here except the write's fate, which comes from `propose`; the
//! mapping of [`flotilla_node::ClientError`] is in [`client_error_response`].

// Parsers return the finished error response as their `Err`: it is built once per refused
// request and returned straight to actix, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod errors;
mod request;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use flotilla_node::{ClientApi, ClientError};
use flotilla_raft::LogIndex;
use serde::{Deserialize, Deserializer, Serialize};

pub use errors::{
    UNKNOWN_LEADER_RETRY_MS, client_error_response, internal, json_error, json_error_with,
    leader_location, method_not_allowed, no_route, retry_after_secs,
};
pub use request::{CLIENT_HEADER, KeyError, SEQ_HEADER, decode_key, encode_key};

use crate::{KvCommand, KvOp, KvReader, KvResponse, MAX_VALUE_BYTES};

/// The response header carrying the answering node's applied index on every KV GET.
pub const INDEX_HEADER: &str = "x-flotilla-index";

/// The largest CAS request body read. JSON escapes can make a 1 MiB string up to six times
/// longer (`\u0000`), and a CAS carries two; bigger bodies answer 413 before being parsed.
pub const MAX_CAS_BODY_BYTES: usize = 12 * MAX_VALUE_BYTES + 4096;

/// What the KV routes need: the node's client API and a reader of the local state.
pub struct KvHttpState<C> {
    pub api: C,
    pub reader: KvReader,
}

impl<C: Clone> Clone for KvHttpState<C> {
    fn clone(&self) -> Self {
        KvHttpState { api: self.api.clone(), reader: self.reader.clone() }
    }
}

impl<C> KvHttpState<C> {
    pub fn new(api: C, reader: KvReader) -> Self {
        KvHttpState { api, reader }
    }
}

/// Registers `/v1/kv/{key}` (GET, PUT, DELETE) and `/v1/kv/{key}/cas` (POST), with 405 for
/// other methods and 400 for an empty key or a key of several segments.
///
/// One scope with a static prefix and a hand-written split ([`kv_route`]) instead of
/// `{key}` patterns: actix-router matches and captures patterns with a regex engine, which
/// was ≈ 14 % of the HTTP thread's CPU under 64 writers (docs/benchmarks.md). The handlers
/// take the key from the raw URI anyway ([`request::key_of`]).
pub fn configure<C: ClientApi>(cfg: &mut web::ServiceConfig, state: KvHttpState<C>) {
    cfg.app_data(web::Data::new(state))
        .service(web::scope("/v1/kv").default_service(web::to(dispatch::<C>)));
}

/// What a path under `/v1/kv` names.
#[derive(Debug, PartialEq, Eq)]
enum KvRoute {
    /// `/v1/kv/{key}`
    Key,
    /// `/v1/kv/{key}/cas`
    Cas,
    /// `/v1/kv`, `/v1/kv/`, or an empty key segment (`/v1/kv//cas`)
    EmptyKey,
    /// `/v1/kv/{key}/{more...}` other than `/cas`
    Segments,
    /// Not under `/v1/kv/` at all (`/v1/kvx`)
    Other,
}

fn kv_route(path: &str) -> KvRoute {
    let Some(rest) = path.strip_prefix("/v1/kv") else { return KvRoute::Other };
    let rest = match rest {
        "" | "/" => return KvRoute::EmptyKey,
        r => match r.strip_prefix('/') {
            Some(r) => r,
            None => return KvRoute::Other,
        },
    };
    match rest.split_once('/') {
        None => KvRoute::Key,
        Some(("", _)) => KvRoute::EmptyKey,
        Some((_, "cas")) => KvRoute::Cas,
        Some(_) => KvRoute::Segments,
    }
}

async fn dispatch<C: ClientApi>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<KvHttpState<C>>,
) -> HttpResponse {
    use actix_web::http::Method;
    match kv_route(req.uri().path()) {
        KvRoute::Key => match *req.method() {
            Method::GET => get(req, state).await,
            Method::PUT => put(req, payload, state).await,
            Method::DELETE => delete(req, state).await,
            _ => method_not_allowed(req).await,
        },
        KvRoute::Cas if req.method() == Method::POST => cas(req, payload, state).await,
        KvRoute::Cas => method_not_allowed(req).await,
        KvRoute::EmptyKey => KeyError::Empty.response(),
        KvRoute::Segments => {
            KeyError::Malformed("a key is one path segment; encode / as %2F").response()
        }
        KvRoute::Other => no_route(req).await,
    }
}

#[derive(Serialize)]
struct PutAnswer {
    index: u64,
    term: u64,
}

#[derive(Serialize)]
struct DeleteAnswer {
    index: u64,
    term: u64,
    deleted: bool,
}

#[derive(Serialize)]
struct CasAnswer {
    succeeded: bool,
    /// Lossy UTF-8 when the stored value is not UTF-8 (it was written by a binary PUT).
    current: Option<String>,
    index: u64,
}

#[derive(Deserialize)]
struct CasRequest {
    /// `None`: the field is missing (refused); `Some(None)`: `null`, the key must be absent.
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    value: String,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Every GET answer carries `X-Flotilla-Index`: the applied index when the lookup began (the
/// value is at least as new; `KvReader::read`), or for an answer that read nothing
/// (redirect, error) the applied index at the time of answering.
async fn get<C: ClientApi>(req: HttpRequest, state: web::Data<KvHttpState<C>>) -> HttpResponse {
    let mut resp = read(&req, &state).await;
    if !resp.headers().contains_key(INDEX_HEADER) {
        set_index(&mut resp, state.reader.applied_index());
    }
    resp
}

async fn read<C: ClientApi>(req: &HttpRequest, state: &KvHttpState<C>) -> HttpResponse {
    let key = match request::key_of(req, "") {
        Ok(key) => key,
        Err(e) => return e.response(),
    };
    let consistency = match request::consistency_of(req) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(e) = state.api.read_barrier(consistency).await {
        return refusal(state, req, &e, Bytes::new()).await;
    }
    let (value, index) = match state.reader.read(key.as_bytes()) {
        Ok(read) => read,
        Err(e) => return internal(e),
    };
    let mut resp = match value {
        Some(v) => HttpResponse::Ok().content_type("application/octet-stream").body(v),
        None => json_error(StatusCode::NOT_FOUND, "not_found", format!("no key {key:?}")),
    };
    set_index(&mut resp, index);
    resp
}

fn set_index(resp: &mut HttpResponse, index: LogIndex) {
    resp.headers_mut()
        .insert(header::HeaderName::from_static(INDEX_HEADER), HeaderValue::from(index.0));
}

async fn put<C: ClientApi>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<KvHttpState<C>>,
) -> HttpResponse {
    let (key, session) = match key_and_session(&req, "") {
        Ok(ks) => ks,
        Err(resp) => return resp,
    };
    let value = match request::body_of(&req, payload, MAX_VALUE_BYTES).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let command =
        KvCommand { session, ts_ms: now_ms(), op: KvOp::Put { key, value: value.clone() } };
    match propose(&state, &req, command, value).await {
        Ok(KvResponse::Put { index, term }) => {
            HttpResponse::Ok().json(PutAnswer { index: index.0, term: term.0 })
        }
        Ok(other) => mismatched(other),
        Err(resp) => resp,
    }
}

async fn delete<C: ClientApi>(req: HttpRequest, state: web::Data<KvHttpState<C>>) -> HttpResponse {
    let (key, session) = match key_and_session(&req, "") {
        Ok(ks) => ks,
        Err(resp) => return resp,
    };
    let command = KvCommand { session, ts_ms: now_ms(), op: KvOp::Delete { key } };
    match propose(&state, &req, command, Bytes::new()).await {
        Ok(KvResponse::Delete { index, term, deleted }) => {
            HttpResponse::Ok().json(DeleteAnswer { index: index.0, term: term.0, deleted })
        }
        Ok(other) => mismatched(other),
        Err(resp) => resp,
    }
}

async fn cas<C: ClientApi>(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<KvHttpState<C>>,
) -> HttpResponse {
    let (key, session) = match key_and_session(&req, "/cas") {
        Ok(ks) => ks,
        Err(resp) => return resp,
    };
    let body = match request::body_of(&req, payload, MAX_CAS_BODY_BYTES).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let parsed: CasRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"expected\": string|null, \"value\": string}}: {e}"),
            );
        }
    };
    let Some(expected) = parsed.expected else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"expected\" is required (null: must be absent)",
        );
    };
    if parsed.value.len() > MAX_VALUE_BYTES
        || expected.as_ref().is_some_and(|e| e.len() > MAX_VALUE_BYTES)
    {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("values are at most {MAX_VALUE_BYTES} bytes"),
        );
    }
    let op =
        KvOp::Cas { key, expected: expected.map(Bytes::from), value: Bytes::from(parsed.value) };
    let command = KvCommand { session, ts_ms: now_ms(), op };
    match propose(&state, &req, command, body).await {
        Ok(KvResponse::Cas { index, succeeded, current, .. }) => {
            HttpResponse::Ok().json(CasAnswer {
                succeeded,
                current: current.map(|c| String::from_utf8_lossy(&c).into_owned()),
                index: index.0,
            })
        }
        Ok(other) => mismatched(other),
        Err(resp) => resp,
    }
}

fn key_and_session(
    req: &HttpRequest,
    suffix: &str,
) -> Result<(String, Option<crate::ClientSeq>), HttpResponse> {
    let key = request::key_of(req, suffix).map_err(|e| e.response())?;
    let session = request::session_of(req)?;
    Ok((key, session))
}

/// Proposes `command` and decodes the state machine's answer; the answers that are errors
/// (stale sequence, rejected) come back as responses. `body` is the request's, passed on
/// if the request is forwarded to the leader.
async fn propose<C: ClientApi>(
    state: &KvHttpState<C>,
    req: &HttpRequest,
    command: KvCommand,
    body: Bytes,
) -> Result<KvResponse, HttpResponse> {
    let applied = match state.api.propose(command.encode()).await {
        Ok(applied) => applied,
        Err(e) => return Err(refusal(state, req, &e, body).await),
    };
    match KvResponse::decode(&applied.response) {
        Ok(KvResponse::StaleSequence { last_seq }) => Err(json_error(
            StatusCode::CONFLICT,
            "stale_sequence",
            format!("this client already applied seq {last_seq}"),
        )),
        Ok(KvResponse::Rejected { reason }) => {
            Err(json_error(StatusCode::BAD_REQUEST, "bad_request", reason))
        }
        Ok(answer) => Ok(answer),
        Err(e) => Err(internal(format!("the state machine's answer: {e}"))),
    }
}

/// The answer to a request this node could not serve: proxied to the leader when the node
/// forwards it (`--forward`, see `flotilla_node::forward`), else the INTERFACE.md answer
/// for `err` (307 to the leader, 503, 504, ...).
async fn refusal<C: ClientApi>(
    state: &KvHttpState<C>,
    req: &HttpRequest,
    err: &ClientError,
    body: Bytes,
) -> HttpResponse {
    if let Some(f) = state.api.forwarder()
        && let Some((leader, api)) = f.target(err, req)
    {
        return f.forward(req, body, leader, api, f.client_timeout()).await;
    }
    client_error_response(err, req)
}

/// A session replay whose original was another operation (the client reused a seq).
fn mismatched(answer: KvResponse) -> HttpResponse {
    json_error(
        StatusCode::CONFLICT,
        "stale_sequence",
        format!("this seq was already used for a different operation ({})", kind(&answer)),
    )
}

fn kind(answer: &KvResponse) -> &'static str {
    match answer {
        KvResponse::Put { .. } => "put",
        KvResponse::Delete { .. } => "delete",
        KvResponse::Cas { .. } => "cas",
        KvResponse::StaleSequence { .. } => "stale",
        KvResponse::Rejected { .. } => "rejected",
    }
}

/// The leader's wall clock, stamped on each command. Only ever compared through the state
/// machine's monotonic clock, so a step back after a leader change is harmless.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod route_tests {
    use super::{KvRoute, kv_route};

    #[test]
    fn paths_under_v1_kv() {
        let cases = [
            ("/v1/kv/a", KvRoute::Key),
            ("/v1/kv/a%2Fb", KvRoute::Key),
            ("/v1/kv/cas", KvRoute::Key),
            ("/v1/kv/a/cas", KvRoute::Cas),
            ("/v1/kv/cas/cas", KvRoute::Cas),
            ("/v1/kv", KvRoute::EmptyKey),
            ("/v1/kv/", KvRoute::EmptyKey),
            ("/v1/kv//cas", KvRoute::EmptyKey),
            ("/v1/kv/a/", KvRoute::Segments),
            ("/v1/kv/a/b", KvRoute::Segments),
            ("/v1/kv/a/cas/", KvRoute::Segments),
            ("/v1/kv/a/b/cas", KvRoute::Segments),
            ("/v1/kvx", KvRoute::Other),
            ("/v1/status", KvRoute::Other),
        ];
        for (path, want) in cases {
            assert_eq!(kv_route(path), want, "{path}");
        }
    }
}
