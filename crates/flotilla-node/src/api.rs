//! The two seams of the node runtime: the state machine an app plugs in, and the client
//! API an app's HTTP routes (or an embedding program) call.

use std::future::Future;
use std::io::{Read, Write};

use bytes::Bytes;
use flotilla_raft::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use serde::Serialize;
use thiserror::Error;

/// A failure of the state machine (disk full, corrupt data). The node treats it as fatal:
/// it stops acknowledging and exits, because it can no longer promise what it applied.
#[derive(Debug, Error)]
#[error("state machine: {0}")]
pub struct SmError(pub String);

/// The replicated state an app keeps. The node calls it from one thread, in log order.
pub trait StateMachine: Send + 'static {
    /// The last index applied, as recovered from durable state at start.
    fn applied_index(&self) -> LogIndex;

    /// Applies committed entries in index order: commands, no-ops and configuration entries
    /// alike (so the applied index advances atomically with the effects). Entries at or
    /// below `applied_index()` must be skipped (they may be replayed after a restart).
    /// Returns one answer per entry: `Some` for a command, `None` otherwise.
    fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Option<Bytes>>, SmError>;

    /// A point-in-time view of the state at `applied_index()`, to be written out on another
    /// thread while `apply` goes on (copy-on-write).
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError>;

    /// Replaces the whole state with a snapshot, atomically: after a crash in the middle the
    /// old state or the new one is found, never a mix. Afterwards `applied_index()` is
    /// `meta.last_index`. On an error the old state must still be in force (a stream that
    /// cannot be read: the node keeps running as a follower that is behind, and the leader
    /// offers a snapshot again), or, where the error leaves the state unknown (a failed
    /// disk write), every later `apply` must fail too, which stops the node.
    fn restore(&mut self, meta: &SnapshotMeta, reader: &mut dyn Read) -> Result<(), SmError>;
}

/// A frozen view of a state machine that can serialize itself.
pub trait SnapshotSource: Send + 'static {
    /// The index the view reflects.
    fn index(&self) -> LogIndex;
    /// Writes the view. Called once, on a snapshot thread.
    fn write_to(&mut self, out: &mut dyn Write) -> Result<(), SmError>;
}

/// How fresh a read must be (INTERFACE.md `consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// ReadIndex confirmed by a heartbeat quorum (the default).
    Linearizable,
    /// A leader lease; falls back to ReadIndex when the lease is not held.
    Lease,
    /// Whatever this node has applied, without asking anyone.
    Stale,
}

/// A command that was committed and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: LogIndex,
    pub term: Term,
    /// The state machine's answer for this command.
    pub response: Bytes,
}

/// Why a client request failed. The variants map onto INTERFACE.md's definite and unknown
/// outcomes: `NotLeader`, `NoLeader`, `Busy` and `Invalid` guarantee nothing was proposed;
/// `Timeout` and `LeadershipLost` mean the outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ClientError {
    /// `leader_api`: the leader's API as a base URL with the scheme this node serves
    /// (`https://host:port` with TLS on); a bare `host:port` is read as `http://`.
    #[error("not the leader")]
    NotLeader { leader: NodeId, leader_api: Option<String> },
    #[error("no leader is known")]
    NoLeader { retry_after_ms: u64 },
    #[error("the node is overloaded; retry later")]
    Busy,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no answer in time; the outcome is unknown")]
    Timeout,
    #[error("leadership was lost; the outcome is unknown")]
    LeadershipLost,
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl ClientError {
    /// The INTERFACE.md error code.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::NotLeader { .. } => "not_leader",
            ClientError::NoLeader { .. } => "no_leader",
            ClientError::Busy => "busy",
            ClientError::Invalid(_) => "bad_request",
            ClientError::Timeout => "timeout",
            ClientError::LeadershipLost => "leadership_lost",
            ClientError::ShuttingDown => "shutting_down",
        }
    }
}

/// What an app's client-facing routes need from the node. `NodeHandle` implements it; tests
/// may implement it with a fake.
pub trait ClientApi: Clone + 'static {
    /// Proposes a command and waits until it is applied here (the leader).
    fn propose(&self, data: Bytes) -> impl Future<Output = Result<Applied, ClientError>>;

    /// Waits until a read at the requested consistency may be served from the local state
    /// machine; returns the applied index it is served at. `Stale` never waits and never
    /// fails with `NotLeader`.
    fn read_barrier(
        &self,
        consistency: ReadConsistency,
    ) -> impl Future<Output = Result<LogIndex, ClientError>>;

    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// The applied index of the local state machine now.
    fn applied_index(&self) -> LogIndex;

    /// The node's request forwarder (`--forward`); `None`: refusals are answered as they
    /// are (307 to the leader, 503).
    fn forwarder(&self) -> Option<&crate::forward::Forwarder> {
        None
    }
}

/// One line of `/v1/events`.
#[derive(Clone, Debug, Serialize)]
pub struct EventLine {
    pub ts_ms: u64,
    pub node: NodeId,
    pub term: Term,
    pub kind: String,
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}
