//! The simulation: one seed, one world, one event queue. Events are processed in (time,
//! insertion order), so the run is a pure function of the seed and the options.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use bytes::Bytes;
use flotilla_raft::{
    Command, ConfChange, Config, Event, LogIndex, Membership, Message, MessageBody, NodeAddr,
    NodeId, RaftCore, RaftError, ReadMode, Role,
};

use crate::check::{Checker, Violation};
use crate::kv::{Kv, KvOp, KvResult, Request};
use crate::linearizable::{self, HistOp, LinResult};
use crate::node::{DiskOp, Node, NodeState, ReadWaiter, Waiter};
use crate::plan::{ACTIONS, Action, NetParams, Plan, Profile, SimOptions, TICK_US, skewed_tick};
use crate::rng::SimRng;
use crate::storage::{MemDisk, Storage};
use crate::trace::{Rec, Trace};

/// A client attempt that got no answer within this long is abandoned and retried.
const ATTEMPT_TIMEOUT_US: u64 = 40 * TICK_US;
/// A client gives up on an operation this long after invoking it.
const GIVE_UP_US: u64 = 250 * TICK_US;
/// At most this many nodes ever exist beyond the initial ones (ids are never reused).
const EXTRA_NODES_MAX: usize = 4;
/// A run that needs more events than this is stuck in a storm (healthy runs need ~50k).
const EVENTS_MAX: u64 = 3_000_000;
/// Rounds of `take_commands` after one input (each round may enable more work).
const COMMAND_ROUNDS_MAX: usize = 8;
/// The derived random stream that decides whether state machines survive crashes (node
/// streams are `id * 1_000_003 + incarnation`, far below).
const SM_SURVIVAL_STREAM: u64 = u64::MAX;

struct Packet {
    msg: Message,
    /// Snapshot bytes, for an InstallSnapshot.
    data: Option<Bytes>,
}

enum Ev {
    Tick { node: NodeId, inc: u64 },
    Deliver(Box<Packet>),
    Disk { node: NodeId, inc: u64, seq: u64 },
    Client { client: usize, token: u64 },
    Nemesis,
    Restart { node: NodeId, inc: u64 },
    KillLeader { node: NodeId, inc: u64, term: flotilla_raft::Term },
    NetCalm,
    SnapshotFailed { node: NodeId, inc: u64, to: NodeId },
    // The receiver's runtime confirmed the whole snapshot (its last chunk's ack).
    SnapshotDelivered { node: NodeId, inc: u64, to: NodeId, index: LogIndex },
    Heal,
    Probe,
    Deadline,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Idle,
    Proposed { node: NodeId, inc: u64 },
    Reading { node: NodeId, inc: u64 },
}

#[derive(Clone, Debug)]
struct ClientOp {
    hist: usize,
    seq: u64,
    op: KvOp,
    /// A Get that goes through the log instead of ReadIndex.
    via_log: bool,
    lease: bool,
    attempt_no: u64,
    attempt: Attempt,
    attempt_deadline: u64,
    give_up_at: u64,
    /// Some attempt may have been committed without the client learning it.
    maybe: bool,
}

struct Client {
    id: u32,
    seq: u64,
    leader: Option<NodeId>,
    op: Option<ClientOp>,
    token: u64,
    /// The last value this client saw per key (for CAS expectations).
    seen: [Option<u64>; 8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Chaos,
    Heal,
    Done,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub seed: u64,
    pub nodes: usize,
    pub profile: String,
    pub events: u64,
    pub sim_ms: u64,
    pub committed: u64,
    pub leaders: usize,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    pub crashes: u64,
    /// Restarts that went on from the state machine the crash left (`keep_sm_per_mille`).
    pub kept_sm_restarts: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    /// Received snapshots the state machine refused (`refuse_install_per_mille`).
    pub snapshots_refused: u64,
    /// Snapshots a leader offered again early (`Event::SnapshotOfferedAgain`).
    pub snapshots_offered_again: u64,
    pub config_changes: u64,
    pub heal_ms: u64,
    pub lin_inconclusive: bool,
    pub trace_hash: u64,
}

/// A seed that broke a property.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub property: String,
    pub detail: String,
    pub at_ms: u64,
    /// The last events before the failure, oldest first.
    pub tail: Vec<String>,
    pub rerun: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} FAILED: {} at {} ms", self.seed, self.property, self.at_ms)?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "  last {} events:", self.tail.len())?;
        for l in &self.tail {
            writeln!(f, "    {l}")?;
        }
        write!(f, "  rerun: {}", self.rerun)
    }
}

pub struct Sim {
    seed: u64,
    opts: SimOptions,
    plan: Plan,
    rng: SimRng,
    /// Whether a crashed node's state machine survives (`Plan::keep_sm_per_mille`).
    sm_rng: SimRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    /// Indexed by node id (slot 0 unused).
    nodes: Vec<Option<Node>>,
    initial: usize,
    net: NetParams,
    blocked: BTreeSet<(NodeId, NodeId)>,
    clients: Vec<Client>,
    history: Vec<HistOp>,
    discard: Vec<bool>,
    acked_index: LogIndex,
    next_read_id: u64,
    checker: Checker,
    trace: Trace,
    phase: Phase,
    heal_at: u64,
    failure: Option<(&'static str, String)>,
    stats: RunStats,
}

impl Sim {
    pub fn new(seed: u64, opts: &SimOptions) -> Sim {
        let mut rng = SimRng::new(seed);
        let mut plan = Plan::draw(&mut rng, opts);
        // A stream of its own, so that the main one is untouched: a seed whose state
        // machines never survive a crash replays as it did before this knob existed.
        let mut sm_rng = SimRng::derive(seed, SM_SURVIVAL_STREAM);
        plan.keep_sm_per_mille = sm_rng.pick(&[0, 500, 1000]).unwrap_or(0);
        let ids: Vec<NodeId> = (1..=plan.nodes as u64).map(NodeId).collect();
        let bootstrap = Membership::with_voters(ids.iter().copied());
        let mut sim = Sim {
            seed,
            opts: opts.clone(),
            rng,
            sm_rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            initial: plan.nodes,
            net: plan.net,
            blocked: BTreeSet::new(),
            clients: Vec::new(),
            history: Vec::new(),
            discard: Vec::new(),
            acked_index: LogIndex::ZERO,
            next_read_id: 1,
            checker: Checker::new(bootstrap.clone()),
            trace: Trace::new(opts.trace_tail, opts.trace),
            phase: Phase::Chaos,
            heal_at: opts.chaos_ticks * TICK_US,
            failure: None,
            stats: RunStats {
                seed,
                nodes: plan.nodes,
                profile: plan.profile.to_string(),
                ..RunStats::default()
            },
            plan,
        };
        sim.nodes.push(None);
        for (i, id) in ids.iter().enumerate() {
            let tick = sim.plan.tick_us[i];
            sim.add_node(*id, bootstrap.clone(), tick);
            // The bootstrap configuration is committed by definition.
            sim.node_mut(*id).expect("added").committed_member = true;
        }
        for c in 0..sim.plan.clients {
            sim.clients.push(Client {
                id: c as u32 + 1,
                seq: 0,
                leader: None,
                op: None,
                token: 0,
                seen: [None; 8],
            });
            let at = sim.rng.range(0, 30 * TICK_US);
            sim.wake_client(c, at);
        }
        if sim.plan.has_faults() {
            let at = sim.rng.range(sim.plan.nemesis_every_ticks.0, sim.plan.nemesis_every_ticks.1)
                * TICK_US;
            sim.schedule(at, Ev::Nemesis);
        }
        sim.schedule(sim.heal_at, Ev::Heal);
        sim
    }

