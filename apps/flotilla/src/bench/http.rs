//! The Flotilla side of the bench: one keep-alive HTTP/1.1 connection per client (hyper's
//! connection API, no pool, no per-request allocation beyond the request itself), to the
//! leader, or with `--h2-conns N` N HTTP/2 (h2c) connections that the clients share. A
//! `307 not_leader` is followed once to its `Location`, and the client then stays on the
//! new leader, on a connection of its own.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_LENGTH, HOST, HeaderValue, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one request did not succeed; the bench counts these by `kind()`.
#[derive(Debug)]
pub enum OpError {
    Connect(String),
    Io(String),
    Status(u16, String),
    Timeout,
}

impl OpError {
    pub fn kind(&self) -> String {
        match self {
            OpError::Connect(_) => "connect".into(),
            OpError::Io(_) => "io".into(),
            OpError::Status(s, code) if code.is_empty() => format!("http_{s}"),
            OpError::Status(s, code) => format!("http_{s}_{code}"),
            OpError::Timeout => "timeout".into(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Connect(e) => write!(f, "connect: {e}"),
            OpError::Io(e) => write!(f, "io: {e}"),
            OpError::Status(s, c) => write!(f, "HTTP {s} {c}"),
            OpError::Timeout => write!(f, "timeout"),
        }
    }
}

/// An answer: status and body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The request half of a connection: HTTP/1.1 (one request at a time, this client's own)
/// or HTTP/2 (h2c, prior knowledge; possibly shared by many clients, each request a stream).
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Another handle on a shared HTTP/2 connection (HTTP/1.1 ones are not shared).
    pub fn share(&self) -> Option<Sender> {
        match self {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Sender::H2(s.clone())),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Opens a connection to `addr`: HTTP/2 with prior knowledge (h2c) if `h2`, else HTTP/1.1.
pub async fn connect(addr: &str, h2: bool) -> Result<Sender, OpError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| OpError::Connect(format!("{addr}: timed out")))?
        .map_err(|e| OpError::Connect(format!("{addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| OpError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) =
            http1::handshake(io).await.map_err(|e| OpError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::H1(sender))
    }
}

pub struct Conn {
    addr: String,
    host: HeaderValue,
    sender: Option<Sender>,
    timeout: Duration,
    h2: bool,
}

impl Conn {
    /// A connection to `addr` (host:port), opened lazily on first use.
    pub fn new(addr: &str, timeout: Duration) -> Conn {
        Conn::with(addr, timeout, false, None)
    }

    /// A client on `addr`, over HTTP/2 (h2c) if `h2`, starting on `sender` if given (a
    /// shared HTTP/2 connection); it opens a connection of its own if that one fails.
    pub fn with(addr: &str, timeout: Duration, h2: bool, sender: Option<Sender>) -> Conn {
        Conn {
            addr: addr.to_string(),
            host: HeaderValue::from_str(addr).unwrap_or(HeaderValue::from_static("localhost")),
            sender,
            timeout,
            h2,
        }
    }

    fn retarget(&mut self, addr: &str) {
        if addr != self.addr {
            *self = Conn::with(addr, self.timeout, self.h2, None);
        }
    }

    async fn sender(&mut self) -> Result<&mut Sender, OpError> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            self.sender = None;
            self.sender = Some(connect(&self.addr, self.h2).await?);
        }
        let s = self.sender.as_mut().expect("set above");
        match s {
            Sender::H1(s) => s.ready().await.map_err(|e| OpError::Io(e.to_string()))?,
            Sender::H2(s) => s.ready().await.map_err(|e| OpError::Io(e.to_string()))?,
        }
        Ok(s)
    }

