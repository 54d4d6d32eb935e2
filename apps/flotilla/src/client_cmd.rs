//! `flotilla kv …` and `flotilla status`.

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// API addresses (URL or HOST:PORT), comma separated.
    #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
    pub endpoints: String,
    /// Print the raw JSON of every node instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    Get {
        key: String,
        #[arg(long, default_value = "linearizable")]
        consistency: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
    },
    Put {
        key: String,
        value: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
    },
    Del {
        key: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
    },
    Cas {
        key: String,
        /// The value expected now; omit for "must be absent".
        #[arg(long)]
        expected: Option<String>,
        value: String,
        #[arg(long, default_value = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103")]
        endpoints: String,
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
    let client = flotilla_kv::KvClient::new(&endpoints(&a.endpoints))?;
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
    let client = |eps: &str| -> Result<KvClient> {
        Ok(KvClient::new(&endpoints(eps))?.with_deadline(Duration::from_secs(10)).with_session())
    };
    match cmd {
        KvCmd::Get { key, consistency, endpoints } => {
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
            let out = client(&endpoints)?.get(&key, c)?;
            match out.value {
                Some(v) => {
                    use std::io::Write;
                    std::io::stdout().write_all(&v)?;
                    println!();
                }
                None => return Err(anyhow!("{key}: not found (applied index {})", out.index)),
            }
        }
        KvCmd::Put { key, value, endpoints } => {
            let out = client(&endpoints)?.put(&key, value.as_bytes())?;
            println!("{}", serde_json::json!({"index": out.index, "term": out.term}));
        }
        KvCmd::Del { key, endpoints } => {
            let out = client(&endpoints)?.delete(&key)?;
            println!(
                "{}",
                serde_json::json!({"index": out.index, "term": out.term, "deleted": out.deleted})
            );
        }
        KvCmd::Cas { key, expected, value, endpoints } => {
            let out = client(&endpoints)?.cas(&key, expected.as_deref(), &value)?;
            println!(
                "{}",
                serde_json::json!({"succeeded": out.succeeded, "current": out.current, "index": out.index})
            );
        }
    }
    Ok(())
}
