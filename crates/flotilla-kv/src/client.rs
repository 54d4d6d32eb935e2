//! [`KvClient`]: a blocking client of the KV API that finds the leader by itself.
//!
//! Each call tries the last leader it was redirected to, else the endpoints in turn, and
//! within its deadline:
//! - follows `307 not_leader` to the `Location` (and remembers that leader);
//! - on `503` (`no_leader`, `busy`, `shutting_down`) or a connection that could not be
//!   opened, backs off (doubling from 25 ms to 1 s, at least the server's
//!   `retry_after_ms`) and tries the next endpoint;
//! - on an *unknown outcome* (`504 timeout`/`leadership_lost`, a connection broken after
//!   the request went out) retries only what is safe to repeat: reads, and writes sent with
//!   a client session (the state machine then answers the original result). Without a
//!   session such a write fails with [`KvClientError::Unknown`].
//!
//! A session client serialises its writes (one outstanding sequence number at a time), so
//! share it between threads freely; use one client per logical writer for throughput.
//!
//! Endpoints may be `https://`; [`KvClient::with_cacert`] trusts a CA of one's own (a
//! cluster started with `--tls-ca`) instead of the public web roots, like curl's `--cacert`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_node::ReadConsistency;
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

use crate::http::{CLIENT_HEADER, SEQ_HEADER, encode_key};

/// How long a call keeps trying, by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Redirects followed in a row before backing off (two nodes pointing at each other
/// during an election).
const REDIRECTS_MAX: u32 = 4;
/// The largest answer body read (a value is at most 1 MiB).
const ANSWER_BYTES_MAX: u64 = 4 << 20;

/// Why a call failed.
#[derive(Debug, Error)]
pub enum KvClientError {
    /// The cluster answered with a definite refusal (4xx, or a 5xx that is not retried):
    /// nothing was applied.
    #[error("{status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// A write may or may not have been applied (`504`, or the connection broke after the
    /// request was sent) and was not retried because it had no session.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The deadline passed; nothing was applied (every attempt was definitely refused).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed after at least one attempt with an unknown outcome.
    #[error("deadline passed; outcome unknown: {0}")]
    DeadlineUnknown(String),
    #[error("bad endpoint {0:?}: use host:port, http://host:port or https://host:port")]
    BadEndpoint(String),
    /// The `--cacert` file cannot be read or holds no PEM certificate.
    #[error("CA certificate {0}")]
    BadCaCert(String),
    /// The server answered 200 with something that is not the documented JSON.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

impl KvClientError {
    /// True when the write may have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, KvClientError::Unknown(_) | KvClientError::DeadlineUnknown(_))
    }
}

/// A GET's answer: the value (`None`: absent) and the answering node's applied index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    pub value: Option<Bytes>,
    pub index: u64,
}

/// A PUT's or DELETE's answer (`deleted` is `None` for a PUT).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WriteOutcome {
    pub index: u64,
    pub term: u64,
    #[serde(default)]
    pub deleted: Option<bool>,
}

/// A CAS answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CasOutcome {
    pub succeeded: bool,
    pub current: Option<String>,
    pub index: u64,
}

#[derive(Debug)]
struct Session {
    client: u64,
    next_seq: u64,
}

/// The blocking KV client. Cheap to share by reference across threads.
pub struct KvClient {
    agent: ureq::Agent,
    /// Base URLs, `http[s]://host:port`, never empty.
    endpoints: Vec<String>,
    /// The base URL of the last leader a redirect named.
    leader: Mutex<Option<String>>,
    deadline: Duration,
    session: Option<Mutex<Session>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Put,
    Delete,
    Post,
}

/// What one call sends.
struct Call<'a> {
    method: Method,
    path_and_query: String,
    body: Option<&'a [u8]>,
    session: Option<(u64, u64)>,
    /// May an attempt with an unknown outcome be repeated?
    repeatable: bool,
}

struct Reply {
    status: u16,
    index: Option<u64>,
    body: Vec<u8>,
}

enum Attempt {
    Done(Reply),
    Redirect(String),
    /// Nothing was applied; wait at least this long, then try another endpoint.
    RetryLater(Option<Duration>, String),
    /// The outcome is unknown.
    Unknown(String),
}

