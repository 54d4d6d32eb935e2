//! TLS (docs/security.md "TLS"): real node processes with certificates made here by rcgen.
//! A cluster talks mutual TLS between peers and serves HTTPS; redirects say `https://`;
//! the CLI works over HTTPS with `--cacert`; a node whose certificate comes from another CA
//! is refused by its peers and cannot disturb the cluster; plaintext clients and peers are
//! refused while the node keeps serving; a node joins with an `https://` URL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_raft::types::NodeId;
use flotilla_tests::*;
use flotilla_wire::handshake::{HandshakeConfig, client_handshake};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::Value;

/// A certificate authority in a temporary directory, issuing node certificates.
struct Ca {
    dir: tempfile::TempDir,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write ca.pem");
        Ca { dir, cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for 127.0.0.1 and localhost, good for serving and for dialing;
    /// returns (cert, key) paths.
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue_for(name, &["127.0.0.1", "localhost"])
    }

    /// A certificate naming `sans` (DNS names or IP addresses).
    fn issue_for(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("node key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("node params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("node certificate");
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// `--tls-cert C --tls-key K --tls-ca CA` for a node certificate `name` of this CA,
    /// trusting `trusted` (this CA unless told otherwise).
    fn node_args(&self, name: &str, trusted: &Ca) -> Vec<String> {
        let (cert, key) = self.issue(name);
        tls_args(&cert, &key, &trusted.ca_path())
    }
}

fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    vec!["--tls-cert".into(), s(cert), "--tls-key".into(), s(key), "--tls-ca".into(), s(ca)]
}

/// An n-node cluster whose nodes each have a certificate of `ca`, started.
fn tls_cluster(n: u64, ca: &Ca) -> Cluster {
    trust_ca(&ca.cert_pem);
    let mut c = Cluster::new(n, &[], true);
    for id in 1..=n {
        c.node_args.insert(id, ca.node_args(&format!("node-{id}"), ca));
    }
    for id in 1..=n {
        c.spawn(id);
    }
    c
}

/// Runs the flotilla CLI with `args` (and `env`), with a deadline.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(flotilla_bin());
    cmd.args(args).env_remove("FLOTILLA_CACERT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run flotilla");
    eprintln!(
        "flotilla {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_ok(c: &Cluster, ids: &[u64], key: &str, value: &str) {
    let apis: Vec<String> = ids.iter().map(|id| c.api(*id)).collect();
    let out = put_retry(&apis, key, value, Instant::now() + Duration::from_secs(20));
    assert_eq!(out, WriteOutcome::Ok, "writing {key}{}", c.logs());
}

#[test]
fn a_tls_cluster_elects_a_leader_serves_https_and_redirects_to_https() {
    let ca = Ca::new("flotilla test CA");
    let c = tls_cluster(3, &ca);
    let all = c.ids();
    let (leader, _) = c.wait_leader(&all, Duration::from_secs(20));
    write_ok(&c, &all, "through-the-harness", "1");

    // A follower redirects to the leader's https:// address.
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    let r = http().put(&format!("{}/v1/kv/redirected", c.api(follower))).send("x").unwrap();
    assert_eq!(r.status().as_u16(), 307);
    let loc = r.headers().get("location").unwrap().to_str().unwrap().to_string();
    assert_eq!(loc, format!("https://{}/v1/kv/redirected", c.nodes[&leader].api));

    // Reached by another name than its advertised address (`localhost`, which the
    // certificates name too), the follower forwards (`--forward auto`) over https to the
    // leader instead of redirecting.
    let port = c.nodes[&follower].api.rsplit_once(':').unwrap().1.to_string();
    let r = http().put(&format!("https://localhost:{port}/v1/kv/forwarded")).send("f").unwrap();
    assert_eq!(r.status().as_u16(), 200, "forwarded over https");
    assert_eq!(get_key(&c.api(leader), "forwarded", "linearizable").0, 200);
    assert!(counter(&c.api(follower), "flotilla_requests_forwarded_total") >= 1);

    // The CLI over https with --cacert, starting at a follower (it follows the redirect).
    let ca_path = ca.ca_path().display().to_string();
    let eps = format!("{},{}", c.api(follower), c.api(leader));
    let put =
        cli(&["kv", "put", "greeting", "hello", "--endpoints", &eps, "--cacert", &ca_path], &[]);
    assert!(put.status.success(), "kv put over https");
    let get = cli(&["kv", "get", "greeting", "--endpoints", &eps, "--cacert", &ca_path], &[]);
    assert!(get.status.success(), "kv get over https");
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");
    // FLOTILLA_CACERT does the same; without any CA the node's certificate is not trusted.
    let status =
        cli(&["status", "--endpoints", &c.api(follower)], &[("FLOTILLA_CACERT", &ca_path)]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success() && text.contains("follower"), "{text}");
    let untrusted = cli(&["status", "--endpoints", &c.api(follower)], &[]);
    let text = String::from_utf8_lossy(&untrusted.stdout).to_string();
    assert!(text.contains("unreachable") && !text.contains("follower"), "{text}");
    // Member listing, an admin command, over https too.
    let list = cli(&["member", "list", "--endpoints", &c.api(leader), "--cacert", &ca_path], &[]);
    assert!(list.status.success(), "member list over https");
    assert_eq!(String::from_utf8_lossy(&list.stdout).matches("voter").count(), 3);
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_and_cannot_disturb_the_cluster() {
    let ca = Ca::new("flotilla test CA");
    let rogue = Ca::new("another CA");
    let mut c = tls_cluster(3, &ca);
    trust_ca(&rogue.cert_pem); // only to read the rogue node's status
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(20));
    let f = *all.iter().find(|id| **id != leader).unwrap();
    let good: Vec<u64> = all.iter().copied().filter(|id| *id != f).collect();
    write_ok(&c, &all, "before", "1");
    eventually(Duration::from_secs(10), "node f has the first write", || {
        get_key(&c.api(f), "before", "stale").0 == 200
    });

    // Node f comes back with a certificate of another CA (same id, data, cluster and
    // secret): only the certificate is wrong. Its peers check it both ways.
    c.kill9(f);
    let refusals = |c: &Cluster, id: u64| counter(&c.api(id), "flotilla_handshake_failures_total");
    let before: Vec<u64> = good.iter().map(|id| refusals(&c, *id)).collect();
    c.node_args.insert(f, rogue.node_args("rogue", &ca));
    // Info level: a connection that got through would log "connected to peer".
    c.env.insert(f, vec![("FLOTILLA_LOG".into(), "info".into())]);
    c.spawn(f);
    eventually(Duration::from_secs(10), "the rogue node serves its API", || c.status(f).is_some());
    eventually(Duration::from_secs(10), "both good nodes refuse the rogue node", || {
        good.iter().zip(&before).all(|(id, b)| refusals(&c, *id) > *b)
    });
    write_ok(&c, &good, "during", "2");
    // For many election timeouts (150-300 ms), the good nodes keep their leader and term,
    // and the rogue node hears nothing: no leader, no new entries.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for id in &good {
            let st = c.status(*id).expect("a good node answers");
            assert_eq!(st["leader"].as_u64(), Some(leader), "node {id}: {st}");
            assert_eq!(st["term"].as_u64(), Some(term), "node {id}: {st}");
        }
        let st: Value = c.status(f).expect("the rogue node answers");
        assert!(st["leader"].is_null(), "the rogue node found a leader: {st}");
        assert_eq!(get_key(&c.api(f), "during", "stale").0, 404, "the rogue node got data");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.log_of(leader).contains("TLS handshake"), "refusals are logged:{}", c.logs());
    // Neither direction got through: the good nodes' listeners refused its client
    // certificate, their dialers refused its server certificate.
    assert!(!c.log_of(f).contains("connected to peer"), "{}", c.log_of(f));

    // With a certificate of the right CA the same node catches up: it was only the cert.
    c.kill9(f);
    c.node_args.insert(f, ca.node_args("fixed", &ca));
    c.spawn(f);
    eventually(Duration::from_secs(20), "the fixed node catches up", || {
        get_key(&c.api(f), "during", "stale").0 == 200
    });
}

