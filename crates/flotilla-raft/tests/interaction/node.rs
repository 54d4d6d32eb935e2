//! One node of the interaction environment: a core, its durable storage, its state machine,
//! and the runtime duties of `lib.rs` (persist, then send, then apply) executed in order.

use flotilla_raft::{
    Command, Config, Entry, EntryPayload, HardState, InitialState, LogIndex, Membership, NodeId,
    RaftCore, SnapshotMeta, Term,
};

/// What a state machine holds: the applied commands, each with its log index.
pub type SmData = Vec<(LogIndex, String)>;

/// The node's disk. Survives `crash`; everything else does not.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    pub hard_state: HardState,
    /// The latest durable snapshot and the state-machine contents it captures.
    pub snapshot: Option<(SnapshotMeta, SmData)>,
    /// The index and term just before `entries[0]`.
    pub start: (LogIndex, Term),
    pub entries: Vec<Entry>,
}

impl Storage {
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.start.0.0 + self.entries.len() as u64)
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.start.0 {
            return Some(self.start.1);
        }
        if index < self.start.0 || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index.0 - self.start.0.0 - 1) as usize].term)
    }

    /// `AppendLog`: delete every entry at or after the first new one, then append.
    fn append(&mut self, es: &[Entry]) -> Result<(), String> {
        let first = es[0].index;
        if first <= self.start.0 || first > self.last_index().next() {
            return Err(format!(
                "AppendLog at {first} leaves a gap or rewrites the purged prefix (start {}, last {})",
                self.start.0,
                self.last_index()
            ));
        }
        self.entries.truncate((first.0 - self.start.0.0 - 1) as usize);
        self.entries.extend(es.iter().cloned());
        Ok(())
    }

    fn purge(&mut self, upto: LogIndex) -> Result<(), String> {
        if upto <= self.start.0 {
            return Ok(());
        }
        let term = self.term(upto).ok_or(format!("PurgeLog upto={upto} beyond the durable log"))?;
        self.entries.drain(..(upto.0 - self.start.0.0) as usize);
        self.start = (upto, term);
        Ok(())
    }
}

/// Everything about one node. `core` is `None` while the node is down.
pub struct Node {
    pub id: NodeId,
    pub cfg: Config,
    pub bootstrap: Membership,
    pub core: Option<RaftCore>,
    pub disk: Storage,
    /// The state machine (volatile: rebuilt from the snapshot and the log on restart).
    pub sm: SmData,
    pub sm_applied: LogIndex,
    /// Commands taken from the core whose execution waits on the (held) disk.
    pub held: Vec<Command>,
    /// A snapshot that arrived from a leader and waits for the core's `InstallSnapshot`.
    pub received_snapshot: Option<(SnapshotMeta, SmData)>,
}

/// What executing one command produced for the environment to route.
pub enum Effect {
    None,
    /// A message to put on the network, with a snapshot's data riding along.
    Send(flotilla_raft::Message, Option<SmData>),
}

impl Node {
    pub fn new(id: NodeId, cfg: Config, bootstrap: Membership, disk: Storage) -> Node {
        let mut node = Node {
            id,
            cfg,
            bootstrap,
            core: None,
            disk,
            sm: Vec::new(),
            sm_applied: LogIndex::ZERO,
            held: Vec::new(),
            received_snapshot: None,
        };
        node.start();
        node
    }

    /// Builds a core from what is on disk, as a process does when it starts.
    pub fn start(&mut self) {
        let (sm, applied) = match &self.disk.snapshot {
            Some((meta, data)) => (data.clone(), meta.last_index),
            None => (Vec::new(), LogIndex::ZERO),
        };
        self.sm = sm;
        self.sm_applied = applied;
        self.held.clear();
        self.received_snapshot = None;
        let init = InitialState {
            hard_state: self.disk.hard_state,
            snapshot: self.disk.snapshot.as_ref().map(|(m, _)| m.clone()),
            log_start: self.disk.start,
            entries: self.disk.entries.clone(),
            bootstrap: self.bootstrap.clone(),
            applied: LogIndex::ZERO,
        };
        self.core = Some(RaftCore::new(self.cfg.clone(), init));
    }

