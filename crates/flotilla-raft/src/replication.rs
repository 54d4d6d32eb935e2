//! Log replication and commitment (Raft §5.3, §5.4.2 / Figure 8, thesis §10.2.1 pipelining).

use crate::command::{Command, Event, Role, StepDownReason};
use crate::core::RaftCore;
use crate::message::{ConflictHint, MessageBody};
use crate::progress::ProgressMode;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, Term};

/// How many heartbeat rounds we remember the send time of (for leases).
const HB_HISTORY_MAX: usize = 64;

impl RaftCore {
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some(t) = self.transfer.as_mut() {
            t.elapsed += 1;
            if t.elapsed >= self.cfg.election_ticks_max {
                let to = t.to;
                self.transfer = None;
                self.event(Event::TransferAborted { to, term: self.term });
            }
        }
        let timeout = self.cfg.snapshot_timeout_ticks;
        let mut leaving = false;
        for pr in self.progress.values_mut() {
            if pr.mode == ProgressMode::Snapshot {
                pr.snapshot_ticks += 1;
                if pr.snapshot_ticks >= timeout {
                    pr.become_probe();
                }
            }
            if let Some(l) = pr.leaving.as_mut() {
                l.ticks_left = l.ticks_left.saturating_sub(1);
                leaving = true;
            }
        }
        if leaving {
            self.prune_leaving();
        }
        if self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                // Thesis §6.2: a leader cut off from a quorum steps down, so clients go
                // elsewhere instead of waiting on it.
                self.leave_leadership(StepDownReason::QuorumLost);
                self.role = Role::Follower;
                self.leader = None;
                self.reset_election_timer();
                self.event(Event::RoleChanged {
                    role: Role::Follower,
                    term: self.term,
                    leader: None,
                });
                return;
            }
            for pr in self.progress.values_mut() {
                pr.recent_active = false;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_active(&self) -> bool {
        let mut active: std::collections::BTreeSet<NodeId> =
            self.progress.iter().filter(|(_, p)| p.recent_active).map(|(id, _)| *id).collect();
        active.insert(self.cfg.id);
        self.membership.has_quorum(&active)
    }

    /// Starts a new heartbeat round and sends it to every peer.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.hb_seq += 1;
        self.hb_sent.push_back((self.hb_seq, self.now));
        while self.hb_sent.len() > HB_HISTORY_MAX {
            self.hb_sent.pop_front();
        }
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            self.send_heartbeat(id);
            // A lost probe is retried once per heartbeat.
            if let Some(pr) = self.progress.get_mut(&id)
                && pr.mode == ProgressMode::Probe
            {
                pr.probe_sent = false;
            }
        }
    }

    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else { return };
        // Point at an index the follower is known to hold when we can, so the heartbeat
        // can carry the commit index; otherwise probe at next_index - 1.
        let prev =
            if pr.mode == ProgressMode::Replicate { pr.match_index } else { pr.next_index.prev() };
        let Some(prev_term) = self.log.term(prev) else {
            // The follower needs a snapshot; an empty message at least keeps it from
            // starting elections while the snapshot is on its way.
            let body = MessageBody::AppendEntries {
                prev_log_index: LogIndex::ZERO,
                prev_log_term: Term::ZERO,
                entries: Vec::new(),
                leader_commit: LogIndex::ZERO,
                read_seq: self.hb_seq,
            };
            self.send_now(to, body);
            return;
        };
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.committed,
            read_seq: self.hb_seq,
        };
        self.send_now(to, body);
    }

    /// Sends whatever each follower's progress allows (pipelined, batched, byte-capped).
    pub(crate) fn replicate_to_all(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            self.replicate_to(id);
        }
    }

    /// True if `replicate_to_all` would send something now (mirrors `replicate_to`'s checks).
    pub(crate) fn replication_pending(&self) -> bool {
        let last = self.log.last_index();
        self.progress.values().any(|pr| {
            pr.can_send(self.cfg.max_inflight_msgs)
                && (pr.next_index <= last || pr.mode == ProgressMode::Probe)
        })
    }

    fn replicate_to(&mut self, to: NodeId) {
        let max_inflight = self.cfg.max_inflight_msgs;
        loop {
            let Some(pr) = self.progress.get(&to) else { return };
            if !pr.can_send(max_inflight) {
                return;
            }
            let next = pr.next_index;
            let probing = pr.mode == ProgressMode::Probe;
            if next > self.log.last_index() && !probing {
                return;
            }
            let prev = next.prev();
            let Some(prev_term) = self.log.term(prev) else {
                self.start_snapshot_transfer(to);
                return;
            };
            if next < self.log.first_index() && next <= self.log.last_index() {
                self.start_snapshot_transfer(to);
                return;
            }
            let entries = self.log.slice(next, self.log.last_index(), self.cfg.max_msg_bytes);
            let last = entries.last().map(|e| e.index);
            let body = MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.committed,
                read_seq: self.hb_seq,
            };
            self.send_now(to, body);
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.sent(last);
            }
            if probing || last.is_none() {
                return;
            }
        }
    }

    fn start_snapshot_transfer(&mut self, to: NodeId) {
        let meta = self.log.snapshot.clone();
        if meta.last_index == LogIndex::ZERO {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(meta.last_index);
        }
        self.emit(Command::SendSnapshot { to, meta });
    }

    /// Follower side of AppendEntries (Raft §5.3 receiver implementation).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) {
        // Same term as ours here: `from` is this term's leader.
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        self.leader_contact_elapsed = 0;
        if self.installing.is_some() {
            // The log is being replaced; answer nothing until the install completes.
            return;
        }
        let committed = self.log.committed;
        if prev_log_index < committed {
            // Everything up to our commit index matches the leader's log (Leader
            // Completeness); say so and let the leader continue from there.
            self.reply_append(from, true, committed, None, read_seq);
            return;
        }
        if !self.log.matches(prev_log_index, prev_log_term) {
            let hint = match self.log.term(prev_log_index) {
                Some(t) => ConflictHint {
                    conflict_term: Some(t),
                    first_index: self.log.first_index_of_term(prev_log_index),
                },
                None => {
                    ConflictHint { conflict_term: None, first_index: self.log.last_index().next() }
                }
            };
            self.reply_append(from, false, prev_log_index, Some(hint), read_seq);
            return;
        }
        let last_new = LogIndex(prev_log_index.0 + entries.len() as u64);
        let mut config_touched = false;
        let mut truncated = false;
        for e in entries {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    // Conflicting suffix: Raft §5.3 step 3.
                    self.log.truncate_from(e.index);
                    truncated = true;
                }
                None => {}
            }
            config_touched |= matches!(e.payload, EntryPayload::Config(_));
            self.log.append(e);
        }
        if truncated || config_touched {
            self.refresh_membership();
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.log.committed {
            self.log.committed = new_commit;
        }
        self.persist_entries();
        self.reply_append(from, true, last_new, None, read_seq);
    }

    fn reply_append(
        &mut self,
        to: NodeId,
        success: bool,
        match_index: LogIndex,
        hint: Option<ConflictHint>,
        read_seq: u64,
    ) {
        let body = MessageBody::AppendEntriesResponse { success, match_index, hint, read_seq };
        // An answer that promises only what is already durable here (a rejection, or a
        // match within the stable prefix: a heartbeat's answer) need not wait behind the
        // fsync of newer entries. This keeps heartbeats answered while a slow disk write
        // is in progress, so CheckQuorum does not depose a healthy leader.
        let promises_only_durable = !success || match_index <= self.log.stable;
        if promises_only_durable {
            self.send_now(to, body);
        } else {
            self.send(to, body);
        }
    }

    /// Leader side: a follower answered. On failure `index` is the rejected prev_log_index.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint: Option<ConflictHint>,
        read_seq: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let hb_seq = self.hb_seq;
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.acked_seq = pr.acked_seq.max(read_seq);
        if let Some(l) = pr.leaving.as_mut()
            && success
            && index >= l.config
            && read_seq > l.seq
        {
            // Sent after the removal committed, so it carried a commit index at or past
            // it; the peer held the entries up to `index`: it now knows it is out.
            l.told = true;
            self.progress.remove(&from);
            return;
        }
        let now = self.now;
        let timeout = u64::from(self.cfg.snapshot_timeout_ticks);
        if pr.mode == ProgressMode::Snapshot
            && pr.snapshot_delivered_seq.is_some_and(|s| read_seq > s)
            && !(success && index >= pr.pending_snapshot)
            && pr.snapshot_reoffered_at.is_none_or(|t| now.saturating_sub(t) >= timeout)
        {
            // An answer to a heartbeat sent after the snapshot was delivered, from a
            // follower that does not hold it: it is not installing it (it would not answer)
            // and never will. Offer it again now rather than after the snapshot timeout
            // (once per timeout: a follower that refuses every snapshot gets one offer per
            // timeout from here, plus the timeout's own).
            pr.snapshot_reoffered_at = Some(now);
            let lost = pr.pending_snapshot;
            // Resume from what it is known to hold: if that is compacted, `replicate_to`
            // offers the snapshot again.
            pr.become_probe();
            if success {
                pr.maybe_update(index.min(last_index));
            }
            pr.next_index = pr.match_index.next();
            self.event(Event::SnapshotOfferedAgain { to: from, index: lost });
            self.replicate_to(from);
            self.maybe_commit();
            // The answer still acknowledges its heartbeat round (`acked_seq` above).
            self.check_reads();
            return;
        }
        if success {
            let index = index.min(last_index);
            if pr.maybe_update(index) || pr.mode != ProgressMode::Replicate {
                match pr.mode {
                    ProgressMode::Probe => pr.become_replicate(),
                    ProgressMode::Snapshot if pr.match_index >= pr.pending_snapshot => {
                        pr.become_probe();
                        pr.become_replicate();
                    }
                    _ => {}
                }
                self.maybe_commit();
                self.maybe_send_timeout_now(from);
            } else if pr.next_index.prev() > pr.match_index && read_seq > pr.probed_seq {
                // An answer that acknowledges nothing new (a heartbeat's) while entries are
                // in flight: some AppendEntries may have been lost, and in Replicate mode
                // nothing would resend them before the next proposal (never, once lost
                // messages fill the in-flight window). Ask whether the follower holds the
                // last entry sent, as etcd-raft does on heartbeat answers; if it does not,
                // its rejection sends us back to Probe from match_index. Only once per
                // heartbeat round: the probe's own answer (or a duplicate) must not probe
                // again, or every answer begets a message and duplicates make a storm.
                pr.probed_seq = hb_seq;
                self.probe_last_sent(from);
            }
        } else {
            let stale = match pr.mode {
                ProgressMode::Replicate => index <= pr.match_index,
                ProgressMode::Probe => index != pr.next_index.prev(),
                ProgressMode::Snapshot => true,
            };
            if !stale {
                let target = self.backoff_target(index, hint);
                let pr = self.progress.get_mut(&from).expect("checked above");
                pr.become_probe();
                let lo = pr.match_index.next();
                pr.next_index = target.clamp(lo, index.max(lo));
            }
        }
        self.check_reads();
    }

    /// An empty AppendEntries at the last index sent to `to` (outside the in-flight window).
    fn probe_last_sent(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else { return };
        let prev = pr.next_index.prev();
        let Some(prev_term) = self.log.term(prev) else {
            // Compacted since it was sent: only a snapshot can bring the follower back.
            self.start_snapshot_transfer(to);
            return;
        };
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.committed,
            read_seq: self.hb_seq,
        };
        self.send_now(to, body);
    }

    /// Where to resume after a rejection at `rejected` (thesis §5.3 fast back-off).
    fn backoff_target(&self, rejected: LogIndex, hint: Option<ConflictHint>) -> LogIndex {
        let Some(hint) = hint else { return rejected };
        match hint.conflict_term {
            None => hint.first_index,
            Some(t) => match self.log.last_index_of_term_at_most(t) {
                // We hold entries of that term: resume right after our last one.
                Some(i) if self.log.term(i) == Some(t) => i.next(),
                _ => hint.first_index,
            },
        }
    }

    /// Commits the highest index a quorum of every configuration half holds, if it is from
    /// the current term (Raft §5.4.2, Figure 8).
    pub(crate) fn maybe_commit(&mut self) {
        let stable = self.log.stable.0;
        let me = self.cfg.id;
        let idx = LogIndex(self.membership.committed_index(|id| {
            if id == me { stable } else { self.progress.get(&id).map_or(0, |p| p.match_index.0) }
        }));
        if idx <= self.log.committed || idx > self.log.last_index() {
            return;
        }
        let current_term = self.log.term(idx) == Some(self.term);
        #[cfg(feature = "broken-variants")]
        let current_term = current_term || self.cfg.broken.figure8;
        if !current_term {
            return;
        }
        let old = self.log.committed;
        self.log.committed = idx;
        self.on_leader_commit(old);
    }

    fn on_leader_commit(&mut self, old: LogIndex) {
        let from = old.max(self.leader_first_index.prev()).next();
        let mut i = from;
        while i <= self.log.committed {
            if let Some(e) = self.log.entry(i) {
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(e.approx_bytes());
            }
            i = i.next();
        }
        self.on_commit_reads();
        self.on_commit_membership();
    }
}
