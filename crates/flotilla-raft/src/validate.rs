//! `validate()`: the core's invariants, checked after every input in tests and debug builds.
//! Each check restates an `Invariant:` written on the field it governs.

use crate::command::Role;
use crate::core::RaftCore;
use crate::progress::ProgressMode;
use crate::types::LogIndex;

impl RaftCore {
    /// Panics with the node, term and index if an invariant is broken.
    pub fn validate(&self) {
        let id = self.cfg.id;
        let term = self.term;
        let log = &self.log;
        let fail = |what: &str| -> ! {
            panic!(
                "raft invariant broken on node {id} term {term}: {what} \
                 (commit {} applied {} stable {} last {} start {:?})",
                log.committed,
                log.applied,
                log.stable,
                log.last_index(),
                log.start
            )
        };
        if log.applied > log.committed {
            fail("applied > committed");
        }
        if log.applied > log.stable.max(log.snapshot.last_index) {
            fail("applied > stable");
        }
        if log.committed > log.last_index() {
            fail("committed > last index");
        }
        if log.stable > log.last_index() {
            fail("stable > last index");
        }
        if log.start.0 > log.applied {
            fail("purged beyond applied");
        }
        if log.unpersisted_from > log.last_index().next() {
            fail("unpersisted_from beyond the log");
        }
        let mut prev_term = log.start.1;
        let mut configs = log.config_indexes.iter();
        for (i, e) in log.entries.iter().enumerate() {
            if matches!(e.payload, crate::types::EntryPayload::Config(_))
                && configs.next() != Some(&e.index)
            {
                fail(&format!("config entry {} missing from the config index", e.index));
            }
            if e.index != LogIndex(log.start.0.0 + 1 + i as u64) {
                fail(&format!("entry at position {i} has index {}", e.index));
            }
            if e.term < prev_term {
                fail(&format!("term decreases at index {}", e.index));
            }
            if e.term > self.term {
                fail(&format!("entry {} has a future term {}", e.index, e.term));
            }
            prev_term = e.term;
        }
        if let Some(extra) = configs.next() {
            fail(&format!("config index names {extra}, which is no config entry in the log"));
        }
        match self.role {
            Role::Leader => {
                if self.leader != Some(id) {
                    fail("leader does not name itself");
                }
                if self.voted_for != Some(id) {
                    fail("leader did not vote for itself");
                }
                if log.last_term() != self.term {
                    fail("leader's last entry is not from its term");
                }
            }
            Role::Candidate => {
                if self.voted_for != Some(id) {
                    fail("candidate did not vote for itself");
                }
                if self.leader.is_some() {
                    fail("candidate knows a leader");
                }
            }
            Role::PreCandidate | Role::Follower => {
                if self.leader == Some(id) {
                    fail("non-leader names itself leader");
                }
                if !self.progress.is_empty() {
                    fail("non-leader tracks progress");
                }
            }
        }
        for (peer, pr) in &self.progress {
            if pr.match_index >= pr.next_index && pr.mode != ProgressMode::Snapshot {
                fail(&format!("progress of {peer}: match >= next"));
            }
            if pr.inflight.len() > self.cfg.max_inflight_msgs {
                fail(&format!("progress of {peer}: too many in flight"));
            }
            if pr.match_index > log.last_index() {
                fail(&format!("progress of {peer}: match beyond our log"));
            }
        }
        let m = &self.membership;
        if m.learners.iter().any(|l| m.is_voter(*l)) {
            fail("a learner is also a voter");
        }
        if m.members().iter().any(|n| !m.addrs.contains_key(n)) {
            fail("a member has no address");
        }
        const SCAN_MAX: usize = 10_000;
        if log.entries.len() <= SCAN_MAX && self.installing.is_none() {
            let (_, expected) = self.latest_membership();
            if expected != self.membership {
                fail("membership differs from the latest configuration in the log");
            }
        }
    }
}
