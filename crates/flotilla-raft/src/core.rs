//! `RaftCore`: the state, the public inputs, and the role transitions. The protocol's
//! concerns live in their own modules (`election`, `replication`, `reconfig`, `snapshot`,
//! `read`), each an `impl RaftCore` block.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::command::{Command, Event, ReadFailure, ReleasedEntries, Role, StepDownReason};
use crate::config::Config;
use crate::error::RaftError;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressStatus};
use crate::read::PendingRead;
use crate::rng::Rng;
use crate::types::{Entry, EntryPayload, HardState, LogIndex, NodeId, SnapshotMeta, Term};

/// What a node recovers from its durable store when it starts.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The latest snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The index and term just before `entries[0]` ((0, 0) for a fresh log).
    pub log_start: (LogIndex, Term),
    /// Every stored entry, consecutive.
    pub entries: Vec<Entry>,
    /// The configuration in force when neither the log nor a snapshot holds one: the
    /// initial cluster. Empty for a node that joins an existing cluster.
    pub bootstrap: Membership,
    /// What the state machine has applied already (it keeps its own state across a
    /// restart): the core hands over only later entries, and counts it as committed (only
    /// committed entries are ever applied). Clamped to the stored log; zero (the default)
    /// when the state machine starts from the snapshot.
    pub applied: LogIndex,
}

/// How a read should be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): the leader confirms it is still leader with a heartbeat round
    /// answered by a quorum, then the read may be served at the commit index it recorded.
    ReadIndex,
    /// Lease read (thesis §6.4.1): served at once while the leader holds a lease derived from
    /// heartbeats acknowledged by a quorum within the minimum election timeout. Assumes
    /// bounded clock drift; falls back to ReadIndex when the lease is not held.
    Lease,
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    pub(crate) elapsed: u32,
    pub(crate) timeout_now_sent: bool,
}

/// One node's Raft state machine. See the crate docs for how to drive it.
#[derive(Clone, Debug)]
pub struct RaftCore {
    pub(crate) cfg: Config,
    pub(crate) rng: Rng,

    // Persistent state (Raft Figure 2).
    /// Invariant: never decreases.
    pub(crate) term: Term,
    /// Invariant: a leader or candidate has voted for itself in `term`.
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: RaftLog,

    // Volatile state.
    pub(crate) role: Role,
    /// Invariant: `leader == Some(id)` iff `role == Leader`, or another node led this term.
    pub(crate) leader: Option<NodeId>,
    /// The latest configuration in the log (effective on append, thesis §4.1).
    pub(crate) membership: Membership,
    /// The index of the entry that holds `membership` (or of the snapshot, or 0).
    pub(crate) membership_index: LogIndex,
    pub(crate) bootstrap: Membership,

    /// Ticks since this node started; only differences matter.
    pub(crate) now: u64,
    pub(crate) election_elapsed: u32,
    /// Randomized in `election_ticks_min..=election_ticks_max` at every reset.
    pub(crate) election_timeout: u32,
    pub(crate) heartbeat_elapsed: u32,
    /// Ticks since we last heard from a leader of our term (or since start). A voter refuses
    /// vote requests while this is below the minimum election timeout (CheckQuorum
    /// stickiness), which is also what makes leases sound.
    pub(crate) leader_contact_elapsed: u32,

    /// Candidate and PreCandidate: answers received, by voter.
    pub(crate) votes: BTreeMap<NodeId, bool>,

    // Leader state.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// The current heartbeat round. Every AppendEntries carries it; followers echo it.
    pub(crate) hb_seq: u64,
    /// Send tick of recent heartbeat rounds, for leases. Bounded.
    pub(crate) hb_sent: VecDeque<(u64, u64)>,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Reads waiting for this leader's first commit (its no-op) before they get an index.
    pub(crate) reads_awaiting_commit: Vec<u64>,
    /// No lease reads for the rest of this term (a transfer was started).
    pub(crate) lease_revoked: bool,
    pub(crate) transfer: Option<Transfer>,
    /// The first index this leader appended (its no-op).
    pub(crate) leader_first_index: LogIndex,
    pub(crate) uncommitted_bytes: usize,

