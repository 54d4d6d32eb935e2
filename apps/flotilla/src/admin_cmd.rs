//! `flotilla member add|remove|list`, `flotilla transfer-leader` and `flotilla snapshot`:
//! the admin API of INTERFACE.md from the command line.
//!
//! Member and transfer calls go to the leader: the command tries the endpoints in turn and
//! follows `307` redirects to the leader (re-sending the body), and retries while the
//! cluster has no leader (`503`). A snapshot acts on the node it is sent to: it is sent to
//! the first endpoint only, never redirected; with `--save` the node first catches up with
//! every write acknowledged before the request (`?consistency=linearizable`), unless
//! `--stale`. When the nodes require an admin token, set
//! `FLOTILLA_ADMIN_TOKEN` (the variable `flotilla node --admin-token` reads) for these too.
//! For a cluster that serves HTTPS with its own CA, give `--cacert` (or `FLOTILLA_CACERT`).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client_cmd::{CaCertArg, endpoints};
use ureq::tls::TlsConfig;

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103";
/// Adding a voter waits for it to catch up; give the cluster time to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to keep retrying while no leader is known.
const RETRY_FOR: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 5;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Add a node: as a learner, which is promoted to voter once it has caught up (unless
    /// --learner). The node must be running (e.g. `flotilla node --join URL`).
    Add {
        /// The new node's id (positive, never used before in this cluster).
        id: u64,
        /// Its raft transport address, HOST:PORT.
        #[arg(long)]
        raft_addr: String,
        /// Its HTTP API address, HOST:PORT.
        #[arg(long)]
        api_addr: String,
        /// Keep it a learner (no vote).
        #[arg(long)]
        learner: bool,
        #[arg(long, default_value = DEFAULT_ENDPOINTS)]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
    /// Remove a member. Removing the leader makes it hand over to another voter first.
    Remove {
        id: u64,
        #[arg(long, default_value = DEFAULT_ENDPOINTS)]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
    /// The members as the first reachable node sees them.
    List {
        #[arg(long, default_value = DEFAULT_ENDPOINTS)]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The voter that should lead.
    pub to: u64,
    #[arg(long, default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: String,
    #[command(flatten)]
    pub ca: CaCertArg,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The node to snapshot (URL or HOST:PORT of its API); its log is compacted.
    #[arg(long, default_value = "127.0.0.1:8101")]
    pub node: String,
    /// Also download the snapshot into this file (a backup: `flotilla restore` starts a
    /// new cluster from it). Written as FILE.part, checked, synced, then renamed.
    #[arg(long, value_name = "FILE")]
    pub save: Option<std::path::PathBuf>,
    /// With --save: snapshot what the node has applied, without first making it hold every
    /// write acknowledged before the request (no leader needed; a follower's backup may then
    /// miss the last few writes). Without --save the snapshot is always the node's own.
    #[arg(long, requires = "save")]
    pub stale: bool,
    #[command(flatten)]
    pub ca: CaCertArg,
}

pub fn run_member(cmd: MemberCmd) -> Result<()> {
    let answer = match cmd {
        MemberCmd::Add { id, raft_addr, api_addr, learner, endpoints: eps, ca } => {
            let body = json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr,
                              "voter": !learner});
            let tls = ca.tls_config()?;
            leader_call(&tls, "POST", "/v1/admin/members", Some(&body), &endpoints(&eps))?
        }
        MemberCmd::Remove { id, endpoints: eps, ca } => {
            let path = format!("/v1/admin/members/{id}");
            leader_call(&ca.tls_config()?, "DELETE", &path, None, &endpoints(&eps))?
        }
        MemberCmd::List { endpoints: eps, ca } => {
            let tls = ca.tls_config()?;
            let mut last = anyhow!("no endpoint given");
            for ep in endpoints(&eps) {
                match call(&tls, "GET", &format!("{ep}/v1/status"), None) {
                    Ok((200, v, _)) => {
                        print_members(&v);
                        return Ok(());
                    }
                    Ok((s, v, _)) => last = anyhow!("{ep} answered {s}: {v}"),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
    };
    print_members(&answer);
    Ok(())
}

pub fn run_transfer(a: TransferArgs) -> Result<()> {
    let body = json!({"to": a.to});
    let eps = endpoints(&a.endpoints);
    let v =
        leader_call(&a.ca.tls_config()?, "POST", "/v1/admin/transfer-leader", Some(&body), &eps)?;
    println!("{v}");
    Ok(())
}

pub fn run_snapshot(a: SnapshotArgs) -> Result<()> {
    let ep = endpoints(&a.node).into_iter().next().ok_or_else(|| anyhow!("--node is empty"))?;
    let tls = a.ca.tls_config()?;
    // A backup holds every write acknowledged before it was asked for, from any node; a
    // plain snapshot (log compaction) is the node's own business.
    let consistency = if a.save.is_some() && !a.stale { "linearizable" } else { "stale" };
    let url = format!("{ep}/v1/admin/snapshot?consistency={consistency}");
    let v = match call(&tls, "POST", &url, None)? {
        (200, v, _) => v,
        (s, v, _) => return Err(error_of(s, &v)),
    };
    match &a.save {
        None => println!("{v}"),
        Some(path) => println!("{}", save_snapshot(&tls, &ep, path)?),
    }
    Ok(())
}

/// Downloads the node's current snapshot (`GET /v1/admin/snapshot`) into `path`: into
/// `path.part` first, its length and CRC32C checked against the node's headers, synced,
/// then renamed. The node may have made a newer snapshot since the POST; that one is saved.
fn save_snapshot(tls: &TlsConfig, ep: &str, path: &std::path::Path) -> Result<Value> {
    use std::io::{Read, Write};
    let agent = ureq::Agent::config_builder()
        .tls_config(tls.clone())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        // A download of any size, as long as it moves.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let mut req = agent.get(&format!("{ep}/v1/admin/snapshot"));
    if let Some(a) = admin_authorization() {
        req = req.header("Authorization", &a);
    }
    let mut resp = req.call().map_err(|e| anyhow!("downloading the snapshot from {ep}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let v = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        return Err(error_of(status, &v));
    }
    let header = |name: &str| -> Result<u64> {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("the node's answer lacks the header {name}"))
    };
    let index = header(flotilla_node::http::SNAPSHOT_INDEX_HEADER)?;
    let term = header(flotilla_node::http::SNAPSHOT_TERM_HEADER)?;
    let checksum = header(flotilla_node::http::SNAPSHOT_CHECKSUM_HEADER)?;
    let part = path.with_extension("part");
    let mut out = std::fs::File::create(&part).map_err(|e| anyhow!("creating {part:?}: {e}"))?;
    let (mut crc, mut len) = (0u32, 0u64);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let copied: Result<()> = (|| loop {
        let n = reader.read(&mut buf).map_err(|e| anyhow!("downloading: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
        out.write_all(&buf[..n]).map_err(|e| anyhow!("writing {part:?}: {e}"))?;
    })();
    let checked = copied.and_then(|()| {
        if u64::from(crc) != checksum {
            bail!("the download's CRC32C {crc} is not the node's {checksum}: not saved");
        }
        out.sync_all().map_err(|e| anyhow!("syncing {part:?}: {e}"))?;
        std::fs::rename(&part, path).map_err(|e| anyhow!("renaming {part:?}: {e}"))
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    Ok(json!({"index": index, "term": term, "bytes": len, "checksum": checksum,
              "file": path.display().to_string()}))
}

fn print_members(v: &Value) {
    let Some(members) = v["members"].as_array() else {
        println!("{v}");
        return;
    };
    println!("{:<6} {:<8} {:<24} {:<24}", "id", "role", "raft", "api");
    for m in members {
        let role = if m["voter"] == true { "voter" } else { "learner" };
        let s = |k: &str| m[k].as_str().unwrap_or("-").to_string();
        let id = m["id"].as_u64().map_or("-".to_string(), |i| i.to_string());
        println!("{id:<6} {role:<8} {:<24} {:<24}", s("raft_addr"), s("api_addr"));
    }
    if let Some(i) = v["index"].as_u64() {
        println!("committed at index {i}");
    }
}

/// A leader-only call: tries `eps` in turn, follows redirects to the leader, and retries
/// while no leader is known. Returns the 200 answer's body.
fn leader_call(
    tls: &TlsConfig,
    method: &str,
    path: &str,
    body: Option<&Value>,
    eps: &[String],
) -> Result<Value> {
    if eps.is_empty() {
        bail!("no endpoint given");
    }
    let deadline = Instant::now() + RETRY_FOR;
    let mut i = 0usize;
    loop {
        let mut url = format!("{}{path}", eps[i % eps.len()]);
        let mut last: Result<(u16, Value)> = Err(anyhow!("no answer"));
        for _ in 0..=MAX_REDIRECTS {
            match call(tls, method, &url, body) {
                Ok((307, v, Some(loc))) => {
                    last = Ok((307, v));
                    url = loc;
                }
                Ok((s, v, _)) => {
                    last = Ok((s, v));
                    break;
                }
                Err(e) => {
                    last = Err(e);
                    break;
                }
            }
        }
        match last {
            Ok((200, v)) => return Ok(v),
            // No leader (yet): an election is running; try again, elsewhere.
            Ok((503, _)) | Ok((307, _)) | Err(_) if Instant::now() < deadline => {}
            Ok((s, v)) => return Err(error_of(s, &v)),
            Err(e) => return Err(e),
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn error_of(status: u16, v: &Value) -> anyhow::Error {
    let code = v["error"].as_str().unwrap_or("error");
    let message = v["message"].as_str().unwrap_or("");
    anyhow!("{status} {code}: {message}")
}

/// The `Authorization` header for the nodes' admin bearer token (`--admin-token`), taken
/// from the variable the nodes read, if it is set.
fn admin_authorization() -> Option<String> {
    let token = std::env::var("FLOTILLA_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty())?;
    Some(format!("Bearer {}", token.trim()))
}

/// One request, no redirect following: (status, JSON body or Null, Location).
fn call(
    tls: &TlsConfig,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<(u16, Value, Option<String>)> {
    let agent = ureq::Agent::config_builder()
        .tls_config(tls.clone())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .new_agent();
    let auth = admin_authorization();
    let resp = match method {
        "POST" => {
            let mut req = agent.post(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match body {
                Some(b) => req.send_json(b),
                None => req.send_empty(),
            }
        }
        "DELETE" => {
            let mut req = agent.delete(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        _ => agent.get(url).call(),
    };
    let mut resp = resp.map_err(|e| anyhow!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(String::from);
    let v = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    Ok((status, v, location))
}
