//! `RaftActor`: owns the core, turns inputs into core calls and the core's commands into
//! work for the other actors, and keeps the persistence contract:
//!
//! - persistence commands are coalesced into one write at a time to the `LogActor` (group
//!   commit: what arrives while an fsync runs goes into the next one);
//! - a `Send` waits until every persist queued before it is durable (a barrier count);
//! - a `SendNow` (the leader's replication) leaves at once, so the leader's fsync runs in
//!   parallel with replication.
//!
//! Inputs mark the actor dirty and schedule one `Flush` behind whatever is already in the
//! mailbox, so a burst of proposals becomes one append, one fsync and one AppendEntries per
//! follower.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use flotilla_raft::{
    Command, ConfChange, Event, LogIndex, Message, NodeId, RaftCore, RaftError, ReadMode, Role,
};
use flotilla_wire::WireMessage;
use flotilla_wire::handshake::HandshakeConfig;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::api::ClientError;
use crate::apply_actor::{ApplyBatch, ApplyPort};
use crate::config::NodeConfig;
use crate::log_actor::{LogPort, Purge, Write};
use crate::shared::{ProposalTx, ReadTx, Shared};
use crate::snapshot::{SnapshotState, SnapshotWaiter};
use crate::threads::ThreadUsage;
use crate::transport::peer_link::{Outbound, PeerLink, Shutdown};

/// Commit events are rate-limited to one per this many milliseconds.
const COMMIT_EVENT_INTERVAL_MS: u128 = 100;

pub struct RaftActor {
    pub(crate) core: RaftCore,
    pub(crate) cfg: NodeConfig,
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: LogPort,
    pub(crate) apply: ApplyPort,
    pub(crate) handshake: Arc<HandshakeConfig>,
    pub(crate) peers: BTreeMap<NodeId, (String, Addr<PeerLink>)>,
    pub(crate) known_members: Arc<std::sync::RwLock<std::collections::BTreeSet<NodeId>>>,
    /// In-process nodes: messages go to the peers' mailboxes instead of a `PeerLink`.
    pub(crate) local_net: Option<crate::inproc::LocalNet>,

    // The persistence pipeline.
    queued: Option<Write>,
    queued_barrier: u64,
    write_in_flight: bool,
    persist_barrier: u64,
    durable_barrier: u64,
    blocked: VecDeque<(u64, Message)>,

    flush_scheduled: bool,
    reads: HashMap<u64, ReadTx>,
    next_read_id: u64,
    member_waiters: Vec<oneshot::Sender<Result<LogIndex, ClientError>>>,
    last_role: Role,
    last_leader: Option<NodeId>,
    last_commit_event: Instant,
    last_commit_reported: LogIndex,
    pub(crate) snapshots: SnapshotState,
    /// Raft addresses of the cluster a joining node was pointed at (`--join`): it must
    /// answer the leader before the configuration that names it has reached it.
    pub(crate) seeds: BTreeMap<NodeId, String>,
    last_peer_sync: Instant,
    /// When the last `Tick` was handled: a long gap means this loop was busy and the
    /// heartbeats (and the core's timers) ran that late.
    last_tick: Instant,
    /// This thread's CPU time and context switches at the last `Tick`: a late tick says
    /// whether the loop was busy (on the CPU) or not running (preempted, or waiting).
    last_tick_usage: ThreadUsage,
    purge: PurgeProgress,
}

/// What a late tick says about the raft loop: on the CPU for most of the gap means a long
/// piece of work on the loop itself; little CPU means the thread did not run (the machine
/// was busy with other threads, the process was stopped, or the loop waited on a lock).
pub(crate) fn stall_cause(gap_ms: u64, cpu_ms: u64) -> &'static str {
    if cpu_ms * 2 >= gap_ms {
        "busy: the loop itself worked"
    } else {
        "not running: starved, stopped or blocked"
    }
}

