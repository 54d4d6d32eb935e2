//! The cluster under test: node processes (through the [`Launcher`]), who is a member now,
//! and the faults applied to them. Faults go through signals (kill -9, SIGSTOP/SIGCONT)
//! and the nodes' own admin API (faults, snapshots, membership, leadership transfer), with
//! the admin bearer token the nodes were started with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use super::client::{Member, Members};

/// How long a follower drops the leader's messages before a backup is asked of it (under
/// the election timeout's minimum, so that it still knows the leader).
const BACKUP_LAG: Duration = Duration::from_millis(100);
/// How long after the request the follower is healed.
const BACKUP_HOLD: Duration = Duration::from_millis(200);
use super::schedule::{Fault, FaultKind};
use crate::launcher::{Launcher, NodeSpec, free_fixed_ports};

/// How to undo a fault that lasts.
#[derive(Debug)]
pub enum Undo {
    Nothing,
    Start(u64),
    Resume(u64),
    Heal(Vec<u64>),
}

/// A fault that was applied.
#[derive(Debug)]
pub struct Applied {
    pub desc: String,
    pub undo: Undo,
    /// A backup-grade snapshot (`?consistency=linearizable`) that was taken: (when it was
    /// asked for, node, its index). Every write acknowledged before it was asked for must be
    /// at or below the index.
    pub backup: Option<(Instant, u64, u64)>,
}

pub struct ClusterCtl {
    launcher: Launcher,
    dir: PathBuf,
    /// Current voting members, by our own account.
    members: BTreeSet<u64>,
    /// Nodes started with `--join` (restarted the same way).
    joined: BTreeSet<u64>,
    /// Nodes removed from the cluster: they exit 0 on their own and stay down.
    removed: BTreeSet<u64>,
    down: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    next_id: u64,
    token: String,
    admin: ureq::Agent,
    /// What the clients see.
    pub shared: Members,
}

fn spec(dir: &Path, id: u64, ports: &[u16]) -> NodeSpec {
    NodeSpec {
        id,
        listen: format!("127.0.0.1:{}", ports[0]),
        api: format!("127.0.0.1:{}", ports[1]),
        data_dir: dir.join(format!("node-{id}")),
    }
}

