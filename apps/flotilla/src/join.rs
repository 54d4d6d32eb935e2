//! `--join API_URL`: ask an existing cluster to add this node.

use std::time::{Duration, Instant};

use flotilla_raft::NodeId;

/// Keeps asking (following redirects to the leader) until the cluster answers 200, or gives
/// up after a few minutes. Runs on its own thread: the node serves meanwhile. `token` is
/// the admin bearer token (`--admin-token`), which the cluster's admin routes may require;
/// `tls` trusts the node's `--tls-ca` for an `https://` URL.
pub fn spawn_join(
    url: String,
    id: NodeId,
    raft_addr: String,
    api_addr: String,
    token: Option<String>,
    tls: ureq::tls::TlsConfig,
) {
    std::thread::spawn(move || {
        let body = serde_json::json!({"id": id.0, "raft_addr": raft_addr, "api_addr": api_addr, "voter": true});
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut target = format!("{}/v1/admin/members", url.trim_end_matches('/'));
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        while Instant::now() < deadline {
            let mut req = agent.post(&target);
            if let Some(t) = &token {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            match req.send_json(&body) {
                Ok(resp) if resp.status().as_u16() == 200 => {
                    eprintln!("joined the cluster as node {id}");
                    return;
                }
                Ok(resp) if resp.status().as_u16() == 307 => {
                    if let Some(loc) = resp.headers().get("location").and_then(|l| l.to_str().ok())
                    {
                        target = loc.to_string();
                        continue;
                    }
                }
                Ok(resp) => {
                    eprintln!("join: {} answered {}; retrying", target, resp.status());
                }
                Err(e) => eprintln!("join: {target}: {e}; retrying"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("join: gave up after 5 minutes");
    });
}
