//! Request forwarding (`--forward`). A follower that gets a leader-only request (a write, a
//! linearizable or lease read, a member or transfer call) either redirects the client to
//! the leader (`307`, INTERFACE.md) or proxies the request to the leader's advertised API
//! and relays the answer, so that one load-balanced address in front of every node works.
//!
//! Outcomes stay as honest as the client's own request would be (INTERFACE.md "Definite vs
//! unknown outcomes"): when no connection to the leader could be made, or the connection
//! handed the request back unsent, nothing was proposed: `503 no_leader`. Once the request
//! was written, a failure is an unknown outcome: `504 timeout`. The leader's own answer,
//! whatever it is (including a `307` when it just lost leadership), is relayed as it is.
//!
//! A forwarded request carries `X-Flotilla-Forwarded-By: <node id>`, and a request that
//! carries it is never forwarded again: no loops, at most one hop.

mod conn;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use flotilla_raft::{LogIndex, NodeId};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;

pub use conn::api_url;

use crate::api::ClientError;
use crate::shared::Shared;
use crate::tls::TlsSettings;

/// Names the node that forwarded a request; such a request is never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-flotilla-forwarded-by";

/// Request headers passed on to the leader: the body's type, the client's session and the
/// admin token.
const PASSED_ON: &[&str] =
    &["content-type", "authorization", "x-flotilla-client", "x-flotilla-seq"];

/// Answer headers relayed to the client.
const RELAYED: &[&str] =
    &["content-type", "x-flotilla-index", "retry-after", "location", "www-authenticate"];

/// The largest answer relayed: a value (1 MiB) and then some. A bigger one is not a
/// Flotilla answer; it is treated as a broken exchange.
const ANSWER_MAX_BYTES: usize = 2 << 20;

/// How a `503 no_leader` says what went wrong: a proxied request that did not reach the
/// leader, and a read index the leader did not give (it may have answered: a 504 when it
/// lost leadership, say).
const NOT_REACHED: &str = "could not be reached";
const NO_READ_INDEX: &str = "gave no read index";

/// Dialing the leader gives up after this long (or the request timeout, if shorter).
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// `--forward MODE`: what a follower does with a leader-only request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardMode {
    /// Proxy when the client reached this node by another name than its advertised API
    /// address (a Service, a load balancer): such a client probably cannot reach the
    /// leader's advertised address either. Otherwise redirect.
    #[default]
    Auto,
    /// Always proxy.
    Always,
    /// Always redirect (307), as before forwarding existed.
    Never,
}

impl FromStr for ForwardMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ForwardMode::Auto),
            "always" => Ok(ForwardMode::Always),
            "never" => Ok(ForwardMode::Never),
            _ => Err(format!("{s:?}: expected auto, always or never")),
        }
    }
}

/// One per node: the forwarding policy and the pool of connections to other nodes' APIs.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    mode: ForwardMode,
    /// This node's advertised API address (`HOST:PORT`), for [`ForwardMode::Auto`].
    advertise_api: String,
    request_timeout: Duration,
    /// Advertised in `503 no_leader` when the leader cannot be reached.
    retry_after_ms: u64,
    shared: Arc<Shared>,
    pool: conn::Pool,
    /// With TLS on, leaders are `https://` and dialed with the node's client config.
    tls: Option<TlsSettings>,
}

/// Why an exchange with the leader failed.
enum Failure {
    /// The request never left this node: nothing was proposed.
    NotSent(String),
    /// The request was written: the leader may have acted on it.
    Unknown(String),
}

impl Forwarder {
    pub(crate) fn new(
        mode: ForwardMode,
        advertise_api: String,
        request_timeout: Duration,
        retry_after_ms: u64,
        shared: Arc<Shared>,
        tls: Option<TlsSettings>,
    ) -> Forwarder {
        let inner = Inner {
            mode,
            advertise_api,
            request_timeout,
            retry_after_ms,
            shared,
            pool: Default::default(),
            tls,
        };
        Forwarder { inner: Arc::new(inner) }
    }

