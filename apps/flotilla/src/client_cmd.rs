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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent()
}

pub fn run_status(a: StatusArgs) -> Result<()> {
    let agent = agent();
    let mut rows = Vec::new();
    for ep in endpoints(&a.endpoints) {
        let v: Value = match agent.get(&format!("{ep}/v1/status")).call() {
            Ok(mut r) => r.body_mut().read_json().unwrap_or(Value::Null),
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
    let _ = cmd;
    Err(anyhow!("the kv client is not wired yet"))
}
