//! The messages nodes exchange. The wire crate frames these; the simulator delivers them.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// One message from one node to another. `term` is the sender's current term, except for
/// PreVote requests, which carry the term the sender *would* campaign in (Raft thesis §9.6),
/// and PreVote grants, which echo that term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// Why a vote (or pre-vote) was refused, reported in events so a person can see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteRefusal {
    /// The candidate's term is behind ours.
    StaleTerm,
    /// We already voted for someone else in this term.
    AlreadyVoted,
    /// The candidate's log is less up to date than ours (Raft §5.4.1).
    LogBehind,
    /// We heard from a live leader within the minimum election timeout (thesis §4.2.3,
    /// CheckQuorum stickiness); a partitioned node cannot disrupt us.
    LeaderAlive,
    /// The candidate is not a voter in our configuration.
    NotVoter,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote, or a PreVote probe when `pre_vote` is true (Raft §5.2, thesis §9.6).
    /// `transfer` is set when the election follows a TimeoutNow, which lets it through the
    /// LeaderAlive check.
    RequestVote {
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
        transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
        refusal: Option<VoteRefusal>,
    },
    /// AppendEntries (Raft §5.3). An empty `entries` is a heartbeat. `read_seq` identifies the
    /// heartbeat round for ReadIndex confirmation (0 when none is pending).
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    },
    /// Answer to AppendEntries. On success `match_index` is the last index the follower now
    /// holds that matches the leader (prev_log_index + entries.len()). On failure `hint`
    /// lets the leader skip back a whole term at a time (thesis §5.3 fast back-off).
    AppendEntriesResponse {
        success: bool,
        match_index: LogIndex,
        hint: Option<ConflictHint>,
        read_seq: u64,
    },
    /// The leader's snapshot is complete on the follower's side and should be installed.
    /// The bytes themselves travel outside the core (chunked by the runtime); the core sees
    /// this message only once the runtime holds the whole verified snapshot.
    InstallSnapshot {
        meta: SnapshotMeta,
    },
    /// Answer to InstallSnapshot: the follower now holds everything up to `last_index`.
    InstallSnapshotResponse {
        last_index: LogIndex,
    },
    /// Leadership transfer: the receiver should start an election at once (thesis §3.10).
    TimeoutNow,
}

/// Where a rejected AppendEntries should resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at `prev_log_index`, if it has one (else None: the
    /// follower's log is too short).
    pub conflict_term: Option<Term>,
    /// With `conflict_term`: the first index the follower holds for that term. Without it:
    /// the follower's last index + 1.
    pub first_index: LogIndex,
}

impl MessageBody {
    /// A short name for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResp",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResp",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResp",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