/// The stored log is purged in steps of at most `PURGE_STEP` entries, one step in flight at
/// a time, so that log writes queued meanwhile go between the steps. fjall has no range
/// delete: a purge is one tombstone per entry, and after a snapshot of a long log (1M
/// entries, `--snapshot-entries 0` and a manual snapshot) one batch held the log thread,
/// and every write behind it, for most of a second.
#[derive(Default)]
struct PurgeProgress {
    /// The highest index the core allowed to be purged.
    target: LogIndex,
    /// Where the stored log started after the last step (0 before the first): at most
    /// the store's real start.
    start: LogIndex,
    in_flight: bool,
}

/// About 8 ms of fjall work per step on this machine (10,000 removes ≈ 10 ms).
const PURGE_STEP: u64 = 8192;

impl PurgeProgress {
    /// The index to purge up to next, if a step is due.
    fn next_step(&self) -> Option<LogIndex> {
        if self.in_flight || self.target <= self.start {
            return None;
        }
        // `start` may lag the store's (0 before the first answer, or after a snapshot
        // install reset the log): such a step deletes nothing and brings back where the
        // log starts, so the next one is a full step.
        Some(self.target.min(LogIndex(self.start.0 + PURGE_STEP)))
    }
}

impl RaftActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: RaftCore,
        cfg: NodeConfig,
        shared: Arc<Shared>,
        log: LogPort,
        apply: ApplyPort,
        handshake: Arc<HandshakeConfig>,
        known_members: Arc<std::sync::RwLock<std::collections::BTreeSet<NodeId>>>,
        snapshot_dir: PathBuf,
    ) -> RaftActor {
        let last_role = core.role();
        let commit = core.commit_index();
        RaftActor {
            core,
            cfg,
            shared,
            log,
            apply,
            handshake,
            peers: BTreeMap::new(),
            known_members,
            local_net: None,
            queued: None,
            queued_barrier: 0,
            write_in_flight: false,
            persist_barrier: 0,
            durable_barrier: 0,
            blocked: VecDeque::new(),
            flush_scheduled: false,
            reads: HashMap::new(),
            next_read_id: 1,
            member_waiters: Vec::new(),
            last_role,
            last_leader: None,
            last_commit_event: Instant::now(),
            last_commit_reported: commit,
            snapshots: SnapshotState::new(snapshot_dir),
            seeds: BTreeMap::new(),
            last_peer_sync: Instant::now(),
            last_tick: Instant::now(),
            last_tick_usage: ThreadUsage::now(),
            purge: PurgeProgress::default(),
        }
    }

    pub(crate) fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.address().do_send(Flush);
        }
    }

    /// Executes everything the core asked for, in order.
    pub(crate) fn drive(&mut self, ctx: &mut Context<Self>) {
        let commands = self.core.take_commands();
        for cmd in commands {
            match cmd {
                Command::SaveHardState(hs) => self.queue_write(Some(hs), Vec::new()),
                Command::AppendLog { entries } => self.queue_write(None, entries),
                Command::Send(m) => {
                    if self.durable_barrier >= self.persist_barrier {
                        self.send_raft(m);
                    } else {
                        self.blocked.push_back((self.persist_barrier, m));
                    }
                }
                Command::SendNow(m) => self.send_raft(m),
                Command::Apply { entries } => self.apply.batch.do_send(ApplyBatch(entries)),
                Command::SendSnapshot { to, meta } => self.start_snapshot_send(to, meta, ctx),
                Command::InstallSnapshot { meta } => self.install_snapshot(meta, ctx),
                Command::PurgeLog { upto } => {
                    self.purge.target = self.purge.target.max(upto);
                    self.purge_step(ctx);
                }
                Command::Release(entries) => release_elsewhere(entries),
                Command::ReadReady { id, index } => {
                    if let Some(tx) = self.reads.remove(&id) {
                        self.shared.metrics.reads.fetch_add(1, Ordering::Relaxed);
                        self.shared.register_read(index, tx);
                    }
                }
                Command::ReadFailed { id, .. } => {
                    if let Some(tx) = self.reads.remove(&id) {
                        let _ = tx.send(Err(ClientError::LeadershipLost));
                    }
                }
                Command::Event(ev) => self.on_event(ev),
            }
        }
        self.dispatch_write(ctx);
        self.after_drive();
    }

    fn after_drive(&mut self) {
        if !self.member_waiters.is_empty() && !self.core.membership_change_in_progress() {
            let index = self.core.commit_index();
            for tx in self.member_waiters.drain(..) {
                let _ = tx.send(Ok(index));
            }
        }
        let role = self.core.role();
        if self.last_role == Role::Leader && role != Role::Leader {
            self.shared.fail_proposals(ClientError::LeadershipLost);
            for tx in self.member_waiters.drain(..) {
                let _ = tx.send(Err(ClientError::LeadershipLost));
            }
        }
        self.last_role = role;
        let leader = self.core.leader();
        if leader != self.last_leader {
            if leader.is_some() {
                self.shared.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            self.last_leader = leader;
        }
        let commit = self.core.commit_index();
        if commit > self.last_commit_reported
            && self.last_commit_event.elapsed().as_millis() >= COMMIT_EVENT_INTERVAL_MS
        {
            self.last_commit_event = Instant::now();
            self.last_commit_reported = commit;
            let mut d = Map::new();
            d.insert("commit_index".into(), json!(commit.0));
            d.insert("last_log_index".into(), json!(self.core.last_index().0));
            self.shared.emit("commit", d);
        }
    }

    fn queue_write(
        &mut self,
        hs: Option<flotilla_raft::HardState>,
        entries: Vec<flotilla_raft::Entry>,
    ) {
        self.persist_barrier += 1;
        self.queued_barrier = self.persist_barrier;
        let w = self.queued.get_or_insert_with(|| Write { hard_state: None, entries: Vec::new() });
        if hs.is_some() {
            w.hard_state = hs;
        }
        if let Some(first) = entries.first().map(|e| e.index) {
            w.entries.retain(|e| e.index < first);
            w.entries.extend(entries);
        }
    }

    fn dispatch_write(&mut self, ctx: &mut Context<Self>) {
        if self.write_in_flight {
            return;
        }
        let Some(w) = self.queued.take() else { return };
        let barrier = self.queued_barrier;
        let n = w.entries.len() as u64;
        self.write_in_flight = true;
        let fut = self.log.write.send(w);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.write_in_flight = false;
            match res {
                Ok(Ok(done)) => {
                    let m = &act.shared.metrics;
                    m.fsyncs.fetch_add(1, Ordering::Relaxed);
                    m.fsync_micros.fetch_add(done.micros, Ordering::Relaxed);
                    m.persisted_entries.fetch_add(n, Ordering::Relaxed);
                    act.durable_barrier = barrier;
                    if let Some((index, term)) = done.last {
                        act.core.log_persisted(index, term);
                    }
                    while act.blocked.front().is_some_and(|(b, _)| *b <= act.durable_barrier) {
                        let (_, m) = act.blocked.pop_front().expect("front exists");
                        act.send_raft(m);
                    }
                    act.drive(ctx);
                }
                Ok(Err(e)) => fatal(&format!("durable log write failed: {e}")),
                Err(e) => fatal(&format!("log actor unreachable: {e}")),
            }
        }));
    }

    /// Sends the next purge step if one is due and none is in flight (see `PurgeProgress`).
    fn purge_step(&mut self, ctx: &mut Context<Self>) {
        let Some(upto) = self.purge.next_step() else { return };
        self.purge.in_flight = true;
        let fut = self.log.purge.send(Purge(upto));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.purge.in_flight = false;
            match res {
                Ok(Ok(start)) => {
                    act.purge.start = start;
                    act.purge_step(ctx);
                }
                // Not fatal: the entries stay on disk until the next snapshot's purge.
                Ok(Err(e)) => tracing::warn!(error = %e, index = %upto, "purging the log failed"),
                Err(e) => tracing::warn!(error = %e, "log actor unreachable for a purge"),
            }
        }));
    }

    /// Counts a stall when this tick comes more than half the shortest election timeout
    /// after the previous one: a leader's heartbeats were that late, and its followers'
    /// election timers that much closer to firing (etcd warns of the same thing as "leader
    /// failed to send out heartbeat on time").
    fn note_tick_gap(&mut self) {
        let now = Instant::now();
        let usage = ThreadUsage::now();
        let gap_ms = now.duration_since(self.last_tick).as_millis() as u64;
        let during = usage.since(self.last_tick_usage);
        self.last_tick = now;
        self.last_tick_usage = usage;
        if gap_ms * 2 <= self.cfg.election_timeout_ms.0.max(2 * self.cfg.tick_ms) {
            return;
        }
        let m = &self.shared.metrics;
        m.loop_stalls.fetch_add(1, Ordering::Relaxed);
        m.longest_loop_stall_ms.fetch_max(gap_ms, Ordering::Relaxed);
        let role = self.core.role();
        let cpu_ms = during.cpu_us / 1000;
        tracing::warn!(
            gap_ms,
            cpu_ms,
            preempted = during.preempted,
            waited = during.waited,
            ?role,
            "the raft loop ran {gap_ms} ms late ({}): heartbeats and timers with it",
            stall_cause(gap_ms, cpu_ms)
        );
        let mut d = Map::new();
        d.insert("gap_ms".into(), json!(gap_ms));
        d.insert("role".into(), json!(role));
        d.insert("cpu_ms".into(), json!(cpu_ms));
        d.insert("preempted".into(), json!(during.preempted));
        d.insert("waited".into(), json!(during.waited));
        self.shared.emit("loop_stalled", d);
    }

    pub(crate) fn send_wire(&mut self, to: NodeId, msg: WireMessage) {
        if let Some(net) = &self.local_net {
            let peer = net.read().ok().and_then(|n| n.get(&to).cloned());
            let m = &self.shared.metrics;
            match peer {
                Some(addr) => {
                    addr.do_send(Inbound { from: self.cfg.id, msg });
                    m.messages_sent.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    m.messages_dropped_unconnected.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        if let Some((_, link)) = self.peers.get(&to) {
            link.do_send(Outbound(msg));
        } else {
            self.shared.metrics.messages_dropped_unconnected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_raft(&mut self, m: Message) {
        let to = m.to;
        self.send_wire(to, WireMessage::Raft(m));
    }

    /// Keeps one link per peer we must talk to, at its current address: every member;
    /// while a change is in flight, those it removes, and afterwards, as long as the core
    /// still replicates to them, the removed peers being told that they are out (their
    /// address has left the configuration: their link is kept as it is); and while this
    /// node is not a member yet (it is joining), the cluster it was pointed at.
    pub(crate) fn sync_peers(&mut self) {
        self.last_peer_sync = Instant::now();
        let m = self.core.membership().clone();
        let me = self.cfg.id;
        // Peer -> address, `None` for "keep the link we have".
        let mut want: BTreeMap<NodeId, Option<String>> = m
            .members()
            .into_iter()
            .map(|id| (id, m.addrs.get(&id).map(|a| a.raft_addr.clone())))
            .collect();
        let mut keep: Vec<NodeId> = self.core.status().progress.iter().map(|p| p.id).collect();
        if self.core.membership_change_in_progress() {
            keep.extend(self.peers.keys().copied());
        }
        for id in keep {
            want.entry(id).or_insert(None);
        }
        let joining = !m.contains(me);
        if joining {
            for (id, addr) in &self.seeds {
                want.entry(*id).or_insert_with(|| Some(addr.clone()));
            }
        }
        if let Ok(mut k) = self.known_members.write() {
            // Empty accepts any peer of this cluster (the handshake still checks the
            // cluster id and secret): a joining node hears from a leader it cannot name yet.
            *k = if joining { Default::default() } else { want.keys().copied().collect() };
        }
        if self.local_net.is_some() {
            return;
        }
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, (addr, _))| match want.get(id) {
                None => true,
                Some(Some(a)) => a != addr,
                Some(None) => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((_, link)) = self.peers.remove(&id) {
                link.do_send(Shutdown);
            }
        }
        for (id, addr) in want {
            let Some(addr) = addr else { continue };
            if id == me || self.peers.contains_key(&id) {
                continue;
            }
            let (hs, shared, a) = (self.handshake.clone(), self.shared.clone(), addr.clone());
            let tls = self.cfg.tls.clone();
            let link = Supervisor::start(move |_| PeerLink::new(id, a, hs, shared, tls));
            self.peers.insert(id, (addr, link));
        }
    }

    fn on_event(&mut self, ev: Event) {
        match &ev {
            Event::ElectionStarted { .. } => {
                self.shared.metrics.elections_started.fetch_add(1, Ordering::Relaxed);
            }
            Event::MembershipChanged { .. } => self.sync_peers(),
            _ => {}
        }
        self.shared.set_term(self.core.term());
        let Ok(Value::Object(mut obj)) = serde_json::to_value(&ev) else { return };
        let kind = obj.remove("kind").and_then(|k| k.as_str().map(str::to_string));
        let kind = kind.unwrap_or_else(|| "unknown".into());
        if let Some(Value::Object(mem)) = obj.remove("membership") {
            obj.insert("members".into(), membership_json(&mem));
        }
        self.shared.emit(&kind, obj);
    }

    pub(crate) fn not_leader_error(&self) -> ClientError {
        match self.core.leader() {
            Some(id) if id != self.cfg.id => ClientError::NotLeader {
                leader: id,
                leader_api: self
                    .core
                    .membership()
                    .addrs
                    .get(&id)
                    .map(|a| self.cfg.api_url(&a.api_addr)),
            },
            _ => ClientError::NoLeader { retry_after_ms: self.cfg.election_timeout_ms.1 },
        }
    }

    pub(crate) fn map_raft_error(&self, e: RaftError) -> ClientError {
        match e {
            RaftError::NotLeader { .. } => self.not_leader_error(),
            RaftError::TransferInProgress => {
                ClientError::NoLeader { retry_after_ms: self.cfg.election_timeout_ms.1 }
            }
            RaftError::TooManyUncommitted => ClientError::Busy,
            other => ClientError::Invalid(other.to_string()),
        }
    }
}

fn membership_json(m: &Map<String, Value>) -> Value {
    // Events carry the membership in the same shape as /v1/status `members`.
    let voters: Vec<u64> =
        m.get("voters").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let outgoing: Vec<u64> =
        m.get("outgoing").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let learners: Vec<u64> =
        m.get("learners").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    json!({"voters": voters, "outgoing": outgoing, "learners": learners})
}

/// Frees entries the core let go of on a thread of their own. After a snapshot of a long
/// log they are a million small buffers, and freeing them here stalled this loop (and so
/// the leader's heartbeats) for 120–240 ms on a 1M-entry log, long enough for a follower's
/// election timer. Snapshots are rare, so a thread each is cheap; if one cannot be spawned
/// the entries are freed here (the closure is dropped with them).
fn release_elsewhere(entries: flotilla_raft::ReleasedEntries) {
    if entries.len() < RELEASE_INLINE_BELOW {
        return;
    }
    let _ = std::thread::Builder::new().name("flotilla-release".into()).spawn(move || {
        crate::threads::lower_priority();
        drop(entries)
    });
}

/// Fewer entries than this are freed in place: well under a millisecond.
const RELEASE_INLINE_BELOW: usize = 1024;

/// The node cannot keep its promises (a disk write failed): say why and exit, so the
/// launcher restarts it and recovery decides what is durable.
pub(crate) fn fatal(why: &str) -> ! {
    tracing::error!("fatal: {why}");
    eprintln!("flotilla node: fatal: {why}");
    std::process::exit(1);
}

impl Actor for RaftActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        self.sync_peers();
        self.schedule_flush(ctx);
    }
}

impl Supervised for RaftActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.flush_scheduled = false;
    }
}

