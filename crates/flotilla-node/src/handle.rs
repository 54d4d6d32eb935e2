//! `NodeHandle`: what an app (its HTTP routes, an embedding program, tests) holds to talk to
//! a running node. One actor message per client request: the answer comes back through a
//! oneshot completed by the apply thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use flotilla_raft::{ConfChange, LogIndex, NodeAddr, NodeId, ReadMode};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::api::{Applied, ClientApi, ClientError, ReadConsistency};
use crate::faults::FaultSpec;
use crate::forward::Forwarder;
use crate::raft_actor::{
    ChangeMembers, GetLog, GetMemberFacts, GetStatus, Propose, RaftActor, Read, TransferLeader,
};
use crate::shared::Shared;

#[derive(Clone)]
pub struct NodeHandle {
    raft: Addr<RaftActor>,
    shared: Arc<Shared>,
    id: NodeId,
    request_timeout: Duration,
    election_max_ms: u64,
    /// Set while an admin membership change runs on this node. Adding a voter is two
    /// configuration changes (learner, then promotion) with a catch-up in between; the
    /// core sees no change in flight during the catch-up, so this is what refuses a
    /// second request meanwhile.
    admin_busy: Arc<AtomicBool>,
    forwarder: Forwarder,
}

/// Holds `admin_busy` for one admin request.
struct AdminTurn(Arc<AtomicBool>);

impl AdminTurn {
    fn take(busy: &Arc<AtomicBool>) -> Result<AdminTurn, AdminError> {
        if busy.swap(true, Ordering::AcqRel) {
            return Err(AdminError::ChangeInProgress);
        }
        Ok(AdminTurn(busy.clone()))
    }
}

impl Drop for AdminTurn {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why an admin request failed, with the INTERFACE.md code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    Client(ClientError),
    ChangeInProgress,
    LearnerNotCaughtUp,
    NoSuchMember,
    Invalid(String),
}

impl From<ClientError> for AdminError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Invalid(s) if s == "change_in_progress" => AdminError::ChangeInProgress,
            ClientError::Invalid(s) if s == "learner_not_caught_up" => {
                AdminError::LearnerNotCaughtUp
            }
            ClientError::Invalid(s) if s == "no_such_member" => AdminError::NoSuchMember,
            ClientError::Invalid(s) => AdminError::Invalid(s),
            other => AdminError::Client(other),
        }
    }
}

impl NodeHandle {
    pub(crate) fn new(
        raft: Addr<RaftActor>,
        shared: Arc<Shared>,
        id: NodeId,
        request_timeout: Duration,
        election_max_ms: u64,
        forwarder: Forwarder,
    ) -> NodeHandle {
        NodeHandle {
            raft,
            shared,
            id,
            request_timeout,
            election_max_ms,
            admin_busy: Arc::new(AtomicBool::new(false)),
            forwarder,
        }
    }