    // Follower state.
    /// A snapshot the runtime is installing, and the leader that sent it.
    pub(crate) installing: Option<(NodeId, SnapshotMeta)>,

    pub(crate) out: Vec<Command>,
}

/// A view of a node for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub voted_for: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub stable_index: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Term,
    pub snapshot_index: LogIndex,
    pub snapshot_term: Term,
    pub election_elapsed_ticks: u32,
    pub election_timeout_ticks: u32,
    pub membership: Membership,
    pub membership_index: LogIndex,
    pub progress: Vec<ProgressStatus>,
    pub transfer_to: Option<NodeId>,
}

impl RaftCore {
    /// Builds a node from its recovered state. Panics if `cfg` is invalid (a programming
    /// error, checked by `Config::validate`).
    pub fn new(cfg: Config, init: InitialState) -> RaftCore {
        if let Err(e) = cfg.validate() {
            panic!("invalid raft config for node {}: {e}", cfg.id);
        }
        let snapshot = init.snapshot.unwrap_or_default();
        let mut log = RaftLog::new(init.log_start, snapshot, init.entries);
        let commit = init.hard_state.commit.min(log.last_index());
        log.committed = log.committed.max(commit);
        log.applied = log.applied.max(init.applied.min(log.last_index()));
        log.committed = log.committed.max(log.applied);
        let mut rng = Rng::new(cfg.rng_seed);
        let election_timeout = rng.range_inclusive(cfg.election_ticks_min, cfg.election_ticks_max);
        let mut core = RaftCore {
            rng,
            term: init.hard_state.term,
            voted_for: init.hard_state.voted_for,
            log,
            role: Role::Follower,
            leader: None,
            membership: Membership::default(),
            membership_index: LogIndex::ZERO,
            bootstrap: init.bootstrap,
            now: 0,
            election_elapsed: 0,
            election_timeout,
            heartbeat_elapsed: 0,
            leader_contact_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            hb_seq: 0,
            hb_sent: VecDeque::new(),
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            lease_revoked: false,
            transfer: None,
            leader_first_index: LogIndex::ZERO,
            uncommitted_bytes: 0,
            installing: None,
            out: Vec::new(),
            cfg,
        };
        core.refresh_membership();
        core
    }

