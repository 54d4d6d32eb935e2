//! Shared helpers for the workspace integration tests: start real `flotilla node`
//! processes on 127.0.0.1 with free ports (so tests run in parallel), talk to them over
//! HTTP, kill and restart them, and poll with deadlines (never sleep and hope). A cluster
//! may serve HTTPS ([`Cluster::new`] with `https`); the helpers' clients then trust the CAs
//! given to [`trust_ca`].

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `flotilla` binary of this build (built by `cargo test --workspace`; built here if
/// missing, e.g. under `cargo test -p flotilla-tests`).
pub fn flotilla_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLOTILLA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("flotilla");
    if !bin.exists() {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "flotilla"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok && bin.exists(), "could not build the flotilla binary at {bin:?}");
    }
    bin
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago, none of them in the
/// kernel's ephemeral range. A port from the ephemeral range (what binding port 0 gives)
/// can be taken, between the test releasing it and the node binding it, as the source port
/// of any outgoing connection, including a peer's dial to that very port, which TCP then
/// connects to itself; CI once lost a node to exactly that ("Address already in use").
/// Ports below the range are only ever taken by an explicit bind. Each process walks the
/// range from its own pid-derived start, so parallel tests and test binaries do not meet.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (lo, hi) = fixed_port_range();
    let span = u32::from(hi - lo);
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919)));
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let port = lo + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports in {lo}..{hi}");
    held.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

/// Unprivileged ports outside `net.ipv4.ip_local_port_range` (32768..=60999 by default):
/// below it when there is room, else above it.
fn fixed_port_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    match range {
        (lo, _) if lo >= 12000 => (10000, lo),
        (_, hi) if hi <= 55000 => (hi + 1, 65535),
        r => panic!("ip_local_port_range {r:?} leaves no room for fixed test ports"),
    }
}

/// CA certificates the helpers' HTTP clients trust for `https://` (this test process).
static TRUSTED_CAS: Mutex<Vec<ureq::tls::Certificate<'static>>> = Mutex::new(Vec::new());

/// Makes every helper's HTTP client trust the CA certificate in `pem` from now on.
pub fn trust_ca(pem: &str) {
    let cert = ureq::tls::Certificate::from_pem(pem.as_bytes()).expect("a PEM CA certificate");
    TRUSTED_CAS.lock().unwrap_or_else(|e| e.into_inner()).push(cert);
}

/// The helpers' TLS settings: the CAs given to [`trust_ca`], if any.
fn tls_config() -> ureq::tls::TlsConfig {
    let cas = TRUSTED_CAS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if cas.is_empty() {
        return ureq::tls::TlsConfig::default();
    }
    ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::from(cas)).build()
}

pub struct NodeProc {
    pub id: u64,
    pub raft: String,
    pub api: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

/// A local cluster of real processes. Dropping it kills every node.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub spec: String,
    pub extra: Vec<String>,
    /// Environment variables for one node's process (e.g. a test-only fault hook).
    pub env: BTreeMap<u64, Vec<(String, String)>>,
    /// Start nodes with `--enable-fault-injection` (true unless a test turns it off).
    pub fault_injection: bool,
    /// Arguments for one node only (e.g. its TLS certificate), after `extra`.
    pub node_args: BTreeMap<u64, Vec<String>>,
    /// The nodes serve HTTPS (`--tls-*`): `api()` URLs are `https://`.
    pub https: bool,
    bin: PathBuf,
    /// Nodes started with `--join URL` instead of `--initial-cluster`.
    joins: BTreeMap<u64, String>,
    /// Bind `--listen` and `--api` on this host (the ports stay the nodes').
    bind_host: Option<String>,
}

