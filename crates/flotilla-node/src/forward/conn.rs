//! The forwarder's HTTP/1.1 connections to other nodes' APIs: dialing (the one place that
//! knows the transport and the scheme) and a small pool of idle keep-alive connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::tls::TlsSettings;

/// A connection's request side; its driver runs on a task of its own.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// `scheme://authority{path_and_query}` for an API address: a URL that names its scheme
/// (`ClientError::NotLeader`'s `leader_api`, whose scheme the node chose from its TLS
/// setting: `NodeConfig::api_url`), or a bare `HOST:PORT`, read as `http://`.
pub fn api_url(api: &str, path_and_query: &str) -> String {
    let base = api.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}{path_and_query}")
    } else {
        format!("http://{base}{path_and_query}")
    }
}

/// Splits an API base (`https://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT`) into
/// (whether it is HTTPS, `HOST:PORT`).
pub(super) fn authority(base: &str) -> (bool, &str) {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, base.strip_prefix("http://").unwrap_or(base))
    }
}

/// Idle connections are reused only this long: well under actix-web's keep-alive (5 s), so
/// that a request is not written onto a connection the server is closing, which would
/// turn a refusal into an unknown outcome.
const IDLE_MAX: Duration = Duration::from_secs(2);
/// Idle connections kept per address; more are closed when returned.
const IDLE_PER_ADDR: usize = 8;

/// Dials the API at `base` (a name is resolved now, at every dial) within `timeout` and
/// starts the connection's driver. `https://` bases go through the node's own TLS client
/// side (the cluster CA; the certificate must name the HOST). An error means nothing was
/// sent.
pub(super) async fn connect(
    base: &str,
    tls: Option<&TlsSettings>,
    timeout: Duration,
) -> Result<Sender, String> {
    let (https, authority) = authority(base);
    let dial = async {
        let stream = crate::transport::dial(authority).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        if !https {
            return start(TokioIo::new(stream)).await;
        }
        let tls = tls.ok_or("an https:// leader, but this node has no TLS settings")?;
        let stream = tls
            .connect(stream, authority)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        start(TokioIo::new(stream)).await
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// The HTTP/1.1 handshake on a dialed stream; the connection is driven on its own task.
async fn start<I>(io: I) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    actix_rt::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle connections by address. Bounded: [`IDLE_PER_ADDR`] per address, and entries older
/// than [`IDLE_MAX`] are dropped whenever the pool is touched.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl Pool {
    /// The freshest idle connection to `authority` that is still open.
    pub(super) fn checkout(&self, authority: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        prune(&mut idle);
        let list = idle.get_mut(authority)?;
        while let Some(c) = list.pop() {
            if !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    /// Returns a connection whose exchange finished cleanly.
    pub(super) fn checkin(&self, authority: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        prune(&mut idle);
        let list = idle.entry(authority.to_string()).or_default();
        if list.len() < IDLE_PER_ADDR {
            list.push(Idle { sender, since: Instant::now() });
        }
    }
}

fn prune(idle: &mut HashMap<String, Vec<Idle>>) {
    for list in idle.values_mut() {
        list.retain(|c| c.since.elapsed() < IDLE_MAX && !c.sender.is_closed());
    }
    idle.retain(|_, list| !list.is_empty());
}

#[cfg(test)]
mod tests {
    use super::api_url;

    #[test]
    fn api_urls_get_the_scheme_once() {
        assert_eq!(api_url("10.0.0.1:8101", "/v1/kv/a?x=1"), "http://10.0.0.1:8101/v1/kv/a?x=1");
        assert_eq!(api_url("http://h:1/", "/v1/status"), "http://h:1/v1/status");
        assert_eq!(api_url("https://h:1", "/"), "https://h:1/");
    }
}
