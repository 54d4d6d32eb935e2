//! Cluster configurations: simple and joint (Raft §6, thesis §4.3), with learners.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::types::NodeId;

/// Where a member can be reached. The core never dials anything; it only carries these so
/// that every node learns its peers' addresses from the replicated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft_addr: String,
    pub api_addr: String,
}

/// A configuration. In a joint configuration (`outgoing` is `Some`) every decision needs a
/// majority of `voters` AND a majority of `outgoing`.
///
/// Invariant: `learners` is disjoint from `voters` and from `outgoing`.
/// Invariant: every member (voter, outgoing voter or learner) has an entry in `addrs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the new (or only) configuration, C_new.
    pub voters: BTreeSet<NodeId>,
    /// The voters of the old configuration, C_old, while a joint change is in flight.
    pub outgoing: Option<BTreeSet<NodeId>>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
    /// Addresses of every member.
    pub addrs: BTreeMap<NodeId, NodeAddr>,
}

/// The outcome of counting votes or acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl Membership {
    /// A simple configuration of voters with empty addresses (tests and the simulator).
    pub fn with_voters(ids: impl IntoIterator<Item = NodeId>) -> Membership {
        let voters: BTreeSet<NodeId> = ids.into_iter().collect();
        let addrs = voters.iter().map(|id| (*id, NodeAddr::default())).collect();
        Membership { voters, outgoing: None, learners: BTreeSet::new(), addrs }
    }

    pub fn is_joint(&self) -> bool {
        self.outgoing.is_some()
    }

    /// True if `id` votes in any half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.as_ref().is_some_and(|o| o.contains(&id))
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first then learners, each once, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.clone();
        if let Some(o) = &self.outgoing {
            all.extend(o.iter().copied());
        }
        all.extend(self.learners.iter().copied());
        all
    }

    /// Every voter of either half.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        if let Some(o) = &self.outgoing {
            all.extend(o.iter().copied());
        }
        all
    }

    pub fn len(&self) -> usize {
        self.members().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a vote: `granted(id)` returns Some(true) for a yes, Some(false) for a no, None
    /// when the node has not answered. A joint configuration needs both halves to win.
    pub fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority_result(&self.voters, &granted);
        match &self.outgoing {
            None => incoming,
            Some(old) => {
                let outgoing = majority_result(old, &granted);
                match (incoming, outgoing) {
                    (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
                    (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
                    _ => VoteResult::Pending,
                }
            }
        }
    }

    /// The highest index that a majority of every half has acknowledged, given each voter's
    /// acknowledged index (`matched(id)`). Nodes without a value count as 0.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> u64) -> u64 {
        let incoming = majority_index(&self.voters, &matched);
        match &self.outgoing {
            None => incoming,
            Some(old) => incoming.min(majority_index(old, &matched)),
        }
    }

    /// True when the given set of nodes forms a quorum in every half.
    pub fn has_quorum(&self, nodes: &BTreeSet<NodeId>) -> bool {
        self.vote_result(|id| Some(nodes.contains(&id))) == VoteResult::Won
    }
}

fn majority_result(
    voters: &BTreeSet<NodeId>,
    granted: &impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        // An empty half agrees with everything: joint configurations never have one, and a
        // simple empty configuration has no decisions to make.
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0usize, 0usize);
    for id in voters {
        match granted(*id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if yes >= quorum {
        VoteResult::Won
    } else if yes + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

fn majority_index(voters: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut indexes: Vec<u64> = voters.iter().map(|id| matched(*id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn simple_majority_index_is_the_median_acknowledged() {
        let m = Membership::with_voters(ids(&[1, 2, 3]));
        let acks = [(1, 5), (2, 3), (3, 9)];
        let got = m.committed_index(|id| acks.iter().find(|a| a.0 == id.0).map_or(0, |a| a.1));
        assert_eq!(got, 5);
    }

    #[test]
    fn joint_needs_both_halves() {
        let mut m = Membership::with_voters(ids(&[1, 2, 3]));
        m.outgoing = Some(ids(&[1, 4, 5]));
        // Majority of {1,2,3} at 7, but {1,4,5} only at 2.
        let acks = [(1, 7), (2, 7), (3, 0), (4, 2), (5, 0)];
        let got = m.committed_index(|id| acks.iter().find(|a| a.0 == id.0).map_or(0, |a| a.1));
        assert_eq!(got, 2);
        let votes = |id: NodeId| if [1, 2, 3].contains(&id.0) { Some(true) } else { None };
        assert_eq!(m.vote_result(votes), VoteResult::Pending);
    }
}
