//! Request forwarding (`--forward`), bind vs advertise addresses, DNS names in
//! `--initial-cluster` and `--id-from-hostname`, on real processes.
//!
//! Requests are written by hand (one HTTP/1.1 exchange per connection) so that a test
//! controls the `Host` header exactly: `--forward auto` decides on it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_tests::*;
use serde_json::{Value, json};

/// The cluster tests start several processes; on a 2-core machine they run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One request to `addr` (HOST:PORT) with exactly `headers` (`Host` among them).
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status: status.expect("a status"), headers, body: body.to_string() }
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).expect("HOST:PORT")
}

fn followers(c: &Cluster, leader: u64) -> Vec<u64> {
    c.ids().into_iter().filter(|id| *id != leader).collect()
}

#[test]
fn forward_always_proxies_to_the_leader_over_dns_names_and_wildcard_binds() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // Peers are named `localhost` in --initial-cluster (resolved at every dial) and bind
    // 0.0.0.0: the advertised addresses come from the --initial-cluster entries. A bare
    // --forward means always.
    let c = Cluster::start_named(3, &["--forward"], "localhost", Some("0.0.0.0"));
    let (leader, _) = c.wait_leader(&c.ids(), Duration::from_secs(20));
    let members = c.status(leader).unwrap()["members"].clone();
    for id in c.ids() {
        let m = members.as_array().unwrap().iter().find(|m| m["id"] == id).expect("member");
        let want_raft = format!("localhost:{}", port(&c.nodes[&id].raft));
        assert_eq!(m["raft_addr"], want_raft.as_str(), "{members}");
    }
    let (f, g) = (followers(&c, leader)[0], followers(&c, leader)[1]);
    let fa = c.nodes[&f].api.clone();
    let host = [("Host", fa.as_str())];
    let session = |seq: &'static str| {
        [("Host", fa.as_str()), ("X-Flotilla-Client", "77"), ("X-Flotilla-Seq", seq)]
    };

    // A write through a follower: the leader's answer, no redirect.
    let put = raw(&fa, "PUT", "/v1/kv/fwd", &session("1"), "v1");
    assert_eq!(put.status, 200, "{}", put.body);
    // Its retry (same session and seq) is answered from the session, not applied again.
    let again = raw(&fa, "PUT", "/v1/kv/fwd", &session("1"), "v1");
    assert_eq!((again.status, again.json()["index"].clone()), (200, put.json()["index"].clone()));
    // A CAS, retried: applied twice, the retry would fail (v1 is no longer there).
    let body = json!({"expected": "v1", "value": "v2"}).to_string();
    let cas = raw(&fa, "POST", "/v1/kv/fwd/cas", &session("2"), &body);
    assert_eq!((cas.status, cas.json()["succeeded"].clone()), (200, json!(true)), "{}", cas.body);
    let cas2 = raw(&fa, "POST", "/v1/kv/fwd/cas", &session("2"), &body);
    assert_eq!(cas2.json(), cas.json());
    // A linearizable read through the follower sees it, with the leader's index.
    let get = raw(&fa, "GET", "/v1/kv/fwd?consistency=linearizable", &host, "");
    assert_eq!((get.status, get.body.as_str()), (200, "v2"));
    let read_at: u64 = get.headers["x-flotilla-index"].parse().unwrap();
    assert!(read_at >= cas.json()["index"].as_u64().unwrap());
    let (st, value, _) = get_key(&c.api(leader), "fwd", "stale");
    assert_eq!((st, value.as_str()), (200, "v2"));
    assert!(counter(&c.api(f), "flotilla_requests_forwarded_total") >= 5);

    // Loop guard: a request that was forwarded once is redirected, never forwarded again.
    let hop = [("Host", fa.as_str()), ("X-Flotilla-Forwarded-By", "9")];
    let looped = raw(&fa, "PUT", "/v1/kv/loop", &hop, "x");
    assert_eq!(looped.status, 307, "{}", looped.body);
    let leader_api = format!("http://localhost:{}/v1/kv/loop", port(&c.nodes[&leader].api));
    assert_eq!(looped.headers["location"], leader_api);

    // An admin call through a follower: leadership moves to the other follower.
    let to = json!({"to": g}).to_string();
    let moved = raw(&fa, "POST", "/v1/admin/transfer-leader", &host, &to);
    assert_eq!((moved.status, moved.json()["leader"].as_u64()), (200, Some(g)), "{}", moved.body);
    assert_eq!(c.wait_leader(&c.ids(), Duration::from_secs(20)).0, g);
}

