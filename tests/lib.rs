//! Shared helpers for the workspace integration tests: start real `flotilla node`
//! processes on 127.0.0.1 with free ports (so tests run in parallel), talk to them over
//! HTTP, kill and restart them, and poll with deadlines (never sleep and hope).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Ports that were free a moment ago (bound to port 0 and released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
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
    bin: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes with fault injection enabled and `extra` node arguments.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
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
        let spec = nodes
            .values()
            .map(|n| format!("{}={}@{}", n.id, n.raft, n.api))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            nodes,
            spec,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bin: flotilla_bin(),
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    pub fn spawn(&mut self, id: u64) {
        let spec = self.spec.clone();
        let extra = self.extra.clone();
        let log_path = self.dir.path().join(format!("node-{id}.log"));
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.raft, "--api", &node.api, "--initial-cluster", &spec])
            .arg("--enable-fault-injection")
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl only sets a flag on the child; the node dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        node.child = Some(cmd.spawn().expect("spawn flotilla node"));
    }

    /// SIGKILL (a crash), then reap.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn api(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].api)
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
fn agreed_leader(sts: &[Option<Value>]) -> Option<(u64, u64)> {
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

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

pub fn get_json(url: &str) -> Option<Value> {
    let agent = ureq::Agent::config_builder()
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
        let r = agent.put(&format!("{target}/v1/kv/{key}")).send(value);
        if let Ok(resp) = r {
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
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