impl Cluster {
    /// Starts `n` nodes with fault injection enabled and `extra` node arguments.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let mut c = Cluster::new(n, extra, false);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// [`Cluster::start`] with `spec_host` (a DNS name, say) in `--initial-cluster`, and
    /// binding `bind_host` (say the wildcard 0.0.0.0) when given. Tests still dial
    /// 127.0.0.1 (`NodeProc::raft`, `api`), so both must lead there.
    pub fn start_named(
        n: u64,
        extra: &[&str],
        spec_host: &str,
        bind_host: Option<&str>,
    ) -> Cluster {
        let mut c = Cluster::new_named(n, extra, false, spec_host, bind_host);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Like [`Cluster::start`], but starts no node yet (set `node_args` or `env`, then
    /// `spawn` each); `https`: the nodes will serve HTTPS.
    pub fn new(n: u64, extra: &[&str], https: bool) -> Cluster {
        Cluster::new_named(n, extra, https, "127.0.0.1", None)
    }

    fn new_named(
        n: u64,
        extra: &[&str],
        https: bool,
        spec_host: &str,
        bind_host: Option<&str>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(2 * n as usize);
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let i = (id - 1) as usize;
            nodes.insert(
                id,
                NodeProc {
                    id,
                    raft: format!("127.0.0.1:{}", ports[2 * i]),
                    api: format!("127.0.0.1:{}", ports[2 * i + 1]),
                    data_dir: dir.path().join(format!("node-{id}")),
                    child: None,
                },
            );
        }
        let on_spec_host = |addr: &str| addr.replace("127.0.0.1", spec_host);
        let spec = nodes
            .values()
            .map(|n| format!("{}={}@{}", n.id, on_spec_host(&n.raft), on_spec_host(&n.api)))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            dir,
            nodes,
            spec,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            fault_injection: true,
            node_args: BTreeMap::new(),
            https,
            bin: flotilla_bin(),
            joins: BTreeMap::new(),
            bind_host: bind_host.map(String::from),
        }
    }

