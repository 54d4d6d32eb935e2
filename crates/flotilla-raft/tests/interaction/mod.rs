//! The interaction environment: N cores with in-memory disks, one message queue per node,
//! and explicit control over time, delivery, persistence and faults. Every directive of a
//! scenario file lands in [`Env::handle`]; its output is the directive's expected text.
//!
//! The runtime duties of `flotilla_raft`'s crate docs are executed literally: a node's
//! commands run in order (`process-ready`), an `AppendLog` is followed by `log_persisted`,
//! and messages go onto the receiver's queue until `deliver-msgs` steps them in. With
//! `process-ready N hold=true` the disk is slow: `SendNow` leaves at once, every other
//! command waits for the next `process-ready N` — or is lost by `crash N`.
//!
//! After every directive the environment checks, across nodes, that no two nodes lead the
//! same term and that no two nodes ever commit or apply different entries at one index;
//! while executing commands, that `Apply` is gap-free and hands out only durable entries,
//! that snapshots sent, installed and purged are consistent with the disk, and that
//! `has_commands()` never says false when `take_commands()` has work. A violation is
//! printed in the output *and* fails the test even under `REWRITE=1`.
//!
//! Directives (ids are node ids, `(a,b)` a list):
//! - `add-nodes N [voters=(..)] [learners=(..)] [log=(terms..)] [term=T] [commit=C]
//!   [index=I] [prevote=B] [checkquorum=B] [election=E|(lo,hi)] [heartbeat=H]
//!   [max-msg-bytes=M] [inflight=F] [lag=L] [keep=K] [snapshot-timeout=S] [seed=S]`
//!   adds N nodes with the next ids. `voters=()` (the default when no voters are given)
//!   starts a node that joins an existing cluster. `log=` pre-seeds the log with empty
//!   commands of the given terms; `index=I` pre-seeds a snapshot at (I, 1) instead.
//!   Defaults: prevote and checkquorum on (the core's own defaults), election timeouts
//!   drawn from 10..=20 ticks by the core's RNG seeded with the node id (so every run is
//!   the same; `status` shows the timer), heartbeat 3, keep 0.
//! - `campaign N`: tick N alone until its election timer fires (PreVote first if enabled).
//! - `tick N [k]`, `tick-election N` (election_ticks_max ticks: any timeout fires),
//!   `tick-heartbeat N` (heartbeat_ticks ticks).
//! - `propose N data`, `change N add-learner=I|promote=I|remove=I`,
//!   `transfer-leader N to`, `read-index N rid [lease=true]`.
//! - `process-ready N.. [hold=true]`,
//!   `deliver-msgs [N..|to=(..)] [from=(..)] [type=Kind] [drop=(..)]`,
//!   `stabilize [N..]`.
//! - `partition (a,b) (c)`, `isolate N`, `heal`.
//! - `status N`, `raft-log N`, `logs` (every log as terms), `state-machine N`, `compact N index`, `crash N`, `restart N`.
//! - `snapshot-delivered N to index`: N's runtime reports that its transfer of snapshot
//!   `index` to `to` completed (the receiver's runtime confirmed the last chunk).

mod format;
mod node;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use flotilla_raft::{
    Command, ConfChange, Config, Entry, EntryPayload, HardState, LogIndex, Membership, Message,
    MessageBody, NodeAddr, NodeId, ReadMode, Role, SnapshotMeta, Term,
};

use crate::datadriven::Directive;
use node::{Effect, Node, SmData, Storage};

/// A message on the wire, with a snapshot's bytes riding along for `InstallSnapshot`.
struct Envelope {
    msg: Message,
    snapshot: Option<SmData>,
}

#[derive(Default)]
pub struct Env {
    nodes: BTreeMap<NodeId, Node>,
    /// One queue per receiver, in send order.
    inbox: BTreeMap<NodeId, VecDeque<Envelope>>,
    /// Groups that cannot talk to each other; `None` when healed.
    partition: Option<Vec<BTreeSet<NodeId>>>,
    /// Election safety: the one leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State machine safety: the term of the entry committed (or applied) at each index.
    committed: BTreeMap<LogIndex, (Term, NodeId)>,
    violations: Vec<String>,
}

