//! Local 3-node clusters for the bench, Flotilla's (through the launcher) or etcd's, on
//! 127.0.0.1 with fsync on, and /proc readings of their processes.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Target, TargetArgs, etcd, http};
use crate::launcher::{Launcher, local_specs};

const NODES: u64 = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A data dir the bench made itself is removed when the cluster stops.
pub struct Dir {
    path: PathBuf,
    owned: bool,
}

impl Dir {
    fn new(given: Option<&PathBuf>, what: &str) -> Result<Dir> {
        let (path, owned) = match given {
            Some(p) => (p.clone(), false),
            None => {
                let n = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let p = std::env::temp_dir()
                    .join(format!("flotilla-bench-{what}-{}-{n}", std::process::id()));
                (p, true)
            }
        };
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("wiping {path:?}"))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {path:?}"))?;
        Ok(Dir { path, owned })
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub enum LocalCluster {
    Flotilla { launcher: Launcher, _dir: Dir },
    Etcd(EtcdCluster),
}

impl LocalCluster {
    /// Starts the target's cluster when `--local` asks for it and waits for a leader.
    pub async fn maybe_start(t: &TargetArgs) -> Result<Option<LocalCluster>> {
        if !t.local {
            return Ok(None);
        }
        let extra: Vec<String> = t.node_args.split_whitespace().map(str::to_string).collect();
        Ok(Some(match t.target {
            Target::Flotilla => Self::start_flotilla(t.dir.as_ref(), t.base_port, extra).await?,
            Target::Etcd => {
                let c = EtcdCluster::start(
                    &t.etcd_bin,
                    t.dir.as_ref(),
                    t.base_port.unwrap_or(24000),
                    extra,
                )?;
                let c = LocalCluster::Etcd(c);
                c.wait_ready().await?;
                c
            }
        }))
    }

    pub async fn start_flotilla(
        dir: Option<&PathBuf>,
        base_port: Option<u16>,
        extra: Vec<String>,
    ) -> Result<LocalCluster> {
        let dir = Dir::new(dir, "flotilla")?;
        let exe = std::env::current_exe()?;
        let specs = local_specs(NODES, &dir.path, base_port.unwrap_or(17100));
        let mut launcher = Launcher::new(exe, specs, extra);
        launcher.log_to(dir.path.join("logs"));
        launcher.start_all()?;
        let c = LocalCluster::Flotilla { launcher, _dir: dir };
        c.wait_ready().await?;
        Ok(c)
    }

    pub fn ids(&self) -> Vec<u64> {
        (1..=NODES).collect()
    }

