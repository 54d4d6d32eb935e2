//! `flotilla kv …` and `flotilla status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;

// `--cacert`, shared by the client commands (a plain comment: a doc comment would become
// the help text of the kv subcommands that flatten it).
#[derive(Args, Debug, Clone, Default)]
pub struct CaCertArg {
    /// Trust the CA certificate(s) in this PEM file for https:// endpoints (instead of
    /// the public web roots; a cluster started with --tls-ca).
    #[arg(long, env = "FLOTILLA_CACERT")]
    pub cacert: Option<PathBuf>,
}

impl CaCertArg {
    /// ureq's TLS settings for these endpoints.
    pub fn tls_config(&self) -> Result<ureq::tls::TlsConfig> {
        Ok(flotilla_kv::client::tls_config(self.cacert.as_deref())?)
    }

    /// A KV client of `endpoints` that trusts `--cacert`.
    pub fn client(&self, endpoints: &[String]) -> Result<flotilla_kv::KvClient> {
        let client = flotilla_kv::KvClient::new(endpoints)?;
        Ok(match &self.cacert {
            Some(path) => client.with_cacert(path)?,
            None => client,
        })
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// API addresses (URL or HOST:PORT), comma separated.
    #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
    pub endpoints: String,
    /// Print the raw JSON of every node instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ca: CaCertArg,
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    Get {
        key: String,
        #[arg(long, default_value = "linearizable")]
        consistency: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
    Put {
        key: String,
        value: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
    Del {
        key: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
    Cas {
        key: String,
        /// The value expected now; omit for "must be absent".
        #[arg(long)]
        expected: Option<String>,
        value: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
        #[command(flatten)]
        ca: CaCertArg,
    },
}

pub fn endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.starts_with("http") {
                e.trim_end_matches('/').to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

pub fn run_status(a: StatusArgs) -> Result<()> {
    let client = a.ca.client(&endpoints(&a.endpoints))?;
    let mut rows = Vec::new();
    for (ep, st) in client.status_all() {
        let v: Value = match st {
            Ok(v) => v,
            Err(e) => {
                rows.push(format!("{ep:<24} unreachable ({e})"));
                continue;
            }
        };
        if a.json {
            println!("{v}");
            continue;
        }
        let f = |k: &str| match &v[k] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push(format!(
            "{ep:<24} {:>3} {:<12} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}",
            f("id"),
            f("role"),
            f("term"),
            f("leader"),
            f("voted_for"),
            f("commit_index"),
            f("applied_index"),
            f("last_log_index"),
            f("snapshot_index")
        ));
    }
    if !a.json {
        println!(
            "{:<24} {:>3} {:<12} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "endpoint",
            "id",
            "role",
            "term",
            "leader",
            "vote",
            "commit",
            "applied",
            "last",
            "snapshot"
        );
        for r in rows {
            println!("{r}");
        }
    }
    Ok(())
}

pub fn run_kv(cmd: KvCmd) -> Result<()> {
    use flotilla_kv::KvClient;
    use flotilla_node::ReadConsistency;
    let client = |eps: &str, ca: &CaCertArg| -> Result<KvClient> {
        Ok(ca.client(&endpoints(eps))?.with_deadline(Duration::from_secs(10)).with_session())
    };
    match cmd {
        KvCmd::Get { key, consistency, endpoints, ca } => {
            let c = match consistency.as_str() {
                "linearizable" => ReadConsistency::Linearizable,
                "lease" => ReadConsistency::Lease,
                "stale" => ReadConsistency::Stale,
                other => {
                    return Err(anyhow!(
                        "unknown consistency {other:?} (linearizable|lease|stale)"
                    ));
                }
            };
            let out = client(&endpoints, &ca)?.get(&key, c)?;
            match out.value {
                Some(v) => {
                    use std::io::Write;
                    std::io::stdout().write_all(&v)?;
                    println!();
                }
                None => return Err(anyhow!("{key}: not found (applied index {})", out.index)),
            }
        }
        KvCmd::Put { key, value, endpoints, ca } => {
            let out = client(&endpoints, &ca)?.put(&key, value.as_bytes())?;
            println!("{}", serde_json::json!({"index": out.index, "term": out.term}));
        }
        KvCmd::Del { key, endpoints, ca } => {
            let out = client(&endpoints, &ca)?.delete(&key)?;
            println!(
                "{}",
                serde_json::json!({"index": out.index, "term": out.term, "deleted": out.deleted})
            );
        }
        KvCmd::Cas { key, expected, value, endpoints, ca } => {
            let out = client(&endpoints, &ca)?.cas(&key, expected.as_deref(), &value)?;
            println!(
                "{}",
                serde_json::json!({"succeeded": out.succeeded, "current": out.current, "index": out.index})
            );
        }
    }
    Ok(())
}