    /// Executes one command as the runtime must (see the crate docs). `Err` describes a
    /// broken contract: the core asked for something impossible.
    pub fn execute(&mut self, cmd: &Command) -> Result<Effect, String> {
        let id = self.id;
        let core = self.core.as_mut().ok_or(format!("node {id} is down"))?;
        match cmd {
            Command::SaveHardState(hs) => self.disk.hard_state = *hs,
            Command::AppendLog { entries } => {
                self.disk.append(entries)?;
                let last = entries.last().expect("AppendLog is never empty");
                core.log_persisted(last.index, last.term);
            }
            Command::Send(m) | Command::SendNow(m) => return Ok(Effect::Send(m.clone(), None)),
            Command::Apply { entries } => {
                for e in entries {
                    if e.index != self.sm_applied.next() {
                        return Err(format!(
                            "node {id} applies {} after {}: a gap or a repeat",
                            e.index, self.sm_applied
                        ));
                    }
                    if self.disk.term(e.index) != Some(e.term) {
                        return Err(format!(
                            "node {id} applies {}/{} which is not durable",
                            e.index, e.term
                        ));
                    }
                    if let EntryPayload::Command(b) = &e.payload
                        && !b.is_empty()
                    {
                        self.sm.push((e.index, String::from_utf8_lossy(b).into_owned()));
                    }
                    self.sm_applied = e.index;
                }
            }
            Command::SendSnapshot { to, meta } => {
                let Some((stored, data)) = &self.disk.snapshot else {
                    return Err(format!("node {id} sends a snapshot it does not hold"));
                };
                if stored != meta {
                    return Err(format!("node {id} sends snapshot {meta:?} but holds {stored:?}"));
                }
                let msg = flotilla_raft::Message {
                    from: id,
                    to: *to,
                    term: core.term(),
                    body: flotilla_raft::MessageBody::InstallSnapshot { meta: meta.clone() },
                };
                return Ok(Effect::Send(msg, Some(data.clone())));
            }
            Command::InstallSnapshot { meta } => {
                let Some((got, data)) = self.received_snapshot.take() else {
                    return Err(format!("node {id} installs a snapshot it never received"));
                };
                if &got != meta {
                    return Err(format!("node {id} installs {meta:?} but received {got:?}"));
                }
                // Atomically: state machine replaced, log reset after the snapshot.
                self.disk.snapshot = Some((meta.clone(), data.clone()));
                self.disk.start = (meta.last_index, meta.last_term);
                self.disk.entries.clear();
                self.sm = data;
                self.sm_applied = meta.last_index;
                core.snapshot_installed(meta.clone());
            }
            Command::PurgeLog { upto } => {
                let covered =
                    self.disk.snapshot.as_ref().is_some_and(|(m, _)| m.last_index >= *upto);
                if !covered {
                    return Err(format!(
                        "node {id} purges up to {upto}, beyond its durable snapshot"
                    ));
                }
                self.disk.purge(*upto)?;
            }
            Command::ReadReady { .. }
            | Command::ReadFailed { .. }
            | Command::Release(_)
            | Command::Event(_) => {}
        }
        Ok(Effect::None)
    }

    /// `compact`: snapshot the state machine at `index` (applied), store it durably, and tell
    /// the core. Returns the snapshot's metadata.
    pub fn compact(&mut self, index: LogIndex) -> Result<SnapshotMeta, String> {
        let core = self.core.as_mut().ok_or(format!("node {} is down", self.id))?;
        let meta = core.snapshot_meta_for(index).map_err(|e| e.to_string())?;
        if index > self.sm_applied {
            return Err(format!("the state machine has applied only {}", self.sm_applied));
        }
        let data: SmData = self.sm.iter().filter(|(i, _)| *i <= index).cloned().collect();
        self.disk.snapshot = Some((meta.clone(), data));
        core.snapshot_built(meta.clone());
        Ok(meta)
    }
}