    /// Client endpoint (host:port) of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        match self {
            LocalCluster::Flotilla { launcher, .. } => launcher.specs[&id].api.clone(),
            LocalCluster::Etcd(e) => e.client_addr(id),
        }
    }

    pub fn client_endpoints(&self) -> Vec<String> {
        self.ids().into_iter().map(|id| self.endpoint(id)).collect()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        match self {
            LocalCluster::Flotilla { launcher, .. } => launcher.pid(id),
            LocalCluster::Etcd(e) => e.children.get(&id).map(Child::id),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.ids().into_iter().filter_map(|id| self.pid(id)).collect()
    }

    pub fn kill9(&mut self, id: u64) -> Result<()> {
        match self {
            LocalCluster::Flotilla { launcher, .. } => launcher.kill9(id),
            LocalCluster::Etcd(e) => e.kill9(id),
        }
    }

    pub fn restart(&mut self, id: u64) -> Result<()> {
        match self {
            LocalCluster::Flotilla { launcher, .. } => launcher.start(id, None).map(|_| ()),
            LocalCluster::Etcd(e) => e.start_node(id, false),
        }
    }

    /// Waits until every running node agrees on one leader (and, for etcd, the members'
    /// raft indexes are close: a restarted node has caught up).
    pub async fn wait_ready(&self) -> Result<()> {
        let until = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if self.agreed().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                bail!("the local cluster did not settle on a leader within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed(&self) -> bool {
        let t = Duration::from_millis(500);
        match self {
            LocalCluster::Flotilla { .. } => {
                let mut seen = Vec::new();
                for ep in self.client_endpoints() {
                    let Ok(st) = http::get_json(&ep, "/v1/status", t).await else { return false };
                    seen.push((
                        st["leader"].as_u64(),
                        st["term"].as_u64(),
                        st["applied_index"].as_u64().unwrap_or(0),
                        st["commit_index"].as_u64().unwrap_or(0),
                    ));
                }
                let max_commit = seen.iter().map(|s| s.3).max().unwrap_or(0);
                seen[0].0.is_some()
                    && seen.iter().all(|s| s.0 == seen[0].0 && s.1 == seen[0].1)
                    && seen.iter().all(|s| s.2 + 5 >= max_commit)
            }
            LocalCluster::Etcd(_) => {
                let mut seen = Vec::new();
                for ep in self.client_endpoints() {
                    let Ok(Ok(ch)) = tokio::time::timeout(t, etcd::channel(&ep)).await else {
                        return false;
                    };
                    let Ok(st) = etcd::EtcdConn::new(ch, t).status().await else { return false };
                    seen.push((st.leader, st.raft_index));
                }
                let hi = seen.iter().map(|s| s.1).max().unwrap_or(0);
                seen[0].0 != 0
                    && seen.iter().all(|s| s.0 == seen[0].0)
                    && seen.iter().all(|s| s.1 + 5 >= hi)
            }
        }
    }

    pub fn stop(&mut self) {
        match self {
            LocalCluster::Flotilla { launcher, .. } => launcher.stop_all(),
            LocalCluster::Etcd(e) => e.stop_all(),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local etcd cluster: members n1..n3, client port base+id, peer port base+100+id.
pub struct EtcdCluster {
    bin: String,
    dir: Dir,
    base: u16,
    extra: Vec<String>,
    children: BTreeMap<u64, Child>,
}

impl EtcdCluster {
    pub fn start(bin: &str, dir: Option<&PathBuf>, base: u16, extra: Vec<String>) -> Result<Self> {
        let dir = Dir::new(dir, "etcd")?;
        let mut c =
            EtcdCluster { bin: bin.to_string(), dir, base, extra, children: BTreeMap::new() };
        for id in 1..=NODES {
            c.start_node(id, true)?;
        }
        Ok(c)
    }

    pub fn client_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", u64::from(self.base) + id)
    }

    fn peer_url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", u64::from(self.base) + 100 + id)
    }

    fn start_node(&mut self, id: u64, new: bool) -> Result<()> {
        let cluster: Vec<String> =
            (1..=NODES).map(|i| format!("n{i}={}", self.peer_url(i))).collect();
        let client = format!("http://{}", self.client_addr(id));
        let data = self.dir.path.join(format!("n{id}"));
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", &format!("n{id}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &self.peer_url(id)])
            .args(["--initial-advertise-peer-urls", &self.peer_url(id)])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "flotilla-bench"])
            .args(["--initial-cluster-state", if new { "new" } else { "existing" }])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(self.dir.path.join(format!("n{id}.log")))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!("starting {} (install etcd: apt-get install etcd-server)", self.bin)
        })?;
        self.children.insert(id, child);
        Ok(())
    }

    fn kill9(&mut self, id: u64) -> Result<()> {
        let mut c = self.children.remove(&id).context("etcd member is not running")?;
        kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL)?;
        let _ = c.wait();
        Ok(())
    }

    fn stop_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// VmRSS of `pid` in KiB (0 when gone).
pub fn rss_kib(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) of `pid`.
pub fn cpu_s(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = s.rsplit_once(") ") else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// `{pid: rss_kib}` now.
pub fn rss_line(pids: &[u32]) -> BTreeMap<u32, u64> {
    pids.iter().map(|p| (*p, rss_kib(*p))).collect()
}
