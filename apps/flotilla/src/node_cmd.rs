//! `flotilla node`: one node process.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::{Context, Result, anyhow};
use clap::Args;
use flotilla_kv::KvStateMachine;
use flotilla_log::{FjallLogStore, Identity, LogStore};
use flotilla_node::http::NodeRoutes;
use flotilla_node::{ForwardMode, NodeConfig, TlsSettings, start_node};
use flotilla_raft::NodeId;

use crate::node_ident;

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id (a positive integer, never reused).
    #[arg(long, required_unless_present = "id_from_hostname", conflicts_with = "id_from_hostname")]
    pub id: Option<u64>,
    /// Take the id from the host name's StatefulSet ordinal: flotilla-2 is id 3.
    #[arg(long)]
    pub id_from_hostname: bool,
    /// Where the node keeps its log, state machine and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Raft transport bind address (HOST:PORT). Default: the --initial-cluster entry, else
    /// 127.0.0.1:(7100+id).
    #[arg(long)]
    pub listen: Option<String>,
    /// HTTP API bind address (HOST:PORT). Default: the entry, else 127.0.0.1:(8100+id).
    #[arg(long)]
    pub api: Option<String>,
    /// Address peers dial for the raft transport (goes into the membership). Default: this
    /// node's --initial-cluster entry, else --listen.
    #[arg(long)]
    pub advertise_peer: Option<String>,
    /// Address clients and peers use for the API. Default: the entry, else --api.
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// What a follower does with a leader-only request: auto (proxy when reached by another
    /// name than --advertise-api, else 307), always (proxy) or never (307).
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_value = "auto", default_missing_value = "always")]
    pub forward: ForwardMode,
    /// ID=RAFT_HOST:PORT@API_HOST:PORT,... (not needed with --join).
    #[arg(long, default_value = "")]
    pub initial_cluster: String,
    /// Ask the cluster at this API URL to add this node (learner, then voter).
    #[arg(long)]
    pub join: Option<String>,
    /// Randomized election timeout range in milliseconds, e.g. 150-300.
    #[arg(long, default_value = "150-300")]
    pub election_timeout_ms: String,
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Allow POST/DELETE /v1/admin/faults.
    #[arg(long)]
    pub enable_fault_injection: bool,
    /// Require `Authorization: Bearer TOKEN` on /v1/admin/* (prefer the environment
    /// variable: a command line is visible to every local user).
    #[arg(long, env = "FLOTILLA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Shared secret that peers must prove they know (never sent on the wire).
    #[arg(long, env = "FLOTILLA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Name of the cluster; data dirs and peers of another cluster are refused.
    #[arg(long, default_value = "flotilla")]
    pub cluster_id: String,
    /// Snapshot (and compact the log) every this many applied entries; 0 disables.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_entries: u64,
    /// Length of the core's tick in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// How long a client request may wait before 504 timeout, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// TLS (with --tls-key and --tls-ca): this node's certificate chain, PEM. Peers then
    /// talk mutual TLS and the API serves HTTPS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert, PEM.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA certificate(s), PEM, that peers' certificates must chain to.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Threads serving the HTTP API (1-64). Default: the machine's cores, at most 4.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub http_threads: Option<u16>,
}

impl NodeArgs {
    /// `--http-threads`, or the machine's cores capped at 4: the leader serves every client,
    /// and a second thread raised linearizable reads by 13–19 % on 2 cores, while writes
    /// are bound elsewhere (docs/benchmarks.md).
    pub fn http_threads(&self) -> usize {
        self.http_threads
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4))
    }
}