    /// Runs to the end: success once healed and converged, or the first failure.
    pub fn run(mut self) -> Result<RunStats, Failure> {
        while let Some(s) = self.queue.pop() {
            self.now = s.at;
            self.stats.events += 1;
            self.handle(s.ev);
            if self.failure.is_none() && self.checker.config_changed {
                self.checker.config_changed = false;
                self.apply_committed_config();
            }
            if self.failure.is_some() || self.phase == Phase::Done {
                break;
            }
            if self.stats.events >= EVENTS_MAX {
                // A message storm (every answer begets more than one message) never ends.
                self.fail("liveness", format!("more than {EVENTS_MAX} events: a message storm?"));
                break;
            }
        }
        if self.failure.is_none() && self.phase != Phase::Done {
            self.fail("liveness", "the event queue ran dry".into());
        }
        if self.failure.is_none() && self.opts.linearizability {
            self.check_linearizability();
        }
        self.stats.sim_ms = self.now / 1000;
        self.stats.committed = self.checker.max_committed.0;
        self.stats.leaders = self.checker.leaders_elected();
        self.stats.trace_hash = self.trace.hash();
        match self.failure.take() {
            None => Ok(self.stats),
            Some((property, detail)) => Err(Failure {
                seed: self.seed,
                property: property.to_string(),
                detail,
                at_ms: self.now / 1000,
                tail: self.trace.tail(),
                rerun: self.rerun_command(),
            }),
        }
    }

    fn rerun_command(&self) -> String {
        let mut cmd = String::from("cargo run -p flotilla-sim --release");
        if self.opts.tweak_flag.is_some() {
            cmd.push_str(" --features broken-variants");
        }
        cmd.push_str(&format!(" -- --seed {} --trace", self.seed));
        if let Some(n) = self.opts.nodes {
            cmd.push_str(&format!(" --nodes {n}"));
        }
        if let Some(p) = self.opts.profile {
            cmd.push_str(&format!(" --profile {p}"));
        }
        if let Some(c) = self.opts.clients {
            cmd.push_str(&format!(" --clients {c}"));
        }
        if self.opts.chaos_ticks != SimOptions::default().chaos_ticks {
            cmd.push_str(&format!(" --chaos-ticks {}", self.opts.chaos_ticks));
        }
        if let Some(t) = &self.opts.tweak_flag {
            cmd.push_str(&format!(" {t}"));
        }
        cmd
    }

