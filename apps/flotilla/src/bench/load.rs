//! The closed-loop load: `clients` tasks, each with one request outstanding, for a warm-up
//! and then a measured window. Latency is recorded for requests that complete inside the
//! window; throughput is those requests over the window's length.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use tokio::time::Instant;

use super::hist::{Latencies, Summary};
use super::http::{self, OpError};
use super::{Shape, Target, TargetArgs, Workload, cluster, etcd};
use crate::check::rng::Rng;

/// Per-request deadline: a request slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed request, so an election does not turn into a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// Requests in flight while preloading the key space.
const PRELOAD_CONCURRENCY: usize = 64;

#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub target: Target,
    pub workload: Workload,
    pub clients: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub key_size: usize,
    pub value_size: usize,
    pub keys: u64,
    pub read_percent: u8,
    pub endpoint: String,
    pub ops: u64,
    pub ops_per_s: f64,
    #[serde(flatten)]
    pub latency: Summary,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub get_misses: u64,
    /// Peak VmRSS per node process during the window.
    pub rss_peak_kib: BTreeMap<u32, u64>,
    /// CPU use per node process during the window, % of one core.
    pub node_cpu_pct: BTreeMap<u32, f64>,
    /// The bench's own CPU use during the run, % of one core.
    pub client_cpu_pct: f64,
    pub loadavg: String,
}

/// Key `i` of the key space: `k` and zero-padded digits, exactly `size` bytes.
pub fn key(i: u64, size: usize) -> String {
    format!("k{:0w$}", i, w = size.saturating_sub(1))
}

/// The value every write stores: `size` fixed pseudo-random printable bytes.
pub fn value(size: usize) -> Bytes {
    let mut r = Rng::new(42);
    (0..size).map(|_| b'a' + (r.below(26) as u8)).collect::<Vec<u8>>().into()
}

/// One client's connection to the target.
pub enum Client {
    Flotilla(http::Conn),
    Etcd(etcd::EtcdConn),
}

impl Client {
    pub async fn put(&mut self, key: &str, value: &Bytes) -> Result<(), OpError> {
        match self {
            Client::Flotilla(c) => {
                let path = format!("/v1/kv/{key}");
                c.call(Method::PUT, &path, value.clone()).await.map(|_| ())
            }
            Client::Etcd(c) => {
                c.put(Bytes::copy_from_slice(key.as_bytes()), value.clone()).await.map(|_| ())
            }
        }
    }

    /// A linearizable read; `Ok(false)` when the key is absent.
    pub async fn get(&mut self, key: &str) -> Result<bool, OpError> {
        match self {
            Client::Flotilla(c) => {
                let path = format!("/v1/kv/{key}");
                c.call(Method::GET, &path, Bytes::new()).await.map(|a| a.status.is_success())
            }
            Client::Etcd(c) => c.get(Bytes::copy_from_slice(key.as_bytes())).await,
        }
    }
}

/// Makes clients for the target's leader.
pub struct Connector {
    target: Target,
    leader: String,
    channels: Vec<tonic::transport::Channel>,
    /// Flotilla over HTTP/2: the connections the clients share (empty: HTTP/1.1, one each).
    h2: Vec<http::Sender>,
    next: usize,
}

impl Connector {
    pub async fn new(t: &TargetArgs, endpoints: &[String]) -> Result<Connector> {
        let eps: Vec<String> = endpoints.iter().map(|e| http::endpoint_addr(e)).collect();
        match t.target {
            Target::Flotilla => {
                let leader = http::find_leader(&eps, Duration::from_secs(15)).await?;
                let mut h2 = Vec::new();
                for _ in 0..t.h2_conns {
                    h2.push(
                        http::connect(&leader, true).await.map_err(|e| anyhow::anyhow!("{e}"))?,
                    );
                }
                Ok(Connector { target: t.target, leader, channels: Vec::new(), h2, next: 0 })
            }
            Target::Etcd => {
                let (leader, _, _) = etcd::find_leader(&eps, Duration::from_secs(15)).await?;
                let mut channels = Vec::new();
                for _ in 0..t.etcd_conns.max(1) {
                    channels.push(etcd::channel(&leader).await?);
                }
                Ok(Connector { target: t.target, leader, channels, h2: Vec::new(), next: 0 })
            }
        }
    }

    pub fn leader(&self) -> &str {
        &self.leader
    }