    /// How long a forwarded client request (KV) may take: the leader answers within the
    /// request timeout (else its own `504`), so a little more lets its answer through.
    pub fn client_timeout(&self) -> Duration {
        self.inner.request_timeout + Duration::from_secs(1)
    }

    /// How long a forwarded admin request may take: adding a voter waits for a learner to
    /// catch up and commits two configuration changes (see `NodeHandle::add_member`).
    pub fn admin_timeout(&self) -> Duration {
        self.inner.request_timeout * 16
    }

    /// The leader (id, advertised API address) to proxy `req` to, when this node refused it
    /// with `err` and the mode says to forward it; `None`: answer as usual.
    pub fn target<'e>(&self, err: &'e ClientError, req: &HttpRequest) -> Option<(NodeId, &'e str)> {
        let ClientError::NotLeader { leader, leader_api: Some(api) } = err else { return None };
        self.wants(req).then_some((*leader, api.as_str()))
    }

    fn wants(&self, req: &HttpRequest) -> bool {
        if req.headers().contains_key(FORWARDED_BY_HEADER) {
            return false;
        }
        match self.inner.mode {
            ForwardMode::Never => false,
            ForwardMode::Always => true,
            ForwardMode::Auto => !self.reached_as_advertised(req),
        }
    }

    /// Whether the client addressed this node by its advertised API address (the `Host`
    /// header; the URI's authority for a request in absolute form).
    fn reached_as_advertised(&self, req: &HttpRequest) -> bool {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        host.is_some_and(|h| h.trim().eq_ignore_ascii_case(&self.inner.advertise_api))
    }

    /// Proxies `req` (with its already-read `body`) to `leader_api` and relays the answer;
    /// see the module documentation for the outcome of failures.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        body: Bytes,
        leader: NodeId,
        leader_api: &str,
        timeout: Duration,
    ) -> HttpResponse {
        let metrics = &self.inner.shared.metrics;
        metrics.requests_forwarded.fetch_add(1, Ordering::Relaxed);
        let request = match self.outgoing(req, body, leader_api) {
            Ok(r) => r,
            Err(e) => return self.not_sent(leader, leader_api, NOT_REACHED, &e),
        };
        match self.exchange(leader_api, request, timeout).await {
            Ok(answer) => answer,
            Err(Failure::NotSent(e)) => {
                metrics.forward_failures.fetch_add(1, Ordering::Relaxed);
                self.not_sent(leader, leader_api, NOT_REACHED, &e)
            }
            Err(Failure::Unknown(e)) => {
                metrics.forward_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%leader, %leader_api, error = %e, "forwarded request: outcome unknown");
                HttpResponse::GatewayTimeout().json(json!({
                    "error": "timeout",
                    "message": format!("forwarded to node {leader} at {leader_api}, but no answer came back ({e}); the outcome is unknown"),
                }))
            }
        }
    }

    /// The request as it goes to the leader: same method, path, query and body.
    fn outgoing(
        &self,
        req: &HttpRequest,
        body: Bytes,
        authority: &str,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut out = hyper::Request::builder()
            .method(req.method().as_str())
            .uri(path_and_query)
            .header(hyper::header::HOST, conn::authority(authority).1)
            .header(FORWARDED_BY_HEADER, self.inner.shared.id.0);
        for name in PASSED_ON {
            for value in req.headers().get_all(*name) {
                out = out.header(*name, value.as_bytes());
            }
        }
        out.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// One exchange within `timeout`, relayed as this node's answer.
    async fn exchange(
        &self,
        authority: &str,
        request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<HttpResponse, Failure> {
        let (status, headers, body) = self.exchange_raw(authority, request, timeout).await?;
        Ok(relay(status, &headers, body))
    }

    /// Asks the leader for a read index (`GET /v1/admin/read-index`, with the client's admin
    /// token): an index at or past every write acknowledged before now, in any term. `Err`
    /// is the answer for the client: `503 no_leader` when the leader could not be asked or
    /// would not say (it may have just lost leadership; nothing was changed either way).
    pub async fn leader_read_index(
        &self,
        req: &HttpRequest,
        leader: NodeId,
        leader_api: &str,
    ) -> Result<LogIndex, HttpResponse> {
        let mut out = hyper::Request::builder()
            .method("GET")
            .uri("/v1/admin/read-index")
            .header(hyper::header::HOST, conn::authority(leader_api).1)
            .header(FORWARDED_BY_HEADER, self.inner.shared.id.0);
        for value in req.headers().get_all(header::AUTHORIZATION) {
            out = out.header(hyper::header::AUTHORIZATION, value.as_bytes());
        }
        let request = out.body(Full::new(Bytes::new())).map_err(|e| {
            self.not_sent(leader, leader_api, NO_READ_INDEX, &format!("building the request: {e}"))
        })?;
        let why = match self.exchange_raw(leader_api, request, self.client_timeout()).await {
            Ok((200, _, body)) => {
                match serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["index"].as_u64())
                {
                    Some(index) => return Ok(LogIndex(index)),
                    None => "its answer had no index".to_string(),
                }
            }
            // The token was refused there: say so as the leader did.
            Ok((401, headers, body)) => return Err(relay(401, &headers, body)),
            Ok((status, _, body)) => {
                format!("it answered {status}: {}", String::from_utf8_lossy(&body))
            }
            Err(Failure::NotSent(e) | Failure::Unknown(e)) => e,
        };
        Err(self.not_sent(leader, leader_api, NO_READ_INDEX, &why))
    }

    /// One exchange within `timeout`: the answer's status, headers and body. An idle pooled
    /// connection is tried first; one that hands the request back unsent (it was closing)
    /// is dropped and the next tried, then a fresh connection.
    async fn exchange_raw(
        &self,
        authority: &str,
        mut request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let dial_timeout = self.inner.request_timeout.min(CONNECT_TIMEOUT_MAX);
        loop {
            let (mut sender, fresh) = match self.inner.pool.checkout(authority) {
                Some(s) => (s, false),
                None => {
                    let tls = self.inner.tls.as_ref();
                    (
                        conn::connect(authority, tls, dial_timeout)
                            .await
                            .map_err(Failure::NotSent)?,
                        true,
                    )
                }
            };
            match tokio::time::timeout(dial_timeout, sender.ready()).await {
                Ok(Ok(())) => {}
                _ if fresh => return Err(Failure::NotSent("the connection closed".into())),
                _ => continue,
            }
            let answer = match tokio::time::timeout_at(deadline, sender.try_send_request(request))
                .await
            {
                Err(_) => return Err(Failure::Unknown(format!("no answer within {timeout:?}"))),
                Ok(Ok(answer)) => answer,
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        request = unsent;
                        continue;
                    }
                    Some(_) => return Err(Failure::NotSent(e.into_error().to_string())),
                    None => return Err(Failure::Unknown(e.into_error().to_string())),
                },
            };
            let (parts, body) = answer.into_parts();
            let body = match tokio::time::timeout_at(
                deadline,
                Limited::new(body, ANSWER_MAX_BYTES).collect(),
            )
            .await
            {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return Err(Failure::Unknown(format!("reading the answer: {e}"))),
                Err(_) => return Err(Failure::Unknown(format!("no answer within {timeout:?}"))),
            };
            self.inner.pool.checkin(authority, sender);
            return Ok((parts.status.as_u16(), parts.headers, body));
        }
    }

    /// `503 no_leader`: the leader is known but did not serve the request (`failed`: "could
    /// not be reached", say); nothing was proposed.
    fn not_sent(&self, leader: NodeId, leader_api: &str, failed: &str, why: &str) -> HttpResponse {
        let ms = self.inner.retry_after_ms;
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, ms.div_ceil(1000).max(1)))
            .json(json!({
                "error": "no_leader", "retry_after_ms": ms, "leader": leader.0,
                "message": format!("the leader, node {leader} at {leader_api}, {failed} ({why}); nothing was proposed"),
            }))
    }
}

/// The leader's answer as this node's: status, the headers that matter, body.
fn relay(status: u16, headers: &hyper::HeaderMap, body: Bytes) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = HttpResponse::build(status);
    for name in RELAYED {
        if let Some(v) = headers.get(*name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            resp.insert_header((HeaderName::from_static(name), v));
        }
    }
    resp.body(body)
}

#[cfg(test)]
mod tests;
