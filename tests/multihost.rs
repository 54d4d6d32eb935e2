//! Three hosts on one machine: each node runs in its own network namespace with its own
//! address, cabled by a veth pair into a bridge in a "switch" namespace; the test process
//! (root namespace) has one more cable into that switch, so it reaches every node's API
//! the way a client on the LAN would. Pulling one host's cable (its switch port down) must
//! cost nothing but that host: the other two keep or elect a leader and keep acknowledging
//! writes, the host catches up when plugged back in, and no acknowledged write is lost.
//!
//! Needs root and iproute2 (`ip netns`); elsewhere the test says it skipped and returns.
//! Peers and clients talk TLS (certificates made here, IP SANs) when the binary has
//! `--tls-cert`, plain TCP otherwise; the test prints which mode ran.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_tests::{WriteOutcome, agreed_leader, die_with_parent, flotilla_bin};
use serde_json::Value;

/// Every node has a namespace of its own, so all can use the same ports.
const RAFT_PORT: u16 = 7100;
const API_PORT: u16 = 8100;
/// The root namespace's address on the switch (nodes are .1, .2, .3).
const ROOT_HOST: u8 = 254;

/// How peers and clients talk, decided by what the binary under test offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Tls,
}

impl Mode {
    fn of_binary(bin: &Path) -> Mode {
        let help =
            Command::new(bin).args(["node", "--help"]).output().expect("flotilla node --help");
        if String::from_utf8_lossy(&help.stdout).contains("--tls-cert") {
            Mode::Tls
        } else {
            Mode::Plain
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Mode::Plain => "http",
            Mode::Tls => "https",
        }
    }
}

/// Writes a line to the real stderr: the test harness captures `eprintln!`, and a skip or
/// the mode that ran should be visible in a passing run too.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "multihost: {line}");
}

/// Runs `ip ARGS`; the error names the command and carries ip's own message.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("setting up the network: {e}");
    }
}

/// The namespaces and links of one test run. Names carry the test's pid, so parallel runs
/// never share one; the subnet is the first free 10.201.X.0/24 from a pid-derived X.
/// Dropping it deletes everything it created.
struct Net {
    switch: String,
    hosts: Vec<String>,
    /// The root namespace's end of its cable into the switch (interface names ≤ 15 bytes).
    root_link: String,
    subnet: u8,
}

impl Net {
    fn names(n: u64) -> Net {
        let pid = std::process::id();
        let routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
        let used = |x: u32| routes.contains(&format!("10.201.{x}."));
        let subnet = (0..250).map(|k| (pid + k) % 250 + 1).find(|x| !used(*x)).unwrap_or(1);
        Net {
            switch: format!("fl{pid}-sw"),
            hosts: (1..=n).map(|i| format!("fl{pid}-h{i}")).collect(),
            root_link: format!("flh{pid}"),
            subnet: subnet as u8,
        }
    }

    fn addr(&self, host: u8) -> String {
        format!("10.201.{}.{host}", self.subnet)
    }

    /// Deletes what this run's names refer to: leftovers of an earlier run with the same pid,
    /// or this run's own network when it ends.
    fn delete(&self) {
        let existing = ip(&["netns", "list"]).unwrap_or_default();
        let listed: BTreeSet<&str> =
            existing.lines().filter_map(|l| l.split_whitespace().next()).collect();
        for ns in self.hosts.iter().chain([&self.switch]) {
            if listed.contains(ns.as_str()) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        if ip(&["link", "show", &self.root_link]).is_ok() {
            let _ = ip(&["link", "del", &self.root_link]);
        }
    }

    /// Builds the switch, one host per node and the root's cable. Err only when the first
    /// namespace cannot be made (no permission, no netns support): the caller skips.
    fn build(&self) -> Result<(), String> {
        self.delete();
        ip(&["netns", "add", &self.switch])?;
        let sw = self.switch.as_str();
        must(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", sw, "link", "set", "br0", "up"]);
        for (i, ns) in self.hosts.iter().enumerate() {
            let port = format!("h{}", i + 1);
            let cidr = format!("{}/24", self.addr(i as u8 + 1));
            must(&["netns", "add", ns]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
            must(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", sw,
            ]);
            must(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            must(&["-n", ns, "link", "set", "eth0", "up"]);
            must(&["-n", sw, "link", "set", &port, "master", "br0"]);
            must(&["-n", sw, "link", "set", &port, "up"]);
        }
        let root = self.root_link.as_str();
        let cidr = format!("{}/24", self.addr(ROOT_HOST));
        must(&["link", "add", root, "type", "veth", "peer", "name", "root", "netns", sw]);
        must(&["addr", "add", &cidr, "dev", root]);
        must(&["link", "set", root, "up"]);
        must(&["-n", sw, "link", "set", "root", "master", "br0"]);
        must(&["-n", sw, "link", "set", "root", "up"]);
        Ok(())
    }

    /// Pulls (or plugs back) host `id`'s cable: its port on the switch goes down (up).
    fn set_link(&self, id: u64, up: bool) {
        let port = format!("h{id}");
        must(&["-n", &self.switch, "link", "set", &port, if up { "up" } else { "down" }]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A CA and one certificate per node whose SAN is the node's namespace address; each
/// node certificate serves (API, peer listener) and authenticates as a client (peer dialer).
struct Certs {
    ca_pem: String,
    ca: PathBuf,
}

impl Certs {
    fn make(dir: &Path, net: &Net, ids: &[u64]) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "flotilla multihost test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca_params.self_signed(&ca_key).expect("CA cert").pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &ca_pem).expect("write ca.pem");
        for id in ids {
            let key = KeyPair::generate().expect("node key");
            let mut params =
                CertificateParams::new(vec![net.addr(*id as u8)]).expect("node cert params");
            params.distinguished_name.push(DnType::CommonName, format!("flotilla-node-{id}"));
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer).expect("node cert");
            std::fs::write(Certs::cert_path(dir, *id), cert.pem()).expect("write node cert");
            std::fs::write(Certs::key_path(dir, *id), key.serialize_pem()).expect("write key");
        }
        Certs { ca_pem, ca }
    }

    fn cert_path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("node-{id}.pem"))
    }

    fn key_path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("node-{id}.key"))
    }
}

