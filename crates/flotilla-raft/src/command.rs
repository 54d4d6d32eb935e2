//! What the core asks its caller to do, and the events it reports.
//!
//! # The persistence contract
//!
//! The caller executes commands in the order they are returned. Two rules keep Raft safe:
//!
//! 1. A [`Command::Send`] must not leave the node before **every** [`Command::SaveHardState`]
//!    and [`Command::AppendLog`] returned before it — by this call and by every earlier one —
//!    is durable (fsync'd). Votes, vote requests and AppendEntries answers are `Send`: they
//!    promise something about this node's disk (Raft Figure 2, "respond after persisting").
//! 2. A [`Command::SendNow`] may leave at once. Only a leader's replication traffic is
//!    `SendNow`: AppendEntries and heartbeats promise nothing about the leader's own disk, so
//!    the leader writes its log in parallel with replicating it (thesis §10.2.1). The leader
//!    counts itself towards a commit quorum only after [`crate::RaftCore::log_persisted`].
//!
//! After an `AppendLog` is durable the caller reports it with `log_persisted(last index,
//! last term)`. `Apply` only ever hands out entries that are committed *and* durable here.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::membership::Membership;
use crate::message::{Message, VoteRefusal};
use crate::types::{Entry, HardState, LogIndex, NodeId, SnapshotMeta, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Make term, vote and commit durable.
    SaveHardState(HardState),
    /// Delete every entry with index >= `entries[0].index`, then append `entries`, durably.
    /// `entries` is never empty and its indexes are consecutive.
    AppendLog { entries: Vec<Entry> },
    /// Send after all earlier persistence is durable (rule 1 above).
    Send(Message),
    /// Send at once (rule 2 above).
    SendNow(Message),
    /// Apply these committed, durable entries to the state machine, in order. Indexes follow
    /// on from the previous `Apply` (or from the snapshot) without gaps.
    Apply { entries: Vec<Entry> },
    /// Transfer the snapshot described by `meta` to `to` (leader side). When the follower
    /// has it, its runtime steps an `InstallSnapshot` message into its core. On failure call
    /// [`crate::RaftCore::snapshot_send_failed`]; once the follower's runtime confirmed the
    /// whole transfer (after handing it to its core), call
    /// [`crate::RaftCore::snapshot_delivered`].
    SendSnapshot { to: NodeId, meta: SnapshotMeta },
    /// Follower side: replace the state machine with the received snapshot `meta` and reset
    /// the log to start right after `meta.last_index`, atomically and durably; then call
    /// [`crate::RaftCore::snapshot_installed`].
    InstallSnapshot { meta: SnapshotMeta },
    /// Entries with index <= `upto` (inclusive) may be deleted: a snapshot covers them.
    PurgeLog { upto: LogIndex },
    /// In-memory entries the core let go of (compacted under a snapshot, or replaced by an
    /// installed one). Dropping them is the caller's only duty, but after a large snapshot
    /// that is a million frees: a runtime whose loop also sends heartbeats should free them
    /// on another thread. Carries nothing the persistence contract depends on.
    Release(ReleasedEntries),
    /// The read `id` may be served once the state machine has applied `index`.
    ReadReady { id: u64, index: LogIndex },
    /// The read `id` cannot be served here (leadership changed or was never confirmed).
    ReadFailed { id: u64, error: ReadFailure },
    /// Something a person or the TUI wants to see.
    Event(Event),
}

/// Entries handed back by the core to be freed (see [`Command::Release`]). Shows as its
/// length and index range only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReleasedEntries(pub VecDeque<Entry>);

impl ReleasedEntries {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The first and last index released, if any.
    pub fn range(&self) -> Option<(LogIndex, LogIndex)> {
        Some((self.0.front()?.index, self.0.back()?.index))
    }
}

impl std::fmt::Debug for ReleasedEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.range() {
            Some((a, b)) => write!(f, "ReleasedEntries({a}..={b})"),
            None => write!(f, "ReleasedEntries(none)"),
        }
    }
}

/// Why a pending read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFailure {
    /// This node stopped being leader before the read was confirmed.
    LeadershipLost,
}

/// A node's role (Raft §5.1, plus PreCandidate for PreVote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Why a leader stepped down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepDownReason {
    /// It saw a higher term.
    HigherTerm,
    /// CheckQuorum: it did not hear from a quorum within an election timeout.
    QuorumLost,
    /// It committed a configuration that does not include it as a voter.
    Removed,
    /// It handed leadership over.
    Transferred,
}

/// Observability events, in the order they happened.
///
/// `SnapshotOfferedAgain` (leader): `to` answered, after the snapshot `index` was
/// delivered to it, without holding it (it restarted, or its state machine refused it),
/// so it is offered again now rather than after the snapshot timeout; see
/// [`crate::RaftCore::snapshot_delivered`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    RoleChanged { role: Role, term: Term, leader: Option<NodeId> },
    ElectionStarted { term: Term, pre_vote: bool },
    VoteGranted { candidate: NodeId, term: Term, pre_vote: bool },
    VoteRefused { candidate: NodeId, term: Term, pre_vote: bool, reason: VoteRefusal },
    LeaderElected { leader: NodeId, term: Term },
    SteppedDown { term: Term, reason: StepDownReason },
    MembershipChanged { index: LogIndex, membership: Membership },
    SnapshotInstalled { index: LogIndex, term: Term },
    SnapshotOfferedAgain { to: NodeId, index: LogIndex },
    TransferStarted { to: NodeId, term: Term },
    TransferAborted { to: NodeId, term: Term },
}
