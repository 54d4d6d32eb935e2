//! Linearizable reads: ReadIndex and leases (thesis §6.4).

use crate::command::Command;
use crate::core::{RaftCore, ReadMode};
use crate::types::LogIndex;

/// A read waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    /// The commit index when the read arrived: it may be served once applied.
    pub(crate) index: LogIndex,
    /// The heartbeat round that confirms it; 0 until the round is sent.
    pub(crate) seq: u64,
}

impl RaftCore {
    pub(crate) fn register_read(&mut self, id: u64, mode: ReadMode) {
        // A new leader does not know the commit index until it commits an entry of its own
        // term (its no-op): until then reads wait.
        if self.log.term(self.log.committed) != Some(self.term) {
            self.reads_awaiting_commit.push(id);
            return;
        }
        let index = self.log.committed;
        if self.membership.voters.len() == 1
            && self.membership.outgoing.is_none()
            && self.membership.is_voter(self.cfg.id)
        {
            self.emit(Command::ReadReady { id, index });
            return;
        }
        if mode == ReadMode::Lease && self.lease_valid() {
            self.emit(Command::ReadReady { id, index });
            return;
        }
        self.pending_reads.push_back(PendingRead { id, index, seq: 0 });
    }

    /// The lease holds while a quorum acknowledged a heartbeat round sent less than
    /// `lease_ticks` ago. Voters refuse to elect anyone else for `election_ticks_min` after
    /// hearing from us; the lease stays well inside that to allow for clock drift.
    pub(crate) fn lease_valid(&self) -> bool {
        if !self.cfg.check_quorum || self.lease_revoked || self.transfer.is_some() {
            return false;
        }
        let seq = self.quorum_acked_seq();
        let Some(&(_, sent)) = self.hb_sent.iter().find(|(s, _)| *s == seq) else {
            return false;
        };
        let lease_ticks = u64::from(self.cfg.election_ticks_min) * 3 / 4;
        self.now < sent + lease_ticks
    }

    /// The newest heartbeat round a quorum (of every configuration half) acknowledged.
    fn quorum_acked_seq(&self) -> u64 {
        let me = self.cfg.id;
        let hb = self.hb_seq;
        self.membership.committed_index(|id| {
            if id == me { hb } else { self.progress.get(&id).map_or(0, |p| p.acked_seq) }
        })
    }

    /// Gives new reads a heartbeat round of their own and sends it.
    pub(crate) fn flush_reads(&mut self) {
        if !self.pending_reads.iter().any(|r| r.seq == 0) {
            return;
        }
        self.broadcast_heartbeat();
        let seq = self.hb_seq;
        for r in self.pending_reads.iter_mut().filter(|r| r.seq == 0) {
            r.seq = seq;
        }
    }

    /// Releases every read whose round a quorum acknowledged.
    pub(crate) fn check_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let acked = self.quorum_acked_seq();
        while let Some(r) = self.pending_reads.front() {
            if r.seq == 0 || r.seq > acked {
                break;
            }
            let r = self.pending_reads.pop_front().expect("front exists");
            self.emit(Command::ReadReady { id: r.id, index: r.index });
        }
    }

    /// The leader's first commit in its term releases reads that arrived before it.
    pub(crate) fn on_commit_reads(&mut self) {
        if self.reads_awaiting_commit.is_empty()
            || self.log.term(self.log.committed) != Some(self.term)
        {
            return;
        }
        for id in std::mem::take(&mut self.reads_awaiting_commit) {
            self.register_read(id, ReadMode::ReadIndex);
        }
    }
}