/// Three `flotilla node` processes on three "hosts", and a client in the root namespace.
/// Dropping it kills the nodes (before `net` deletes their namespaces).
struct Lab {
    dir: tempfile::TempDir,
    mode: Mode,
    certs: Certs,
    agent: ureq::Agent,
    /// Short timeout: status polls must not stall on a host that is cut off.
    probe: ureq::Agent,
    children: BTreeMap<u64, Child>,
    /// Hosts whose cable is plugged in: the client only sends requests to these.
    reachable: Mutex<BTreeSet<u64>>,
    /// Every write the cluster acknowledged (each key is written once, value = key).
    acked: Mutex<BTreeMap<String, String>>,
    net: Net,
}

impl Lab {
    /// None (after saying why) when this machine cannot make network namespaces.
    fn start(n: u64) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 || ip(&["-V"]).is_err() {
            say("skipped: needs root and iproute2 (ip netns)");
            return None;
        }
        let net = Net::names(n);
        if let Err(e) = net.build() {
            say(&format!("skipped: needs root and iproute2 (ip netns): {e}"));
            return None;
        }
        let bin = flotilla_bin();
        let mode = Mode::of_binary(&bin);
        let dir = tempfile::tempdir().expect("tempdir");
        let ids: Vec<u64> = (1..=n).collect();
        let certs = Certs::make(dir.path(), &net, &ids);
        let mut lab = Lab {
            agent: client(&certs.ca_pem, Duration::from_secs(3)),
            probe: client(&certs.ca_pem, Duration::from_millis(800)),
            dir,
            mode,
            certs,
            children: BTreeMap::new(),
            reachable: Mutex::new(ids.iter().copied().collect()),
            acked: Mutex::new(BTreeMap::new()),
            net,
        };
        say(&format!(
            "mode {:?}: nodes {:?} on 10.201.{}.0/24 (namespaces {:?}, switch {})",
            mode, ids, lab.net.subnet, lab.net.hosts, lab.net.switch
        ));
        for id in ids {
            lab.spawn(&bin, id);
        }
        Some(lab)
    }

    fn spawn(&mut self, bin: &Path, id: u64) {
        let spec = (1..=self.net.hosts.len() as u64)
            .map(|i| format!("{i}={}:{RAFT_PORT}@{}:{API_PORT}", self.addr(i), self.addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::File::create(self.log_path(id)).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.hosts[id as usize - 1]])
            .arg(bin)
            .arg("node")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{id}")))
            .args(["--listen", &format!("{}:{RAFT_PORT}", self.addr(id))])
            .args(["--api", &format!("{}:{API_PORT}", self.addr(id))])
            .args(["--initial-cluster", &spec])
            .args(self.tls_args(id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // `ip netns exec` execs the node in the same process: it dies with the test too.
        die_with_parent(&mut cmd);
        self.children.insert(id, cmd.spawn().expect("spawn ip netns exec flotilla node"));
    }

    /// The node's TLS flags: its certificate and key, and the CA its peers chain to.
    fn tls_args(&self, id: u64) -> Vec<String> {
        match self.mode {
            Mode::Plain => Vec::new(),
            Mode::Tls => vec![
                "--tls-cert".into(),
                Certs::cert_path(self.dir.path(), id).display().to_string(),
                "--tls-key".into(),
                Certs::key_path(self.dir.path(), id).display().to_string(),
                "--tls-ca".into(),
                self.certs.ca.display().to_string(),
            ],
        }
    }

    fn addr(&self, id: u64) -> String {
        self.net.addr(id as u8)
    }

    fn api(&self, id: u64) -> String {
        format!("{}://{}:{API_PORT}", self.mode.scheme(), self.addr(id))
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn reachable(&self) -> Vec<u64> {
        self.reachable.lock().unwrap().iter().copied().collect()
    }

    fn cut(&self, id: u64) {
        self.reachable.lock().unwrap().remove(&id);
        self.net.set_link(id, false);
        say(&format!("host {id}: link down"));
    }

    fn restore(&self, id: u64) {
        self.net.set_link(id, true);
        self.reachable.lock().unwrap().insert(id);
        say(&format!("host {id}: link up"));
    }

    /// Panics with `what`, every reachable node's status and the tail of every node's log.
    fn fail(&self, what: &str) -> ! {
        let mut out = format!("{what}\nmode {:?}, reachable {:?}", self.mode, self.reachable());
        for id in self.children.keys() {
            let st = self.status(*id).map_or("unreachable".to_string(), |s| s.to_string());
            let log = std::fs::read_to_string(self.log_path(*id)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            out.push_str(&format!("\n--- node {id}: {st}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        panic!("{out}");
    }

    fn eventually(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for: {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn status(&self, id: u64) -> Option<Value> {
        let mut r = self.probe.get(&format!("{}/v1/status", self.api(id))).call().ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        r.body_mut().read_json().ok()
    }

    fn index(&self, id: u64, field: &str) -> Option<u64> {
        self.status(id).and_then(|s| s[field].as_u64())
    }

    /// The leader and term that all of `among` agree on.
    fn wait_leader(&self, among: &[u64], timeout: Duration) -> (u64, u64) {
        let mut found = None;
        self.eventually(timeout, &format!("an agreed leader among {among:?}"), || {
            let sts: Vec<Option<Value>> = among.iter().map(|id| self.status(*id)).collect();
            found = agreed_leader(&sts).filter(|(l, _)| among.contains(l));
            found.is_some()
        });
        found.expect("set by the poll")
    }

    /// One write through the reachable nodes, following redirects and retrying through
    /// elections until `deadline`; an acknowledged write is recorded.
    fn put(&self, key: &str, deadline: Instant) -> WriteOutcome {
        let mut n = 0usize;
        let mut target: Option<String> = None;
        loop {
            let api = target.take().unwrap_or_else(|| {
                let ids = self.reachable();
                n += 1;
                self.api(ids[n % ids.len()])
            });
            if let Ok(r) = self.agent.put(&format!("{api}/v1/kv/{key}")).send(key) {
                match r.status().as_u16() {
                    200 => {
                        self.acked.lock().unwrap().insert(key.to_string(), key.to_string());
                        return WriteOutcome::Ok;
                    }
                    307 => {
                        let loc = r.headers().get("location").and_then(|l| l.to_str().ok());
                        target = loc.and_then(|l| l.split("/v1/").next()).map(String::from);
                        continue;
                    }
                    504 => return WriteOutcome::Unknown,
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return WriteOutcome::Refused(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `count` writes `{prefix}-{i}`, each of which must be acknowledged.
    fn write_all(&self, prefix: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..count {
            let key = format!("{prefix}-{i}");
            let out = self.put(&key, deadline);
            if out != WriteOutcome::Ok {
                self.fail(&format!("write {key} was not acknowledged: {out:?}"));
            }
        }
    }

    fn get_stale(&self, id: u64, key: &str) -> (u16, String) {
        let url = format!("{}/v1/kv/{key}?consistency=stale", self.api(id));
        match self.agent.get(&url).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Waits until `id` has applied everything `leader` has committed by now.
    fn wait_applied(&self, id: u64, leader: u64) {
        let Some(commit) = self.index(leader, "commit_index") else {
            self.fail(&format!("leader {leader} does not answer /v1/status"));
        };
        self.eventually(
            Duration::from_secs(15),
            &format!("node {id} applies the leader's commit index {commit}"),
            || self.index(id, "applied_index").is_some_and(|a| a >= commit),
        );
    }

    /// `key` (written with itself as value) reads back on `id` without asking the leader.
    fn reads_back(&self, id: u64, key: &str) {
        let (st, body) = self.get_stale(id, key);
        if (st, body.as_str()) != (200, key) {
            self.fail(&format!("node {id} reads acknowledged write {key} as {st} {body:?}"));
        }
    }

    /// The link really is down: the test cannot reach `id`, and `leader` has committed
    /// entries that `id` never acknowledged.
    fn really_cut_off(&self, id: u64, leader: u64) {
        if let Some(st) = self.status(id) {
            self.fail(&format!("node {id} still answers with its link down: {st}"));
        }
        let st = self.status(leader).unwrap_or_default();
        let matched = st["replication"]
            .as_array()
            .and_then(|r| r.iter().find(|p| p["id"].as_u64() == Some(id))?["match_index"].as_u64());
        let commit = st["commit_index"].as_u64();
        if !matches!((matched, commit), (Some(m), Some(c)) if m < c) {
            self.fail(&format!("leader {leader} sees node {id} as up to date while cut: {st}"));
        }
    }

    fn background_acked(&self) -> usize {
        self.acked.lock().unwrap().keys().filter(|k| k.starts_with("bg-")).count()
    }

    /// Waits until the background writer gets one more write acknowledged.
    fn background_progresses(&self, what: &str) {
        let before = self.background_acked();
        self.eventually(Duration::from_secs(10), &format!("a background write {what}"), || {
            self.background_acked() > before
        });
    }

    /// With `cut`'s link down and `leader` serving: 20 writes and a background write are
    /// acknowledged, `cut` really hears nothing; then the link returns and `cut` catches up
    /// and reads back the last of the writes (keys `{tag}-0` .. `{tag}-19`).
    fn writes_while_cut_then_catch_up(&self, cut: u64, leader: u64, tag: &str) {
        self.write_all(tag, 20);
        self.background_progresses(&format!("while node {cut} is cut off"));
        self.really_cut_off(cut, leader);
        self.restore(cut);
        self.wait_applied(cut, leader);
        self.reads_back(cut, &format!("{tag}-19"));
    }

    /// Every acknowledged write, read back from every node once it has applied all the
    /// leader committed after the last acknowledgement.
    fn nothing_lost(&self, leader: u64) {
        let acked = self.acked.lock().unwrap().clone();
        for id in self.children.keys() {
            self.wait_applied(*id, leader);
            for key in acked.keys() {
                self.reads_back(*id, key);
            }
        }
        say(&format!("{} acknowledged writes readable on every node", acked.len()));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `net` drops after this and deletes the namespaces, now empty.
    }
}

/// An HTTP(S) client that trusts the test CA (plain `http://` URLs ignore it).
fn client(ca_pem: &str, timeout: Duration) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(ca_pem.as_bytes()).expect("the test CA parses");
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(vec![ca].into())).build())
        .build()
        .new_agent()
}

/// Keys `bg-{i}` written one after another until `stop`, through whichever hosts are
/// plugged in: writes go on across every cut, and each acknowledged one is recorded.
fn background_writes(lab: &Lab, stop: &AtomicBool) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        lab.put(&format!("bg-{i}"), Instant::now() + Duration::from_secs(2));
        i += 1;
    }
}

/// Stops the background writer when the test body ends, by returning or by panicking (a
/// scoped thread that never stops would keep the panic from ever being reported).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn three_hosts_survive_losing_one_hosts_link() {
    let started = Instant::now();
    let Some(lab) = Lab::start(3) else { return };
    let all: Vec<u64> = vec![1, 2, 3];
    let others = |id: u64| all.iter().copied().filter(|i| *i != id).collect::<Vec<_>>();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (leader, term) = lab.wait_leader(&all, Duration::from_secs(20));
        say(&format!("leader {leader} in term {term}"));
        lab.write_all("before", 20);
        s.spawn(|| background_writes(&lab, &stop));

        // A follower's host loses its link: the leader keeps its majority and its term
        // (PreVote: the cut host cannot win a pre-vote, so it never disturbs anyone).
        let follower = others(leader)[0];
        lab.cut(follower);
        let (l, t) = lab.wait_leader(&others(follower), Duration::from_secs(10));
        if (l, t) != (leader, term) {
            lab.fail(&format!("cutting follower {follower} moved the leader to {l} in {t}"));
        }
        lab.writes_while_cut_then_catch_up(follower, leader, "follower-cut");

        // The leader's host loses its link: the other two elect a new leader in a later
        // term and acknowledge writes; the old leader catches up when plugged back in.
        lab.cut(leader);
        let (new, new_term) = lab.wait_leader(&others(leader), Duration::from_secs(10));
        say(&format!("leader {new} in term {new_term} after cutting {leader}"));
        if new == leader || new_term <= term {
            lab.fail(&format!("no new leader after cutting {leader}: {new} in {new_term}"));
        }
        lab.writes_while_cut_then_catch_up(leader, new, "leader-cut");
        let (l, t) = lab.wait_leader(&all, Duration::from_secs(10));
        if (l, t) != (new, new_term) {
            lab.fail(&format!("the old leader's return moved the leader to {l} in {t}"));
        }
        stop.store(true, Ordering::Relaxed);
    });
    lab.nothing_lost(lab.wait_leader(&all, Duration::from_secs(10)).0);
    say(&format!("{:?} passed in {:.1?}", lab.mode, started.elapsed()));
}