    pub fn client(&mut self) -> Client {
        match self.target {
            Target::Flotilla if self.h2.is_empty() => {
                Client::Flotilla(http::Conn::new(&self.leader, REQUEST_TIMEOUT))
            }
            Target::Flotilla => {
                let s = self.h2[self.next % self.h2.len()].share();
                self.next += 1;
                Client::Flotilla(http::Conn::with(&self.leader, REQUEST_TIMEOUT, true, s))
            }
            Target::Etcd => {
                let ch = self.channels[self.next % self.channels.len()].clone();
                self.next += 1;
                Client::Etcd(etcd::EtcdConn::new(ch, REQUEST_TIMEOUT))
            }
        }
    }
}

/// Writes every key of the key space unless its last key is already there.
async fn preload(conn: &mut Connector, shape: &Shape) -> Result<()> {
    let mut probe = conn.client();
    let last = key(shape.keys - 1, shape.key_size);
    if probe.get(&last).await.map_err(|e| anyhow!("preload check: {e}"))? {
        return Ok(());
    }
    let next = Arc::new(AtomicU64::new(0));
    let value = value(shape.value_size);
    let mut tasks = Vec::new();
    for _ in 0..PRELOAD_CONCURRENCY.min(shape.keys as usize) {
        let mut c = conn.client();
        let (next, value, n, ks) = (next.clone(), value.clone(), shape.keys, shape.key_size);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), OpError>(());
                }
                let k = key(i, ks);
                let mut tries = 0;
                while let Err(e) = c.put(&k, &value).await {
                    tries += 1;
                    if tries > 20 {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| anyhow!("preload: {e}"))?;
    }
    Ok(())
}

struct ClientOut {
    lat: Latencies,
    errors: BTreeMap<String, u64>,
    misses: u64,
}

