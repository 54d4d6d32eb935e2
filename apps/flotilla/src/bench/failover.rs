//! `flotilla bench failover`: on a local 3-node cluster it starts itself (Flotilla or etcd),
//! repeatedly SIGKILLs the leader under a write load and measures, per run:
//!
//! - **new leader**: kill → the first time a survivor's status names a leader of a newer
//!   term (survivors polled every `--poll-ms`);
//! - **unavailability** (client-observed): kill → the first write acknowledged in a newer
//!   term. Probe writes leave every `--probe-ms` towards the survivors, alternately, each
//!   on its own (they overlap, so one stuck request never hides the moment writes work
//!   again); a Flotilla follower's `307` is followed to the leader, an etcd follower
//!   forwards by itself. Meanwhile `--writers` closed-loop writers keep the cluster busy.
//!
//! Then the killed node is restarted on its data dir and the bench waits until it has
//! caught up before the next run. The same measure as `shared/anchors/etcd/failover.py`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::cluster::{EtcdCluster, LocalCluster};
use super::http::{self, Conn};
use super::load::{key, value};
use super::{Target, etcd, parse_duration, report};

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    #[arg(long, value_enum, default_value_t = Target::Flotilla)]
    pub target: Target,
    /// How many leader kills.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// A probe write leaves every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    pub probe_ms: u64,
    /// Survivors' status is polled every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Closed-loop writers that keep the cluster under load.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Load before each kill.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub before: Duration,
    /// Give up on a run after this long without a write in a new term.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// etcd's --heartbeat-interval (its default: 100).
    #[arg(long, default_value_t = 100)]
    pub etcd_heartbeat_ms: u64,
    /// etcd's --election-timeout (its default: 1000).
    #[arg(long, default_value_t = 1000)]
    pub etcd_election_ms: u64,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// Extra `flotilla node` arguments (whitespace separated).
    #[arg(long, default_value = "")]
    pub node_args: String,
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Print JSON lines (one per run, then a summary) instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub killed: u64,
    pub old_term: u64,
    pub new_leader: Option<u64>,
    pub new_leader_ms: Option<f64>,
    pub unavailable_ms: Option<f64>,
    /// A survivor stopped naming the old leader (its election timer fired).
    pub detect_ms: Option<f64>,
    pub failed_probes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Distribution {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

pub fn distribution(v: &[f64]) -> Option<Distribution> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    let median =
        if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    Some(Distribution { n: s.len(), min: s[0], median, p90: q(0.9), max: s[s.len() - 1] })
}

pub fn run(a: FailoverArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let extra: Vec<String> = a.node_args.split_whitespace().map(str::to_string).collect();
        let mut cluster = match a.target {
            Target::Flotilla => LocalCluster::start_flotilla(None, a.base_port, extra).await?,
            Target::Etcd => {
                let mut args = vec![
                    "--heartbeat-interval".to_string(),
                    a.etcd_heartbeat_ms.to_string(),
                    "--election-timeout".to_string(),
                    a.etcd_election_ms.to_string(),
                ];
                args.extend(extra);
                let c = EtcdCluster::start(&a.etcd_bin, None, a.base_port.unwrap_or(24000), args)?;
                let c = LocalCluster::Etcd(c);
                c.wait_ready().await?;
                c
            }
        };
        let label = match a.target {
            Target::Flotilla => format!("flotilla {}", a.node_args).trim().to_string(),
            Target::Etcd => {
                format!("etcd heartbeat {} ms, election {} ms", a.etcd_heartbeat_ms, a.etcd_election_ms)
            }
        };
        let mut results = Vec::new();
        for i in 0..a.runs {
            let r = one_run(&a, &mut cluster, i).await.with_context(|| format!("run {i}"))?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "run {:>2}: killed node {} (term {}): new leader {} after {} ms, writes back after {} ms, {} failed probes",
                    r.run,
                    r.killed,
                    r.old_term,
                    r.new_leader.map_or("?".into(), |l| l.to_string()),
                    fmt_opt(r.new_leader_ms),
                    fmt_opt(r.unavailable_ms),
                    r.failed_probes
                );
            }
            results.push(r);
        }
        cluster.stop();
        let unavail: Vec<f64> = results.iter().filter_map(|r| r.unavailable_ms).collect();
        let elect: Vec<f64> = results.iter().filter_map(|r| r.new_leader_ms).collect();
        let summary = serde_json::json!({
            "summary": true, "target": a.target, "label": label, "runs": results.len(),
            "recovered": unavail.len(),
            "unavailable_ms": distribution(&unavail), "new_leader_ms": distribution(&elect),
            "unavailable_ms_all": unavail,
        });
        if a.json {
            println!("{summary}");
        } else {
            report::print_failover(&label, results.len(), distribution(&elect), distribution(&unavail));
        }
        Ok(())
    })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