    pub fn spawn(&mut self, id: u64) {
        let spec = self.spec.clone();
        let extra = self.extra.clone();
        let log_path = self.dir.path().join(format!("node-{id}.log"));
        let (listen, api) = (self.bind(&self.nodes[&id].raft), self.bind(&self.nodes[&id].api));
        // A joining node has no --initial-cluster entry to take its advertised addresses
        // from, and a wildcard bind cannot be advertised: say where it is reached.
        let advertise = match (&self.bind_host, self.joins.contains_key(&id)) {
            (Some(_), true) => vec![
                "--advertise-peer".to_string(),
                self.nodes[&id].raft.clone(),
                "--advertise-api".to_string(),
                self.nodes[&id].api.clone(),
            ],
            _ => Vec::new(),
        };
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &listen, "--api", &api])
            .args(&advertise);
        match self.joins.get(&id) {
            Some(url) => cmd.args(["--join", url]),
            None => cmd.args(["--initial-cluster", &spec]),
        };
        cmd.args(self.fault_injection.then_some("--enable-fault-injection"))
            .args(&extra)
            .args(self.node_args.get(&id).into_iter().flatten())
            .envs(self.env.get(&id).into_iter().flatten().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        node.child = Some(cmd.spawn().expect("spawn flotilla node"));
    }

    /// `addr` on the bind host, if the cluster has one.
    fn bind(&self, addr: &str) -> String {
        match (&self.bind_host, addr.rsplit_once(':')) {
            (Some(host), Some((_, port))) => format!("{host}:{port}"),
            _ => addr.to_string(),
        }
    }

    /// Starts a new node `id` (fresh ports and data dir) with `--join URL`: it asks the
    /// cluster at `url` to add it, as a learner and then as a voter.
    pub fn spawn_joining(&mut self, id: u64, url: &str) {
        assert!(!self.nodes.contains_key(&id), "node ids are never reused");
        let ports = free_ports(2);
        self.nodes.insert(
            id,
            NodeProc {
                id,
                raft: format!("127.0.0.1:{}", ports[0]),
                api: format!("127.0.0.1:{}", ports[1]),
                data_dir: self.dir.path().join(format!("node-{id}")),
                child: None,
            },
        );
        self.joins.insert(id, url.to_string());
        self.spawn(id);
    }

    /// SIGKILL (a crash), then reap.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to node `id`'s process (it must be running).
    pub fn signal(&self, id: u64, sig: nix::sys::signal::Signal) {
        let child = self.nodes[&id].child.as_ref().expect("node is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signalling the node");
    }

    pub fn api(&self, id: u64) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.nodes[&id].api)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub fn status(&self, id: u64) -> Option<Value> {
        get_json(&format!("{}/v1/status", self.api(id)))
    }

    /// Waits until the running nodes `among` agree on one leader in one term; returns
    /// (leader, term). Panics with every node's status at the deadline.
    pub fn wait_leader(&self, among: &[u64], timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let sts: Vec<Option<Value>> = among.iter().map(|id| self.status(*id)).collect();
            if let Some(found) = agreed_leader(&sts)
                && among.contains(&found.0)
            {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no agreed leader among {among:?} within {timeout:?}: {sts:?}\nlogs: {}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn set_faults(&self, id: u64, body: Value) {
        let r = http()
            .post(&format!("{}/v1/admin/faults", self.api(id)))
            .send_json(&body)
            .expect("faults");
        assert_eq!(r.status().as_u16(), 200, "setting faults on {id}");
    }

    pub fn heal(&self, id: u64) {
        let r = http().delete(&format!("{}/v1/admin/faults", self.api(id))).call().expect("heal");
        assert_eq!(r.status().as_u16(), 200);
    }

    /// Waits for node `id` to exit on its own; its exit status, or None at the deadline
    /// (the node is then still running).
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.nodes.get_mut(&id).expect("node");
            let status = node.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                node.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything node `id` wrote to stderr so far.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ids() {
            let p = self.dir.path().join(format!("node-{id}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- node {id} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill9(id);
        }
    }
}

/// If every reachable node names the same leader and term, and the leader says it leads.
pub fn agreed_leader(sts: &[Option<Value>]) -> Option<(u64, u64)> {
    let reachable: Vec<&Value> = sts.iter().flatten().collect();
    let leaders: Vec<&&Value> = reachable.iter().filter(|s| s["role"] == "leader").collect();
    if leaders.len() != 1 {
        return None;
    }
    let (id, term) = (leaders[0]["id"].as_u64()?, leaders[0]["term"].as_u64()?);
    let all_agree = reachable
        .iter()
        .all(|s| s["leader"].as_u64() == Some(id) && s["term"].as_u64() == Some(term));
    all_agree.then_some((id, term))
}

/// Makes a node process get SIGKILL when the test process dies, even if no `Drop` runs
/// (a test that aborts): no node outlives its test.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl only sets a flag on the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls_config())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

pub fn get_json(url: &str) -> Option<Value> {
    let agent = ureq::Agent::config_builder()
        .tls_config(tls_config())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(800)))
        .build()
        .new_agent();
    let mut r = agent.get(url).call().ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    r.body_mut().read_json().ok()
}

/// The outcome of one write as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// 200: committed and applied.
    Ok,
    /// Definitely not applied (4xx, 307, 503).
    Refused(u16),
    /// 504 or a broken connection: may or may not have been applied.
    Unknown,
}

/// One PUT to exactly this node (no redirect following).
pub fn put_once(agent: &ureq::Agent, api: &str, key: &str, value: &str) -> WriteOutcome {
    match agent.put(&format!("{api}/v1/kv/{key}")).send(value) {
        Ok(r) => match r.status().as_u16() {
            200 => WriteOutcome::Ok,
            504 => WriteOutcome::Unknown,
            s => WriteOutcome::Refused(s),
        },
        Err(_) => WriteOutcome::Unknown,
    }
}

