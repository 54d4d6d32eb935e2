use thiserror::Error;

use crate::types::{LogIndex, NodeId};

/// Why the core refused a request. None of these change any state.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RaftError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("too many uncommitted bytes; retry later")]
    TooManyUncommitted,
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    #[error("learner {0} has not caught up with the leader")]
    LearnerNotCaughtUp(NodeId),
    #[error("no such member: {0}")]
    NoSuchMember(NodeId),
    #[error("invalid membership change: {0}")]
    InvalidChange(String),
    #[error("index {0} is not available (compacted or not yet applied)")]
    Unavailable(LogIndex),
}
