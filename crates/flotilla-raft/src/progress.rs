//! The leader's view of each follower (etcd-raft's Progress, thesis §10.2.1).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// How the leader currently replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// We do not know where the follower's log matches ours: send one AppendEntries at a
    /// time and wait for its answer (or the next heartbeat) before sending another.
    Probe,
    /// The follower is known to match up to `match_index`: stream entries optimistically,
    /// up to `max_inflight_msgs` messages in flight.
    Replicate,
    /// The follower needs entries we compacted: a snapshot is on its way.
    Snapshot,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Invariant: `match_index < next_index`.
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) mode: ProgressMode,
    /// Probe: an AppendEntries is outstanding; wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// Replicate: the last index of each AppendEntries in flight, oldest first.
    /// Invariant: `inflight.len() <= max_inflight_msgs`.
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Snapshot: the index of the snapshot being sent, and ticks since it was offered.
    pub(crate) pending_snapshot: LogIndex,
    pub(crate) snapshot_ticks: u32,
    /// Snapshot: the runtime reported the transfer complete (the follower's runtime had
    /// handed it to its core) during this heartbeat round; see
    /// [`crate::RaftCore::snapshot_delivered`].
    pub(crate) snapshot_delivered_seq: Option<u64>,
    /// The tick of the last such early re-offer: at most one per snapshot timeout, so a
    /// follower that keeps refusing the snapshot does not get it in a loop.
    pub(crate) snapshot_reoffered_at: Option<u64>,
    /// CheckQuorum: heard from this follower since the last quorum check.
    pub(crate) recent_active: bool,
    /// The highest heartbeat round this follower acknowledged in the current term.
    pub(crate) acked_seq: u64,
    /// The heartbeat round of our last probe of the last entry sent (see
    /// `probe_last_sent`). Invariant: at most one such probe per round, so answers to
    /// probes (and their duplicates) cannot beget probes without end.
    pub(crate) probed_seq: u64,
    /// Set once a committed configuration no longer has this peer: see [`Leaving`].
    pub(crate) leaving: Option<Leaving>,
}

/// A peer that a committed configuration removed. It learns that it was removed only from
/// a commit index at or past that configuration, which the leader sends after the commit;
/// so the leader keeps replicating to it until it acknowledged such a message, for at most
/// `ticks_left` more ticks (it may be down), then forgets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leaving {
    /// The index of the configuration that removed the peer.
    pub(crate) config: LogIndex,
    /// The heartbeat round when the removal committed: messages of later rounds carry a
    /// commit index at or past `config`.
    pub(crate) seq: u64,
    pub(crate) ticks_left: u32,
    /// The peer acknowledged, in a later round, a message whose entries reach `config`:
    /// its commit index is now at or past it.
    pub(crate) told: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            mode: ProgressMode::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            pending_snapshot: LogIndex::ZERO,
            snapshot_ticks: 0,
            snapshot_delivered_seq: None,
            snapshot_reoffered_at: None,
            recent_active: false,
            acked_seq: 0,
            probed_seq: 0,
            leaving: None,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise right after what matches.
        let after = if self.mode == ProgressMode::Snapshot {
            self.match_index.max(self.pending_snapshot)
        } else {
            self.match_index
        };
        self.mode = ProgressMode::Probe;
        self.next_index = after.next();
        self.probe_sent = false;
        self.inflight.clear();
        self.pending_snapshot = LogIndex::ZERO;
        self.snapshot_ticks = 0;
        self.snapshot_delivered_seq = None;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.mode = ProgressMode::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.mode = ProgressMode::Snapshot;
        self.pending_snapshot = index;
        self.snapshot_ticks = 0;
        self.snapshot_delivered_seq = None;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records a successful acknowledgement up to `index`. Returns true if it advanced.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.probe_sent = false;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while self.inflight.front().is_some_and(|i| *i <= index) {
            self.inflight.pop_front();
        }
        advanced
    }

    /// True if we may send another AppendEntries carrying entries now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.mode {
            ProgressMode::Probe => !self.probe_sent,
            ProgressMode::Replicate => self.inflight.len() < max_inflight,
            ProgressMode::Snapshot => false,
        }
    }

    /// Bookkeeping after sending entries up to `last`.
    pub(crate) fn sent(&mut self, last: Option<LogIndex>) {
        match self.mode {
            ProgressMode::Probe => self.probe_sent = true,
            ProgressMode::Replicate => {
                if let Some(last) = last {
                    self.next_index = last.next();
                    self.inflight.push_back(last);
                }
            }
            ProgressMode::Snapshot => {}
        }
    }
}

/// A snapshot of one follower's progress, for status pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressStatus {
    pub id: crate::types::NodeId,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub mode: ProgressMode,
    pub inflight: usize,
    pub voter: bool,
    pub recent_active: bool,
}