#[test]
fn a_peer_whose_certificate_does_not_name_its_raft_host_is_refused() {
    let ca = Ca::new("flotilla test CA");
    trust_ca(&ca.cert_pem);
    let mut c = Cluster::new(3, &[], true);
    for id in 1..=2 {
        c.node_args.insert(id, ca.node_args(&format!("node-{id}"), &ca));
    }
    // Right CA, wrong name: node 3's raft address is 127.0.0.1, its certificate names
    // another host only.
    let (cert, key) = ca.issue_for("node-3", &["elsewhere.example"]);
    c.node_args.insert(3, tls_args(&cert, &key, &ca.ca_path()));
    for id in 1..=3 {
        c.spawn(id);
    }
    let (leader, _) = c.wait_leader(&[1, 2], Duration::from_secs(20));
    write_ok(&c, &[1, 2], "two-of-three", "ok");
    eventually(Duration::from_secs(10), "the leader refuses node 3's name", || {
        c.log_of(leader).contains("TLS handshake with peer failed")
            && c.log_of(leader).contains("not valid for name")
    });
}

#[test]
fn plaintext_clients_and_peers_are_refused_and_the_node_keeps_serving() {
    let ca = Ca::new("flotilla test CA");
    let c = tls_cluster(1, &ca);
    let (leader, _) = c.wait_leader(&[1], Duration::from_secs(20));
    let node = &c.nodes[&leader];

    // A plain HTTP request to the HTTPS port gets no answer.
    let (status, body, _) = request("GET", &format!("http://{}/v1/status", node.api), None);
    assert_eq!(status, 0, "plain HTTP must fail: {body}");
    let plain_cli = cli(&["kv", "put", "k", "v", "--endpoints", &node.api], &[]);
    assert!(!plain_cli.status.success(), "the CLI over plain HTTP must fail");

    // A peer speaking the (valid) handshake over plain TCP is refused.
    let before = counter(&c.api(1), "flotilla_handshake_failures_total");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let refused = runtime.block_on(async {
        let mut s = tokio::net::TcpStream::connect(&node.raft).await.expect("connect");
        let cfg = HandshakeConfig::new("flotilla", NodeId(2));
        client_handshake(&mut s, &cfg, NodeId(1)).await
    });
    assert!(refused.is_err(), "a plaintext peer got through: {refused:?}");
    eventually(Duration::from_secs(5), "the refusal is counted", || {
        counter(&c.api(1), "flotilla_handshake_failures_total") > before
    });

    // Still serving over HTTPS.
    write_ok(&c, &[1], "still", "serving");
    assert_eq!(get_key(&c.api(1), "still", "linearizable").1, "serving");
}