    /// Hands a client request to the raft actor. Its answer comes on the request's own
    /// oneshot, so the actor's acknowledgement that `send` waits for would only cost a
    /// second wake-up of the caller (another thread) per request: `try_send` skips it, and
    /// only a full mailbox falls back to `send`, which waits for room (backpressure).
    async fn deliver<M>(&self, msg: M) -> Result<(), ClientError>
    where
        M: Message<Result = ()> + Send + 'static,
        RaftActor: Handler<M>,
    {
        match self.raft.try_send(msg) {
            Ok(()) => Ok(()),
            Err(SendError::Full(msg)) => {
                self.raft.send(msg).await.map_err(|_| ClientError::ShuttingDown)
            }
            Err(SendError::Closed(_)) => Err(ClientError::ShuttingDown),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub async fn status(&self) -> Value {
        self.raft.send(GetStatus).await.unwrap_or(Value::Null)
    }

    pub async fn log(&self, from: Option<u64>, limit: u64) -> Value {
        self.raft.send(GetLog { from, limit }).await.unwrap_or(Value::Null)
    }

    async fn change(&self, change: ConfChange) -> Result<LogIndex, AdminError> {
        let rx = self
            .raft
            .send(ChangeMembers(change))
            .await
            .map_err(|_| ClientError::ShuttingDown)??;
        match tokio::time::timeout(self.request_timeout * 4, rx).await {
            Ok(Ok(r)) => Ok(r?),
            Ok(Err(_)) => Err(ClientError::LeadershipLost.into()),
            Err(_) => Err(ClientError::Timeout.into()),
        }
    }

    /// Adds a member (INTERFACE.md `POST /v1/admin/members`). A voter is first added as a
    /// learner, which catches up by log or snapshot, and is promoted once it lags the
    /// leader by at most the core's `learner_catchup_max_lag` entries (within the request
    /// deadline, else `learner_not_caught_up`; asking again resumes the wait). Answers the
    /// index at which the final configuration is committed. Adding an existing voter, or
    /// an existing learner as a learner, changes nothing.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: NodeAddr,
        voter: bool,
    ) -> Result<LogIndex, AdminError> {
        let facts = self.facts(id).await?;
        if !facts.is_leader {
            return Err(facts.leader_error.unwrap_or(ClientError::ShuttingDown).into());
        }
        if facts.is_voter || (facts.is_learner && !voter) {
            return self.wait_settled().await;
        }
        let _turn = AdminTurn::take(&self.admin_busy)?;
        if facts.change_in_progress {
            return Err(AdminError::ChangeInProgress);
        }
        if !facts.is_learner {
            self.change(ConfChange::AddLearner { id, addr }).await?;
            if !voter {
                return self.wait_settled().await;
            }
        }
        let deadline = Instant::now() + self.request_timeout * 6;
        loop {
            let f = self.facts(id).await?;
            if !f.is_leader {
                return Err(ClientError::LeadershipLost.into());
            }
            if !f.is_learner {
                // Removed meanwhile (by a leader before us, say).
                return Err(AdminError::NoSuchMember);
            }
            if f.caught_up && !f.change_in_progress {
                match self.change(ConfChange::Promote { id }).await {
                    // It fell behind again between the check and the proposal: wait on.
                    Err(AdminError::LearnerNotCaughtUp) => {}
                    other => return other,
                }
            }
            if Instant::now() >= deadline {
                return Err(AdminError::LearnerNotCaughtUp);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn facts(&self, id: NodeId) -> Result<crate::raft_actor::MemberFacts, AdminError> {
        Ok(self.raft.send(GetMemberFacts(id)).await.map_err(|_| ClientError::ShuttingDown)?)
    }

    async fn wait_settled(&self) -> Result<LogIndex, AdminError> {
        let st = self.status().await;
        Ok(LogIndex(st["commit_index"].as_u64().unwrap_or(0)))
    }

    /// Removes a member (INTERFACE.md `DELETE /v1/admin/members/{id}`), the leader itself
    /// included: it steps down once the change commits and hands over to the most
    /// caught-up voter.
    pub async fn remove_member(&self, id: NodeId) -> Result<LogIndex, AdminError> {
        let _turn = AdminTurn::take(&self.admin_busy)?;
        self.change(ConfChange::Remove { id }).await
    }

    /// Starts a leadership transfer and waits (one election timeout at most) for it.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<NodeId, AdminError> {
        self.raft.send(TransferLeader(to)).await.map_err(|_| ClientError::ShuttingDown)??;
        let deadline = Instant::now() + Duration::from_millis(self.election_max_ms * 3);
        loop {
            let st = self.status().await;
            if st["leader"].as_u64() == Some(to.0) {
                return Ok(to);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout.into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Takes a snapshot now; answers `{"index","term","bytes"}`.
    pub async fn snapshot_now(&self) -> Result<Value, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.raft
            .send(crate::raft_actor::SnapshotNow(tx))
            .await
            .map_err(|_| ClientError::ShuttingDown)?;
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => r,
            _ => Err(ClientError::Timeout),
        }
    }

    /// Waits until this node has applied `index` (within the request timeout); returns the
    /// applied index then. With an index from the leader's ReadIndex this makes a follower
    /// hold every write acknowledged before the leader answered.
    pub async fn wait_applied(&self, index: LogIndex) -> Result<LogIndex, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.shared.register_read(index, tx);
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::ShuttingDown),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// The snapshot this node holds now, if any (`None` also while shutting down).
    pub async fn current_snapshot(&self) -> Option<crate::snapshot::SnapshotFile> {
        self.raft.send(crate::raft_actor::CurrentSnapshot).await.ok().flatten()
    }

    pub fn set_faults(&self, spec: FaultSpec) {
        let clear = spec.is_clear();
        let detail = serde_json::to_value(&spec).ok();
        if let Ok(mut f) = self.shared.faults.write() {
            *f = spec;
        }
        let mut d = serde_json::Map::new();
        if let Some(v) = detail {
            d.insert("faults".into(), v);
        }
        self.shared.emit(if clear { "faults_healed" } else { "faults_set" }, d);
    }
}

impl ClientApi for NodeHandle {
    async fn propose(&self, data: Bytes) -> Result<Applied, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.deliver(Propose { data, tx }).await?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::LeadershipLost),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    async fn read_barrier(&self, consistency: ReadConsistency) -> Result<LogIndex, ClientError> {
        let mode = match consistency {
            ReadConsistency::Stale => return Ok(self.shared.applied()),
            ReadConsistency::Linearizable => ReadMode::ReadIndex,
            ReadConsistency::Lease => ReadMode::Lease,
        };
        let (tx, rx) = oneshot::channel();
        self.deliver(Read { mode, tx }).await?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::LeadershipLost),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    fn node_id(&self) -> NodeId {
        self.id
    }

    fn applied_index(&self) -> LogIndex {
        self.shared.applied()
    }

    fn forwarder(&self) -> Option<&Forwarder> {
        Some(&self.forwarder)
    }
}
