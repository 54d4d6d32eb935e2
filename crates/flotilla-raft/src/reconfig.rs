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
use crate::progress::{Leaving, Progress};
use crate::types::{EntryPayload, LogIndex, NodeId};

/// How many maximum election timeouts a leader keeps telling a removed peer that its
/// removal committed.
const LEAVING_TIMEOUTS: u32 = 10;

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
    /// entry that removes them, and then until they have heard that it committed (see
    /// [`Leaving`]), so that they know they are out and can leave.
    pub(crate) fn sync_progress_with_membership(&mut self) {
        let members: BTreeSet<NodeId> = self.membership.members();
        let settled = self.membership_index <= self.log.committed;
        let (config, seq) = (self.membership_index, self.hb_seq);
        let ticks_left = self.cfg.election_ticks_max.saturating_mul(LEAVING_TIMEOUTS);
        for (id, pr) in self.progress.iter_mut() {
            if members.contains(id) || !settled {
                pr.leaving = None;
            } else if pr.leaving.is_none() {
                pr.leaving = Some(Leaving { config, seq, ticks_left, told: false });
            }
        }
        self.prune_leaving();
        let next = self.log.last_index().next();
        for id in members {
            if id != self.cfg.id {
                self.progress.entry(id).or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// Leader: forgets removed peers that know they were removed, or that did not answer
    /// in time.
    pub(crate) fn prune_leaving(&mut self) {
        self.progress.retain(|_, pr| pr.leaving.is_none_or(|l| !l.told && l.ticks_left > 0));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::*;

    /// Delivers messages among `nodes` until quiet; messages to or from `down` are lost.
    /// Every append is durable at once.
    fn stabilize(nodes: &mut BTreeMap<NodeId, RaftCore>, down: &[NodeId]) {
        for _ in 0..100 {
            let mut msgs = Vec::new();
            for core in nodes.values_mut() {
                for cmd in core.take_commands() {
                    match cmd {
                        Command::AppendLog { entries } => {
                            let last = entries.last().expect("non-empty");
                            core.log_persisted(last.index, last.term);
                        }
                        Command::Send(m) | Command::SendNow(m) => msgs.push(m),
                        _ => {}
                    }
                }
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if down.contains(&m.to) || down.contains(&m.from) {
                    continue;
                }
                if let Some(core) = nodes.get_mut(&m.to) {
                    core.step(m);
                }
            }
        }
        panic!("no quiet state after 100 rounds");
    }

    fn three_nodes_led_by_1() -> BTreeMap<NodeId, RaftCore> {
        let members = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let mut nodes: BTreeMap<NodeId, RaftCore> = (1..=3)
            .map(|i| {
                let init = InitialState { bootstrap: members.clone(), ..Default::default() };
                // Without CheckQuorum, fresh followers grant votes at once (no stickiness).
                let cfg = Config { check_quorum: false, ..Config::new(NodeId(i), i) };
                (NodeId(i), RaftCore::new(cfg, init))
            })
            .collect();
        let n1 = nodes.get_mut(&NodeId(1)).expect("node 1");
        while n1.role() != Role::PreCandidate {
            n1.tick();
        }
        stabilize(&mut nodes, &[]);
        assert_eq!(nodes[&NodeId(1)].role(), Role::Leader);
        nodes
    }

    fn heartbeat(nodes: &mut BTreeMap<NodeId, RaftCore>, down: &[NodeId]) {
        let hb = nodes[&NodeId(1)].config().heartbeat_ticks;
        for _ in 0..hb {
            nodes.get_mut(&NodeId(1)).expect("leader").tick();
        }
        stabilize(nodes, down);
    }

    fn tracked(core: &RaftCore) -> Vec<u64> {
        core.status().progress.iter().map(|p| p.id.0).collect()
    }

    /// Thesis §4.2.2 leaves open how a removed server learns it was removed. It needs a
    /// commit index at or past the configuration that removed it; the leader's AppendEntries
    /// before that commit cannot carry one, so the leader keeps replicating to the removed
    /// peer until it acknowledged a later heartbeat round, and only then forgets it.
    #[test]
    fn a_removed_follower_learns_that_its_removal_committed() {
        let mut nodes = three_nodes_led_by_1();
        let index = nodes
            .get_mut(&NodeId(1))
            .unwrap()
            .change_membership(ConfChange::Remove { id: NodeId(3) });
        stabilize(&mut nodes, &[]);
        let leader = &nodes[&NodeId(1)];
        assert!(!leader.membership_change_in_progress());
        let c_new = leader.status().membership_index;
        assert!(c_new > index.unwrap(), "C_new follows the joint entry");
        assert!(nodes[&NodeId(3)].commit_index() < c_new, "3 has not heard of the commit yet");
        assert_eq!(tracked(&nodes[&NodeId(1)]), vec![2, 3], "3 is kept until it is told");

        heartbeat(&mut nodes, &[]);
        assert!(nodes[&NodeId(3)].commit_index() >= c_new, "3 knows its removal committed");
        assert!(!nodes[&NodeId(3)].membership().contains(NodeId(3)));
        assert_eq!(tracked(&nodes[&NodeId(1)]), vec![2], "then the leader forgets it");
    }

    #[test]
    fn a_removed_follower_that_is_down_is_forgotten_after_a_bounded_time() {
        let mut nodes = three_nodes_led_by_1();
        let leader = nodes.get_mut(&NodeId(1)).unwrap();
        leader.change_membership(ConfChange::Remove { id: NodeId(3) }).unwrap();
        stabilize(&mut nodes, &[NodeId(3)]);
        assert!(!nodes[&NodeId(1)].membership_change_in_progress());
        assert_eq!(tracked(&nodes[&NodeId(1)]), vec![2, 3]);
        let ticks = nodes[&NodeId(1)].config().election_ticks_max * super::LEAVING_TIMEOUTS;
        for i in 0..=ticks {
            nodes.get_mut(&NodeId(1)).unwrap().tick();
            stabilize(&mut nodes, &[NodeId(3)]);
            if i + 1 < ticks {
                assert_eq!(tracked(&nodes[&NodeId(1)]), vec![2, 3], "tick {i}");
            }
        }
        assert_eq!(tracked(&nodes[&NodeId(1)]), vec![2]);
        assert_eq!(nodes[&NodeId(1)].role(), Role::Leader);
    }
}