// ----- messages -----

#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub from: NodeId,
    pub msg: WireMessage,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    pub data: Bytes,
    pub tx: ProposalTx,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Read {
    pub mode: ReadMode,
    pub tx: ReadTx,
}

#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetStatus;

#[derive(Message)]
#[rtype(result = "Value")]
pub struct GetLog {
    pub from: Option<u64>,
    pub limit: u64,
}

#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<LogIndex, ClientError>>, ClientError>")]
pub struct ChangeMembers(pub ConfChange);

#[derive(Message)]
#[rtype(result = "Result<(), ClientError>")]
pub struct TransferLeader(pub NodeId);

/// Facts the admin routes need without a full status.
#[derive(Message)]
#[rtype(result = "MemberFacts")]
pub struct GetMemberFacts(pub NodeId);

pub struct MemberFacts {
    pub is_leader: bool,
    pub leader_error: Option<ClientError>,
    pub is_learner: bool,
    pub is_voter: bool,
    pub caught_up: bool,
    pub change_in_progress: bool,
    pub leader: Option<NodeId>,
}

impl Handler<Tick> for RaftActor {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.note_tick_gap();
        self.core.tick();
        self.maybe_auto_snapshot(ctx);
        // Links follow the core's replication targets, which change without an event
        // (a removed peer that has been told it is out).
        if self.last_peer_sync.elapsed() >= std::time::Duration::from_millis(100) {
            self.sync_peers();
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<Flush> for RaftActor {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.drive(ctx);
    }
}

impl Handler<Inbound> for RaftActor {
    type Result = ();
    fn handle(&mut self, Inbound { from, msg }: Inbound, ctx: &mut Context<Self>) {
        match msg {
            WireMessage::Raft(m) => self.core.step(m),
            WireMessage::SnapshotChunk(c) => self.on_snapshot_chunk(from, c, ctx),
            WireMessage::SnapshotAck(a) => self.on_snapshot_ack(from, a, ctx),
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<Propose> for RaftActor {
    type Result = ();
    fn handle(&mut self, Propose { data, tx }: Propose, ctx: &mut Context<Self>) {
        match self.core.propose(data) {
            Ok((index, term)) => {
                self.shared.metrics.proposals.fetch_add(1, Ordering::Relaxed);
                self.shared.register_proposal(index, term, tx);
                self.schedule_flush(ctx);
            }
            Err(e) => {
                self.shared.metrics.proposals_refused.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(Err(self.map_raft_error(e)));
            }
        }
    }
}

impl Handler<Read> for RaftActor {
    type Result = ();
    fn handle(&mut self, Read { mode, tx }: Read, ctx: &mut Context<Self>) {
        let id = self.next_read_id;
        self.next_read_id += 1;
        match self.core.read_index(id, mode) {
            Ok(()) => {
                self.reads.insert(id, tx);
                self.schedule_flush(ctx);
            }
            Err(e) => {
                let _ = tx.send(Err(self.map_raft_error(e)));
            }
        }
    }
}

impl Handler<ChangeMembers> for RaftActor {
    type Result = Result<oneshot::Receiver<Result<LogIndex, ClientError>>, ClientError>;
    fn handle(
        &mut self,
        ChangeMembers(change): ChangeMembers,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        match self.core.change_membership(change) {
            Ok(_) => {
                let (tx, rx) = oneshot::channel();
                self.member_waiters.push(tx);
                self.schedule_flush(ctx);
                Ok(rx)
            }
            Err(RaftError::ChangeInProgress) => {
                Err(ClientError::Invalid("change_in_progress".into()))
            }
            Err(RaftError::LearnerNotCaughtUp(_)) => {
                Err(ClientError::Invalid("learner_not_caught_up".into()))
            }
            Err(RaftError::NoSuchMember(_)) => Err(ClientError::Invalid("no_such_member".into())),
            Err(e) => Err(self.map_raft_error(e)),
        }
    }
}

impl Handler<TransferLeader> for RaftActor {
    type Result = Result<(), ClientError>;
    fn handle(
        &mut self,
        TransferLeader(to): TransferLeader,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        match self.core.transfer_leader(to) {
            Ok(()) => {
                self.schedule_flush(ctx);
                Ok(())
            }
            Err(RaftError::NoSuchMember(_)) => Err(ClientError::Invalid("no_such_member".into())),
            Err(e) => Err(self.map_raft_error(e)),
        }
    }
}

impl Handler<GetMemberFacts> for RaftActor {
    type Result = MessageResult<GetMemberFacts>;
    fn handle(
        &mut self,
        GetMemberFacts(id): GetMemberFacts,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let m = self.core.membership();
        let is_leader = self.core.role() == Role::Leader;
        MessageResult(MemberFacts {
            is_leader,
            leader_error: if is_leader { None } else { Some(self.not_leader_error()) },
            is_learner: m.is_learner(id),
            is_voter: m.is_voter(id),
            caught_up: is_leader && self.core.learner_caught_up(id),
            change_in_progress: self.core.membership_change_in_progress(),
            leader: self.core.leader(),
        })
    }
}

impl Handler<GetStatus> for RaftActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status_json())
    }
}

impl Handler<GetLog> for RaftActor {
    type Result = MessageResult<GetLog>;
    fn handle(&mut self, GetLog { from, limit }: GetLog, _: &mut Context<Self>) -> Self::Result {
        let limit = limit.clamp(1, 1000);
        let first = self.core.first_index().0;
        let last = self.core.last_index().0;
        let from = match from {
            Some(f) => f.max(first),
            None => last.saturating_sub(limit - 1).max(first),
        };
        let mut out = Vec::new();
        let mut i = from;
        while i <= last && (out.len() as u64) < limit {
            if let Some(e) = self.core.entry(LogIndex(i)) {
                let bytes = match &e.payload {
                    flotilla_raft::EntryPayload::Command(b) => b.len(),
                    _ => 0,
                };
                out.push(json!({"index": i, "term": e.term.0, "kind": e.kind(), "bytes": bytes}));
            }
            i += 1;
        }
        MessageResult(Value::Array(out))
    }
}

impl RaftActor {
    pub(crate) fn status_json(&self) -> Value {
        let st = self.core.status();
        let tick = self.cfg.tick_ms;
        let m = &st.membership;
        let members: Vec<Value> = m
            .members()
            .iter()
            .map(|id| {
                let a = m.addrs.get(id).cloned().unwrap_or_default();
                json!({"id": id.0, "raft_addr": a.raft_addr, "api_addr": a.api_addr,
                       "voter": m.is_voter(*id)})
            })
            .collect();
        let removed =
            !m.is_empty() && !m.contains(self.cfg.id) && st.membership_index <= st.commit_index;
        let mut v = json!({
            "id": st.id.0,
            "pid": std::process::id(),
            "role": st.role.as_str(),
            "term": st.term.0,
            "leader": st.leader.map(|l| l.0),
            "voted_for": st.voted_for.map(|l| l.0),
            "commit_index": st.commit_index.0,
            "applied_index": self.shared.applied().0,
            "last_log_index": st.last_index.0,
            "last_log_term": st.last_term.0,
            "first_log_index": st.first_index.0,
            "snapshot_index": st.snapshot_index.0,
            "election_elapsed_ms": u64::from(st.election_elapsed_ticks) * tick,
            "election_timeout_ms": u64::from(st.election_timeout_ticks) * tick,
            "members": members,
            "joint": m.is_joint(),
            "membership_index": st.membership_index.0,
            "removed": removed,
            "transfer_to": st.transfer_to.map(|t| t.0),
            "pending_proposals": self.shared.pending_proposals(),
            "snapshot_in_progress": self.snapshots.building,
            "snapshot": self.snapshots.status_json(),
        });
        if st.role == Role::Leader {
            let last = st.last_index.0;
            let repl: Vec<Value> = st
                .progress
                .iter()
                .map(|p| {
                    json!({"id": p.id.0, "match_index": p.match_index.0,
                           "next_index": p.next_index.0, "inflight": p.inflight,
                           "lag": last.saturating_sub(p.match_index.0), "voter": p.voter,
                           "mode": p.mode})
                })
                .collect();
            v["replication"] = Value::Array(repl);
        }
        v
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotNow(pub oneshot::Sender<Result<Value, ClientError>>);

impl Handler<SnapshotNow> for RaftActor {
    type Result = ();
    fn handle(&mut self, SnapshotNow(tx): SnapshotNow, ctx: &mut Context<Self>) {
        let covers = self.shared.applied();
        self.build_snapshot(ctx, Some(SnapshotWaiter { tx, covers }));
    }
}

/// The snapshot this node holds now (built or installed), if any: what
/// `GET /v1/admin/snapshot` streams.
#[derive(Message)]
#[rtype(result = "Option<crate::snapshot::SnapshotFile>")]
pub struct CurrentSnapshot;

impl Handler<CurrentSnapshot> for RaftActor {
    type Result = Option<crate::snapshot::SnapshotFile>;
    fn handle(&mut self, _: CurrentSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.snapshots.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps through a purge the way `purge_step` does, with a store that starts at
    /// `store_start`; returns the steps sent.
    fn run(target: u64, known_start: u64, store_start: u64) -> Vec<u64> {
        let mut p = PurgeProgress {
            target: LogIndex(target),
            start: LogIndex(known_start),
            in_flight: false,
        };
        let mut store = store_start;
        let mut steps = Vec::new();
        while let Some(upto) = p.next_step() {
            p.in_flight = true;
            assert_eq!(p.next_step(), None, "one step in flight at a time");
            steps.push(upto.0);
            store = store.max(upto.0);
            p.in_flight = false;
            p.start = LogIndex(store);
            assert!(steps.len() < 1000, "no end: {steps:?}");
        }
        assert_eq!(store, target.max(store_start), "purged to the target");
        steps
    }

    #[test]
    fn a_long_purge_goes_in_steps_and_a_stale_start_costs_one_step() {
        let s = PURGE_STEP;
        assert_eq!(run(3 * s + 5, 0, 0), vec![s, 2 * s, 3 * s, 3 * s + 5]);
        assert_eq!(run(100, 0, 0), vec![100], "a short purge is one step");
        // After a restart (known 0) or an install (known start behind the store's), the
        // first step deletes nothing and learns the store's start.
        assert_eq!(run(1_000_000 + s, 0, 1_000_000), vec![s, 1_000_000 + s]);
        assert_eq!(run(50, 0, 80), vec![50], "a target below the start: one empty step");
        assert_eq!(run(40, 40, 40), Vec::<u64>::new(), "nothing due");
    }

    #[test]
    fn a_late_tick_is_busy_when_the_loop_was_on_the_cpu_for_most_of_it() {
        assert_eq!(stall_cause(200, 150), "busy: the loop itself worked");
        assert_eq!(stall_cause(200, 100), "busy: the loop itself worked");
        assert_eq!(stall_cause(200, 10), "not running: starved, stopped or blocked");
    }
}