impl KvClient {
    /// A client of the cluster behind `endpoints` (`host:port` or `http[s]://host:port`).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<KvClient, KvClientError> {
        let endpoints =
            endpoints.iter().map(|e| base_url(e.as_ref())).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(KvClientError::BadEndpoint(String::new()));
        }
        Ok(KvClient {
            agent: agent(ureq::tls::TlsConfig::default()),
            endpoints,
            leader: Mutex::new(None),
            deadline: DEFAULT_DEADLINE,
            session: None,
        })
    }

    /// Verifies `https://` servers against the CA certificate(s) in `cacert` (PEM) only.
    pub fn with_cacert(mut self, cacert: &Path) -> Result<KvClient, KvClientError> {
        self.agent = agent(tls_config(Some(cacert))?);
        Ok(self)
    }

    /// How long each call keeps retrying (default 10 s).
    pub fn with_deadline(mut self, deadline: Duration) -> KvClient {
        self.deadline = deadline;
        self
    }

    /// Sends writes with a client session under a random client id, so that a write
    /// retried after an unknown outcome applies once.
    pub fn with_session(self) -> KvClient {
        self.with_session_id(rand::random(), 1)
    }

    /// A session with a chosen client id and first sequence number.
    pub fn with_session_id(mut self, client: u64, first_seq: u64) -> KvClient {
        self.session = Some(Mutex::new(Session { client, next_seq: first_seq }));
        self
    }

    /// The session's client id, if any.
    pub fn session_client(&self) -> Option<u64> {
        self.session.as_ref().map(|s| lock(s).client)
    }

    /// The endpoints, as base URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads `key`; `value` is `None` when it is absent.
    pub fn get(
        &self,
        key: &str,
        consistency: ReadConsistency,
    ) -> Result<ReadOutcome, KvClientError> {
        let consistency = match consistency {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Lease => "lease",
            ReadConsistency::Stale => "stale",
        };
        let call = Call {
            method: Method::Get,
            path_and_query: format!("/v1/kv/{}?consistency={consistency}", encode_key(key)),
            body: None,
            session: None,
            repeatable: true,
        };
        let reply = self.run(call)?;
        let index = reply.index.unwrap_or(0);
        match reply.status {
            200 => Ok(ReadOutcome { value: Some(Bytes::from(reply.body)), index }),
            404 if error_code(&reply.body) == "not_found" => Ok(ReadOutcome { value: None, index }),
            _ => Err(refused(&reply)),
        }
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<WriteOutcome, KvClientError> {
        self.write(Method::Put, format!("/v1/kv/{}", encode_key(key)), Some(value))
    }

    /// Deletes `key`; `deleted` says whether it existed.
    pub fn delete(&self, key: &str) -> Result<WriteOutcome, KvClientError> {
        self.write(Method::Delete, format!("/v1/kv/{}", encode_key(key)), None)
    }

    /// Sets `key` to `value` if it currently equals `expected` (`None`: is absent).
    pub fn cas(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<CasOutcome, KvClientError> {
        let body = json!({"expected": expected, "value": value}).to_string();
        self.write(Method::Post, format!("/v1/kv/{}/cas", encode_key(key)), Some(body.as_bytes()))
    }

    /// `GET /v1/status` of one endpoint (no retry, no redirect): for `flotilla status`.
    pub fn status_of(&self, endpoint: &str) -> Result<Value, KvClientError> {
        let url = format!("{}/v1/status", base_url(endpoint)?);
        let deadline = Instant::now() + self.deadline.min(Duration::from_secs(2));
        let call = Call {
            method: Method::Get,
            path_and_query: String::new(),
            body: None,
            session: None,
            repeatable: true,
        };
        match self.attempt(&url, &call, deadline) {
            Attempt::Done(reply) if reply.status == 200 => serde_json::from_slice(&reply.body)
                .map_err(|e| KvClientError::BadAnswer(e.to_string())),
            Attempt::Done(reply) => Err(refused(&reply)),
            Attempt::Redirect(to) => Err(KvClientError::BadAnswer(format!("redirected to {to}"))),
            Attempt::RetryLater(_, why) => Err(KvClientError::Unavailable(why)),
            Attempt::Unknown(why) => Err(KvClientError::Unavailable(why)),
        }
    }

    /// Every endpoint's status, in order.
    pub fn status_all(&self) -> Vec<(String, Result<Value, KvClientError>)> {
        self.endpoints.iter().map(|e| (e.clone(), self.status_of(e))).collect()
    }

    fn write<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path_and_query: String,
        body: Option<&[u8]>,
    ) -> Result<T, KvClientError> {
        // Holding the session across the call keeps one sequence number outstanding at a
        // time: a later write can never overtake a retried earlier one.
        let mut guard = self.session.as_ref().map(lock);
        let session = guard.as_mut().map(|s| {
            let seq = s.next_seq;
            s.next_seq += 1;
            (s.client, seq)
        });
        let call = Call { method, path_and_query, body, session, repeatable: session.is_some() };
        let reply = self.run(call)?;
        if reply.status != 200 {
            return Err(refused(&reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| KvClientError::BadAnswer(e.to_string()))
    }

    /// Runs one call to completion: redirects, retries and backoff within the deadline.
    fn run(&self, call: Call<'_>) -> Result<Reply, KvClientError> {
        let deadline = Instant::now() + self.deadline;
        let mut backoff = BACKOFF_FIRST;
        let mut next_endpoint = 0;
        let mut redirects = 0;
        let mut redirect_to: Option<String> = None;
        let mut unknown_seen = false;
        loop {
            let url = match redirect_to.take() {
                Some(url) => url,
                None => {
                    let base = lock(&self.leader).clone().unwrap_or_else(|| {
                        next_endpoint += 1;
                        self.endpoints[(next_endpoint - 1) % self.endpoints.len()].clone()
                    });
                    format!("{base}{}", call.path_and_query)
                }
            };
            let (wait, problem) = match self.attempt(&url, &call, deadline) {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Redirect(location) if redirects < REDIRECTS_MAX => {
                    redirects += 1;
                    *lock(&self.leader) = origin_of(&location);
                    redirect_to = Some(location);
                    continue;
                }
                Attempt::Redirect(location) => {
                    *lock(&self.leader) = None;
                    (None, format!("redirect loop ending at {location}"))
                }
                Attempt::RetryLater(hint, why) => {
                    *lock(&self.leader) = None;
                    (hint, why)
                }
                Attempt::Unknown(why) if call.repeatable => {
                    unknown_seen = true;
                    *lock(&self.leader) = None;
                    (None, why)
                }
                Attempt::Unknown(why) => return Err(KvClientError::Unknown(why)),
            };
            redirects = 0;
            let now = Instant::now();
            if now >= deadline {
                return Err(if unknown_seen {
                    KvClientError::DeadlineUnknown(problem)
                } else {
                    KvClientError::Unavailable(problem)
                });
            }
            let sleep = wait.unwrap_or(backoff).max(backoff).min(deadline - now);
            std::thread::sleep(sleep);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn attempt(&self, url: &str, call: &Call<'_>, deadline: Instant) -> Attempt {
        let remaining =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
        let session = call.session;
        let result = match call.method {
            Method::Get | Method::Delete => {
                let rb = if call.method == Method::Get {
                    self.agent.get(url)
                } else {
                    self.agent.delete(url)
                };
                let rb = with_session(rb, session).config().timeout_global(Some(remaining)).build();
                rb.call()
            }
            Method::Put | Method::Post => {
                let rb = if call.method == Method::Put {
                    self.agent.put(url)
                } else {
                    self.agent.post(url)
                };
                let rb = with_session(rb, session).config().timeout_global(Some(remaining)).build();
                let rb = if call.method == Method::Post {
                    rb.header("content-type", "application/json")
                } else {
                    rb
                };
                rb.send(call.body.unwrap_or_default())
            }
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) if never_sent(&e) => return Attempt::RetryLater(None, format!("{url}: {e}")),
            Err(e) => return Attempt::Unknown(format!("{url}: {e}")),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let location = header("location");
        let index = header("x-flotilla-index").and_then(|v| v.parse().ok());
        let body = match response.body_mut().with_config().limit(ANSWER_BYTES_MAX).read_to_vec() {
            Ok(body) => body,
            // The server answered; only the transfer of its answer failed.
            Err(e) if status == 200 => {
                return Attempt::Unknown(format!("{url}: reading the answer: {e}"));
            }
            Err(e) => return Attempt::RetryLater(None, format!("{url}: reading the answer: {e}")),
        };
        let reply = Reply { status, index, body };
        match (status, error_code(&reply.body).as_str()) {
            (307, "not_leader") => match location {
                Some(location) => Attempt::Redirect(location),
                None => Attempt::RetryLater(None, format!("{url}: redirect without Location")),
            },
            (503, "no_leader" | "busy" | "shutting_down") => {
                let hint = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["retry_after_ms"].as_u64())
                    .map(Duration::from_millis);
                Attempt::RetryLater(hint, format!("{url}: {}", describe(&reply)))
            }
            (504, _) => Attempt::Unknown(format!("{url}: {}", describe(&reply))),
            _ => Attempt::Done(reply),
        }
    }
}

fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .tls_config(tls)
        .build();
    ureq::Agent::new_with_config(config)
}

/// ureq's TLS settings for a client: with `cacert`, trust only the CA certificate(s) in
/// that PEM file (like curl's `--cacert`); without, the public web roots.
pub fn tls_config(cacert: Option<&Path>) -> Result<ureq::tls::TlsConfig, KvClientError> {
    let Some(path) = cacert else { return Ok(ureq::tls::TlsConfig::default()) };
    let bad = |why: String| KvClientError::BadCaCert(format!("{}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(format!("bad PEM: {e}")))? {
            ureq::tls::PemItem::Certificate(c) => roots.push(c),
            _ => return Err(bad("holds something other than certificates".into())),
        }
    }
    if roots.is_empty() {
        return Err(bad("no PEM CERTIFICATE in it".into()));
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::from(roots)).build())
}

fn with_session<B>(
    rb: ureq::RequestBuilder<B>,
    session: Option<(u64, u64)>,
) -> ureq::RequestBuilder<B> {
    match session {
        Some((client, seq)) => {
            rb.header(CLIENT_HEADER, client.to_string()).header(SEQ_HEADER, seq.to_string())
        }
        None => rb,
    }
}

/// Errors that happen before a request leaves this process: retrying cannot duplicate it.
fn never_sent(e: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
        ),
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `host:port` or `http[s]://host:port[/]` → `http[s]://host:port` (`http` by default).
fn base_url(endpoint: &str) -> Result<String, KvClientError> {
    let e = endpoint.trim();
    let (scheme, rest) = split_scheme(e).unwrap_or(("http", e));
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains("://") || rest.contains('/') {
        return Err(KvClientError::BadEndpoint(endpoint.to_owned()));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// `http[s]://host:port` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = split_scheme(url)?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

fn split_scheme(url: &str) -> Option<(&'static str, &str)> {
    match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => Some(("https", rest)),
        (None, Some(rest)) => Some(("http", rest)),
        _ => None,
    }
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn describe(reply: &Reply) -> String {
    let v = serde_json::from_slice::<Value>(&reply.body).unwrap_or(Value::Null);
    let code = v["error"].as_str().unwrap_or("");
    let message = v["message"].as_str().unwrap_or("");
    format!("{} {code}: {message}", reply.status)
}

fn refused(reply: &Reply) -> KvClientError {
    let v = serde_json::from_slice::<Value>(&reply.body).unwrap_or(Value::Null);
    KvClientError::Refused {
        status: reply.status,
        code: v["error"].as_str().unwrap_or("unknown").to_owned(),
        message: v["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(base_url("127.0.0.1:8101").unwrap(), "http://127.0.0.1:8101");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h:1/").unwrap(), "https://h:1");
        for bad in ["", "h:1/path", "ftp://h", "https://", "https://h:1/path"] {
            assert!(base_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(origin_of("http://h:2/v1/kv/a?x=1").as_deref(), Some("http://h:2"));
        assert_eq!(origin_of("https://h:2/v1/kv/a").as_deref(), Some("https://h:2"));
        assert_eq!(origin_of("ftp://h:2/"), None);
    }

    #[test]
    fn a_cacert_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = tls_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("missing.pem") && e.contains("cannot read"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = tls_config(Some(&junk)).unwrap_err().to_string();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        assert!(tls_config(None).is_ok());
    }
}
