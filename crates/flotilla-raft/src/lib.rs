//! Pure Raft core (work in progress: types first).
pub mod command;
pub mod config;
pub mod error;
pub mod membership;
pub mod message;
pub mod types;

pub use command::{Command, Event, ReadFailure, Role, StepDownReason};
pub use config::Config;
pub use error::RaftError;
pub use membership::{Membership, NodeAddr, VoteResult};
pub use message::{ConflictHint, Message, MessageBody, VoteRefusal};
pub use types::{Entry, EntryKind, EntryPayload, HardState, LogIndex, NodeId, SnapshotMeta, Term};