/// A PUT that follows redirects and retries through elections until `deadline`.
pub fn put_retry(apis: &[String], key: &str, value: &str, deadline: Instant) -> WriteOutcome {
    let agent = http();
    let mut i = 0usize;
    let mut target = apis[0].clone();
    loop {
        if let Ok(resp) = agent.put(&format!("{target}/v1/kv/{key}")).send(value) {
            match resp.status().as_u16() {
                200 => return WriteOutcome::Ok,
                307 => {
                    if let Some(loc) = resp.headers().get("location").and_then(|l| l.to_str().ok())
                    {
                        target = loc.split("/v1/").next().unwrap_or(&target).to_string();
                        continue;
                    }
                }
                504 => return WriteOutcome::Unknown,
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return WriteOutcome::Refused(0);
        }
        i += 1;
        target = apis[i % apis.len()].clone();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET a key from one node with the given consistency; (status, body, X-Flotilla-Index).
pub fn get_key(api: &str, key: &str, consistency: &str) -> (u16, String, Option<u64>) {
    let agent = http();
    match agent.get(&format!("{api}/v1/kv/{key}?consistency={consistency}")).call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let idx = r
                .headers()
                .get("x-flotilla-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = r.body_mut().read_to_string().unwrap_or_default();
            (status, body, idx)
        }
        Err(e) => (0, e.to_string(), None),
    }
}

/// Polls `f` until it returns true or `timeout` passes.
/// One request over HTTP/2 with prior knowledge (h2c), on a connection of its own: status,
/// body, `Location`.
pub fn h2c_request(
    api: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String, Option<String>), String> {
    use http_body_util::{BodyExt, Full};
    let addr = api.trim_start_matches("http://").to_string();
    let uri = format!("http://{addr}{path}");
    let (method, body) = (method.to_string(), bytes::Bytes::copy_from_slice(body.as_bytes()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            let io = hyper_util::rt::TokioIo::new(tcp);
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2c handshake: {e}"))?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method.as_str())
                .uri(uri)
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let resp = tx.send_request(req).await.map_err(|e| format!("h2c request: {e}"))?;
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            let status = resp.status().as_u16();
            let location =
                resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned(), location))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "h2c request timed out".to_string())?
    })
}

pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JSON request to exactly this URL (no redirect following): (status, JSON body or
/// Null, Location header).
pub fn request(method: &str, url: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
    let agent = ureq::Agent::config_builder()
        .tls_config(tls_config())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let r = match (method, body) {
        ("POST", Some(b)) => agent.post(url).send_json(b),
        ("POST", None) => agent.post(url).send_empty(),
        ("DELETE", _) => agent.delete(url).call(),
        _ => agent.get(url).call(),
    };
    match r {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let loc = r.headers().get("location").and_then(|l| l.to_str().ok()).map(String::from);
            let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
            (status, v, loc)
        }
        Err(e) => (0, Value::String(e.to_string()), None),
    }
}