type Out = Result<String, String>;

impl Env {
    /// Runs one directive. Errors of the directive itself (bad arguments, a refused call)
    /// are part of the output: a scenario may expect them.
    pub fn handle(&mut self, d: &Directive) -> String {
        let before = self.violations.len();
        let mut out = match self.dispatch(d) {
            Ok(s) => s,
            Err(e) => format!("error: {e}\n"),
        };
        self.check_safety();
        for v in &self.violations[before..] {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
        out
    }

    /// Safety violations seen so far; the test fails if there are any.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    fn dispatch(&mut self, d: &Directive) -> Out {
        match d.cmd.as_str() {
            "add-nodes" => self.add_nodes(d),
            "campaign" => self.campaign(one_id(d)?),
            "tick" => {
                let pos = d.positional();
                let n = match pos.get(1) {
                    Some(v) => parse_u64(&v[0])?,
                    None => 1,
                };
                self.tick(one_id(d)?, n)
            }
            "tick-election" => {
                let id = one_id(d)?;
                let n = self.node(id)?.cfg.election_ticks_max;
                self.tick(id, u64::from(n))
            }
            "tick-heartbeat" => {
                let id = one_id(d)?;
                let n = self.node(id)?.cfg.heartbeat_ticks;
                self.tick(id, u64::from(n))
            }
            "propose" => self.propose(d),
            "change" => self.change(d),
            "transfer-leader" => {
                let ids = ids_of(d)?;
                let [from, to] = ids[..] else {
                    return Err("usage: transfer-leader FROM TO".into());
                };
                self.core(from)?.transfer_leader(to).map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "read-index" => {
                let ids = ids_of(d)?;
                let [id, rid] = ids[..] else {
                    return Err("usage: read-index N RID [lease=true]".into());
                };
                let mode = if flag(d, "lease")? { ReadMode::Lease } else { ReadMode::ReadIndex };
                self.core(id)?.read_index(rid.0, mode).map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            "process-ready" => {
                let hold = flag(d, "hold")?;
                let mut out = String::new();
                for id in ids_of(d)? {
                    out += &self.process_ready(id, hold, true)?;
                }
                Ok(out)
            }
            "deliver-msgs" => self.deliver_msgs(d),
            "stabilize" => {
                let ids = ids_of(d)?;
                let ids = if ids.is_empty() { self.nodes.keys().copied().collect() } else { ids };
                self.stabilize(&ids)
            }
            "partition" => {
                let groups: Vec<BTreeSet<NodeId>> = d
                    .positional()
                    .iter()
                    .map(|g| g.iter().map(|v| parse_id(v)).collect::<Result<_, _>>())
                    .collect::<Result<_, _>>()?;
                self.partition = Some(groups);
                Ok(String::new())
            }
            "isolate" => {
                let id = one_id(d)?;
                let others = self.nodes.keys().copied().filter(|n| *n != id).collect();
                self.partition = Some(vec![BTreeSet::from([id]), others]);
                Ok(String::new())
            }
            "heal" => {
                self.partition = None;
                Ok(String::new())
            }
            "status" => self.status(one_id(d)?),
            "raft-log" => self.raft_log(one_id(d)?),
            "logs" => Ok(self.logs()),
            "state-machine" => {
                let n = self.node(one_id(d)?)?;
                let v: Vec<String> = n.sm.iter().map(|(i, s)| format!("{i}:{s}")).collect();
                Ok(format!("applied={} [{}]\n", n.sm_applied, v.join(" ")))
            }
            "compact" => {
                let ids = ids_of(d)?;
                let [id, index] = ids[..] else { return Err("usage: compact N INDEX".into()) };
                let meta = self.node_mut(id)?.compact(LogIndex(index.0))?;
                Ok(format!("{id}: snapshot {}\n", format::snap(&meta)))
            }
            "snapshot-delivered" => {
                let ids = ids_of(d)?;
                let [id, to, index] = ids[..] else {
                    return Err("usage: snapshot-delivered LEADER TO INDEX".into());
                };
                self.core(id)?.snapshot_delivered(to, LogIndex(index.0));
                Ok(String::new())
            }
            "crash" => self.crash(one_id(d)?),
            "restart" => {
                let id = one_id(d)?;
                let n = self.node_mut(id)?;
                if n.core.is_some() {
                    return Err(format!("node {id} is running"));
                }
                n.start();
                Ok(self.summary(id))
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    // ----- setup -----

    fn add_nodes(&mut self, d: &Directive) -> Out {
        const KEYS: &[&str] = &[
            "voters",
            "learners",
            "log",
            "term",
            "commit",
            "index",
            "prevote",
            "checkquorum",
            "election",
            "heartbeat",
            "max-msg-bytes",
            "inflight",
            "lag",
            "keep",
            "snapshot-timeout",
            "seed",
        ];
        if let Some(k) = d.keys().find(|k| !KEYS.contains(k)) {
            return Err(format!("add-nodes: unknown option {k}"));
        }
        let n = parse_u64(&d.positional().first().ok_or("usage: add-nodes N ...")?[0])?;
        let mut bootstrap = Membership::with_voters(id_list(d.get("voters"))?);
        for l in id_list(d.get("learners"))? {
            bootstrap.learners.insert(l);
            bootstrap.addrs.insert(l, NodeAddr::default());
        }
        let mut out = String::new();
        for _ in 0..n {
            let id = NodeId(self.nodes.keys().last().map_or(1, |l| l.0 + 1));
            let seed = opt_u64(d, "seed")?.unwrap_or(id.0);
            let mut cfg = Config::new(id, seed);
            if let Some(v) = d.get("election") {
                let v: Vec<u64> = v.iter().map(|s| parse_u64(s)).collect::<Result<_, _>>()?;
                let (lo, hi) = match v[..] {
                    [e] => (e, e),
                    [lo, hi] => (lo, hi),
                    _ => return Err("election=E or election=(lo,hi)".into()),
                };
                (cfg.election_ticks_min, cfg.election_ticks_max) = (lo as u32, hi as u32);
            } else {
                (cfg.election_ticks_min, cfg.election_ticks_max) = (10, 20);
            }
            cfg.heartbeat_ticks = opt_u64(d, "heartbeat")?.unwrap_or(3) as u32;
            cfg.pre_vote = opt_bool(d, "prevote")?.unwrap_or(true);
            cfg.check_quorum = opt_bool(d, "checkquorum")?.unwrap_or(true);
            cfg.compaction_keep_entries = opt_u64(d, "keep")?.unwrap_or(0);
            if let Some(v) = opt_u64(d, "max-msg-bytes")? {
                cfg.max_msg_bytes = v as usize;
            }
            if let Some(v) = opt_u64(d, "inflight")? {
                cfg.max_inflight_msgs = v as usize;
            }
            if let Some(v) = opt_u64(d, "lag")? {
                cfg.learner_catchup_max_lag = v;
            }
            if let Some(v) = opt_u64(d, "snapshot-timeout")? {
                cfg.snapshot_timeout_ticks = v as u32;
            }
            cfg.validate()?;
            let mut disk = Storage::default();
            let terms: Vec<u64> = d
                .get("log")
                .unwrap_or(&[])
                .iter()
                .map(|s| parse_u64(s))
                .collect::<Result<_, _>>()?;
            for (i, t) in terms.iter().enumerate() {
                disk.entries.push(Entry {
                    term: Term(*t),
                    index: LogIndex(i as u64 + 1),
                    payload: EntryPayload::Command(Bytes::new()),
                });
            }
            if let Some(i) = opt_u64(d, "index")? {
                if !terms.is_empty() {
                    return Err("index= and log= exclude each other".into());
                }
                let meta = SnapshotMeta {
                    last_index: LogIndex(i),
                    last_term: Term(1),
                    membership: bootstrap.clone(),
                };
                disk.snapshot = Some((meta, Vec::new()));
                disk.start = (LogIndex(i), Term(1));
                disk.hard_state = HardState { term: Term(1), voted_for: None, commit: LogIndex(i) };
            }
            let last_term = terms.last().copied().unwrap_or(disk.hard_state.term.0);
            disk.hard_state.term = Term(opt_u64(d, "term")?.unwrap_or(last_term));
            if let Some(c) = opt_u64(d, "commit")? {
                disk.hard_state.commit = LogIndex(c);
            }
            let node = Node::new(id, cfg, bootstrap.clone(), disk);
            self.nodes.insert(id, node);
            self.inbox.insert(id, VecDeque::new());
            self.observe(id);
            out += &self.summary(id);
        }
        Ok(out)
    }

    // ----- time and client requests -----

    fn campaign(&mut self, id: NodeId) -> Out {
        let core = self.core(id)?;
        if core.role() == Role::Leader {
            return Err(format!("{id} is already the leader"));
        }
        // Tick until the election timer fires (it then restarts from zero).
        let bound = core.config().election_ticks_max + 1;
        for _ in 0..bound {
            core.tick();
            if core.status().election_elapsed_ticks == 0 {
                self.observe(id);
                return Ok(String::new());
            }
        }
        Err(format!("{id} did not campaign within {bound} ticks (not a voter?)"))
    }

    fn tick(&mut self, id: NodeId, n: u64) -> Out {
        let core = self.core(id)?;
        for _ in 0..n {
            core.tick();
        }
        self.observe(id);
        Ok(String::new())
    }

    fn propose(&mut self, d: &Directive) -> Out {
        let pos = d.positional();
        let (Some(id), Some(data)) = (pos.first(), pos.get(1)) else {
            return Err("usage: propose N DATA".into());
        };
        let id = parse_id(&id[0])?;
        let data = Bytes::from(data[0].clone());
        let (index, term) = self.core(id)?.propose(data).map_err(|e| e.to_string())?;
        Ok(format!("{id}: proposed at {}\n", format::at(index, term)))
    }

    fn change(&mut self, d: &Directive) -> Out {
        let id = one_id(d)?;
        let one = |k: &str| -> Result<Option<NodeId>, String> {
            d.get(k).map(|v| parse_id(v.first().ok_or("missing id")?)).transpose()
        };
        let change = match (one("add-learner")?, one("promote")?, one("remove")?) {
            (Some(n), None, None) => ConfChange::AddLearner { id: n, addr: NodeAddr::default() },
            (None, Some(n), None) => ConfChange::Promote { id: n },
            (None, None, Some(n)) => ConfChange::Remove { id: n },
            _ => return Err("usage: change N add-learner=I | promote=I | remove=I".into()),
        };
        let index = self.core(id)?.change_membership(change).map_err(|e| e.to_string())?;
        Ok(format!("{id}: conf change appended at index {index}\n"))
    }

    // ----- the runtime: ready, delivery -----

    /// Takes the node's commands and executes them in order. With `hold`, the disk is slow:
    /// only `SendNow` is executed, the rest waits. Prints nothing if there was nothing to do
    /// and `always` is false.
    fn process_ready(&mut self, id: NodeId, hold: bool, always: bool) -> Out {
        let node = self.node_mut(id)?;
        let core = node.core.as_mut().ok_or(format!("node {id} is down"))?;
        let held = std::mem::take(&mut node.held);
        let promised = core.has_commands();
        let fresh = core.take_commands();
        if !promised && !fresh.is_empty() {
            let first = format::command(id, &fresh[0]).unwrap_or_default();
            self.violations.push(format!(
                "{id}: has_commands() was false but take_commands() returned {} (first: {first})",
                fresh.len()
            ));
        }
        let mut out = String::new();
        if held.is_empty() && fresh.is_empty() {
            if always {
                let _ = writeln!(out, "> {id} handling Ready\n  (nothing to do)");
            }
            return Ok(out);
        }
        let _ = writeln!(out, "> {id} handling Ready{}", if hold { " (disk held)" } else { "" });
        if !held.is_empty() {
            let what = if hold { "still waiting for the disk" } else { "the disk catches up on" };
            let _ = writeln!(out, "  {what}: {} held commands", held.len());
        }
        let n_held = held.len();
        for (i, cmd) in held.into_iter().chain(fresh).enumerate() {
            let Some(line) = format::command(id, &cmd) else { continue };
            if i == n_held && n_held > 0 {
                let _ = writeln!(out, "  new commands:");
            }
            let run_now = !hold || matches!(cmd, Command::SendNow(_) | Command::Event(_));
            if !run_now {
                let _ = writeln!(out, "  {line} (held)");
                self.node_mut(id)?.held.push(cmd);
                continue;
            }
            let _ = writeln!(out, "  {line}");
            self.run_command(id, &cmd)?;
        }
        self.observe(id);
        Ok(out)
    }

    fn run_command(&mut self, id: NodeId, cmd: &Command) -> Result<(), String> {
        let effect = match self.node_mut(id)?.execute(cmd) {
            Ok(e) => e,
            Err(e) => {
                self.violations.push(format!("broken runtime contract: {e}"));
                return Ok(());
            }
        };
        if let Command::Apply { entries } = cmd {
            for e in entries {
                self.record_committed(e.index, e.term, id);
            }
        }
        if let Effect::Send(msg, snapshot) = effect {
            let inbox = self.inbox.entry(msg.to).or_default();
            inbox.push_back(Envelope { msg, snapshot });
        }
        Ok(())
    }

    fn deliver_msgs(&mut self, d: &Directive) -> Out {
        let mut to = ids_of(d)?;
        to.extend(id_list(d.get("to"))?);
        let to: Vec<NodeId> = if to.is_empty() { self.inbox.keys().copied().collect() } else { to };
        let from = d.get("from").map(|v| id_list(Some(v))).transpose()?;
        let drop = id_list(d.get("drop"))?;
        let kind = d.get("type").and_then(|v| v.first()).cloned();
        let mut out = String::new();
        for id in to {
            out += &self.deliver_to(
                id,
                |m| {
                    from.as_ref().is_none_or(|f| f.contains(&m.from))
                        && kind.as_ref().is_none_or(|k| k == m.body.name())
                },
                drop.contains(&id),
            )?;
        }
        Ok(out)
    }

    /// Delivers the messages queued for `id` that `select` picks, in order.
    fn deliver_to(&mut self, id: NodeId, select: impl Fn(&Message) -> bool, drop: bool) -> Out {
        let queue = self.inbox.entry(id).or_default();
        let (picked, kept): (Vec<Envelope>, Vec<Envelope>) =
            std::mem::take(queue).into_iter().partition(|e| select(&e.msg));
        *queue = kept.into();
        if picked.is_empty() {
            return Ok(String::new());
        }
        let mut out = format!("> {id} receiving messages\n");
        for env in picked {
            let line = format::message(&env.msg);
            let why = if drop {
                Some("dropped")
            } else if self.partitioned(env.msg.from, id) {
                Some("dropped: partitioned")
            } else if self.nodes.get(&id).is_none_or(|n| n.core.is_none()) {
                Some("dropped: node is down")
            } else {
                None
            };
            if let Some(why) = why {
                let _ = writeln!(out, "  {line} ({why})");
                continue;
            }
            let _ = writeln!(out, "  {line}");
            let node = self.node_mut(id)?;
            if let (MessageBody::InstallSnapshot { meta }, Some(data)) =
                (&env.msg.body, env.snapshot)
            {
                node.received_snapshot = Some((meta.clone(), data));
            }
            node.core.as_mut().expect("checked above").step(env.msg);
            self.observe(id);
        }
        Ok(out)
    }

    fn stabilize(&mut self, ids: &[NodeId]) -> Out {
        const ROUNDS_MAX: usize = 1000;
        let mut out = String::new();
        for _ in 0..ROUNDS_MAX {
            let mut busy = false;
            for id in ids {
                if self.nodes.get(id).is_some_and(|n| n.core.is_some()) {
                    let s = self.process_ready(*id, false, false)?;
                    busy |= !s.is_empty();
                    out += &s;
                }
            }
            for id in ids {
                let s = self.deliver_to(*id, |m| ids.contains(&m.from), false)?;
                busy |= !s.is_empty();
                out += &s;
            }
            if !busy {
                return Ok(out);
            }
        }
        Err(format!("not stable after {ROUNDS_MAX} rounds:\n{out}"))
    }

    fn partitioned(&self, a: NodeId, b: NodeId) -> bool {
        match &self.partition {
            None => false,
            Some(groups) => !groups.iter().any(|g| g.contains(&a) && g.contains(&b)),
        }
    }

    fn crash(&mut self, id: NodeId) -> Out {
        let node = self.node_mut(id)?;
        if node.core.take().is_none() {
            return Err(format!("node {id} is already down"));
        }
        let lost = std::mem::take(&mut node.held);
        node.received_snapshot = None;
        let mut out = format!("{id} crashed");
        if lost.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "; the held commands never ran:");
            for c in &lost {
                if let Some(l) = format::command(id, c) {
                    let _ = writeln!(out, "  {l}");
                }
            }
        }
        Ok(out)
    }

    // ----- observation -----

    fn summary(&self, id: NodeId) -> String {
        let Some(core) = self.nodes.get(&id).and_then(|n| n.core.as_ref()) else {
            return format!("{id}: down\n");
        };
        let s = core.status();
        format!(
            "{id}: {} term={} commit={} last={} conf[{}]\n",
            s.role.as_str(),
            s.term,
            s.commit_index,
            format::at(s.last_index, s.last_term),
            format::membership(&s.membership)
        )
    }

    fn status(&self, id: NodeId) -> Out {
        let node = self.node(id)?;
        let Some(core) = node.core.as_ref() else { return Ok(format!("{id}: down\n")) };
        let s = core.status();
        let mut out = String::new();
        let vote = s.voted_for.map_or("none".into(), |v| v.to_string());
        let leader = s.leader.map_or("none".into(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{id}: {} term={} vote={vote} leader={leader} commit={} applied={} stable={} log=[{},{}] last_term={} snapshot={}",
            s.role.as_str(),
            s.term,
            s.commit_index,
            s.applied_index,
            s.stable_index,
            s.first_index,
            s.last_index,
            s.last_term,
            format::at(s.snapshot_index, s.snapshot_term),
        );
        let _ = writeln!(
            out,
            "   conf[{}] from index {}",
            format::membership(&s.membership),
            s.membership_index
        );
        if s.role != Role::Leader {
            let _ = writeln!(
                out,
                "   election timer {}/{} ticks",
                s.election_elapsed_ticks, s.election_timeout_ticks
            );
        }
        if let Some(t) = s.transfer_to {
            let _ = writeln!(out, "   transferring leadership to {t}");
        }
        for p in &s.progress {
            let mode = match p.mode {
                flotilla_raft::ProgressMode::Probe => "probe",
                flotilla_raft::ProgressMode::Replicate => "replicate",
                flotilla_raft::ProgressMode::Snapshot => "snapshot",
            };
            let _ = writeln!(
                out,
                "   {}: {mode} match={} next={} inflight={}{}{}",
                p.id,
                p.match_index,
                p.next_index,
                p.inflight,
                if p.voter { "" } else { " learner" },
                if p.recent_active { " active" } else { "" }
            );
        }
        Ok(out)
    }

    fn raft_log(&self, id: NodeId) -> Out {
        let core = self.node(id)?.core.as_ref().ok_or(format!("node {id} is down"))?;
        let mut out = String::new();
        let (first, last) = (core.first_index(), core.last_index());
        if first > last {
            let _ = writeln!(
                out,
                "log is empty; it starts after {}",
                format::at(first.prev(), core.term_at(first.prev()).unwrap_or_default())
            );
        }
        let mut i = first;
        while i <= last {
            let e = core.entry(i).ok_or(format!("entry {i} missing from memory"))?;
            let _ = writeln!(out, "{}", format::entry(e));
            i = i.next();
        }
        Ok(out)
    }

    /// Every node's log as the terms of its entries, like the paper's figures.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let Some(core) = node.core.as_ref() else {
                let _ = writeln!(out, "{id}: down");
                continue;
            };
            let mut terms = Vec::new();
            let mut i = core.first_index();
            while i <= core.last_index() {
                terms.push(core.term_at(i).map_or("?".into(), |t| t.to_string()));
                i = i.next();
            }
            let skipped = if core.first_index() > LogIndex(1) {
                format!("..{} ", core.first_index().prev())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{id}: {skipped}[{}] commit={}",
                terms.join(" "),
                core.commit_index()
            );
        }
        out
    }

    /// Records who leads which term (election safety) after any input to node `id`.
    fn observe(&mut self, id: NodeId) {
        let Some(core) = self.nodes.get(&id).and_then(|n| n.core.as_ref()) else { return };
        if core.role() == Role::Leader {
            let term = core.term();
            match self.leaders.get(&term) {
                Some(l) if *l != id => {
                    let v = format!("two leaders in term {term}: {l} and {id}");
                    if !self.violations.contains(&v) {
                        self.violations.push(v);
                    }
                }
                _ => {
                    self.leaders.insert(term, id);
                }
            }
        }
    }

    fn record_committed(&mut self, index: LogIndex, term: Term, by: NodeId) {
        match self.committed.get(&index) {
            Some((t, other)) if *t != term => self.violations.push(format!(
                "index {index} committed with term {t} on {other} but term {term} on {by}"
            )),
            Some(_) => {}
            None => {
                self.committed.insert(index, (term, by));
            }
        }
    }

    /// Every entry a live node considers committed agrees with what any node committed.
    fn check_safety(&mut self) {
        let mut seen = Vec::new();
        for (id, node) in &self.nodes {
            let Some(core) = node.core.as_ref() else { continue };
            let mut i = core.first_index().max(LogIndex(1));
            while i <= core.commit_index() {
                if let Some(t) = core.term_at(i) {
                    seen.push((i, t, *id));
                }
                i = i.next();
            }
        }
        for (i, t, id) in seen {
            self.record_committed(i, t, id);
        }
    }

    // ----- lookups -----

    fn node(&self, id: NodeId) -> Result<&Node, String> {
        self.nodes.get(&id).ok_or(format!("no node {id}"))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node, String> {
        self.nodes.get_mut(&id).ok_or(format!("no node {id}"))
    }

    fn core(&mut self, id: NodeId) -> Result<&mut flotilla_raft::RaftCore, String> {
        self.node_mut(id)?.core.as_mut().ok_or(format!("node {id} is down"))
    }
}

// ----- argument helpers -----

fn parse_u64(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn parse_id(s: &str) -> Result<NodeId, String> {
    parse_u64(s).map(NodeId)
}

fn id_list(v: Option<&[String]>) -> Result<Vec<NodeId>, String> {
    v.unwrap_or(&[]).iter().map(|s| parse_id(s)).collect()
}

/// The positional arguments as single ids.
fn ids_of(d: &Directive) -> Result<Vec<NodeId>, String> {
    d.positional().iter().map(|v| parse_id(v.first().ok_or("empty argument")?)).collect()
}

fn one_id(d: &Directive) -> Result<NodeId, String> {
    ids_of(d)?.first().copied().ok_or(format!("{} needs a node id", d.cmd))
}

fn opt_u64(d: &Directive, key: &str) -> Result<Option<u64>, String> {
    d.get(key).and_then(|v| v.first()).map(|s| parse_u64(s)).transpose()
}

fn opt_bool(d: &Directive, key: &str) -> Result<Option<bool>, String> {
    match d.get(key).and_then(|v| v.first()).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!("{key}={other}: expected true or false")),
    }
}

fn flag(d: &Directive, key: &str) -> Result<bool, String> {
    Ok(opt_bool(d, key)?.unwrap_or(false))
}
