//! The forwarder's HTTP/1.1 connections to other nodes' APIs: dialing (the one place that
//! knows the transport and the scheme) and a small pool of idle keep-alive connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A connection's request side; its driver runs on a task of its own.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// The scheme of every URL a node builds for an API address (redirect `Location`, the
/// forwarder). With TLS on the API this, and [`connect`], are what change.
pub const API_SCHEME: &str = "http";

/// `scheme://authority{path_and_query}` for an API address given as `HOST:PORT` (or as a
/// URL that already names its scheme).
pub fn api_url(api: &str, path_and_query: &str) -> String {
    let base = api.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}{path_and_query}")
    } else {
        format!("{API_SCHEME}://{base}{path_and_query}")
    }
}

/// Idle connections are reused only this long: well under actix-web's keep-alive (5 s), so
/// that a request is not written onto a connection the server is closing, which would
/// turn a refusal into an unknown outcome.
const IDLE_MAX: Duration = Duration::from_secs(2);
/// Idle connections kept per address; more are closed when returned.
const IDLE_PER_ADDR: usize = 8;

/// Dials `authority` (`HOST:PORT`; a name is resolved now, at every dial) within `timeout`
/// and starts the connection's driver. An error means nothing was sent.
pub(super) async fn connect(authority: &str, timeout: Duration) -> Result<Sender, String> {
    let dial = async {
        let stream = TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        actix_rt::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
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