    // ----- plumbing -----

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, ev });
    }

    fn fail(&mut self, property: &'static str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some((property, detail));
        }
    }

    fn violation(&mut self, v: Violation) {
        self.fail(v.property, v.detail);
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.0 as usize).and_then(|n| n.as_ref())
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.0 as usize).and_then(|n| n.as_mut())
    }

    fn core_mut(&mut self, id: NodeId) -> Option<&mut RaftCore> {
        self.node_mut(id).filter(|n| n.running()).and_then(|n| n.core.as_mut())
    }

    fn alive(&self, id: NodeId, inc: u64) -> bool {
        self.node(id).is_some_and(|n| n.running() && n.incarnation == inc)
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().flatten().map(|n| n.id).collect()
    }

    fn running_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().flatten().filter(|n| n.running()).map(|n| n.id).collect()
    }

    fn base_config(&self, id: NodeId) -> Config {
        let mut cfg = Config::new(id, 0);
        self.plan.core.apply(&mut cfg);
        if let Some(t) = &self.opts.core_tweak {
            t(&mut cfg);
        }
        cfg
    }

    fn add_node(&mut self, id: NodeId, bootstrap: Membership, tick_us: u64) {
        let cfg = self.base_config(id);
        let node = Node::new(id, cfg, MemDisk::new(bootstrap), tick_us);
        let slot = id.0 as usize;
        if self.nodes.len() <= slot {
            self.nodes.resize_with(slot + 1, || None);
        }
        self.nodes[slot] = Some(node);
        self.start_node(id);
    }

    /// Builds the core from the durable store and starts ticking (first start or restart).
    fn start_node(&mut self, id: NodeId) {
        let seed = self.seed;
        let now = self.now;
        let phase_us = self.rng.range(1, TICK_US);
        let Some(node) = self.node_mut(id) else { return };
        let (mut init, data) = node.disk.load();
        let snap = init.snapshot.clone();
        let mut cfg = node.cfg.clone();
        cfg.rng_seed = SimRng::derive(seed, id.0 * 1_000_003 + node.incarnation).next_u64();
        // As the supervisor does: a state machine that kept its state goes on from it if it
        // covers everything the log no longer holds; otherwise it restores the snapshot.
        let snap_index = snap.as_ref().map_or(LogIndex::ZERO, |m| m.last_index);
        let kept = std::mem::take(&mut node.sm);
        let keep = kept.applied > LogIndex::ZERO && kept.applied >= snap_index;
        let sm = if keep {
            init.applied = kept.applied;
            kept
        } else {
            match (&snap, data) {
                (Some(meta), Some(bytes)) => match Kv::restore(&bytes) {
                    Ok(kv) if kv.applied == meta.last_index => kv,
                    Ok(kv) => {
                        let d = format!(
                            "n{id} snapshot bytes at {} but meta at {}",
                            kv.applied, meta.last_index
                        );
                        self.fail("persistence contract", d);
                        return;
                    }
                    Err(e) => {
                        self.fail("persistence contract", format!("n{id}: {e}"));
                        return;
                    }
                },
                _ => Kv::default(),
            }
        };
        let core = RaftCore::new(cfg, init);
        self.stats.kept_sm_restarts += u64::from(keep);
        let node = self.node_mut(id).expect("exists");
        let kept_sm = keep.then_some(sm.applied.0);
        node.sm = sm;
        node.state = NodeState::Running;
        node.last_done_at = now;
        let inc = node.incarnation;
        let (term, commit, last) = (core.term().0, core.commit_index().0, core.last_index().0);
        node.core = Some(core);
        if inc > 0 {
            self.trace.rec(now, Rec::Restart { node: id.0, term, commit, last, kept_sm });
        }
        let node = slot(&self.nodes, id).expect("exists");
        if let Err(v) = self.checker.on_restart(id, node.core.as_ref().expect("set"), &node.disk) {
            self.violation(v);
        }
        self.schedule(now + phase_us, Ev::Tick { node: id, inc });
        self.after(id);
    }

    // ----- events -----

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, inc } => {
                if !self.alive(node, inc) {
                    return;
                }
                if let Some(c) = self.core_mut(node) {
                    c.tick();
                }
                self.after(node);
                let period = self.node(node).map_or(TICK_US, |n| n.tick_us);
                self.schedule(self.now + period, Ev::Tick { node, inc });
            }
            Ev::Deliver(p) => self.deliver(*p),
            Ev::Disk { node, inc, seq } => self.disk_done(node, inc, seq),
            Ev::Client { client, token } => {
                if self.clients[client].token == token {
                    self.client_wake(client);
                }
            }
            Ev::Nemesis => self.nemesis(),
            Ev::Restart { node, inc } => {
                if self
                    .node(node)
                    .is_some_and(|n| n.state == NodeState::Crashed && n.incarnation == inc)
                {
                    self.start_node(node);
                }
            }
            Ev::KillLeader { node, inc, term } => {
                let still = self.alive(node, inc)
                    && self
                        .node(node)
                        .and_then(|n| n.core.as_ref())
                        .is_some_and(|c| c.role() == Role::Leader && c.term() == term);
                if still && self.phase == Phase::Chaos {
                    self.crash(node);
                }
            }
            Ev::NetCalm => {
                if self.phase == Phase::Chaos {
                    self.net = self.plan.net;
                    self.trace.rec(self.now, Rec::Nemesis { what: "storm over", a: 0, b: 0 });
                }
            }
            Ev::SnapshotFailed { node, inc, to } => {
                if self.alive(node, inc) {
                    if let Some(c) = self.core_mut(node) {
                        c.snapshot_send_failed(to);
                    }
                    self.after(node);
                }
            }
            Ev::SnapshotDelivered { node, inc, to, index } => {
                if self.alive(node, inc) && !self.blocked.contains(&(to, node)) {
                    if let Some(c) = self.core_mut(node) {
                        c.snapshot_delivered(to, index);
                    }
                    self.after(node);
                }
            }
            Ev::Heal => self.heal(),
            Ev::Probe => self.probe(),
            Ev::Deadline => {
                if self.phase == Phase::Heal {
                    let d = self.convergence_report();
                    self.fail(
                        "liveness",
                        format!(
                            "not converged {} ticks after healing: {d}",
                            self.opts.heal_ticks_max
                        ),
                    );
                }
            }
        }
    }

    /// After any input to node `id`: execute its commands, then check every property.
    fn after(&mut self, id: NodeId) {
        self.process_commands(id);
        if self.failure.is_some() {
            return;
        }
        let Some(node) = slot(&self.nodes, id) else { return };
        let Some(core) = node.core.as_ref().filter(|_| node.running()) else { return };
        if self.opts.validate && !cfg!(debug_assertions) {
            // Debug builds validate inside the core after every input already.
            core.validate();
        }
        if core.applied_index() != node.sm.applied {
            let d = format!(
                "n{id} core applied {} but state machine at {}",
                core.applied_index(),
                node.sm.applied
            );
            self.fail("apply contract", d);
            return;
        }
        if let Err(v) = self.checker.after_step(id, core) {
            self.violation(v);
        }
    }

    fn process_commands(&mut self, id: NodeId) {
        for _ in 0..COMMAND_ROUNDS_MAX {
            let Some(core) = self.core_mut(id) else { return };
            let cmds = core.take_commands();
            if cmds.is_empty() {
                return;
            }
            for cmd in cmds {
                self.exec(id, cmd);
                if self.failure.is_some() {
                    return;
                }
            }
            if !self.core_mut(id).is_some_and(|c| c.has_commands()) {
                return;
            }
        }
    }

    fn exec(&mut self, id: NodeId, cmd: Command) {
        if !self.node(id).is_some_and(|n| n.running()) {
            return;
        }
        match cmd {
            Command::SaveHardState(hs) => {
                self.enqueue_disk(id, DiskOp::Write { hs: Some(hs), entries: Vec::new() })
            }
            Command::AppendLog { entries } => {
                let node = slot(&self.nodes, id).expect("running");
                let core = node.core.as_ref().expect("running");
                if entries.is_empty() {
                    self.fail("persistence contract", format!("n{id} AppendLog with no entries"));
                    return;
                }
                if let Err(v) = self.checker.on_append(id, core, &entries) {
                    self.violation(v);
                    return;
                }
                self.enqueue_disk(id, DiskOp::Write { hs: None, entries });
            }
            Command::Send(m) => {
                let node = self.node_mut(id).expect("running");
                if node.has_pending_persist() {
                    let barrier = node.next_seq - 1;
                    node.waiting.push_back((barrier, m));
                } else {
                    self.send(m, None);
                }
            }
            Command::SendNow(m) => self.send(m, None),
            Command::Apply { entries } => self.apply(id, entries),
            Command::SendSnapshot { to, meta } => self.send_snapshot(id, to, meta),
            Command::InstallSnapshot { meta } => {
                let node = self.node_mut(id).expect("running");
                match node.incoming.take() {
                    Some((m, data)) if m == meta => {
                        node.installing = true;
                        let refuse = self.plan.refuse_install_per_mille;
                        if refuse > 0 && self.rng.chance(refuse) {
                            self.enqueue_disk(id, DiskOp::RefuseInstall { meta });
                        } else {
                            self.enqueue_disk(id, DiskOp::Install { meta, data });
                        }
                    }
                    _ => self.fail(
                        "runtime",
                        format!(
                            "n{id} asked to install snapshot {} it did not receive",
                            meta.last_index
                        ),
                    ),
                }
            }
            Command::PurgeLog { upto } => self.enqueue_disk(id, DiskOp::Purge(upto)),
            // Memory only: freed here, at once.
            Command::Release(_) => {}
            Command::ReadReady { id: rid, index } => {
                let node = self.node_mut(id).expect("running");
                if let Some(r) = node.reads.remove(&rid) {
                    node.ready_reads.push((index, r));
                    self.serve_reads(id);
                }
            }
            Command::ReadFailed { id: rid, .. } => {
                let node = self.node_mut(id).expect("running");
                if let Some(r) = node.reads.remove(&rid) {
                    self.attempt_failed(r.waiter, false, None);
                }
            }
            Command::Event(ev) => self.on_event(id, ev),
        }
    }

    fn on_event(&mut self, id: NodeId, ev: Event) {
        match ev {
            Event::RoleChanged { role, term, .. } => {
                self.trace
                    .rec(self.now, Rec::Role { node: id.0, role: role.as_str(), term: term.0 });
            }
            Event::LeaderElected { term, .. } => {
                if let (Some((lo, hi)), Phase::Chaos) =
                    (self.plan.kill_new_leader_ticks, self.phase)
                {
                    let inc = self.node(id).map_or(0, |n| n.incarnation);
                    let at = self.now + self.rng.range(lo, hi) * TICK_US;
                    self.schedule(at, Ev::KillLeader { node: id, inc, term });
                }
            }
            Event::SnapshotInstalled { index, .. } => {
                self.stats.snapshots_installed += 1;
                self.trace.rec(
                    self.now,
                    Rec::Disk { node: id.0, what: "installed snapshot", a: index.0 },
                );
            }
            Event::MembershipChanged { index, .. } => {
                self.trace.rec(self.now, Rec::Disk { node: id.0, what: "config from", a: index.0 });
            }
            Event::SnapshotOfferedAgain { to, .. } => {
                self.stats.snapshots_offered_again += 1;
                self.trace
                    .rec(self.now, Rec::Disk { node: id.0, what: "offers again to", a: to.0 });
            }
            _ => {}
        }
    }

    // ----- disk -----

    fn enqueue_disk(&mut self, id: NodeId, op: DiskOp) {
        let (lo, hi) = self.plan.disk.delay_us;
        let mut delay = self.rng.range(lo, hi);
        if self.rng.chance(self.plan.disk.slow_per_mille) {
            delay = self.rng.range(self.plan.disk.slow_us.0, self.plan.disk.slow_us.1);
        }
        let now = self.now;
        let node = self.node_mut(id).expect("running");
        let seq = node.next_seq;
        node.next_seq += 1;
        let at = (now + delay).max(node.last_done_at);
        node.last_done_at = at;
        node.queue.push_back((seq, op));
        let inc = node.incarnation;
        self.schedule(at, Ev::Disk { node: id, inc, seq });
    }

    fn disk_done(&mut self, id: NodeId, inc: u64, seq: u64) {
        if !self.alive(id, inc) {
            return;
        }
        let node = self.node_mut(id).expect("alive");
        let Some((s, op)) = node.queue.pop_front() else { return };
        debug_assert_eq!(s, seq, "disk ops complete in order");
        node.done_seq = s;
        let result = match &op {
            DiskOp::Write { hs, entries } => node.disk.write(hs.as_ref(), entries),
            DiskOp::Purge(upto) => node.disk.purge(*upto),
            DiskOp::SaveSnapshot { meta, data } => {
                // A snapshot installed meanwhile may already be newer: then this one is moot.
                let newer =
                    node.disk.snapshot().is_some_and(|(m, _)| m.last_index >= meta.last_index);
                if newer { Ok(()) } else { node.disk.save_snapshot(meta, data.clone()) }
            }
            DiskOp::Install { meta, data } => node.disk.reset_to_snapshot(meta, data.clone()),
            DiskOp::RefuseInstall { .. } => Ok(()),
        };
        if let Err(e) = result {
            self.fail("persistence contract", format!("n{id} disk refused {}: {e}", op_name(&op)));
            return;
        }
        let (what, a) = match &op {
            DiskOp::Write { hs: Some(hs), entries } if entries.is_empty() => {
                ("durable hard state term", hs.term.0)
            }
            DiskOp::Write { entries, .. } => {
                ("durable entries up to", entries.last().map_or(0, |e| e.index.0))
            }
            DiskOp::Purge(upto) => ("purged up to", upto.0),
            DiskOp::SaveSnapshot { meta, .. } | DiskOp::Install { meta, .. } => {
                ("durable snapshot", meta.last_index.0)
            }
            DiskOp::RefuseInstall { meta } => ("refused snapshot", meta.last_index.0),
        };
        self.trace.rec(self.now, Rec::Disk { node: id.0, what, a });
        // Release the sends that waited for this op.
        let mut out = Vec::new();
        let node = self.node_mut(id).expect("alive");
        while node.waiting.front().is_some_and(|(b, _)| *b <= s) {
            out.push(node.waiting.pop_front().expect("front").1);
        }
        for m in out {
            self.send(m, None);
        }
        match op {
            DiskOp::Write { entries, .. } => {
                if let Some(last) = entries.last() {
                    let (i, t) = (last.index, last.term);
                    if let Some(c) = self.core_mut(id) {
                        c.log_persisted(i, t);
                    }
                }
            }
            DiskOp::Purge(_) => {}
            DiskOp::SaveSnapshot { meta, .. } => {
                self.stats.snapshots_built += 1;
                self.trace.rec(
                    self.now,
                    Rec::Disk { node: id.0, what: "snapshot built", a: meta.last_index.0 },
                );
                let node = self.node_mut(id).expect("alive");
                node.building_snapshot = false;
                if let Some(c) = node.core.as_mut() {
                    c.snapshot_built(meta);
                }
            }
            DiskOp::Install { meta, data } => {
                let kv = match Kv::restore(&data) {
                    Ok(kv) => kv,
                    Err(e) => {
                        self.fail("runtime", format!("n{id} installs a bad snapshot: {e}"));
                        return;
                    }
                };
                if let Err(v) = self.checker.on_snapshot(id, &meta) {
                    self.violation(v);
                    return;
                }
                let node = self.node_mut(id).expect("alive");
                node.sm = kv;
                node.installing = false;
                if let Some(c) = node.core.as_mut() {
                    c.snapshot_installed(meta);
                }
                self.resolve_proposals(id);
                self.serve_reads(id);
            }
            DiskOp::RefuseInstall { meta } => {
                self.stats.snapshots_refused += 1;
                let node = self.node_mut(id).expect("alive");
                node.installing = false;
                if let Some(c) = node.core.as_mut() {
                    c.snapshot_install_failed(meta);
                }
            }
        }
        self.after(id);
    }

    // ----- network -----

    fn send(&mut self, msg: Message, data: Option<Bytes>) {
        let (from, to) = (msg.from, msg.to);
        let what = msg.body.name();
        self.checker.on_send(from, &msg);
        if self.blocked.contains(&(from, to)) {
            self.trace.rec(self.now, Rec::Drop { from: from.0, to: to.0, what, why: "partition" });
            return;
        }
        if self.rng.chance(self.net.drop_per_mille) {
            self.trace.rec(self.now, Rec::Drop { from: from.0, to: to.0, what, why: "loss" });
            return;
        }
        let copies = if self.rng.chance(self.net.dup_per_mille) { 2 } else { 1 };
        for c in 0..copies {
            let delay = if self.rng.chance(self.net.late_per_mille) {
                self.rng.range(self.net.late_us.0, self.net.late_us.1)
            } else {
                self.rng.range(self.net.delay_us.0, self.net.delay_us.1)
            };
            // Snapshots are big: they take longer.
            let delay = delay + data.as_ref().map_or(0, |d| d.len() as u64 / 8);
            let _ = c;
            let p = Packet { msg: msg.clone(), data: data.clone() };
            self.schedule(self.now + delay, Ev::Deliver(Box::new(p)));
        }
    }

    fn deliver(&mut self, p: Packet) {
        let (from, to) = (p.msg.from, p.msg.to);
        let what = p.msg.body.name();
        if self.blocked.contains(&(from, to)) {
            self.trace.rec(self.now, Rec::Drop { from: from.0, to: to.0, what, why: "partition" });
            return;
        }
        if !self.node(to).is_some_and(|n| n.running()) {
            self.trace.rec(self.now, Rec::Drop { from: from.0, to: to.0, what, why: "down" });
            return;
        }
        let (a, b, c) = summary(&p.msg.body);
        self.trace.rec(
            self.now,
            Rec::Deliver { from: from.0, to: to.0, what, term: p.msg.term.0, a, b, c },
        );
        if let (Some(data), MessageBody::InstallSnapshot { meta }) = (&p.data, &p.msg.body) {
            match Kv::restore(data) {
                Ok(kv) if kv.applied == meta.last_index => {}
                _ => {
                    self.fail(
                        "runtime",
                        format!("snapshot bytes from n{from} do not match {}", meta.last_index),
                    );
                    return;
                }
            }
            if let Err(v) = self.checker.on_snapshot(from, meta) {
                self.violation(v);
                return;
            }
            self.node_mut(to).expect("running").incoming = Some((meta.clone(), data.clone()));
        }
        let snapshot = match &p.msg.body {
            MessageBody::InstallSnapshot { meta } => Some(meta.last_index),
            _ => None,
        };
        if let Some(c) = self.core_mut(to) {
            c.step(p.msg);
        }
        self.after(to);
        if let Some(n) = self.node_mut(to) {
            n.incoming = None;
        }
        if let Some(index) = snapshot {
            // The receiving runtime acks the last chunk after its core took the snapshot;
            // the ack crosses the network like any message (and may be lost).
            self.ack_snapshot(from, to, index);
        }
    }

    fn send_snapshot(&mut self, id: NodeId, to: NodeId, meta: flotilla_raft::SnapshotMeta) {
        let node = self.node(id).expect("running");
        let term = node.core.as_ref().expect("running").term();
        let data = match node.disk.snapshot() {
            Some((m, data)) if *m == meta => data.clone(),
            other => {
                let have = other.map(|(m, _)| m.last_index);
                self.fail(
                    "persistence contract",
                    format!("n{id} offers snapshot {} but holds {have:?} durably", meta.last_index),
                );
                return;
            }
        };
        let msg = Message { from: id, to, term, body: MessageBody::InstallSnapshot { meta } };
        let doomed =
            self.blocked.contains(&(id, to)) || !self.node(to).is_some_and(|n| n.running());
        if doomed && self.rng.chance(500) {
            // The runtime notices the transfer failed (connection refused) and says so.
            let inc = self.node(id).map_or(0, |n| n.incarnation);
            let at = self.now + self.rng.range(1_000, 5 * TICK_US);
            self.schedule(at, Ev::SnapshotFailed { node: id, inc, to });
        }
        self.send(msg, Some(data));
    }

    fn ack_snapshot(&mut self, leader: NodeId, follower: NodeId, index: LogIndex) {
        if self.rng.chance(self.net.drop_per_mille) {
            return;
        }
        let Some(inc) = self.node(leader).map(|n| n.incarnation) else { return };
        let at = self.now + self.rng.range(self.net.delay_us.0, self.net.delay_us.1);
        self.schedule(at, Ev::SnapshotDelivered { node: leader, inc, to: follower, index });
    }

    // ----- state machine, snapshots, clients' answers -----

    fn apply(&mut self, id: NodeId, entries: Vec<flotilla_raft::Entry>) {
        let node = slot(&self.nodes, id).expect("running");
        if let Err(v) = self.checker.on_apply(id, &entries, &node.disk) {
            self.violation(v);
            return;
        }
        let (lo, hi) = (entries[0].index.0, entries[entries.len() - 1].index.0);
        let node = self.node_mut(id).expect("running");
        for e in &entries {
            if let Err(e) = node.sm.apply(e) {
                self.fail("apply contract", format!("n{id}: {e}"));
                return;
            }
        }
        self.trace.rec(self.now, Rec::Apply { node: id.0, lo, hi });
        self.resolve_proposals(id);
        self.serve_reads(id);
        self.maybe_snapshot(id, false);
    }

    fn maybe_snapshot(&mut self, id: NodeId, forced: bool) {
        let every = self.plan.snapshot_every;
        let Some(node) = self.node(id).filter(|n| n.running()) else { return };
        if node.building_snapshot || node.installing {
            return;
        }
        let applied = node.sm.applied;
        let snap = node.disk.snapshot().map_or(LogIndex::ZERO, |(m, _)| m.last_index);
        if applied <= snap || (!forced && applied.0 - snap.0 < every) {
            return;
        }
        let Ok(meta) = node.core.as_ref().expect("running").snapshot_meta_for(applied) else {
            return;
        };
        let data = node.sm.snapshot();
        if let Err(v) = self.checker.on_snapshot(id, &meta) {
            self.violation(v);
            return;
        }
        self.node_mut(id).expect("running").building_snapshot = true;
        self.enqueue_disk(id, DiskOp::SaveSnapshot { meta, data });
    }

    fn resolve_proposals(&mut self, id: NodeId) {
        let node = self.node_mut(id).expect("running");
        let applied = node.sm.applied;
        let later = node.proposals.split_off(&applied.next());
        let done = std::mem::replace(&mut node.proposals, later);
        let mut answers = Vec::new();
        for (index, ws) in done {
            for w in ws {
                answers.push((w, index, node.sm.session_result(w.client_id, w.seq)));
            }
        }
        for (w, index, res) in answers {
            match res {
                Some(r) => self.client_done(w, r, Some(index)),
                // Index `index` holds another entry: this attempt was not committed, and
                // could not be anywhere else (each proposal makes exactly one entry).
                None => self.attempt_failed(w, false, None),
            }
        }
    }

    fn serve_reads(&mut self, id: NodeId) {
        let node = self.node_mut(id).expect("running");
        let applied = node.sm.applied;
        if !node.ready_reads.iter().any(|(i, _)| *i <= applied) {
            return;
        }
        let mut served = Vec::new();
        node.ready_reads.retain(|(i, r)| {
            if *i <= applied {
                served.push(*r);
                false
            } else {
                true
            }
        });
        let answers: Vec<(Waiter, KvResult)> = served
            .iter()
            .map(|r: &ReadWaiter| (r.waiter, KvResult::Value(node.sm.get(r.key))))
            .collect();
        for (w, r) in answers {
            self.client_done(w, r, None);
        }
    }

    // ----- clients -----

    fn wake_client(&mut self, c: usize, at: u64) {
        self.clients[c].token += 1;
        let token = self.clients[c].token;
        self.schedule(at, Ev::Client { client: c, token });
    }

    fn client_wake(&mut self, c: usize) {
        let now = self.now;
        match self.clients[c].op.clone() {
            None => {
                if self.phase == Phase::Chaos {
                    self.start_op(c);
                }
            }
            Some(op) => {
                if now >= op.give_up_at {
                    self.give_up(c);
                } else if op.attempt == Attempt::Idle || now >= op.attempt_deadline {
                    if matches!(op.attempt, Attempt::Proposed { .. }) {
                        self.clients[c].op.as_mut().expect("some").maybe = true;
                    }
                    self.attempt(c);
                } else {
                    self.wake_client(c, op.attempt_deadline.min(op.give_up_at));
                }
            }
        }
    }

    fn start_op(&mut self, c: usize) {
        let key = self.rng.below(u64::from(self.plan.keys)) as u8;
        let client = &mut self.clients[c];
        client.seq += 1;
        let seq = client.seq;
        let value = (u64::from(client.id) << 40) | seq;
        let r = self.rng.below(1000) as u32;
        let op = if r < self.plan.get_per_mille {
            KvOp::Get { key }
        } else if r < self.plan.get_per_mille + self.plan.cas_per_mille {
            KvOp::Cas { key, expected: self.clients[c].seen[key as usize], new: value }
        } else {
            KvOp::Put { key, value }
        };
        let via_log =
            matches!(op, KvOp::Get { .. }) && !self.rng.chance(self.plan.read_index_per_mille);
        let lease = self.rng.chance(self.plan.lease_per_mille);
        self.history.push(HistOp {
            client: self.clients[c].id,
            call: self.now,
            ret: None,
            op,
            out: None,
        });
        self.discard.push(false);
        self.clients[c].op = Some(ClientOp {
            hist: self.history.len() - 1,
            seq,
            op,
            via_log,
            lease,
            attempt_no: 0,
            attempt: Attempt::Idle,
            attempt_deadline: 0,
            give_up_at: self.now + GIVE_UP_US,
            maybe: false,
        });
        self.attempt(c);
    }

    fn pick_target(&mut self, c: usize) -> Option<NodeId> {
        if let Some(l) = self.clients[c].leader
            && self.node(l).is_some_and(|n| n.running())
        {
            return Some(l);
        }
        let ids = self.running_ids();
        self.rng.pick(&ids)
    }

    fn attempt(&mut self, c: usize) {
        let Some(target) = self.pick_target(c) else {
            self.retry_later(c, TICK_US);
            return;
        };
        let client_id = self.clients[c].id;
        let op = self.clients[c].op.as_mut().expect("an op");
        op.attempt_no += 1;
        op.attempt = Attempt::Idle;
        op.attempt_deadline = self.now + ATTEMPT_TIMEOUT_US;
        let w = Waiter { client: c, client_id, seq: op.seq, attempt: op.attempt_no };
        let (kind, lease) = (op.op, op.lease);
        let use_read_index = matches!(kind, KvOp::Get { .. }) && !op.via_log;
        let inc = self.node(target).map_or(0, |n| n.incarnation);
        let result = if use_read_index {
            let rid = self.next_read_id;
            self.next_read_id += 1;
            let mode = if lease { ReadMode::Lease } else { ReadMode::ReadIndex };
            let core = self.core_mut(target).expect("running");
            core.read_index(rid, mode).map(|_| {
                let key = kind.key();
                self.node_mut(target)
                    .expect("running")
                    .reads
                    .insert(rid, ReadWaiter { waiter: w, key });
                Attempt::Reading { node: target, inc }
            })
        } else {
            let req = Request { client: client_id, seq: w.seq, op: kind };
            let core = self.core_mut(target).expect("running");
            core.propose(req.encode()).map(|(index, _)| {
                self.node_mut(target).expect("running").proposals.entry(index).or_default().push(w);
                Attempt::Proposed { node: target, inc }
            })
        };
        match result {
            Ok(att) => {
                let op = self.clients[c].op.as_mut().expect("an op");
                op.attempt = att;
                let at = op.attempt_deadline.min(op.give_up_at);
                self.trace.rec(
                    self.now,
                    Rec::Client { client: client_id, what: "attempt", node: target.0, a: w.seq },
                );
                self.wake_client(c, at);
                // May answer at once (a lease read, a single voter).
                self.after(target);
            }
            Err(RaftError::NotLeader { leader }) => {
                self.clients[c].leader = leader.filter(|l| *l != target);
                let delay = if self.clients[c].leader.is_some() { 500 } else { TICK_US };
                self.retry_later(c, delay);
            }
            Err(_) => self.retry_later(c, 2 * TICK_US),
        }
    }

    fn retry_later(&mut self, c: usize, delay_us: u64) {
        let jitter = self.rng.range(0, delay_us);
        if let Some(op) = self.clients[c].op.as_mut() {
            op.attempt = Attempt::Idle;
        }
        self.wake_client(c, self.now + delay_us + jitter);
    }

    fn current(&self, w: Waiter) -> bool {
        self.clients[w.client]
            .op
            .as_ref()
            .is_some_and(|op| op.seq == w.seq && op.attempt_no == w.attempt)
    }

    fn client_done(&mut self, w: Waiter, r: KvResult, index: Option<LogIndex>) {
        if !self.current(w) {
            return;
        }
        let now = self.now;
        let client = &mut self.clients[w.client];
        let op = client.op.take().expect("current");
        let h = &mut self.history[op.hist];
        h.ret = Some(now);
        h.out = Some(r);
        let key = op.op.key() as usize;
        match (op.op, r) {
            (KvOp::Get { .. }, KvResult::Value(v)) => client.seen[key] = v,
            (KvOp::Put { value, .. }, _) => client.seen[key] = Some(value),
            (KvOp::Cas { new, .. }, KvResult::Cas(true)) => client.seen[key] = Some(new),
            (KvOp::Cas { .. }, KvResult::Cas(false)) => client.seen[key] = None,
            _ => {}
        }
        if (!matches!(op.op, KvOp::Get { .. }) || op.via_log)
            && let Some(i) = index
        {
            self.acked_index = self.acked_index.max(i);
        }
        self.stats.ops_ok += 1;
        self.trace.rec(now, Rec::Client { client: client.id, what: "ok", node: 0, a: op.seq });
        let think = self.rng.range(self.opts.think_us.0, self.opts.think_us.1);
        self.wake_client(w.client, now + think);
    }

    /// The attempt `w` ended without an answer. `maybe`: it may still take effect.
    fn attempt_failed(&mut self, w: Waiter, maybe: bool, _why: Option<&str>) {
        if !self.current(w) {
            return;
        }
        if let Some(op) = self.clients[w.client].op.as_mut() {
            op.maybe |= maybe;
        }
        self.clients[w.client].leader = None;
        self.retry_later(w.client, 2_000);
    }

    fn give_up(&mut self, c: usize) {
        let op = self.clients[c].op.take().expect("an op");
        let maybe = op.maybe || matches!(op.attempt, Attempt::Proposed { .. });
        if maybe {
            self.stats.ops_unknown += 1;
        } else {
            self.discard[op.hist] = true;
            self.stats.ops_failed += 1;
        }
        let id = self.clients[c].id;
        self.trace.rec(
            self.now,
            Rec::Client {
                client: id,
                what: if maybe { "gave up (unknown)" } else { "gave up" },
                node: 0,
                a: op.seq,
            },
        );
        let think = self.rng.range(self.opts.think_us.0, self.opts.think_us.1);
        self.wake_client(c, self.now + think);
    }

    // ----- faults -----

    fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(flotilla_raft::Term, NodeId)> = None;
        for n in self.nodes.iter().flatten().filter(|n| n.running()) {
            let c = n.core.as_ref().expect("running");
            if c.role() == Role::Leader && best.is_none_or(|(t, _)| c.term() > t) {
                best = Some((c.term(), n.id));
            }
        }
        best.map(|b| b.1)
    }

    fn crash(&mut self, id: NodeId) {
        if !self.node(id).is_some_and(|n| n.running()) {
            return;
        }
        let keep_sm = self.sm_rng.chance(self.plan.keep_sm_per_mille);
        // Half of the state machines that survive lost their last writes, as `flotilla-kv`
        // can on a power loss (it does not sync its own writes; the log's sync covers them).
        let lose_suffix = keep_sm && self.sm_rng.chance(500);
        let node = self.node_mut(id).expect("running");
        let lost = node.crash(keep_sm);
        node.state = NodeState::Crashed;
        let inc = node.incarnation;
        if lose_suffix && let Err(e) = self.roll_back_sm(id) {
            self.fail("persistence contract", format!("n{id}: {e}"));
            return;
        }
        self.stats.crashes += 1;
        self.trace.rec(self.now, Rec::Crash { node: id.0 });
        for (w, proposal) in lost {
            self.attempt_failed(w, proposal, None);
        }
        if self.phase == Phase::Chaos {
            let (lo, hi) = self.plan.downtime_ticks;
            let at = self.now + self.rng.range(lo, hi) * TICK_US;
            self.schedule(at, Ev::Restart { node: id, inc });
        }
    }

    /// Takes a crashed node's state machine back to a random index between its durable
    /// snapshot and what it had applied: the snapshot's bytes, then the durable entries
    /// after them. Every applied entry must still be in the durable log.
    fn roll_back_sm(&mut self, id: NodeId) -> Result<(), String> {
        let node = slot(&self.nodes, id).expect("exists");
        let (init, data) = node.disk.load();
        let snap = init.snapshot.as_ref().map_or(LogIndex::ZERO, |m| m.last_index);
        let applied = node.sm.applied;
        if applied <= snap {
            return Ok(());
        }
        let to = LogIndex(self.sm_rng.range(snap.0, applied.0));
        let mut kv = match data {
            Some(bytes) => Kv::restore(&bytes)?,
            None => Kv::default(),
        };
        let from = kv.applied;
        for e in init.entries.iter().filter(|e| e.index > from && e.index <= to) {
            kv.apply(e)?;
        }
        if kv.applied != to {
            return Err(format!(
                "rolling the state machine back to {to}: the durable log only gives {}",
                kv.applied
            ));
        }
        self.node_mut(id).expect("exists").sm = kv;
        Ok(())
    }

    /// May `id` crash without taking down a majority of the voters (unless the plan allows)?
    fn may_crash(&self, id: NodeId) -> bool {
        if self.plan.crash_majority {
            return true;
        }
        let voters = &self.checker.latest_config.1.voters;
        let down = voters
            .iter()
            .filter(|v| **v == id || !self.node(**v).is_some_and(|n| n.running()))
            .count();
        down <= (voters.len() - 1) / 2
    }

    fn nemesis(&mut self) {
        if self.phase != Phase::Chaos {
            return;
        }
        let action = ACTIONS[self.rng.weighted(&self.plan.weights)];
        self.act(action);
        let (lo, hi) = self.plan.nemesis_every_ticks;
        let at = self.now + self.rng.range(lo, hi) * TICK_US;
        self.schedule(at, Ev::Nemesis);
    }

    fn partition(&mut self, side: &[NodeId], what: &'static str) {
        self.blocked.clear();
        let all = self.node_ids();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                self.blocked.insert((*a, *b));
                self.blocked.insert((*b, *a));
            }
        }
        self.trace.rec(
            self.now,
            Rec::Nemesis { what, a: side.first().map_or(0, |n| n.0), b: side.len() as u64 },
        );
    }

    fn act(&mut self, action: Action) {
        let ids = self.node_ids();
        let leader = self.leader();
        match action {
            Action::Split => {
                let k = self.rng.range(1, (ids.len() as u64 / 2).max(1)) as usize;
                let side = self.choose(&ids, k);
                self.partition(&side, "split");
            }
            Action::IsolateLeader => {
                if let Some(l) = leader {
                    self.partition(&[l], "isolate leader");
                }
            }
            Action::LeaderMinority => {
                if let Some(l) = leader {
                    let others: Vec<NodeId> = ids.iter().copied().filter(|n| *n != l).collect();
                    let k = self.rng.range(0, (ids.len() as u64 / 2).saturating_sub(1)) as usize;
                    let mut side = self.choose(&others, k);
                    side.push(l);
                    self.partition(&side, "leader in minority");
                }
            }
            Action::OneWay => {
                self.blocked.clear();
                let pick = self.rng.below(3);
                let focus = leader.or_else(|| self.rng.pick(&ids)).unwrap_or(NodeId(1));
                for other in ids.iter().filter(|n| **n != focus) {
                    match pick {
                        0 => self.blocked.insert((focus, *other)),
                        1 => self.blocked.insert((*other, focus)),
                        _ => false,
                    };
                }
                if pick == 2 {
                    let a = self.rng.pick(&ids).unwrap_or(NodeId(1));
                    let b = self.rng.pick(&ids).unwrap_or(NodeId(1));
                    self.blocked.insert((a, b));
                }
                self.trace.rec(self.now, Rec::Nemesis { what: "one-way", a: focus.0, b: pick });
            }
            Action::Heal => {
                self.blocked.clear();
                self.trace.rec(self.now, Rec::Nemesis { what: "heal partitions", a: 0, b: 0 });
            }
            Action::Crash => {
                let running = self.running_ids();
                if let Some(n) = self.rng.pick(&running)
                    && self.may_crash(n)
                {
                    self.crash(n);
                }
            }
            Action::CrashLeader => {
                if let Some(l) = leader
                    && self.may_crash(l)
                {
                    self.crash(l);
                }
            }
            Action::CrashAll => {
                if self.plan.crash_majority {
                    self.trace.rec(self.now, Rec::Nemesis { what: "power loss", a: 0, b: 0 });
                    for n in self.running_ids() {
                        self.crash(n);
                    }
                }
            }
            Action::Storm => {
                self.net = self.plan.storm;
                let at = self.now + self.rng.range(20, 150) * TICK_US;
                self.schedule(at, Ev::NetCalm);
                self.trace.rec(self.now, Rec::Nemesis { what: "storm", a: 0, b: 0 });
            }
            Action::Membership => {
                if let Some(l) = leader {
                    self.change_membership(l);
                }
            }
            Action::Transfer => {
                if let Some(l) = leader {
                    let voters: Vec<NodeId> =
                        self.node(l).and_then(|n| n.core.as_ref()).map_or(Vec::new(), |c| {
                            c.membership().voters.iter().copied().filter(|v| *v != l).collect()
                        });
                    if let Some(to) = self.rng.pick(&voters) {
                        let r = self.core_mut(l).map(|c| c.transfer_leader(to));
                        self.trace
                            .rec(self.now, Rec::Nemesis { what: "transfer", a: l.0, b: to.0 });
                        if r.is_some() {
                            self.after(l);
                        }
                    }
                }
            }
            Action::Snapshot => {
                let running = self.running_ids();
                if let Some(n) = self.rng.pick(&running) {
                    self.maybe_snapshot(n, true);
                }
            }
            Action::Skew => {
                if let Some(n) = self.rng.pick(&ids) {
                    let t = skewed_tick(&mut self.rng);
                    if let Some(node) = self.node_mut(n) {
                        node.tick_us = t;
                    }
                }
            }
        }
    }

    fn choose(&mut self, ids: &[NodeId], k: usize) -> Vec<NodeId> {
        let mut pool = ids.to_vec();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let i = self.rng.below(pool.len() as u64) as usize;
            out.push(pool.swap_remove(i));
        }
        out
    }

    fn change_membership(&mut self, l: NodeId) {
        let Some(core) = self.node(l).and_then(|n| n.core.as_ref()) else { return };
        if core.membership_change_in_progress() {
            return;
        }
        let m = core.membership().clone();
        let mut options: Vec<ConfChange> = Vec::new();
        for n in self.nodes.iter().flatten() {
            if n.state != NodeState::Removed
                && !m.contains(n.id)
                && !n.committed_member
                && n.id.0 as usize > self.initial
            {
                options.push(ConfChange::AddLearner { id: n.id, addr: addr(n.id) });
            }
        }
        for learner in &m.learners {
            if core.learner_caught_up(*learner) {
                options.push(ConfChange::Promote { id: *learner });
            }
        }
        let created = self.nodes.iter().flatten().count();
        if options.is_empty() && created < self.initial + EXTRA_NODES_MAX {
            let id = NodeId(self.nodes.len() as u64);
            options.push(ConfChange::AddLearner { id, addr: addr(id) });
        }
        if m.voters.len() > 3 {
            for v in &m.voters {
                options.push(ConfChange::Remove { id: *v });
            }
        }
        if let Some(learner) = m.learners.iter().next()
            && self.rng.chance(200)
        {
            options.push(ConfChange::Remove { id: *learner });
        }
        let Some(i) = (!options.is_empty()).then(|| self.rng.below(options.len() as u64) as usize)
        else {
            return;
        };
        let change = options.swap_remove(i);
        if let ConfChange::AddLearner { id, .. } = &change
            && self.node(*id).is_none()
        {
            let tick = skewed_tick(&mut self.rng);
            self.add_node(*id, Membership::default(), tick);
        }
        let (what, a) = match &change {
            ConfChange::AddLearner { id, .. } => ("add learner", id.0),
            ConfChange::Promote { id } => ("promote", id.0),
            ConfChange::Remove { id } => ("remove", id.0),
        };
        self.trace.rec(self.now, Rec::Nemesis { what, a, b: l.0 });
        if let Some(c) = self.core_mut(l)
            && c.change_membership(change).is_ok()
        {
            self.stats.config_changes += 1;
        }
        self.after(l);
    }

    /// A simple configuration committed: its members are members for good; nodes it no
    /// longer lists are removed and stopped.
    fn apply_committed_config(&mut self) {
        let m = self.checker.latest_config.1.clone();
        let mut stop = Vec::new();
        for n in self.nodes.iter_mut().flatten() {
            if m.contains(n.id) {
                n.committed_member = true;
            } else if n.committed_member && n.state != NodeState::Removed {
                stop.push(n.id);
            }
        }
        for id in stop {
            self.crash(id);
            if let Some(n) = self.node_mut(id) {
                n.state = NodeState::Removed;
            }
            self.trace.rec(self.now, Rec::Stop { node: id.0 });
        }
    }

    // ----- healing and liveness -----

    fn heal(&mut self) {
        self.phase = Phase::Heal;
        self.trace.rec(self.now, Rec::Phase { what: "heal: faults off, crashed nodes restart" });
        self.blocked.clear();
        self.net =
            NetParams { drop_per_mille: 0, dup_per_mille: 0, late_per_mille: 0, ..self.plan.net };
        let crashed: Vec<NodeId> = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.state == NodeState::Crashed)
            .map(|n| n.id)
            .collect();
        for id in crashed {
            self.start_node(id);
        }
        self.schedule(self.now + TICK_US, Ev::Probe);
        self.schedule(self.now + self.opts.heal_ticks_max * TICK_US, Ev::Deadline);
    }

    /// Converged: one leader at the highest term, every member of its configuration up and
    /// holding every acknowledged write, and every client done.
    fn converged(&self) -> bool {
        let Some(l) = self.leader() else { return false };
        let lc = self.node(l).and_then(|n| n.core.as_ref()).expect("leader runs");
        let members = lc.membership().members();
        let max_term =
            members.iter().filter_map(|id| self.node(*id)?.core.as_ref()).map(|c| c.term()).max();
        if Some(lc.term()) != max_term || lc.term_at(lc.commit_index()) != Some(lc.term()) {
            return false;
        }
        let caught_up = members.iter().all(|id| {
            self.node(*id).is_some_and(|n| n.running() && n.sm.applied >= self.acked_index)
        });
        caught_up && self.clients.iter().all(|c| c.op.is_none())
    }

    fn convergence_report(&self) -> String {
        let mut s = format!("acked index {}, leader {:?}; ", self.acked_index, self.leader());
        for n in self.nodes.iter().flatten() {
            match n.core.as_ref() {
                Some(c) if n.running() => s.push_str(&format!(
                    "n{} {} t{} commit {} applied {} last {}; ",
                    n.id,
                    c.role().as_str(),
                    c.term(),
                    c.commit_index(),
                    n.sm.applied,
                    c.last_index()
                )),
                _ => s.push_str(&format!("n{} {:?}; ", n.id, n.state)),
            }
        }
        let pending = self.clients.iter().filter(|c| c.op.is_some()).count();
        s.push_str(&format!("{pending} client ops pending"));
        s
    }

    fn probe(&mut self) {
        if self.phase != Phase::Heal {
            return;
        }
        if self.converged() {
            self.stats.heal_ms = (self.now - self.heal_at) / 1000;
            self.phase = Phase::Done;
            return;
        }
        self.schedule(self.now + TICK_US, Ev::Probe);
    }

    fn check_linearizability(&mut self) {
        let history: Vec<HistOp> = self
            .history
            .iter()
            .zip(&self.discard)
            .filter(|(_, d)| !**d)
            .map(|(h, _)| h.clone())
            .collect();
        match linearizable::check(&history, self.opts.lin_budget) {
            LinResult::Ok => {}
            LinResult::Violation { key, ops } => {
                self.fail(
                    "linearizability",
                    format!("the history of key {key} ({ops} ops) has no linearization"),
                );
            }
            LinResult::Inconclusive { .. } => self.stats.lin_inconclusive = true,
        }
    }
}

