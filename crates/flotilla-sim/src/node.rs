//! One simulated node: a core, its durable store, its volatile state machine, and a
//! runtime model that executes the core's commands exactly per the persistence contract.
//!
//! - `SaveHardState` / `AppendLog` / `PurgeLog` and snapshot saves join a FIFO disk queue;
//!   each completes after a random delay, in order (one writer, group commit).
//! - `Send` waits until every persist op queued before it has completed; `SendNow` leaves
//!   at once.
//! - A crash drops the disk queue, the waiting sends, the state machine and the core.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use flotilla_raft::{Config, Entry, HardState, LogIndex, Message, NodeId, RaftCore, SnapshotMeta};

use crate::kv::{Key, Kv};
use crate::storage::MemDisk;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Crashed,
    /// Removed from the cluster by a committed configuration: stopped for good.
    Removed,
}

/// A persist operation in the disk queue.
#[derive(Clone, Debug)]
pub enum DiskOp {
    Write {
        hs: Option<HardState>,
        entries: Vec<Entry>,
    },
    Purge(LogIndex),
    SaveSnapshot {
        meta: SnapshotMeta,
        data: Bytes,
    },
    Install {
        meta: SnapshotMeta,
        data: Bytes,
    },
    /// The state machine refuses a received snapshot: nothing changes on disk or in the
    /// state machine; the core is told the install failed.
    RefuseInstall {
        meta: SnapshotMeta,
    },
}

/// A client waiting for the outcome of one attempt on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub client: usize,
    pub client_id: u32,
    pub seq: u64,
    pub attempt: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct ReadWaiter {
    pub waiter: Waiter,
    pub key: Key,
}

pub struct Node {
    pub id: NodeId,
    pub state: NodeState,
    /// Bumped at every crash: events of an earlier life are ignored.
    pub incarnation: u64,
    pub core: Option<RaftCore>,
    pub disk: MemDisk,
    /// Pending persist ops, oldest first, with their sequence numbers.
    pub queue: VecDeque<(u64, DiskOp)>,
    /// The sequence number the next op gets; the last completed one.
    pub next_seq: u64,
    pub done_seq: u64,
    pub last_done_at: u64,
    /// `Send`s waiting for every op up to the given sequence number.
    pub waiting: VecDeque<(u64, Message)>,
    /// The state machine. It survives a crash when the run's plan says so
    /// (`Plan::keep_sm_per_mille`), as `flotilla-kv`'s does (it lives in fjall).
    pub sm: Kv,
    /// Proposals by the index they were appended at.
    pub proposals: BTreeMap<LogIndex, Vec<Waiter>>,
    /// Reads waiting for ReadReady, by read id.
    pub reads: BTreeMap<u64, ReadWaiter>,
    /// Reads confirmed at an index the state machine has not applied yet.
    pub ready_reads: Vec<(LogIndex, ReadWaiter)>,
    pub building_snapshot: bool,
    pub installing: bool,
    /// Snapshot bytes that arrived with the message being stepped.
    pub incoming: Option<(SnapshotMeta, Bytes)>,
    pub tick_us: u64,
    pub cfg: Config,
    /// Was a member of some committed configuration (so a later one can remove it).
    pub committed_member: bool,
}

impl Node {
    pub fn new(id: NodeId, cfg: Config, disk: MemDisk, tick_us: u64) -> Node {
        Node {
            id,
            state: NodeState::Crashed,
            incarnation: 0,
            core: None,
            disk,
            queue: VecDeque::new(),
            next_seq: 1,
            done_seq: 0,
            last_done_at: 0,
            waiting: VecDeque::new(),
            sm: Kv::default(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            building_snapshot: false,
            installing: false,
            incoming: None,
            tick_us,
            cfg,
            committed_member: false,
        }
    }

    pub fn running(&self) -> bool {
        self.state == NodeState::Running
    }

    pub fn has_pending_persist(&self) -> bool {
        self.done_seq + 1 < self.next_seq
    }

    /// Forgets everything volatile, and the state machine unless `keep_sm` (a state machine
    /// on disk, whose applied entries are all in the durable log already: the core only
    /// applies what it persisted). Returns the waiters that lost their answer:
    /// (waiter, was a proposal).
    pub fn crash(&mut self, keep_sm: bool) -> Vec<(Waiter, bool)> {
        self.core = None;
        self.queue.clear();
        self.waiting.clear();
        if !keep_sm {
            self.sm = Kv::default();
        }
        self.incoming = None;
        self.building_snapshot = false;
        self.installing = false;
        self.incarnation += 1;
        self.done_seq = self.next_seq - 1;
        let mut lost: Vec<(Waiter, bool)> = Vec::new();
        for ws in std::mem::take(&mut self.proposals).into_values() {
            lost.extend(ws.into_iter().map(|w| (w, true)));
        }
        lost.extend(std::mem::take(&mut self.reads).into_values().map(|r| (r.waiter, false)));
        lost.extend(std::mem::take(&mut self.ready_reads).into_iter().map(|r| (r.1.waiter, false)));
        lost
    }
}