impl ClusterCtl {
    /// Starts `nodes` node processes under `dir` with `node_args` and the admin token.
    pub fn start(
        exe: PathBuf,
        nodes: u64,
        dir: &Path,
        token: &str,
        node_args: Vec<String>,
    ) -> Result<ClusterCtl> {
        let ports = free_fixed_ports(2 * nodes as usize)?;
        let specs: Vec<NodeSpec> =
            (1..=nodes).map(|id| spec(dir, id, &ports[2 * (id as usize - 1)..])).collect();
        let mut launcher = Launcher::new(exe, specs, node_args);
        launcher.log_to(dir.join("logs"));
        launcher.start_all()?;
        let admin = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(3)))
            .build()
            .new_agent();
        let ctl = ClusterCtl {
            launcher,
            dir: dir.to_path_buf(),
            members: (1..=nodes).collect(),
            joined: BTreeSet::new(),
            removed: BTreeSet::new(),
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            next_id: nodes + 1,
            token: token.to_string(),
            admin,
            shared: Members::default(),
        };
        ctl.publish();
        Ok(ctl)
    }

    /// Tells the clients who the members are.
    fn publish(&self) {
        let list: Vec<Member> = self
            .members
            .iter()
            .filter_map(|id| {
                self.launcher.specs.get(id).map(|s| Member { id: *id, api: s.api.clone() })
            })
            .collect();
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    pub fn members(&self) -> Vec<u64> {
        self.members.iter().copied().collect()
    }

    /// Members that are running and not paused.
    pub fn live(&self) -> Vec<u64> {
        self.members
            .iter()
            .copied()
            .filter(|id| !self.down.contains(id) && !self.paused.contains(id))
            .collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.launcher.specs.get(&id).map(|s| format!("http://{}", s.api)).unwrap_or_default()
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join("logs").join(format!("node-{id}.log"))
    }

    /// The last lines of a node's log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn status(&self, id: u64) -> Option<Value> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(700)))
            .build()
            .new_agent();
        let mut r = agent.get(&format!("{}/v1/status", self.url(id))).call().ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        r.body_mut().read_json().ok()
    }

    /// The live member that says it leads in the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.live()
            .into_iter()
            .filter_map(|id| self.status(id).map(|s| (id, s)))
            .filter(|(_, s)| s["role"] == "leader")
            .max_by_key(|(_, s)| s["term"].as_u64().unwrap_or(0))
            .map(|(id, _)| id)
    }

    pub fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(anyhow!("no leader within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An admin call with the bearer token; leader-only calls follow 307 to the leader.
    fn admin_call(
        &self,
        method: &str,
        id: u64,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut url = format!("{}{path}", self.url(id));
        for _ in 0..4 {
            let auth = format!("Bearer {}", self.token);
            let r = match (method, &body) {
                ("POST", Some(b)) => {
                    self.admin.post(&url).header("Authorization", &auth).send_json(b)
                }
                ("POST", None) => self.admin.post(&url).header("Authorization", &auth).send_empty(),
                ("DELETE", _) => self.admin.delete(&url).header("Authorization", &auth).call(),
                _ => return Err(anyhow!("unsupported admin method {method}")),
            };
            let mut r = r.with_context(|| format!("{method} {url}"))?;
            let status = r.status().as_u16();
            if status == 307
                && let Some(loc) = r.headers().get("location").and_then(|l| l.to_str().ok())
            {
                url = loc.to_string();
                continue;
            }
            let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            return Ok((status, v));
        }
        Err(anyhow!("{method} {path}: too many redirects"))
    }

    fn set_faults(&self, id: u64, spec: Value) -> Result<()> {
        let (status, v) = self.admin_call("POST", id, "/v1/admin/faults", Some(spec))?;
        if status != 200 {
            return Err(anyhow!("setting faults on node {id}: {status} {v}"));
        }
        Ok(())
    }

    fn clear_faults(&self, id: u64) -> Result<()> {
        let (status, v) = self.admin_call("DELETE", id, "/v1/admin/faults", None)?;
        if status != 200 {
            return Err(anyhow!("healing node {id}: {status} {v}"));
        }
        Ok(())
    }

    /// Starts a member that is down (joined nodes join again, which is a no-op for a
    /// member).
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        if self.joined.contains(&id) {
            let via = self.members.iter().find(|m| **m != id).map(|m| self.url(*m));
            self.launcher.start(id, via.as_deref())?;
        } else {
            self.launcher.start(id, None)?;
        }
        self.down.remove(&id);
        Ok(())
    }

    fn kill(&mut self, id: u64) -> Result<()> {
        self.launcher.kill9(id)?;
        self.paused.remove(&id);
        self.down.insert(id);
        Ok(())
    }

    /// A backup (`POST /v1/admin/snapshot?consistency=linearizable`) from a follower that
    /// drops everything from the leader meanwhile: writes are acknowledged without it
    /// (`BACKUP_LAG`), then it is asked for the backup, which must wait until it holds them;
    /// it is healed `BACKUP_HOLD` later so that it can. The run checks the answer's index
    /// against every write-once key acknowledged before the request (`verify_backups`).
    fn backup_from_a_lagging_follower(&self, pick: u64) -> Result<Applied> {
        let leader = self.leader().ok_or_else(|| anyhow!("no leader to lag behind"))?;
        let followers: Vec<u64> = self.live().into_iter().filter(|i| *i != leader).collect();
        if followers.is_empty() {
            return Err(anyhow!("no follower to back up from"));
        }
        let id = followers[(pick % followers.len() as u64) as usize];
        self.set_faults(id, json!({"drop_from": [leader]}))?;
        std::thread::sleep(BACKUP_LAG);
        let (agent, auth) = (self.admin.clone(), format!("Bearer {}", self.token));
        let url = format!("{}/v1/admin/snapshot?consistency=linearizable", self.url(id));
        let asked = Instant::now();
        let pending = std::thread::spawn(move || -> Result<(u16, Value)> {
            let mut r = agent.post(&url).header("Authorization", &auth).send_empty()?;
            Ok((r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null)))
        });
        std::thread::sleep(BACKUP_HOLD);
        let healed = self.clear_faults(id);
        let answer = pending.join().map_err(|_| anyhow!("the backup request panicked"))?;
        healed?;
        let (status, v) = answer.with_context(|| format!("backup from node {id}"))?;
        if status != 200 {
            return Err(anyhow!("backup from node {id}: {status} {v}"));
        }
        let index = v["index"].as_u64().unwrap_or(0);
        Ok(Applied {
            desc: format!(
                "backup from node {id}, kept behind leader {leader}, at index {index} (read index {})",
                v["read_index"]
            ),
            undo: Undo::Nothing,
            backup: Some((asked, id, index)),
        })
    }

    /// Resolves a fault's target: the leader, or a live member picked by `pick`.
    fn target(&self, pick: u64, leader: bool) -> Result<(u64, &'static str)> {
        if leader && let Some(l) = self.leader() {
            return Ok((l, "leader "));
        }
        let live = self.live();
        if live.is_empty() {
            return Err(anyhow!("no live member"));
        }
        Ok((live[(pick % live.len() as u64) as usize], if leader { "(no leader) " } else { "" }))
    }

    /// Applies one fault.
    pub fn apply(&mut self, f: &Fault) -> Result<Applied> {
        use FaultKind::*;
        let leader_kind = matches!(f.kind, KillLeader | PauseLeader | IsolateLeader);
        match f.kind {
            Kill | KillLeader => {
                let (id, who) = self.target(f.pick, leader_kind)?;
                self.kill(id)?;
                Ok(Applied {
                    desc: format!("kill -9 {who}node {id}"),
                    undo: Undo::Start(id),
                    backup: None,
                })
            }
            Pause | PauseLeader => {
                let (id, who) = self.target(f.pick, leader_kind)?;
                self.launcher.pause(id)?;
                self.paused.insert(id);
                Ok(Applied {
                    desc: format!("pause {who}node {id}"),
                    undo: Undo::Resume(id),
                    backup: None,
                })
            }
            Isolate | IsolateLeader => {
                let (id, who) = self.target(f.pick, leader_kind)?;
                self.set_faults(id, json!({"isolate": true}))?;
                Ok(Applied {
                    desc: format!("isolate {who}node {id}"),
                    undo: Undo::Heal(vec![id]),
                    backup: None,
                })
            }
            Partition => self.partition(f),
            OneWay => {
                let (from, who) = self.target(f.pick, f.leader_side)?;
                let others: Vec<u64> = self.live().into_iter().filter(|i| *i != from).collect();
                if others.is_empty() {
                    return Err(anyhow!("no peer for a one-way drop"));
                }
                let to = others[(f.other % others.len() as u64) as usize];
                self.set_faults(from, json!({"drop_to": [to]}))?;
                Ok(Applied {
                    desc: format!("drop {who}node {from} → node {to} (one way)"),
                    undo: Undo::Heal(vec![from]),
                    backup: None,
                })
            }
            Restart => {
                let (id, who) = self.target(f.pick, f.leader_side)?;
                self.kill(id)?;
                self.start_node(id)?;
                Ok(Applied {
                    desc: format!("restart {who}node {id}"),
                    undo: Undo::Nothing,
                    backup: None,
                })
            }
            // Every other one is a backup from a follower kept behind.
            Snapshot if f.other.is_multiple_of(2) => self.backup_from_a_lagging_follower(f.pick),
            Snapshot => {
                let (id, _) = self.target(f.pick, false)?;
                let (status, v) = self.admin_call("POST", id, "/v1/admin/snapshot", None)?;
                if status != 200 {
                    return Err(anyhow!("snapshot on node {id}: {status} {v}"));
                }
                Ok(Applied {
                    desc: format!("snapshot on node {id} at index {}", v["index"]),
                    undo: Undo::Nothing,
                    backup: None,
                })
            }
            Transfer => {
                let leader = self.leader().ok_or_else(|| anyhow!("no leader to transfer from"))?;
                let others: Vec<u64> = self.live().into_iter().filter(|i| *i != leader).collect();
                if others.is_empty() {
                    return Err(anyhow!("no member to transfer to"));
                }
                let to = others[(f.pick % others.len() as u64) as usize];
                let (status, v) = self.admin_call(
                    "POST",
                    leader,
                    "/v1/admin/transfer-leader",
                    Some(json!({"to": to})),
                )?;
                if status != 200 {
                    return Err(anyhow!("transfer {leader} → {to}: {status} {v}"));
                }
                Ok(Applied {
                    desc: format!("transfer leadership {leader} → {to}"),
                    undo: Undo::Nothing,
                    backup: None,
                })
            }
            Membership => self.replace_member(f.pick),
        }
    }

    /// A minority (holding the leader when `leader_side`) and the majority stop hearing
    /// each other, both ways.
    fn partition(&mut self, f: &Fault) -> Result<Applied> {
        let all = self.live();
        let n = all.len();
        if n < 2 {
            return Err(anyhow!("too few live members to partition"));
        }
        let size = (self.members.len() / 2).max(1).min(n - 1);
        let mut minority: Vec<u64> = Vec::new();
        if f.leader_side
            && let Some(l) = self.leader()
        {
            minority.push(l);
        }
        let mut i = (f.pick % n as u64) as usize;
        while minority.len() < size {
            if !minority.contains(&all[i % n]) {
                minority.push(all[i % n]);
            }
            i += 1;
        }
        let majority: Vec<u64> = all.iter().copied().filter(|id| !minority.contains(id)).collect();
        for id in &minority {
            self.set_faults(*id, json!({"drop_to": majority, "drop_from": majority}))?;
        }
        for id in &majority {
            self.set_faults(*id, json!({"drop_to": minority, "drop_from": minority}))?;
        }
        Ok(Applied {
            desc: format!("partition {minority:?} | {majority:?}"),
            undo: Undo::Heal(all),
            backup: None,
        })
    }

    /// Adds a new node (it joins as a learner and is promoted), then removes an old
    /// member that does not lead.
    fn replace_member(&mut self, pick: u64) -> Result<Applied> {
        let leader = self.leader().ok_or_else(|| anyhow!("no leader for a membership change"))?;
        let new = self.next_id;
        self.next_id += 1;
        let s = spec(&self.dir, new, &free_fixed_ports(2)?);
        self.launcher.add_spec(s);
        self.joined.insert(new);
        let via = self.url(leader);
        self.launcher.start(new, Some(&via))?;
        // Wait until some leader lists the new node as a voter.
        let deadline = Instant::now() + Duration::from_secs(20);
        let is_voter = |ctl: &ClusterCtl| {
            ctl.leader().and_then(|l| ctl.status(l)).is_some_and(|s| {
                s["members"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| m["id"].as_u64() == Some(new) && m["voter"] == true)
                })
            })
        };
        while !is_voter(self) {
            if Instant::now() > deadline {
                // Keep it: killing a node that may yet become a voter could cost the
                // cluster its majority. It is a member from now on, healed and checked
                // like the others.
                self.members.insert(new);
                self.publish();
                return Err(anyhow!("node {new} did not become a voter within 20 s (kept)"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.members.insert(new);
        self.publish();
        // Remove an old member that does not lead.
        let leader = self.leader().unwrap_or(leader);
        let old: Vec<u64> =
            self.live().into_iter().filter(|id| *id != leader && *id != new).collect();
        if old.is_empty() {
            return Ok(Applied {
                desc: format!("added node {new} (nothing to remove)"),
                undo: Undo::Nothing,
                backup: None,
            });
        }
        let victim = old[(pick % old.len() as u64) as usize];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let l = self.leader().unwrap_or(leader);
            match self.admin_call("DELETE", l, &format!("/v1/admin/members/{victim}"), None) {
                Ok((200, _)) => break,
                Ok((status, v)) if Instant::now() > deadline => {
                    return Err(anyhow!("added node {new}; removing {victim}: {status} {v}"));
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(anyhow!("added node {new}; removing {victim}: {e}"));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.members.remove(&victim);
        self.removed.insert(victim);
        self.publish();
        // A removed node exits 0 by itself shortly after; reaped by `reap`.
        Ok(Applied {
            desc: format!("added node {new}, removed node {victim}"),
            undo: Undo::Nothing,
            backup: None,
        })
    }

    /// Undoes a lasting fault.
    pub fn undo(&mut self, undo: Undo) -> Result<()> {
        match undo {
            Undo::Nothing => Ok(()),
            Undo::Start(id) => self.start_node(id),
            Undo::Resume(id) => {
                self.paused.remove(&id);
                self.launcher.resume(id)
            }
            Undo::Heal(ids) => {
                let mut first_err = None;
                for id in ids {
                    if let Err(e) = self.clear_faults(id) {
                        first_err.get_or_insert(e);
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
        }
    }

    /// Ends every fault: resumes paused nodes, starts the ones that are down, clears fault
    /// specs everywhere.
    pub fn heal_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for id in std::mem::take(&mut self.paused) {
            if let Err(e) = self.launcher.resume(id) {
                errors.push(format!("resuming node {id}: {e}"));
            }
        }
        for id in self.down.clone() {
            if self.members.contains(&id)
                && let Err(e) = self.start_node(id)
            {
                errors.push(format!("starting node {id}: {e}"));
            }
        }
        for id in self.members() {
            // A node that just started has no faults; one that is slow to listen is retried.
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Err(e) = self.clear_faults(id) {
                if Instant::now() > deadline {
                    errors.push(format!("healing node {id}: {e}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        errors
    }

    /// Children that exited on their own. A removed node exiting is expected; anything
    /// else is reported (with its log's tail) and the node is started again.
    pub fn reap(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, status) in self.launcher.reap() {
            if self.removed.contains(&id) {
                if !status.success() {
                    out.push(format!(
                        "removed node {id} exited with {status}:\n{}",
                        self.log_tail(id, 10)
                    ));
                }
                continue;
            }
            if status.success() && self.log_tail(id, 5).contains("removed from the cluster") {
                // A removal whose answer we did not see (it timed out) still committed: the
                // node left as INTERFACE.md says. Not a crash; it is no longer a member.
                self.members.remove(&id);
                self.removed.insert(id);
                self.publish();
                continue;
            }
            out.push(format!(
                "node {id} exited unexpectedly ({status}):\n{}",
                self.log_tail(id, 15)
            ));
            self.down.insert(id);
            self.paused.remove(&id);
            if self.members.contains(&id) {
                let _ = self.start_node(id);
            }
        }
        out
    }

    /// Waits until a leader is known and every member has applied everything it committed.
    /// Returns the leader and its commit index.
    pub fn converge(&self, timeout: Duration) -> Result<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(l) = self.leader() {
                if let Some(commit) = self.status(l).and_then(|s| s["commit_index"].as_u64()) {
                    let lagging: Vec<(u64, Option<u64>)> = self
                        .members
                        .iter()
                        .map(|id| (*id, self.status(*id).and_then(|s| s["applied_index"].as_u64())))
                        .filter(|(_, a)| a.is_none_or(|a| a < commit))
                        .collect();
                    if lagging.is_empty() {
                        return Ok((l, commit));
                    }
                    last = format!("leader {l} commit {commit}, behind: {lagging:?}");
                }
            } else {
                last = "no leader".into();
            }
            if Instant::now() > deadline {
                return Err(anyhow!("not converged within {timeout:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every node.
    pub fn stop(&mut self) {
        self.launcher.stop_all();
    }
}
