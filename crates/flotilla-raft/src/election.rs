//! Elections: timers, PreVote, RequestVote, and the vote restriction (Raft §5.2, §5.4.1,
//! thesis §9.6 PreVote, §4.2.3 disruptive servers, §3.10 leadership transfer).

use crate::command::{Event, Role};
use crate::core::RaftCore;
use crate::membership::VoteResult;
use crate::message::{MessageBody, VoteRefusal};
use crate::types::{LogIndex, NodeId, Term};

impl RaftCore {
    /// Follower, PreCandidate and Candidate: count down to an election.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout && self.promotable() {
            self.campaign(self.cfg.pre_vote, false);
        }
    }

    /// Only a voter of the current configuration may stand for election.
    pub(crate) fn promotable(&self) -> bool {
        self.membership.is_voter(self.cfg.id) && self.installing.is_none()
    }

    /// True while we heard from a leader within the minimum election timeout (or started
    /// that recently): vote requests are then refused, unless they follow a TimeoutNow.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.role == Role::Leader
                || self.leader_contact_elapsed < self.cfg.election_ticks_min)
    }

    /// Starts an election: a PreVote round first when `pre_vote` (the term does not move
    /// until a quorum says it would vote for us), else a real one.
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.term.next()
        } else {
            self.role = Role::Candidate;
            self.leader = None;
            self.term = self.term.next();
            self.voted_for = Some(self.cfg.id);
            // The self-vote is durable before any RequestVote leaves (rule 1 of the
            // persistence contract orders it).
            self.save_hard_state();
            self.term
        };
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        self.event(Event::RoleChanged { role: self.role, term: self.term, leader: None });
        self.event(Event::ElectionStarted { term, pre_vote });
        if self.tally() == VoteResult::Won {
            self.won_round(pre_vote);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for id in self.membership.all_voters() {
            if id == self.cfg.id {
                continue;
            }
            let body =
                MessageBody::RequestVote { pre_vote, last_log_index, last_log_term, transfer };
            self.send_with_term(id, term, body);
        }
    }

    fn tally(&self) -> VoteResult {
        self.membership.vote_result(|id| self.votes.get(&id).copied())
    }

    fn won_round(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false, false);
        } else {
            self.become_leader();
        }
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        // Here `term >= self.term` (a real vote's higher term was adopted already).
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(feature = "broken-variants")]
        let up_to_date = up_to_date || self.cfg.broken.vote_restriction;
        let refusal = if !can_vote {
            Some(VoteRefusal::AlreadyVoted)
        } else if !up_to_date {
            Some(VoteRefusal::LogBehind)
        } else {
            None
        };
        // A PreVote answer echoes the prospective term; a real one carries ours (equal).
        let reply_term = if pre_vote { term } else { self.term };
        let granted = refusal.is_none();
        if granted {
            if !pre_vote {
                self.voted_for = Some(from);
                self.reset_election_timer();
                self.save_hard_state();
            }
            self.event(Event::VoteGranted { candidate: from, term, pre_vote });
        } else if let Some(reason) = refusal {
            self.event(Event::VoteRefused { candidate: from, term, pre_vote, reason });
        }
        self.send_with_term(
            from,
            reply_term,
            MessageBody::RequestVoteResponse { pre_vote, granted, refusal },
        );
    }

    pub(crate) fn refuse_vote_leader_alive(&mut self, m: &crate::message::Message, pre_vote: bool) {
        let reason = VoteRefusal::LeaderAlive;
        self.event(Event::VoteRefused { candidate: m.from, term: m.term, pre_vote, reason });
        // Answer in the candidate's own term so it counts the refusal without any of us
        // adopting a term we did not vote in.
        self.send_with_term(
            m.from,
            m.term,
            MessageBody::RequestVoteResponse { pre_vote, granted: false, refusal: Some(reason) },
        );
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        if self.role != expected || !self.membership.is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            VoteResult::Won => self.won_round(pre_vote),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    /// Leadership transfer target: campaign now, skipping PreVote (thesis §3.10).
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        let _ = from;
        self.campaign(false, true);
    }
}