#[test]
fn forward_auto_redirects_clients_that_use_the_advertised_name_and_proxies_the_rest() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start_named(3, &[], "127.0.0.1", Some("0.0.0.0"));
    let (leader, _) = c.wait_leader(&c.ids(), Duration::from_secs(20));
    let f = followers(&c, leader)[0];
    let fa = c.nodes[&f].api.clone();

    // Reached by its advertised address: the client can reach the leader's too. 307.
    let direct = raw(&fa, "PUT", "/v1/kv/auto", &[("Host", fa.as_str())], "a");
    assert_eq!(direct.status, 307, "{}", direct.body);
    assert_eq!(direct.headers["location"], format!("{}/v1/kv/auto", c.api(leader)));
    // Reached by another name (a Service, a load balancer): proxied.
    let other = format!("localhost:{}", port(&fa));
    let proxied = raw(&fa, "PUT", "/v1/kv/auto", &[("Host", other.as_str())], "b");
    assert_eq!(proxied.status, 200, "{}", proxied.body);
    let read = raw(&fa, "GET", "/v1/kv/auto", &[("Host", "flotilla.example")], "");
    assert_eq!((read.status, read.body.as_str()), (200, "b"));
    // Stale reads are served locally in every mode.
    let stale =
        raw(&fa, "GET", "/v1/kv/nothing?consistency=stale", &[("Host", other.as_str())], "");
    assert_eq!(stale.status, 404);

    // A node that binds the wildcard and advertises 127.0.0.1 joins (through a follower,
    // which redirects the joiner): the membership holds what it advertised.
    c.spawn_joining(4, &c.api(f));
    let (raft4, api4) = (c.nodes[&4].raft.clone(), c.nodes[&4].api.clone());
    eventually(
        Duration::from_secs(60),
        "node 4 joins as a voter at its advertised addresses",
        || {
            let Some(st) = c.status(leader) else { return false };
            st["members"].as_array().into_iter().flatten().any(|m| {
                m["id"] == 4
                    && m["voter"] == true
                    && m["raft_addr"] == raft4.as_str()
                    && m["api_addr"] == api4.as_str()
            })
        },
    );
    // A joining node learns the leader's id from its first AppendEntries, and the leader's
    // address only from the configuration entries (until then it answers 503 no_leader).
    eventually(Duration::from_secs(20), "node 4 knows the leader and its address", || {
        c.status(4).is_some_and(|s| {
            s["leader"].as_u64() == Some(leader)
                && s["members"].as_array().into_iter().flatten().any(|m| m["id"] == leader)
        })
    });
    let via4 = raw(&api4, "PUT", "/v1/kv/joined", &[("Host", "flotilla.example:80")], "j");
    assert_eq!(via4.status, 200, "{}", via4.body);
}

/// Kills the node when the test ends, passed or not.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(args: &[&str], hostname: Option<&str>) -> Proc {
    let mut cmd = Command::new(flotilla_bin());
    cmd.arg("node").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(h) = hostname {
        cmd.env("HOSTNAME", h);
    }
    Proc(cmd.spawn().expect("spawn flotilla node"))
}

fn exit_code(p: &mut Proc, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ids_from_host_names_and_address_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_string_lossy().into_owned();
    let ports = free_ports(2);
    let (raft, api) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let spec = format!("2={raft}@{api}");
    let refused: &[(&[&str], Option<&str>)] = &[
        (&["--id", "2", "--id-from-hostname", "--initial-cluster", &spec], None),
        (&["--initial-cluster", &spec], None),
        (&["--id-from-hostname", "--initial-cluster", &spec], Some("flotilla")),
        (&["--id-from-hostname", "--initial-cluster", &spec], Some("flotilla-x")),
        (&["--id", "2", "--listen", "0.0.0.0:1", "--join", "http://127.0.0.1:1"], None),
        (&["--id", "2", "--initial-cluster", &spec, "--advertise-peer", "elsewhere:1"], None),
        (&["--id", "2", "--initial-cluster", &spec, "--forward", "sometimes"], None),
        (&["--id", "2", "--initial-cluster", &spec, "--http-threads", "0"], None),
        (&["--id", "2", "--initial-cluster", &spec, "--http-threads", "65"], None),
    ];
    for (i, (args, host)) in refused.iter().enumerate() {
        let mut p = node(&[&["--data-dir", data.as_str()][..], args].concat(), *host);
        assert_eq!(exit_code(&mut p, Duration::from_secs(20)), Some(2), "#{i} {args:?} {host:?}");
    }
    // `flotilla-1` is node 2, which bootstraps the one-node cluster it names.
    let mut p = node(
        &[
            "--data-dir",
            &data,
            "--id-from-hostname",
            "--initial-cluster",
            &spec,
            "--http-threads",
            "3",
        ],
        Some("flotilla-1"),
    );
    eventually(Duration::from_secs(20), "flotilla-1 leads as node 2", || {
        get_json(&format!("http://{api}/v1/status"))
            .is_some_and(|s| s["id"] == 2 && s["role"] == "leader")
    });
    assert_eq!(exit_code(&mut p, Duration::ZERO), None, "still running");
}
