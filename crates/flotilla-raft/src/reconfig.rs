//! Membership changes by joint consensus (Raft §6, thesis §4.3), with learners.
//!
//! One change at a time: a change may start only when the current configuration is
//! committed and simple. A change of voters goes through C_old,new (decisions need both
//! majorities) and the leader appends C_new as soon as the joint entry commits. A change
//! of learners alone needs no joint phase. A leader that is not a voter of a committed
//! C_new steps down, handing over to the most caught-up voter.

use std::collections::BTreeSet;

use crate::command::{Event, Role, StepDownReason};
use crate::core::RaftCore;
use crate::error::RaftError;
use crate::membership::{Membership, NodeAddr};
use crate::message::MessageBody;
use crate::progress::Progress;
use crate::types::{EntryPayload, LogIndex, NodeId};

/// A requested membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a non-voting member that receives the log.
    AddLearner { id: NodeId, addr: NodeAddr },
    /// Make a caught-up learner a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner (the leader itself included).
    Remove { id: NodeId },
}

impl RaftCore {
    /// Starts a membership change. Returns the index of the appended configuration entry;
    /// the change is complete when the resulting simple configuration is committed
    /// (`membership_change_in_progress()` turns false).
    pub fn change_membership(&mut self, change: ConfChange) -> Result<LogIndex, RaftError> {
        self.check_can_propose()?;
        if self.membership_change_in_progress() {
            return Err(RaftError::ChangeInProgress);
        }
        let cur = self.membership.clone();
        let mut target = cur.clone();
        match change {
            ConfChange::AddLearner { id, addr } => {
                if id.0 == 0 {
                    return Err(RaftError::InvalidChange("node id 0 is reserved".into()));
                }
                if cur.is_voter(id) {
                    return Err(RaftError::InvalidChange(format!("{id} is already a voter")));
                }
                target.learners.insert(id);
                target.addrs.insert(id, addr);
            }
            ConfChange::Promote { id } => {
                if cur.is_voter(id) {
                    return Err(RaftError::InvalidChange(format!("{id} is already a voter")));
                }
                if !cur.is_learner(id) {
                    return Err(RaftError::NoSuchMember(id));
                }
                if !self.learner_caught_up(id) {
                    return Err(RaftError::LearnerNotCaughtUp(id));
                }
                target.learners.remove(&id);
                target.voters.insert(id);
            }
            ConfChange::Remove { id } => {
                if !cur.contains(id) {
                    return Err(RaftError::NoSuchMember(id));
                }
                target.learners.remove(&id);
                target.voters.remove(&id);
                target.addrs.remove(&id);
                if target.voters.is_empty() {
                    return Err(RaftError::InvalidChange("cannot remove the last voter".into()));
                }
            }
        }
        if target == cur {
            return Ok(self.membership_index);
        }
        let entry_config = if target.voters != cur.voters {
            // Joint phase: the old voters must agree too. Addresses of the removed stay
            // known until C_new so the leader can still reach them.
            let mut joint = target.clone();
            joint.outgoing = Some(cur.voters.clone());
            for id in &cur.voters {
                if let Some(a) = cur.addrs.get(id) {
                    joint.addrs.entry(*id).or_insert_with(|| a.clone());
                }
            }
            joint
        } else {
            target
        };
        let (index, _) = self.append_as_leader(EntryPayload::Config(entry_config));
        Ok(index)
    }

    /// True while the latest configuration is joint or not yet committed.
    pub fn membership_change_in_progress(&self) -> bool {
        self.membership.is_joint() || self.membership_index > self.log.committed
    }

    /// Leader only: true if `id` lags the leader's last index by at most
    /// `learner_catchup_max_lag` entries.
    pub fn learner_caught_up(&self, id: NodeId) -> bool {
        self.progress.get(&id).is_some_and(|pr| {
            pr.match_index.0 + self.cfg.learner_catchup_max_lag >= self.log.last_index().0
        })
    }

    /// Leader: keeps one `Progress` per member (learners included). Members that the
    /// latest configuration drops keep theirs until it commits, so they still receive the
    /// entry that tells them they were removed.
    pub(crate) fn sync_progress_with_membership(&mut self) {
        let members: BTreeSet<NodeId> = self.membership.members();
        let settled = self.membership_index <= self.log.committed;
        self.progress.retain(|id, _| members.contains(id) || !settled);
        let next = self.log.last_index().next();
        for id in members {
            if id != self.cfg.id {
                self.progress.entry(id).or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// After the commit index moved on a leader: finish a joint change, or step down if a
    /// committed configuration no longer has us as a voter.
    pub(crate) fn on_commit_membership(&mut self) {
        if self.role != Role::Leader || self.membership_index > self.log.committed {
            return;
        }
        self.sync_progress_with_membership();
        if self.membership.is_joint() {
            let mut c_new: Membership = self.membership.clone();
            c_new.outgoing = None;
            let keep = c_new.members();
            c_new.addrs.retain(|id, _| keep.contains(id));
            self.append_as_leader(EntryPayload::Config(c_new));
            return;
        }
        if !self.membership.is_voter(self.cfg.id) {
            self.step_down_removed();
        }
    }

    fn step_down_removed(&mut self) {
        // Hand over to the most caught-up voter so the cluster need not wait for an
        // election timeout (thesis §4.2.2).
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|(id, _)| self.membership.voters.contains(id))
            .max_by_key(|(_, pr)| pr.match_index)
            .filter(|(_, pr)| pr.match_index == last)
            .map(|(id, _)| *id);
        if let Some(to) = successor {
            self.send_now(to, MessageBody::TimeoutNow);
        }
        self.leave_leadership(StepDownReason::Removed);
        self.role = Role::Follower;
        self.leader = None;
        self.reset_election_timer();
        self.event(Event::RoleChanged { role: Role::Follower, term: self.term, leader: None });
    }
}