#[test]
fn a_node_joins_a_tls_cluster_with_an_https_url() {
    let ca = Ca::new("flotilla test CA");
    let mut c = tls_cluster(3, &ca);
    let all = c.ids();
    let (leader, _) = c.wait_leader(&all, Duration::from_secs(20));
    write_ok(&c, &all, "before-join", "1");
    c.node_args.insert(4, ca.node_args("node-4", &ca));
    let url = c.api(leader);
    c.spawn_joining(4, &url);
    eventually(Duration::from_secs(60), "node 4 becomes a voter and catches up", || {
        let voter = c.status(leader).is_some_and(|s| {
            s["members"].as_array().is_some_and(|m| {
                m.iter().any(|m| m["id"].as_u64() == Some(4) && m["voter"] == true)
            })
        });
        voter && get_key(&c.api(4), "before-join", "stale").0 == 200
    });
}

#[test]
fn bad_tls_flags_exit_2_with_one_line_naming_the_problem() {
    let ca = Ca::new("flotilla test CA");
    let (cert, _) = ca.issue("node-1");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let ports = free_ports(2);
    let spec = format!("1=127.0.0.1:{}@127.0.0.1:{}", ports[0], ports[1]);
    let node = |tls: &[&str]| {
        let mut args = vec!["node", "--id", "1", "--data-dir", &data, "--initial-cluster", &spec];
        args.extend_from_slice(tls);
        cli(&args, &[])
    };
    let (cert, ca_path) = (cert.display().to_string(), ca.ca_path().display().to_string());
    let missing = dir.path().join("missing.key").display().to_string();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--tls-cert", &cert], "all three or none"),
        (vec!["--tls-cert", &cert, "--tls-key", &missing, "--tls-ca", &ca_path], "missing.key"),
        // The CA file given as the key: no private key in it.
        (vec!["--tls-cert", &cert, "--tls-key", &ca_path, "--tls-ca", &ca_path], "--tls-key"),
    ];
    for (args, expected) in cases {
        let out = node(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!Path::new(&data).exists(), "nothing was created before the checks");
}