/// A node by id, borrowing only the node table (so other fields stay usable).
fn slot(nodes: &[Option<Node>], id: NodeId) -> Option<&Node> {
    nodes.get(id.0 as usize).and_then(|n| n.as_ref())
}

fn addr(id: NodeId) -> NodeAddr {
    NodeAddr { raft_addr: format!("sim:{id}"), api_addr: String::new() }
}

fn op_name(op: &DiskOp) -> &'static str {
    match op {
        DiskOp::Write { .. } => "write",
        DiskOp::Purge(_) => "purge",
        DiskOp::SaveSnapshot { .. } => "save snapshot",
        DiskOp::Install { .. } => "install snapshot",
        DiskOp::RefuseInstall { .. } => "refuse snapshot",
    }
}

/// Three numbers that say what a message is about, for the trace.
fn summary(b: &MessageBody) -> (u64, u64, u64) {
    match b {
        MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
            (last_log_index.0, last_log_term.0, 0)
        }
        MessageBody::RequestVoteResponse { granted, .. } => (u64::from(*granted), 0, 0),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            ..
        } => (
            prev_log_index.0,
            prev_log_term.0,
            (entries.len() as u64) * 1_000_000 + leader_commit.0,
        ),
        MessageBody::AppendEntriesResponse { success, match_index, .. } => {
            (match_index.0, u64::from(*success), 0)
        }
        MessageBody::InstallSnapshot { meta } => (meta.last_index.0, meta.last_term.0, 0),
        MessageBody::InstallSnapshotResponse { last_index } => (last_index.0, 0, 0),
        MessageBody::TimeoutNow => (0, 0, 0),
    }
}

/// Convenience for profiles named on the command line.
pub fn profile_names() -> Vec<&'static str> {
    crate::plan::PROFILES.iter().map(|p: &Profile| p.name()).collect()
}