/// Who leads now: (node id, term).
async fn leader_of(c: &LocalCluster, target: Target) -> Result<(u64, u64)> {
    let t = Duration::from_millis(500);
    for id in c.ids() {
        let ep = c.endpoint(id);
        match target {
            Target::Flotilla => {
                let st = http::get_json(&ep, "/v1/status", t).await?;
                if st["role"] == "leader" {
                    return Ok((id, st["term"].as_u64().unwrap_or(0)));
                }
            }
            Target::Etcd => {
                let ch = etcd::channel(&ep).await?;
                let st = etcd::EtcdConn::new(ch, t)
                    .status()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if st.leader != 0 && Some(st.leader) == st.header.as_ref().map(|h| h.member_id) {
                    return Ok((id, st.raft_term));
                }
            }
        }
    }
    bail!("no leader found")
}

/// Probe outcomes: (ack time, term) and failures.
#[derive(Default)]
struct Probes {
    acks: Vec<(Instant, u64)>,
    failed_after_kill: u64,
}

async fn one_run(a: &FailoverArgs, c: &mut LocalCluster, run: usize) -> Result<RunResult> {
    c.wait_ready().await?;
    let (old, old_term) = leader_of(c, a.target).await?;
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let surv_eps: Vec<String> = survivors.iter().map(|id| c.endpoint(*id)).collect();
    let all_eps = c.client_endpoints();
    let stop = Arc::new(AtomicBool::new(false));
    let val = value(128);

    // Background writers.
    let mut writers = Vec::new();
    for w in 0..a.writers {
        let (stop, eps, val, target) = (stop.clone(), all_eps.clone(), val.clone(), a.target);
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut ep_i = w;
            match target {
                Target::Flotilla => {
                    let mut conn = Conn::new(&eps[ep_i % eps.len()], Duration::from_secs(2));
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let path = format!("/v1/kv/{}", key(n % 10_000 + 10_000 * w as u64, 16));
                        if conn.call(Method::PUT, &path, val.clone()).await.is_err() {
                            ep_i += 1;
                            conn = Conn::new(&eps[ep_i % eps.len()], Duration::from_secs(2));
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                Target::Etcd => {
                    let mk = |i: usize| {
                        etcd::lazy_channel(&eps[i % eps.len()])
                            .map(|ch| etcd::EtcdConn::new(ch, Duration::from_secs(2)))
                    };
                    let Ok(mut conn) = mk(ep_i) else { return };
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let k = Bytes::from(key(n % 10_000 + 10_000 * w as u64, 16));
                        if conn.put(k, val.clone()).await.is_err() {
                            ep_i += 1;
                            let Ok(c2) = mk(ep_i) else { return };
                            conn = c2;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(a.before).await;

    // Status poller on the survivors.
    let t_kill_cell: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let poller = {
        let (stop, eps, target, poll) =
            (stop.clone(), surv_eps.clone(), a.target, Duration::from_millis(a.poll_ms));
        let survivors = survivors.clone();
        let t_kill_cell = t_kill_cell.clone();
        tokio::spawn(async move {
            let mut detect: Option<Instant> = None;
            let mut elected: Option<(Instant, u64)> = None;
            let t = Duration::from_millis(200);
            let etcd_conns: Vec<etcd::EtcdConn> = match target {
                Target::Etcd => eps
                    .iter()
                    .filter_map(|e| etcd::lazy_channel(e).ok())
                    .map(|ch| etcd::EtcdConn::new(ch, t))
                    .collect(),
                Target::Flotilla => Vec::new(),
            };
            // etcd names leaders by member id: learn the survivors' own ids first.
            let mut etcd_ids: Vec<u64> = Vec::new();
            for ec in &etcd_conns {
                let mut ec = ec.clone();
                if let Ok(st) = ec.status().await {
                    etcd_ids.push(st.header.map_or(0, |h| h.member_id));
                }
            }
            while !stop.load(Ordering::Relaxed) && elected.is_none() {
                for (i, ep) in eps.iter().enumerate() {
                    // (leader names someone other than the old leader, the new term and
                    // which survivor leads, if known)
                    let seen: Option<(bool, Option<u64>)> = match target {
                        Target::Flotilla => match http::get_json(ep, "/v1/status", t).await {
                            Ok(st) => {
                                let term = st["term"].as_u64().unwrap_or(0);
                                let leader = st["leader"].as_u64();
                                let changed = leader != Some(old) || term > old_term;
                                let new = leader.filter(|l| *l != old && term > old_term);
                                Some((changed, new))
                            }
                            Err(_) => None,
                        },
                        Target::Etcd => {
                            let mut ec = etcd_conns[i].clone();
                            match ec.status().await {
                                Ok(st) => {
                                    let changed = st.raft_term > old_term
                                        || !etcd_ids.is_empty() && st.leader == 0;
                                    let new =
                                        (st.leader != 0 && st.raft_term > old_term).then(|| {
                                            etcd_ids
                                                .iter()
                                                .position(|m| *m == st.leader)
                                                .map_or(0, |p| survivors[p])
                                        });
                                    Some((changed, new))
                                }
                                Err(_) => None,
                            }
                        }
                    };
                    let t_kill = *t_kill_cell.lock().await;
                    if let (Some(_), Some((changed, new))) = (t_kill, seen) {
                        let now = Instant::now();
                        if changed && detect.is_none() {
                            detect = Some(now);
                        }
                        if let Some(l) = new {
                            detect.get_or_insert(now);
                            elected = Some((now, l));
                            break;
                        }
                    }
                }
                tokio::time::sleep(poll).await;
            }
            (detect, elected)
        })
    };

    // Probes.
    let probes = Arc::new(std::sync::Mutex::new(Probes::default()));
    let recovered = Arc::new(tokio::sync::Notify::new());
    let prober = {
        let (stop, eps, probes, val, target, recovered) = (
            stop.clone(),
            surv_eps.clone(),
            probes.clone(),
            val.clone(),
            a.target,
            recovered.clone(),
        );
        let t_kill_cell = t_kill_cell.clone();
        let every = Duration::from_millis(a.probe_ms.max(1));
        tokio::spawn(async move {
            let etcd_conns: Vec<etcd::EtcdConn> = match target {
                Target::Etcd => eps
                    .iter()
                    .filter_map(|e| etcd::lazy_channel(e).ok())
                    .map(|ch| etcd::EtcdConn::new(ch, Duration::from_secs(2)))
                    .collect(),
                Target::Flotilla => Vec::new(),
            };
            let mut i = 0usize;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let (ep, probes, val, recovered) =
                    (eps[i % eps.len()].clone(), probes.clone(), val.clone(), recovered.clone());
                let k = key(900_000_000 + (run as u64) * 1_000_000 + i as u64, 16);
                let t_kill = *t_kill_cell.lock().await;
                let etcd_conn = etcd_conns.get(i % eps.len().max(1)).cloned();
                tokio::spawn(async move {
                    let term = match target {
                        Target::Flotilla => {
                            let mut c = Conn::new(&ep, Duration::from_secs(2));
                            c.call(Method::PUT, &format!("/v1/kv/{k}"), val).await.ok().and_then(
                                |a| {
                                    serde_json::from_slice::<serde_json::Value>(&a.body)
                                        .ok()
                                        .and_then(|v| v["term"].as_u64())
                                },
                            )
                        }
                        Target::Etcd => match etcd_conn {
                            Some(mut c) => c.put(Bytes::from(k), val).await.ok(),
                            None => None,
                        },
                    };
                    let now = Instant::now();
                    let mut p = probes.lock().unwrap_or_else(|e| e.into_inner());
                    match term {
                        Some(term) => {
                            p.acks.push((now, term));
                            if t_kill.is_some() || term > old_term {
                                recovered.notify_one();
                            }
                        }
                        None => {
                            if t_kill.is_some() {
                                p.failed_after_kill += 1;
                            }
                        }
                    }
                });
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_kill = Instant::now();
    *t_kill_cell.lock().await = Some(t_kill);
    c.kill9(old)?;
    let until = t_kill + a.max_wait;
    let first_new = loop {
        let found = {
            let p = probes.lock().unwrap_or_else(|e| e.into_inner());
            p.acks.iter().filter(|(t, term)| *t > t_kill && *term > old_term).map(|(t, _)| *t).min()
        };
        if found.is_some() || Instant::now() >= until {
            break found;
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), recovered.notified()).await;
    };
    // Let the poller see the leader if it has not yet (it stops at `stop`).
    let poll_deadline = Instant::now() + Duration::from_secs(2);
    while !poller.is_finished() && Instant::now() < poll_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (detect, elected) = poller.await?;
    prober.await?;
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(3), w).await;
    }
    let failed = probes.lock().unwrap_or_else(|e| e.into_inner()).failed_after_kill;
    let ms = |t: Instant| ((t - t_kill).as_secs_f64() * 10_000.0).round() / 10.0;
    let res = RunResult {
        run,
        killed: old,
        old_term,
        new_leader: elected.map(|(_, l)| l),
        new_leader_ms: elected.map(|(t, _)| ms(t)),
        unavailable_ms: first_new.map(ms),
        detect_ms: detect.map(ms),
        failed_probes: failed,
    };
    c.restart(old)?;
    c.wait_ready().await?;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_of_a_few() {
        let d = distribution(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.min, d.median, d.max), (1.0, 3.0, 5.0));
        assert!(distribution(&[]).is_none());
    }
}