/// An admin request that follows 307 redirects to the leader and retries through elections
/// (503, broken connections) until `timeout`; returns the last (status, body).
pub fn admin(
    method: &str,
    api: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> (u16, Value) {
    let deadline = Instant::now() + timeout;
    let mut url = format!("{api}{path}");
    loop {
        let (status, v, loc) = request(method, &url, body);
        match (status, loc) {
            (307, Some(loc)) => url = loc,
            (0 | 503, _) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return (status, v),
        }
        if Instant::now() >= deadline {
            return (status, v);
        }
    }
}

/// One counter or gauge from a node's `/metrics`.
pub fn metric(api: &str, name: &str) -> Option<f64> {
    let agent = ureq::Agent::config_builder()
        .tls_config(tls_config())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    let text =
        agent.get(&format!("{api}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
}

/// A counter from a node's `/metrics`, 0 when the node or the counter is missing.
pub fn counter(api: &str, name: &str) -> u64 {
    metric(api, name).map_or(0, |v| v as u64)
}

/// Every `/v1/events` line of some nodes, collected in the background from when it is
/// created (reconnecting while a node restarts).
pub struct Events {
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Events {
    /// Follows the streams of `apis` (node id, api URL).
    pub fn follow(apis: &[(u64, String)]) -> Events {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ev = Events { lines, stop };
        for (_, api) in apis {
            ev.add(api);
        }
        ev
    }

    /// Follows one more node's stream.
    pub fn add(&self, api: &str) {
        let (lines, stop, url) =
            (self.lines.clone(), self.stop.clone(), format!("{api}/v1/events"));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .tls_config(tls_config())
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(1)))
                .build()
                .new_agent();
            let mut tx = Some(tx);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = agent.get(&url).call() {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                    let reader = std::io::BufReader::new(r.into_body().into_reader());
                    for line in std::io::BufRead::lines(reader) {
                        let Ok(line) = line else { break };
                        if let Ok(v) = serde_json::from_str::<Value>(&line) {
                            lines.lock().unwrap().push(v);
                        }
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Wait (briefly) until the stream is open, so that what follows is seen.
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Events of `kind` from `node` (any node when None).
    pub fn of(&self, kind: &str, node: Option<u64>) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|e| e["kind"] == kind && node.is_none_or(|n| e["node"].as_u64() == Some(n)))
            .collect()
    }

    /// Waits for an event of `kind` from `node` matching `pred`; returns it.
    pub fn wait_for(
        &self,
        kind: &str,
        node: Option<u64>,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.of(kind, node).into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {kind} event from {node:?} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Terms in which more than one node was elected leader, from `leader_elected` events.
    pub fn terms_with_two_leaders(&self) -> Vec<(u64, Vec<u64>)> {
        let mut by_term: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for e in self.of("leader_elected", None) {
            if let (Some(t), Some(l)) = (e["term"].as_u64(), e["leader"].as_u64()) {
                by_term.entry(t).or_default().insert(l);
            }
        }
        by_term
            .into_iter()
            .filter(|(_, ls)| ls.len() > 1)
            .map(|(t, ls)| (t, ls.into_iter().collect()))
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writers that each write unique keys (`{prefix}-{writer}-{i}` = the key) through any
/// node, following redirects, and record what the cluster acknowledged: an acknowledged
/// key can only be lost, never legitimately overwritten.
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    apis: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WriteLoad {
    pub fn start(apis: Vec<String>, writers: usize, prefix: &str) -> WriteLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let apis = std::sync::Arc::new(std::sync::Mutex::new(apis));
        let threads = (0..writers)
            .map(|w| {
                let (stop, acked, apis) = (stop.clone(), acked.clone(), apis.clone());
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let agent = http();
                    let mut target: Option<String> = None;
                    let mut i = 0u64;
                    let mut n = w;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{prefix}-{w}-{i}");
                        // Where the last write was accepted (the leader), else any node.
                        let api = target.clone().unwrap_or_else(|| {
                            let apis = apis.lock().unwrap();
                            n += 1;
                            apis[n % apis.len()].clone()
                        });
                        let url = format!("{api}/v1/kv/{key}");
                        match agent.put(&url).send(key.as_str()) {
                            Ok(r) if r.status().as_u16() == 200 => {
                                acked.lock().unwrap().insert(key.clone(), key);
                                target = Some(api);
                                i += 1;
                            }
                            Ok(r) if r.status().as_u16() == 307 => {
                                let loc = r.headers().get("location").and_then(|l| l.to_str().ok());
                                target = loc.and_then(|l| l.split("/v1/").next()).map(String::from);
                            }
                            // Refused (503 no leader): the same key again elsewhere. Unknown
                            // (504, broken connection): a new key, the old one may or may
                            // not exist.
                            Ok(r) if r.status().as_u16() == 503 => {
                                target = None;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            _ => {
                                target = None;
                                i += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        if target.as_ref().is_some_and(|t| !apis.lock().unwrap().contains(t)) {
                            target = None;
                        }
                    }
                })
            })
            .collect();
        WriteLoad { stop, acked, apis, threads }
    }

    /// Where the writers send their requests from now on.
    pub fn set_apis(&self, apis: Vec<String>) {
        *self.apis.lock().unwrap() = apis;
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writers; returns every acknowledged write.
    pub fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        std::sync::Arc::try_unwrap(self.acked).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}

/// Waits until node `id` has applied at least `index`.
pub fn wait_applied(c: &Cluster, id: u64, index: u64, timeout: Duration) {
    eventually(timeout, &format!("node {id} applies {index}"), || {
        c.status(id).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= index)
    });
}
