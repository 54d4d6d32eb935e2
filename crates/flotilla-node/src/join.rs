//! A node started with `--join API_URL` and no configuration yet. The cluster adds it as a
//! learner, and the leader starts replicating to it at once; but the node learns its
//! peers' raft addresses only from the configuration entry (or snapshot) that adds it,
//! which it cannot receive until it answers the leader's probes. So it asks the cluster it
//! was pointed at for its members (`GET /v1/status`, served by any node) and links to
//! them until it is a member itself. An `https://` URL is fetched over TLS, trusting the
//! node's `--tls-ca`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use flotilla_raft::NodeId;

use crate::raft_actor::RaftActor;
use crate::tls::TlsSettings;

const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
const FETCH_EVERY: Duration = Duration::from_secs(1);
/// Stop asking after this long; the node keeps whatever it learned.
const FETCH_FOR: Duration = Duration::from_secs(600);
/// A status answer is a few KiB; refuse anything much bigger.
const ANSWER_MAX_BYTES: u64 = 1 << 20;

/// Raft addresses of the cluster a joining node was pointed at.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SeedPeers(pub Vec<(NodeId, String)>);

impl Handler<SeedPeers> for RaftActor {
    type Result = ();
    fn handle(&mut self, SeedPeers(peers): SeedPeers, _: &mut Context<Self>) {
        self.seeds = peers.into_iter().collect();
        self.sync_peers();
    }
}

/// Fetches the members of the cluster at `url` on a thread, every second, until the node
/// accepts only known peers (`known` is non-empty once it is a member itself) or ten
/// minutes passed.
pub(crate) fn spawn_seed_fetch(
    url: String,
    raft: Addr<RaftActor>,
    known: Arc<RwLock<BTreeSet<NodeId>>>,
    tls: Option<TlsSettings>,
) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + FETCH_FOR;
        let joining = || known.read().map(|k| k.is_empty()).unwrap_or(false);
        while joining() && Instant::now() < deadline {
            match fetch_members(&url, tls.as_ref()) {
                Ok(peers) if !peers.is_empty() => raft.do_send(SeedPeers(peers)),
                Ok(_) => {}
                Err(e) => tracing::warn!(%url, error = %e, "join: asking for the members failed"),
            }
            std::thread::sleep(FETCH_EVERY);
        }
    });
}

/// `GET /v1/status` over HTTP/1.0 (in TLS for `https://`); returns every member's id and
/// raft address.
fn fetch_members(url: &str, tls: Option<&TlsSettings>) -> Result<Vec<(NodeId, String)>, String> {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    // Resolved at every fetch, and every address tried: `localhost` may come back as ::1
    // first while the API listens on 127.0.0.1 only.
    let mut last = format!("{host} resolves to nothing");
    let mut conn = None;
    for addr in host.to_socket_addrs().map_err(|e| e.to_string())? {
        match TcpStream::connect_timeout(&addr, FETCH_TIMEOUT) {
            Ok(s) if crate::transport::refuse_self(&s).is_err() => {
                last = format!("{addr}: nothing listens there (the dial reached itself)");
            }
            Ok(s) => {
                conn = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let s = conn.ok_or(last)?;
    s.set_read_timeout(Some(FETCH_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(FETCH_TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!("GET /v1/status HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let answer = if https {
        let tls = tls.ok_or("an https:// URL needs --tls-cert, --tls-key and --tls-ca")?;
        let name = crate::tls::server_name(host)?;
        let conn =
            rustls::ClientConnection::new(tls.client_config(), name).map_err(|e| e.to_string())?;
        exchange(rustls::StreamOwned::new(conn, s), &request)?
    } else {
        exchange(s, &request)?
    };
    parse_members(&answer)
}

/// Sends `request`, reads the answer until the server closes (at most `ANSWER_MAX_BYTES`).
fn exchange(mut s: impl Read + Write, request: &str) -> Result<Vec<u8>, String> {
    s.write_all(request.as_bytes()).and_then(|()| s.flush()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match Read::by_ref(&mut s).take(ANSWER_MAX_BYTES).read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // A server may close without a TLS close_notify; what came before is the answer
        // (an answer cut short fails to parse).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_members(answer: &[u8]) -> Result<Vec<(NodeId, String)>, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let members = v["members"].as_array().ok_or("no members in the status")?;
    Ok(members
        .iter()
        .filter_map(|m| Some((NodeId(m["id"].as_u64()?), m["raft_addr"].as_str()?.to_string())))
        .filter(|(id, addr)| id.0 > 0 && !addr.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_from_a_status_answer() {
        let answer = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n\
            {\"id\":1,\"members\":[{\"id\":1,\"raft_addr\":\"127.0.0.1:7101\",\"api_addr\":\"a\",\
            \"voter\":true},{\"id\":2,\"raft_addr\":\"127.0.0.1:7102\",\"voter\":false}]}";
        let got = parse_members(answer).unwrap();
        assert_eq!(
            got,
            vec![(NodeId(1), "127.0.0.1:7101".to_string()), (NodeId(2), "127.0.0.1:7102".into())]
        );
        assert!(parse_members(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}").is_err());
        assert!(parse_members(b"garbage").is_err());
    }
}
