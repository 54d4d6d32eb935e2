//! Starts and supervises local node processes (for `flotilla cluster start`, the TUI, the
//! benchmarks and the tests). Children run in their own process group and die with us
//! (`PR_SET_PDEATHSIG`), so a launcher that crashes leaves no orphans.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One node of a local cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub listen: String,
    pub api: String,
    pub data_dir: PathBuf,
}

/// Local ports: raft `base + id`, API `base + 1000 + id` (the defaults 7100+id / 8100+id
/// when `base` is 7100).
pub fn local_specs(nodes: u64, dir: &Path, base_port: u16) -> Vec<NodeSpec> {
    (1..=nodes)
        .map(|id| NodeSpec {
            id,
            listen: format!("127.0.0.1:{}", u64::from(base_port) + id),
            api: format!("127.0.0.1:{}", u64::from(base_port) + 1000 + id),
            data_dir: dir.join(format!("node-{id}")),
        })
        .collect()
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago, outside the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`). A port got by binding port 0 lies in
/// that range, so between its release and the node's bind any outgoing connection may
/// take it as its source port (even a peer's dial to that very port, which TCP connects to
/// itself). Each process walks the range from its own pid-derived start.
pub fn free_fixed_ports(n: usize) -> Result<Vec<u16>> {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (lo, hi) = fixed_port_range()?;
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
    anyhow::ensure!(held.len() == n, "no {n} free ports in {lo}..{hi}");
    Ok(held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<_>>()?)
}

/// Unprivileged ports below the ephemeral range when there is room, else above it.
fn fixed_port_range() -> Result<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    outside_ephemeral(range)
}

/// `lo..hi` of unprivileged ports outside the ephemeral range `(first, last)`.
fn outside_ephemeral(range: (u16, u16)) -> Result<(u16, u16)> {
    match range {
        (lo, _) if lo >= 12000 => Ok((10000, lo)),
        (_, hi) if hi <= 55000 => Ok((hi + 1, 65535)),
        r => anyhow::bail!("ip_local_port_range {r:?} leaves no room for fixed local ports"),
    }
}

pub fn initial_cluster(specs: &[NodeSpec]) -> String {
    specs.iter().map(|s| format!("{}={}@{}", s.id, s.listen, s.api)).collect::<Vec<_>>().join(",")
}

pub struct Launcher {
    exe: PathBuf,
    pub specs: BTreeMap<u64, NodeSpec>,
    cluster: String,
    extra_args: Vec<String>,
    children: BTreeMap<u64, Child>,
    /// Where each node's stderr goes.
    log_dir: Option<PathBuf>,
}

impl Launcher {
    pub fn new(exe: PathBuf, specs: Vec<NodeSpec>, extra_args: Vec<String>) -> Launcher {
        let cluster = initial_cluster(&specs);
        Launcher {
            exe,
            specs: specs.into_iter().map(|s| (s.id, s)).collect(),
            cluster,
            extra_args,
            children: BTreeMap::new(),
            log_dir: None,
        }
    }

    /// Send each node's stderr to `DIR/node-ID.log` instead of inheriting ours.
    pub fn log_to(&mut self, dir: PathBuf) {
        self.log_dir = Some(dir);
    }

    /// Adds a node that will join the running cluster (not in the initial cluster).
    pub fn add_spec(&mut self, spec: NodeSpec) {
        self.specs.insert(spec.id, spec);
    }

    pub fn start_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.specs.keys().copied().collect();
        for id in ids {
            self.start(id, None)?;
        }
        Ok(())
    }

    /// Starts node `id` (no-op if running). `join` = API URL to join through.
    pub fn start(&mut self, id: u64, join: Option<&str>) -> Result<u32> {
        if let Some(pid) = self.pid(id) {
            return Ok(pid);
        }
        let spec = self.specs.get(&id).context("unknown node id")?.clone();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--listen")
            .arg(&spec.listen)
            .arg("--api")
            .arg(&spec.api);
        match join {
            Some(url) => cmd.arg("--join").arg(url),
            None => cmd.arg("--initial-cluster").arg(&self.cluster),
        };
        cmd.args(&self.extra_args).stdin(Stdio::null()).stdout(Stdio::null());
        match &self.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("node-{id}.log")))?;
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
        let pid = child.id();
        self.children.insert(id, child);
        Ok(pid)
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(|c| c.id())
    }

    fn signal(&self, id: u64, sig: Signal) -> Result<()> {
        let pid = self.pid(id).context("node is not running")?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("signalling node {id}"))
    }

    /// SIGKILL: a crash. The node is reaped and stays down until started again.
    pub fn kill9(&mut self, id: u64) -> Result<()> {
        self.signal(id, Signal::SIGCONT).ok();
        self.signal(id, Signal::SIGKILL)?;
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM (after SIGCONT, in case it is paused): a graceful stop; the node hands
    /// leadership over if it leads, then exits 0. Reap it with [`Launcher::reap`].
    pub fn stop(&self, id: u64) -> Result<()> {
        self.signal(id, Signal::SIGCONT).ok();
        self.signal(id, Signal::SIGTERM)
    }

    /// SIGSTOP: a long GC pause.
    pub fn pause(&self, id: u64) -> Result<()> {
        self.signal(id, Signal::SIGSTOP)
    }

    pub fn resume(&self, id: u64) -> Result<()> {
        self.signal(id, Signal::SIGCONT)
    }

    /// Reaps children that exited on their own; returns them.
    pub fn reap(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut gone = Vec::new();
        for (id, c) in self.children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                gone.push((*id, status));
            }
        }
        for (id, _) in &gone {
            self.children.remove(id);
        }
        gone
    }

    /// Stops every node at once: SIGKILL after resuming paused ones (every acknowledged
    /// write is already durable, and SIGTERM's graceful stop would only pass leadership
    /// around among nodes that are all stopping); all children are reaped.
    pub fn stop_all(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            let _ = self.kill9(id);
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ports_stay_outside_the_ephemeral_range() {
        assert_eq!(outside_ephemeral((32768, 60999)).unwrap(), (10000, 32768));
        assert_eq!(outside_ephemeral((1024, 40000)).unwrap(), (40001, 65535));
        assert!(outside_ephemeral((1024, 65000)).is_err());
        let ports = free_fixed_ports(4).unwrap();
        let (lo, hi) = fixed_port_range().unwrap();
        assert!(ports.iter().all(|p| (lo..hi).contains(p)), "{ports:?} in {lo}..{hi}");
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 4, "{ports:?}");
    }
}