    // ----- inputs -----

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        self.leader_contact_elapsed = self.leader_contact_elapsed.saturating_add(1);
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.debug_validate();
    }

    /// Handles one message from a peer. Messages not addressed to this node are ignored.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.cfg.id || msg.from == self.cfg.id {
            return;
        }
        self.step_inner(msg);
        self.debug_validate();
    }

    /// Proposes a state-machine command. On success returns where it was appended; the
    /// runtime learns its fate when that index is applied (same term: committed as proposed;
    /// another term at that index: lost).
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), RaftError> {
        self.check_can_propose()?;
        let size = data.len() + 24;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        {
            return Err(RaftError::TooManyUncommitted);
        }
        let at = self.append_as_leader(EntryPayload::Command(data));
        self.debug_validate();
        Ok(at)
    }

    /// Asks for a linearizable read. The answer comes as `ReadReady` or `ReadFailed` with
    /// the same `id` (ids are the caller's; they need not be unique across nodes).
    pub fn read_index(&mut self, id: u64, mode: ReadMode) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader });
        }
        self.register_read(id, mode);
        self.debug_validate();
        Ok(())
    }

    /// The runtime made entries up to `index` (whose term is `term`) durable.
    pub fn log_persisted(&mut self, index: LogIndex, term: Term) {
        // An append may have been overtaken by a truncation: only trust a matching term.
        if self.log.term(index) == Some(term) && index > self.log.stable {
            self.log.stable = index.min(self.log.last_index());
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
        self.debug_validate();
    }

    /// Collects every command produced since the last call, in the order they must be
    /// executed. Replication traffic for new proposals and the `Apply` of newly committed
    /// entries are generated here, so proposals made between two calls share one
    /// `AppendLog` and one AppendEntries per follower (batching).
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.flush();
        self.debug_validate();
        std::mem::take(&mut self.out)
    }

    /// True if there are commands to collect (or work that `take_commands` would do).
    pub fn has_commands(&self) -> bool {
        !self.out.is_empty()
            || self.log.unpersisted_from <= self.log.last_index()
            || self.log.applied < self.log.committed.min(self.log.stable)
            // A leader also owes the AppendEntries that `flush` generates: a probe after a
            // rejection, the next pipelined batch after an acknowledgement, a read's
            // heartbeat round. Without these a runtime that polls this method would leave
            // a follower waiting for the next heartbeat.
            || (self.role == Role::Leader
                && (self.replication_pending() || self.pending_reads.iter().any(|r| r.seq == 0)))
    }

    // ----- observers -----

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.snapshot
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The entry at `index`, if still in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The term of the entry at `index`, if known.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for, commit: self.log.committed }
    }

    pub fn status(&self) -> Status {
        let progress = self
            .progress
            .iter()
            .map(|(id, pr)| ProgressStatus {
                id: *id,
                match_index: pr.match_index,
                next_index: pr.next_index,
                mode: pr.mode,
                inflight: pr.inflight.len(),
                voter: self.membership.is_voter(*id),
                recent_active: pr.recent_active,
            })
            .collect();
        Status {
            id: self.cfg.id,
            role: self.role,
            term: self.term,
            voted_for: self.voted_for,
            leader: self.leader,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            stable_index: self.log.stable,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            snapshot_index: self.log.snapshot.last_index,
            snapshot_term: self.log.snapshot.last_term,
            election_elapsed_ticks: if self.role == Role::Leader {
                0
            } else {
                self.election_elapsed
            },
            election_timeout_ticks: self.election_timeout,
            membership: self.membership.clone(),
            membership_index: self.membership_index,
            progress,
            transfer_to: self.transfer.map(|t| t.to),
        }
    }

    // ----- internals shared by the concern modules -----

    pub(crate) fn emit(&mut self, cmd: Command) {
        self.out.push(cmd);
    }

    /// Hands entries the log let go of to the caller to free (`Command::Release`).
    pub(crate) fn release(&mut self, entries: VecDeque<Entry>) {
        if !entries.is_empty() {
            self.out.push(Command::Release(ReleasedEntries(entries)));
        }
    }

    pub(crate) fn event(&mut self, ev: Event) {
        self.out.push(Command::Event(ev));
    }

    /// A message that promises something about this node's disk: it waits for every earlier
    /// persistence command (see `command` module docs).
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message { from: self.cfg.id, to, term: self.term, body };
        #[cfg(feature = "broken-variants")]
        if self.cfg.broken.persist_order {
            self.out.push(Command::SendNow(msg));
            return;
        }
        self.out.push(Command::Send(msg));
    }

    /// A message with an explicit term (PreVote traffic).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message { from: self.cfg.id, to, term, body };
        #[cfg(feature = "broken-variants")]
        if self.cfg.broken.persist_order {
            self.out.push(Command::SendNow(msg));
            return;
        }
        self.out.push(Command::Send(msg));
    }

    /// Leader replication traffic: may leave before the leader's own writes are durable.
    pub(crate) fn send_now(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message { from: self.cfg.id, to, term: self.term, body };
        self.out.push(Command::SendNow(msg));
    }

    pub(crate) fn save_hard_state(&mut self) {
        let hs = self.hard_state();
        self.out.push(Command::SaveHardState(hs));
    }

    /// Hands unpersisted entries to the runtime. Must run before any `send` whose promise
    /// covers them (a follower's AppendEntries answer).
    pub(crate) fn persist_entries(&mut self) {
        let entries = self.log.take_unpersisted();
        if !entries.is_empty() {
            self.out.push(Command::AppendLog { entries });
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout =
            self.rng.range_inclusive(self.cfg.election_ticks_min, self.cfg.election_ticks_max);
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader });
        }
        if self.transfer.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        Ok(())
    }

    pub(crate) fn append_as_leader(&mut self, payload: EntryPayload) -> (LogIndex, Term) {
        let index = self.log.last_index().next();
        let entry = Entry { term: self.term, index, payload };
        self.uncommitted_bytes += entry.approx_bytes();
        let is_config = matches!(entry.payload, EntryPayload::Config(_));
        self.log.append(entry);
        if is_config {
            self.refresh_membership();
        }
        if self.membership.voters.len() == 1 && self.progress.is_empty() {
            // A single voter commits as soon as its own write is durable.
            self.maybe_commit();
        }
        (index, self.term)
    }

    /// Turns this node into a follower of `term` (adopting it if higher).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.become_follower_by(term, leader, leader);
    }

    /// `become_follower`, naming the node whose message caused it (`by`), so that a leader
    /// deposed by its own transfer target reports a transfer, not a higher term.
    pub(crate) fn become_follower_by(
        &mut self,
        term: Term,
        leader: Option<NodeId>,
        by: Option<NodeId>,
    ) {
        let was_leader = self.role == Role::Leader;
        let old_term = self.term;
        // Leave leadership before adopting the new term: `SteppedDown` (and a transfer's
        // `TransferAborted`) name the term this node led, not the one that deposed it.
        if was_leader {
            let reason = match self.transfer {
                Some(t) if t.timeout_now_sent && by == Some(t.to) => StepDownReason::Transferred,
                _ => StepDownReason::HigherTerm,
            };
            self.leave_leadership(reason);
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.save_hard_state();
        }
        // A new term is a change even under the same leader id: observers learn terms here.
        let changed = self.role != Role::Follower || self.leader != leader || self.term != old_term;
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
        if changed {
            self.event(Event::RoleChanged { role: Role::Follower, term: self.term, leader });
        }
    }

    /// Leader-only state is dropped; reads waiting on it fail.
    pub(crate) fn leave_leadership(&mut self, reason: StepDownReason) {
        self.event(Event::SteppedDown { term: self.term, reason });
        if let Some(t) = self.transfer.take()
            && reason != StepDownReason::Transferred
        {
            self.event(Event::TransferAborted { to: t.to, term: self.term });
        }
        self.progress.clear();
        for r in std::mem::take(&mut self.pending_reads) {
            self.emit(Command::ReadFailed { id: r.id, error: ReadFailure::LeadershipLost });
        }
        for id in std::mem::take(&mut self.reads_awaiting_commit) {
            self.emit(Command::ReadFailed { id, error: ReadFailure::LeadershipLost });
        }
        self.hb_sent.clear();
        self.uncommitted_bytes = 0;
    }

    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.leader_contact_elapsed = 0;
        self.lease_revoked = false;
        self.transfer = None;
        self.hb_seq = 0;
        self.hb_sent.clear();
        self.uncommitted_bytes = 0;
        self.progress.clear();
        let next = self.log.last_index().next();
        for id in self.membership.members() {
            if id != self.cfg.id {
                self.progress.insert(id, Progress::new(next));
            }
        }
        self.event(Event::RoleChanged { role: Role::Leader, term: self.term, leader: self.leader });
        self.event(Event::LeaderElected { leader: self.cfg.id, term: self.term });
        // Raft §8: a no-op entry lets the new leader commit entries of earlier terms.
        self.leader_first_index = next;
        self.append_as_leader(EntryPayload::Noop);
    }

    /// The latest configuration in the log, else the snapshot's, else the bootstrap one.
    pub(crate) fn latest_membership(&self) -> (LogIndex, Membership) {
        match self.log.membership_at(self.log.last_index()) {
            Some(found) => found,
            None if self.log.snapshot.last_index > LogIndex::ZERO => {
                (self.log.snapshot.last_index, self.log.snapshot.membership.clone())
            }
            None => (LogIndex::ZERO, self.bootstrap.clone()),
        }
    }

    /// Recomputes the effective configuration after appends of config entries, truncations
    /// and snapshot installs.
    pub(crate) fn refresh_membership(&mut self) {
        let (index, m) = self.latest_membership();
        if m == self.membership {
            self.membership_index = self.membership_index.max(index);
            return;
        }
        self.membership = m.clone();
        self.membership_index = index;
        self.event(Event::MembershipChanged { index, membership: m });
        if self.role == Role::Leader {
            self.sync_progress_with_membership();
        }
    }

    fn flush(&mut self) {
        if self.role == Role::Leader {
            self.flush_reads();
            self.replicate_to_all();
        }
        self.persist_entries();
        self.emit_apply();
    }

    fn emit_apply(&mut self) {
        let hi = self.log.committed.min(self.log.stable);
        if hi <= self.log.applied {
            return;
        }
        let entries = self.log.slice(self.log.applied.next(), hi, usize::MAX);
        debug_assert_eq!(entries.last().map(|e| e.index), Some(hi));
        self.log.applied = hi;
        self.emit(Command::Apply { entries });
    }

    fn step_inner(&mut self, m: Message) {
        use MessageBody as B;
        if m.term > self.term {
            match &m.body {
                B::RequestVote { pre_vote, transfer, .. } => {
                    if self.in_leader_lease() && !transfer {
                        // Thesis §4.2.3: while we hear from a live leader, a vote request
                        // (a partitioned or removed node's) does not disturb us.
                        self.refuse_vote_leader_alive(&m, *pre_vote);
                        return;
                    }
                    if !*pre_vote {
                        // No leader yet; but if `from` is our transfer target, this vote
                        // request (it arrives before its AppendEntries) ends the handover.
                        self.become_follower_by(m.term, None, Some(m.from));
                    }
                }
                B::RequestVoteResponse { pre_vote: true, .. } if m.term == self.term.next() => {
                    // An echo of our prospective term, not a newer term: PreVote answers,
                    // granted or refused, carry the term the candidate proposed (a voter
                    // with a really newer term answers from `step_stale`, term + 2 or
                    // more). This holds even when the answer arrives late, after we went
                    // back to following: adopting it would raise our term without an
                    // election and let us depose a healthy leader — what PreVote exists
                    // to prevent (thesis §9.6). `handle_vote_response` ignores it unless
                    // we are still a pre-candidate.
                }
                B::AppendEntries { .. } | B::InstallSnapshot { .. } | B::TimeoutNow => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            self.step_stale(m);
            return;
        }
        match m.body {
            B::RequestVote { pre_vote, last_log_index, last_log_term, .. } => {
                self.handle_vote_request(m.from, m.term, pre_vote, last_log_index, last_log_term)
            }
            B::RequestVoteResponse { pre_vote, granted, .. } => {
                self.handle_vote_response(m.from, pre_vote, granted)
            }
            B::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            } => self.handle_append(
                m.from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            ),
            B::AppendEntriesResponse { success, match_index, hint, read_seq } => {
                self.handle_append_response(m.from, success, match_index, hint, read_seq)
            }
            B::InstallSnapshot { meta } => self.handle_install_snapshot(m.from, meta),
            B::InstallSnapshotResponse { last_index } => {
                self.handle_install_snapshot_response(m.from, last_index)
            }
            B::TimeoutNow => self.handle_timeout_now(m.from),
        }
    }

    /// A message from an older term. Answer only where the answer helps the sender catch up.
    fn step_stale(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. } => {
                // Tell a deposed leader our term so it steps down (with PreVote and
                // CheckQuorum a node may never otherwise raise its term to reach it).
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: LogIndex::ZERO,
                        hint: None,
                        read_seq: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                self.send(
                    m.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                        refusal: Some(crate::message::VoteRefusal::StaleTerm),
                    },
                );
                self.event(Event::VoteRefused {
                    candidate: m.from,
                    term: m.term,
                    pre_vote: true,
                    reason: crate::message::VoteRefusal::StaleTerm,
                });
            }
            _ => {}
        }
    }

    #[cfg(any(test, debug_assertions))]
    fn debug_validate(&self) {
        self.validate();
    }

    #[cfg(not(any(test, debug_assertions)))]
    fn debug_validate(&self) {}
}