/// Runs one workload and measures it. `progress`: draw a progress line on stderr.
pub async fn run(
    w: Workload,
    t: &TargetArgs,
    shape: &Shape,
    endpoints: &[String],
    pids: &[u32],
    progress: bool,
) -> Result<LoadResult> {
    let mut conn = Connector::new(t, endpoints).await?;
    if w != Workload::Put {
        preload(&mut conn, shape).await?;
    }
    let mut pids = pids.to_vec();
    if t.target == Target::Flotilla {
        pids.extend(local_flotilla_pids(endpoints).await);
    }
    pids.sort_unstable();
    pids.dedup();

    let t0 = Instant::now() + Duration::from_millis(200);
    let t_meas = t0 + shape.warmup;
    let t_end = t_meas + shape.duration;
    let done_ops = Arc::new(AtomicU64::new(0));
    let done_errs = Arc::new(AtomicU64::new(0));
    let value = value(shape.value_size);
    let read_pct = match w {
        Workload::Put => 0,
        Workload::Get => 100,
        Workload::Mixed => u64::from(shape.read_percent),
    };
    let ru0 = rusage_s();
    let mut tasks = Vec::new();
    for cid in 0..shape.clients {
        let mut c = conn.client();
        let (ops, errs, value) = (done_ops.clone(), done_errs.clone(), value.clone());
        let (keys, ks) = (shape.keys, shape.key_size);
        tasks.push(tokio::spawn(async move {
            let mut out = ClientOut { lat: Latencies::new(), errors: BTreeMap::new(), misses: 0 };
            let mut rng = Rng::new(0x5EED ^ (cid as u64).wrapping_mul(0x1000_0001));
            tokio::time::sleep_until(t0).await;
            loop {
                let k = key(rng.below(keys), ks);
                let read = rng.below(100) < read_pct;
                let s = Instant::now();
                if s >= t_end {
                    return out;
                }
                let r = if read { c.get(&k).await } else { c.put(&k, &value).await.map(|_| true) };
                let e = Instant::now();
                let in_window = e >= t_meas && e <= t_end;
                match r {
                    Ok(found) => {
                        if in_window {
                            out.lat.record_us((e - s).as_micros() as u64);
                            ops.fetch_add(1, Ordering::Relaxed);
                            if !found {
                                out.misses += 1;
                            }
                        }
                    }
                    Err(err) => {
                        if in_window {
                            *out.errors.entry(err.kind()).or_default() += 1;
                            errs.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        }));
    }

    // Sampler and progress line.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pids, ops, errs) =
            (stop.clone(), pids.clone(), done_ops.clone(), done_errs.clone());
        let label = format!("{:?} {:?} c={}", t.target, w, shape.clients).to_lowercase();
        let total = (t_end - t0).as_secs_f64();
        tokio::spawn(async move {
            let mut peak: BTreeMap<u32, u64> = pids.iter().map(|p| (*p, 0)).collect();
            let mut cpu0: Option<BTreeMap<u32, f64>> = None;
            let mut last = (Instant::now(), 0u64);
            let mut rate = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= t_meas {
                    if cpu0.is_none() {
                        cpu0 = Some(pids.iter().map(|p| (*p, cluster::cpu_s(*p))).collect());
                    }
                    if now <= t_end {
                        for p in &pids {
                            let r = cluster::rss_kib(*p);
                            let e = peak.entry(*p).or_default();
                            *e = (*e).max(r);
                        }
                    }
                }
                if progress {
                    let n = ops.load(Ordering::Relaxed);
                    let dt = (now - last.0).as_secs_f64();
                    if dt > 0.0 && now > t_meas {
                        rate = (n - last.1) as f64 / dt;
                    }
                    last = (now, n);
                    let el = now.saturating_duration_since(t0).as_secs_f64().min(total);
                    let phase = if now < t_meas { "warm-up" } else { "measuring" };
                    let width = 24usize;
                    let fill = ((el / total) * width as f64) as usize;
                    eprint!(
                        "\r{label:<22} [{}{}] {el:5.1}/{total:.1}s {phase:<9} {n:>9} ops {rate:>9.0}/s  errors {}   ",
                        "#".repeat(fill.min(width)),
                        " ".repeat(width - fill.min(width)),
                        errs.load(Ordering::Relaxed)
                    );
                    let _ = std::io::stderr().flush();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if progress {
                eprintln!();
            }
            let cpu1: BTreeMap<u32, f64> = pids.iter().map(|p| (*p, cluster::cpu_s(*p))).collect();
            (peak, cpu0.unwrap_or_default(), cpu1)
        })
    };

    let mut lat = Latencies::new();
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut misses = 0;
    for task in tasks {
        let out = task.await?;
        lat.merge(&out.lat);
        for (k, v) in out.errors {
            *error_kinds.entry(k).or_default() += v;
        }
        misses += out.misses;
    }
    let ru1 = rusage_s();
    stop.store(true, Ordering::Relaxed);
    let (peak, cpu0, cpu1) = sampler.await?;
    let window = shape.duration.as_secs_f64();
    let node_cpu_pct = cpu1
        .iter()
        .map(|(p, c1)| {
            let c0 = cpu0.get(p).copied().unwrap_or(*c1);
            (*p, ((c1 - c0) / window * 1000.0).round() / 10.0)
        })
        .collect();
    let total = (t_end - t0).as_secs_f64();
    let ops = lat.count();
    Ok(LoadResult {
        target: t.target,
        workload: w,
        clients: shape.clients,
        duration_s: window,
        warmup_s: shape.warmup.as_secs_f64(),
        key_size: shape.key_size,
        value_size: shape.value_size,
        keys: shape.keys,
        read_percent: read_pct as u8,
        endpoint: conn.leader().to_string(),
        ops,
        ops_per_s: (ops as f64 / window * 10.0).round() / 10.0,
        latency: lat.summary(),
        errors: error_kinds.values().sum(),
        error_kinds,
        get_misses: misses,
        rss_peak_kib: peak,
        node_cpu_pct,
        client_cpu_pct: ((ru1 - ru0) / total * 1000.0).round() / 10.0,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    })
}

/// PIDs of Flotilla nodes among `endpoints` that run on this machine.
async fn local_flotilla_pids(endpoints: &[String]) -> Vec<u32> {
    let mut out = Vec::new();
    for ep in endpoints {
        let addr = http::endpoint_addr(ep);
        if let Ok(st) = http::get_json(&addr, "/v1/status", Duration::from_millis(500)).await
            && let Some(pid) = st["pid"].as_u64()
            && std::path::Path::new(&format!("/proc/{pid}/status")).exists()
        {
            out.push(pid as u32);
        }
    }
    out
}

/// This process's CPU seconds (user + system).
fn rusage_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key(7, 16), "k000000000000007");
        assert_eq!(key(123, 16).len(), 16);
        assert_eq!(value(128).len(), 128);
    }
}