    /// One request on this connection (no redirect handling).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(Answer, Option<String>), OpError> {
        let host = self.host.clone();
        let timeout = self.timeout;
        let len = body.len();
        let uri = if self.h2 { format!("http://{}{path}", self.addr) } else { path.to_string() };
        let sender = self.sender().await?;
        let mut req = Request::builder().method(method).uri(uri);
        if matches!(sender, Sender::H1(_)) {
            req = req.header(HOST, host);
        }
        let req = req
            .header(CONTENT_LENGTH, len)
            .body(Full::new(body))
            .map_err(|e| OpError::Io(e.to_string()))?;
        let fut = async {
            let resp = match sender {
                Sender::H1(s) => s.send_request(req).await,
                Sender::H2(s) => s.send_request(req).await,
            }
            .map_err(|e| OpError::Io(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| OpError::Io(e.to_string()))?.to_bytes();
            let location =
                parts.headers.get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_string);
            Ok::<_, OpError>((Answer { status: parts.status, body }, location))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                // The answer may still come; this connection is unusable for the next one.
                self.sender = None;
                Err(OpError::Timeout)
            }
        }
    }

    /// A request that follows one `307` to the leader; a non-2xx final answer is an error.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, OpError> {
        let (ans, loc) = self.send(method.clone(), path, body.clone()).await?;
        let ans = if ans.status == StatusCode::TEMPORARY_REDIRECT {
            let Some(addr) = loc.as_deref().and_then(authority_of) else {
                return Err(OpError::Status(307, "no_location".into()));
            };
            self.retarget(&addr);
            self.send(method, path, body).await?.0
        } else {
            ans
        };
        if ans.status.is_success() || ans.status == StatusCode::NOT_FOUND && is_kv_miss(&ans) {
            Ok(ans)
        } else {
            Err(OpError::Status(ans.status.as_u16(), error_code(&ans.body)))
        }
    }
}

/// A GET of an absent key answers 404 `not_found`: a successful read.
fn is_kv_miss(a: &Answer) -> bool {
    error_code(&a.body) == "not_found"
}

fn error_code(body: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `http://host:port/path` → `host:port`.
pub fn authority_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let auth = rest.split('/').next()?;
    (!auth.is_empty()).then(|| auth.to_string())
}

/// `host:port` of an endpoint given as `host:port` or `http://host:port`.
pub fn endpoint_addr(ep: &str) -> String {
    authority_of(ep.trim()).unwrap_or_else(|| ep.trim().to_string())
}

/// GET a JSON document (status pages).
pub async fn get_json(addr: &str, path: &str, timeout: Duration) -> Result<serde_json::Value> {
    let mut c = Conn::new(addr, timeout);
    let (ans, _) = c.send(Method::GET, path, Bytes::new()).await.map_err(|e| anyhow!("{e}"))?;
    if !ans.status.is_success() {
        return Err(anyhow!("{addr}{path}: HTTP {}", ans.status));
    }
    serde_json::from_slice(&ans.body).with_context(|| format!("{addr}{path}: not JSON"))
}

/// The leader's API address, as the given nodes see it.
pub async fn find_leader(endpoints: &[String], deadline: Duration) -> Result<String> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        for ep in endpoints {
            let addr = endpoint_addr(ep);
            let Ok(st) = get_json(&addr, "/v1/status", Duration::from_millis(500)).await else {
                continue;
            };
            if st["role"] == "leader" {
                return Ok(addr);
            }
            let Some(leader) = st["leader"].as_u64() else { continue };
            let members = st["members"].as_array().cloned().unwrap_or_default();
            if let Some(m) = members.iter().find(|m| m["id"].as_u64() == Some(leader))
                && let Some(api) = m["api_addr"].as_str()
                && let Ok(lst) = get_json(api, "/v1/status", Duration::from_millis(500)).await
                && lst["role"] == "leader"
            {
                return Ok(api.to_string());
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(anyhow!("no leader among {endpoints:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            authority_of("http://127.0.0.1:8102/v1/kv/a").as_deref(),
            Some("127.0.0.1:8102")
        );
        assert_eq!(endpoint_addr("127.0.0.1:8101"), "127.0.0.1:8101");
        assert_eq!(endpoint_addr("http://h:1"), "h:1");
    }
}