fn parse_range(s: &str) -> Result<(u64, u64)> {
    let (a, b) = s.split_once('-').ok_or_else(|| anyhow!("expected MIN-MAX, got {s:?}"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || b < a {
        return Err(anyhow!("election timeout range {s:?} must be positive and MIN <= MAX"));
    }
    Ok((a, b))
}

/// Checks arguments; errors here exit with code 2.
pub fn build_config(a: &NodeArgs) -> Result<NodeConfig> {
    let id = node_ident::node_id(a.id, a.id_from_hostname)?;
    if id == 0 {
        return Err(anyhow!("--id must be a positive integer"));
    }
    let initial_cluster = NodeConfig::parse_initial_cluster(&a.initial_cluster)
        .map_err(|e| anyhow!("--initial-cluster: {e}"))?;
    if initial_cluster.is_empty() && a.join.is_none() {
        return Err(anyhow!(
            "give --initial-cluster (a new or existing cluster) or --join API_URL"
        ));
    }
    let me = initial_cluster.iter().find(|(i, _)| i.0 == id).map(|(_, addr)| addr);
    // A node named in --initial-cluster bootstraps from it (or restarts from its data
    // dir) even when --join is given too: a StatefulSet hands every pod the same
    // arguments, and only pods added later must ask to join.
    let join = if me.is_some() { None } else { a.join.clone() };
    if !initial_cluster.is_empty() && me.is_none() && join.is_none() {
        return Err(anyhow!("--initial-cluster does not name this node's id {id}"));
    }
    let flags = node_ident::AddrFlags {
        listen: a.listen.as_deref(),
        api: a.api.as_deref(),
        advertise_peer: a.advertise_peer.as_deref(),
        advertise_api: a.advertise_api.as_deref(),
    };
    let addrs = node_ident::addresses(id, me, &flags)?;
    let election_timeout_ms = parse_range(&a.election_timeout_ms)?;
    if a.admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
    {
        return Err(anyhow!("--admin-token must be non-empty and without spaces"));
    }
    if a.heartbeat_ms == 0 || a.heartbeat_ms >= election_timeout_ms.0 {
        return Err(anyhow!("--heartbeat-ms must be positive and below the election timeout"));
    }
    Ok(NodeConfig {
        id: NodeId(id),
        data_dir: a.data_dir.clone(),
        listen: addrs.listen,
        api: addrs.api,
        advertise_peer: addrs.advertise_peer,
        advertise_api: addrs.advertise_api,
        forward: a.forward,
        initial_cluster: if join.is_some() { Vec::new() } else { initial_cluster },
        join,
        cluster_id: a.cluster_id.clone(),
        cluster_secret: a.cluster_secret.clone().map(String::into_bytes),
        election_timeout_ms,
        heartbeat_ms: a.heartbeat_ms,
        tick_ms: a.tick_ms.max(1),
        enable_fault_injection: a.enable_fault_injection,
        admin_token: a.admin_token.clone(),
        snapshot_entries: a.snapshot_entries,
        request_timeout: Duration::from_millis(a.request_timeout_ms.max(100)),
        tls: TlsSettings::from_flags(
            a.tls_cert.as_deref(),
            a.tls_key.as_deref(),
            a.tls_ca.as_deref(),
        )
        .map_err(|e| anyhow!("{e}"))?,
    })
}

/// Written (and synced) into the data dir when the node learns it was removed. A removed
/// node restarted with the same arguments (Kubernetes always restarts containers; every
/// pod carries `--join`) must not ask to be added again: ids are never reused.
const REMOVED_MARKER: &str = "removed";

fn mark_removed(data_dir: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::File::create(data_dir.join(REMOVED_MARKER))?;
    f.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// On a leader that is stopping: hands leadership to the voter with the highest match
/// index (waiting for it to catch up first if it must, at most a few election timeouts;
/// see `NodeHandle::transfer_leader`). Anything else has nothing to hand over.
async fn hand_leadership_over(handle: &flotilla_node::NodeHandle, me: NodeId) {
    let st = handle.status().await;
    if st["role"] != "leader" {
        return;
    }
    let successor = st["replication"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["voter"] == true)
        .max_by_key(|p| p["match_index"].as_u64().unwrap_or(0))
        .and_then(|p| p["id"].as_u64());
    let Some(to) = successor else {
        eprintln!("flotilla node {me}: leading with no other voter: nothing to hand over");
        return;
    };
    eprintln!("flotilla node {me}: handing leadership to node {to} before stopping");
    match handle.transfer_leader(NodeId(to)).await {
        Ok(to) => eprintln!("flotilla node {me}: node {to} leads now"),
        Err(e) => eprintln!(
            "flotilla node {me}: the hand-over to node {to} failed ({e:?}); stopping anyway"
        ),
    }
}

/// Turns off glibc's fastbins for this process (`mallopt(M_MXFAST, 0)`), before any thread
/// starts. glibc keeps small freed chunks in per-arena fastbins and merges them only when a
/// later large allocation from that arena runs `malloc_consolidate`. When the release thread
/// freed the million entries a snapshot had compacted (allocated by the raft thread), the
/// raft thread's next large allocation merged them all: 70–190 ms in `malloc_consolidate`
/// and `unlink_chunk` on the raft loop, heartbeats with it (`perf`, 1M-key measurement,
/// docs/snapshots-and-membership.md). Without fastbins each free merges at once, on the
/// thread that frees; small allocations still go through glibc's per-thread cache.
fn merge_frees_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_MXFAST 0 is documented as valid.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Runs the node until it is removed from the cluster (exit 0), is stopped by SIGTERM or
/// SIGINT (exit 0), or fails (exit 1).
pub fn run(cfg: NodeConfig, http_threads: usize) -> Result<()> {
    merge_frees_at_once();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {:?}", cfg.data_dir))?;
    if cfg.data_dir.join(REMOVED_MARKER).exists() {
        eprintln!(
            "flotilla node {}: this data dir belongs to a node that was removed from the \
             cluster ({:?} exists); exiting. Ids are never reused: add a new node with a new \
             id and an empty data dir.",
            cfg.id,
            cfg.data_dir.join(REMOVED_MARKER)
        );
        return Ok(());
    }
    // Before the store is opened (which would create one): `start_node` checks it too.
    if let Some(why) = flotilla_node::restore::interrupted_restore(&cfg.data_dir) {
        return Err(anyhow!("{why}"));
    }
    let identity = Identity { cluster_id: cfg.cluster_id.clone(), node_id: cfg.id };
    let store = FjallLogStore::open(cfg.data_dir.join("db"), identity)
        .map_err(|e| anyhow!("opening the data dir: {e}"))?;
    let sm = KvStateMachine::open(store.database().clone())
        .map_err(|e| anyhow!("opening the state machine: {e}"))?;
    let reader = sm.reader();
    let store: Box<dyn LogStore> = Box::new(store);
    let system = actix::System::new();
    system.block_on(async move {
        let handle =
            start_node(cfg.clone(), store, Box::new(sm)).await.map_err(|e| anyhow!("{e}"))?;
        let routes = NodeRoutes {
            handle: handle.clone(),
            fault_injection: cfg.enable_fault_injection,
            admin_token: cfg.admin_token.clone(),
        };
        let kv_state = flotilla_kv::http::KvHttpState::new(handle.clone(), reader.clone());
        let server = HttpServer::new(move || {
            // The KV scope first: the router tries resources in order, and a node route
            // with a `{param}` pattern costs a regex match on every request that gets there.
            App::new()
                .configure(|c| flotilla_kv::http::configure(c, kv_state.clone()))
                .configure(|c| flotilla_node::http::configure(c, routes.clone()))
                .default_service(web::to(flotilla_kv::http::no_route))
        })
        .workers(http_threads)
        .disable_signals();
        let server = match &cfg.tls {
            Some(tls) => server.bind_rustls_0_23(&cfg.api, tls.api_server_config()),
            None => server.bind_auto_h2c(&cfg.api),
        }
        .with_context(|| format!("cannot listen on {}", cfg.api))?
        .run();
        let server_handle = server.handle();
        actix_rt::spawn(server);
        eprintln!(
            "flotilla node {} listening: raft {} (advertised {}) api {} (advertised {}) data {:?}",
            cfg.id,
            cfg.listen,
            cfg.advertise_peer,
            cfg.api,
            cfg.api_url(&cfg.advertise_api),
            cfg.data_dir
        );
        if let Some(url) = cfg.join.clone() {
            let (raft, api) = (cfg.advertise_peer.clone(), cfg.advertise_api.clone());
            let ca = cfg.tls.as_ref().map(|t| t.ca_path().to_path_buf());
            let tls = flotilla_kv::client::tls_config(ca.as_deref())?;
            crate::join::spawn_join(url, cfg.id, raft, api, cfg.admin_token.clone(), tls);
        }
        // SIGTERM (what systemd, Kubernetes and `docker stop` send) and SIGINT stop the node
        // gracefully: a leader first hands leadership to its most caught-up voter, so the
        // cluster does not sit out an election timeout. A second signal stops it at once.
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT")?;
        // Leave when this node is removed from the cluster (INTERFACE.md).
        loop {
            let name = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => None,
                _ = sigterm.recv() => Some("SIGTERM"),
                _ = sigint.recv() => Some("SIGINT"),
            };
            if let Some(name) = name {
                let hand_over = hand_leadership_over(&handle, cfg.id);
                tokio::select! {
                    () = hand_over => {}
                    _ = sigterm.recv() => eprintln!("flotilla node {}: second signal", cfg.id),
                    _ = sigint.recv() => eprintln!("flotilla node {}: second signal", cfg.id),
                }
                eprintln!("flotilla node {}: {name}: stopping", cfg.id);
                let stop = server_handle.stop(true);
                let _ = tokio::time::timeout(Duration::from_secs(1), stop).await;
                return Ok(());
            }
            let st = handle.status().await;
            if st["removed"].as_bool() == Some(true) {
                eprintln!("flotilla node {}: removed from the cluster; exiting", cfg.id);
                mark_removed(&cfg.data_dir)
                    .with_context(|| format!("marking {:?} as removed", cfg.data_dir))?;
                // Graceful, but bounded: an open /v1/events stream never ends by itself.
                let stop = server_handle.stop(true);
                let _ = tokio::time::timeout(Duration::from_secs(2), stop).await;
                return Ok::<(), anyhow::Error>(());
            }
        }
    })
}
