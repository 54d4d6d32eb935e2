//! What a node needs to start.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_raft::{Membership, NodeAddr, NodeId};

use crate::forward::ForwardMode;
use crate::tls::TlsSettings;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where the raft transport listens.
    pub listen: String,
    /// Where the HTTP API listens.
    pub api: String,
    /// Where peers dial this node's raft transport; what goes into the membership.
    pub advertise_peer: String,
    /// Where clients and peers reach this node's API: membership, redirects, `--forward auto`.
    pub advertise_api: String,
    /// `--forward`: whether a follower proxies leader-only requests to the leader.
    pub forward: ForwardMode,
    /// The initial cluster (empty when joining an existing one).
    pub initial_cluster: Vec<(NodeId, NodeAddr)>,
    /// `--join API_URL`: ask this cluster to add us.
    pub join: Option<String>,
    /// Cluster id: data dirs and peers of another cluster are refused.
    pub cluster_id: String,
    pub cluster_secret: Option<Vec<u8>>,
    pub election_timeout_ms: (u64, u64),
    pub heartbeat_ms: u64,
    /// The core's tick. Election and heartbeat intervals are converted to ticks of this.
    pub tick_ms: u64,
    pub enable_fault_injection: bool,
    /// `--admin-token`: when set, `/v1/admin/*` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// Take a snapshot when this many entries were applied since the last one (0: never).
    pub snapshot_entries: u64,
    /// How long a client request may wait for its answer before 504.
    pub request_timeout: Duration,
    /// `--tls-*`: mutual TLS between peers and HTTPS on the API; `None`: plain TCP/HTTP.
    pub tls: Option<TlsSettings>,
}

impl NodeConfig {
    pub fn bootstrap_membership(&self) -> Membership {
        NodeConfig::membership_of(&self.initial_cluster)
    }

    /// The membership a cluster started with this `--initial-cluster` bootstraps with:
    /// every node a voter, at its addresses.
    pub fn membership_of(initial_cluster: &[(NodeId, NodeAddr)]) -> Membership {
        let mut m = Membership::default();
        for (id, addr) in initial_cluster {
            m.voters.insert(*id);
            m.addrs.insert(*id, addr.clone());
        }
        m
    }

    /// Parses `ID=RAFT_HOST:PORT@API_HOST:PORT,...` (INTERFACE.md).
    pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(NodeId, NodeAddr)>, String> {
        let mut out: Vec<(NodeId, NodeAddr)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addrs) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected ID=RAFT_ADDR@API_ADDR"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("{part:?}: bad node id"))?;
            if id == 0 {
                return Err(format!("{part:?}: node ids are positive"));
            }
            let (raft, api) = addrs
                .split_once('@')
                .ok_or_else(|| format!("{part:?}: expected RAFT_ADDR@API_ADDR"))?;
            for a in [raft, api] {
                if a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                    return Err(format!("{part:?}: {a:?} is not HOST:PORT"));
                }
            }
            if out.iter().any(|(i, _)| i.0 == id) {
                return Err(format!("node id {id} appears twice"));
            }
            out.push((
                NodeId(id),
                NodeAddr { raft_addr: raft.to_string(), api_addr: api.to_string() },
            ));
        }
        Ok(out)
    }

    /// The URL of an API address (`HOST:PORT`) as this node builds it (redirects):
    /// `https://` when TLS is on.
    pub fn api_url(&self, api_addr: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{api_addr}")
    }

    pub fn election_ticks(&self) -> (u32, u32) {
        let t = self.tick_ms.max(1);
        let lo = (self.election_timeout_ms.0 / t).max(2) as u32;
        let hi = (self.election_timeout_ms.1 / t).max(u64::from(lo)) as u32;
        (lo, hi)
    }

    pub fn heartbeat_ticks(&self) -> u32 {
        (self.heartbeat_ms / self.tick_ms.max(1)).max(1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_interface_example() {
        let spec = "1=127.0.0.1:7101@127.0.0.1:8101,2=127.0.0.1:7102@127.0.0.1:8102";
        let got = NodeConfig::parse_initial_cluster(spec).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.api_addr, "127.0.0.1:8102");
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in ["1=a@b", "x=1.2.3.4:1@1.2.3.4:2", "0=h:1@h:2", "1=h:1@h:2,1=h:3@h:4", "1=h:1"] {
            assert!(NodeConfig::parse_initial_cluster(bad).is_err(), "{bad}");
        }
    }
}
