//! The safety properties, checked incrementally after every step of the simulation
//! (Raft Figure 3): election safety, log matching, leader completeness, state machine
//! safety, plus commit and term monotonicity and the consistency of snapshots.

use std::collections::BTreeMap;

use flotilla_raft::{
    Entry, EntryPayload, LogIndex, Membership, NodeId, RaftCore, SnapshotMeta, Term,
};

use crate::storage::Storage;

/// A broken property, with what the checker saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

fn fail<T>(property: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { property, detail })
}

#[derive(Clone, Debug, Default)]
struct NodeSeen {
    /// Highest commit index seen in the current incarnation.
    commit: LogIndex,
    /// Highest term seen in the current incarnation.
    term: Term,
    /// Highest term in which this node sent a vote or a vote request (Raft Figure 2: the
    /// vote is durable before the reply). A restart must come back with at least this.
    term_acted: Term,
}

/// What the whole run has established so far.
pub struct Checker {
    /// Election safety: the one leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Log matching: every (index, term) ever appended anywhere, with its payload and the
    /// term of the entry before it. Two logs holding (i, t) must agree on both, which by
    /// induction makes the whole prefixes equal (Raft §5.3).
    appended: BTreeMap<(LogIndex, Term), (EntryPayload, Term)>,
    /// State machine safety: the entry committed at each index (slot 0 unused).
    committed: Vec<Option<(Term, EntryPayload)>>,
    pub max_committed: LogIndex,
    /// Every index up to here is in `committed`.
    contiguous: LogIndex,
    /// Committed configuration entries, and the bootstrap configuration.
    configs: BTreeMap<LogIndex, Membership>,
    bootstrap: Membership,
    nodes: BTreeMap<NodeId, NodeSeen>,
    /// The newest committed configuration (index), for stopping removed nodes.
    pub latest_config: (LogIndex, Membership),
    pub config_changed: bool,
}

impl Checker {
    pub fn new(bootstrap: Membership) -> Checker {
        Checker {
            leaders: BTreeMap::new(),
            appended: BTreeMap::new(),
            committed: vec![None],
            max_committed: LogIndex::ZERO,
            contiguous: LogIndex::ZERO,
            configs: BTreeMap::new(),
            latest_config: (LogIndex::ZERO, bootstrap.clone()),
            bootstrap,
            nodes: BTreeMap::new(),
            config_changed: false,
        }
    }

    pub fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }

    fn record_committed(
        &mut self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        payload: &EntryPayload,
    ) -> Result<(), Violation> {
        let i = index.0 as usize;
        if self.committed.len() <= i {
            self.committed.resize(i + 1, None);
        }
        match &self.committed[i] {
            Some((t, p)) => {
                if *t != term || p != payload {
                    return fail(
                        "state machine safety",
                        format!(
                            "n{node} has ({index}, t{term}) committed, but ({index}, t{t}) was committed before (payloads equal: {})",
                            p == payload
                        ),
                    );
                }
            }
            None => {
                self.committed[i] = Some((term, payload.clone()));
                if let EntryPayload::Config(m) = payload {
                    self.configs.insert(index, m.clone());
                    if !m.is_joint() && index > self.latest_config.0 {
                        self.latest_config = (index, m.clone());
                        self.config_changed = true;
                    }
                }
                self.max_committed = self.max_committed.max(index);
                while self
                    .committed
                    .get(self.contiguous.0 as usize + 1)
                    .is_some_and(|c| c.is_some())
                {
                    self.contiguous = self.contiguous.next();
                }
            }
        }
        Ok(())
    }

    /// After every step of node `id`: monotonicity, election safety, newly committed
    /// entries, and leader completeness for a leader seen for the first time.
    pub fn after_step(&mut self, id: NodeId, core: &RaftCore) -> Result<(), Violation> {
        let seen = self.nodes.entry(id).or_default();
        let (commit, term) = (core.commit_index(), core.term());
        if commit < seen.commit {
            return fail(
                "commit monotonicity",
                format!("n{id} commit went back {} -> {commit}", seen.commit),
            );
        }
        if term < seen.term {
            return fail(
                "term monotonicity",
                format!("n{id} term went back {} -> {term}", seen.term),
            );
        }
        seen.term = term;
        let from = seen.commit.next();
        seen.commit = commit;
        let mut i = from;
        while i <= commit {
            if let Some(e) = core.entry(i) {
                self.record_committed(id, i, e.term, &e.payload)?;
            }
            i = i.next();
        }
        if core.role() == flotilla_raft::Role::Leader {
            match self.leaders.get(&term) {
                Some(other) if *other != id => {
                    return fail(
                        "election safety",
                        format!("n{id} and n{other} are both leaders of t{term}"),
                    );
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.leader_completeness(id, core)?;
                }
            }
        }
        Ok(())
    }

    /// A new leader's log holds every entry known to be committed (or its snapshot covers
    /// it) (Raft §5.4).
    fn leader_completeness(&self, id: NodeId, core: &RaftCore) -> Result<(), Violation> {
        let snap = core.snapshot_meta().last_index;
        let mut i = core.first_index().max(LogIndex(1));
        while i <= self.max_committed {
            if let Some(Some((t, p))) = self.committed.get(i.0 as usize) {
                match core.entry(i) {
                    Some(e) if e.term == *t && e.payload == *p => {}
                    Some(e) => {
                        return fail(
                            "leader completeness",
                            format!(
                                "leader n{id} of t{} has ({i}, t{}) where ({i}, t{t}) is committed",
                                core.term(),
                                e.term
                            ),
                        );
                    }
                    None if i <= snap => {}
                    None => {
                        return fail(
                            "leader completeness",
                            format!(
                                "leader n{id} of t{} lacks committed entry {i} (its last index {})",
                                core.term(),
                                core.last_index()
                            ),
                        );
                    }
                }
            }
            i = i.next();
        }
        Ok(())
    }

    /// Entries handed to the store: log matching against everything appended anywhere.
    pub fn on_append(
        &mut self,
        id: NodeId,
        core: &RaftCore,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let mut prev = core.term_at(entries[0].index.prev());
        for e in entries {
            if core.entry(e.index) != Some(e) {
                return fail(
                    "persistence contract",
                    format!("n{id} AppendLog entry {} differs from its own log", e.index),
                );
            }
            match (self.appended.get(&(e.index, e.term)), prev) {
                (Some((p, pt)), Some(prev)) => {
                    if *p != e.payload || *pt != prev {
                        return fail(
                            "log matching",
                            format!(
                                "n{id} appends ({}, t{}) after t{prev}; another log has it after t{pt} (payloads equal: {})",
                                e.index,
                                e.term,
                                *p == e.payload
                            ),
                        );
                    }
                }
                (Some((p, _)), None) => {
                    if *p != e.payload {
                        return fail(
                            "log matching",
                            format!(
                                "n{id} appends ({}, t{}) with a different payload",
                                e.index, e.term
                            ),
                        );
                    }
                }
                (None, Some(prev)) => {
                    self.appended.insert((e.index, e.term), (e.payload.clone(), prev));
                }
                (None, None) => {}
            }
            prev = Some(e.term);
        }
        Ok(())
    }

    /// Entries handed to the state machine: committed, in order, durable here.
    pub fn on_apply(
        &mut self,
        id: NodeId,
        entries: &[Entry],
        disk: &dyn Storage,
    ) -> Result<(), Violation> {
        for e in entries {
            if disk.term(e.index) != Some(e.term) {
                return fail(
                    "persistence contract",
                    format!("n{id} applies ({}, t{}) that is not durable", e.index, e.term),
                );
            }
            self.record_committed(id, e.index, e.term, &e.payload)?;
        }
        Ok(())
    }

    /// A snapshot built or received: its last entry is the committed one, and its
    /// configuration is the one in force at its index.
    pub fn on_snapshot(&mut self, id: NodeId, meta: &SnapshotMeta) -> Result<(), Violation> {
        if let Some(Some((t, _))) = self.committed.get(meta.last_index.0 as usize)
            && *t != meta.last_term
        {
            return fail(
                "state machine safety",
                format!(
                    "n{id} snapshot ends at ({}, t{}) but ({}, t{t}) is committed",
                    meta.last_index, meta.last_term, meta.last_index
                ),
            );
        }
        if meta.last_index <= self.contiguous {
            let expected = self
                .configs
                .range(..=meta.last_index)
                .next_back()
                .map_or(&self.bootstrap, |(_, m)| m);
            if *expected != meta.membership {
                return fail(
                    "snapshot configuration",
                    format!(
                        "n{id} snapshot at {} carries {:?}, but {:?} was in force there",
                        meta.last_index, meta.membership, expected
                    ),
                );
            }
        }
        Ok(())
    }

    /// A node restarted: its commit index restarts from what its disk allows, and it has
    /// not forgotten a term it acted in.
    pub fn on_restart(
        &mut self,
        id: NodeId,
        core: &RaftCore,
        disk: &dyn Storage,
    ) -> Result<(), Violation> {
        let durable = disk.hard_state().commit.min(disk.last_index());
        if core.commit_index() < durable {
            return fail(
                "commit monotonicity",
                format!(
                    "n{id} restarted with commit {} below its durable commit {durable}",
                    core.commit_index()
                ),
            );
        }
        let seen = self.nodes.entry(id).or_default();
        if core.term() < seen.term_acted {
            return fail(
                "term durability",
                format!(
                    "n{id} restarted in t{} but had sent messages of t{} before crashing",
                    core.term(),
                    seen.term_acted
                ),
            );
        }
        seen.commit = core.commit_index();
        seen.term = core.term();
        Ok(())
    }

    /// A message left node `id`. A RequestVote (the candidate's own vote) and a granted
    /// vote promise that the vote, and so its term, is durable: forgetting either lets
    /// the node vote twice in one term. AppendEntries answers are not counted: the core
    /// sends rejections and answers covering only durable entries at once (SendNow), and
    /// with a FIFO disk every entry they acknowledge was queued after the term that
    /// accepted it. PreVote traffic carries other nodes' terms and promises nothing.
    pub fn on_send(&mut self, id: NodeId, m: &flotilla_raft::Message) {
        use flotilla_raft::MessageBody as B;
        let promises = match &m.body {
            B::RequestVote { pre_vote, .. } => !pre_vote,
            B::RequestVoteResponse { pre_vote, granted, .. } => !pre_vote && *granted,
            _ => false,
        };
        if promises {
            let seen = self.nodes.entry(id).or_default();
            seen.term_acted = seen.term_acted.max(m.term);
        }
    }

    /// The committed entry at `index`, if known.
    pub fn committed_term(&self, index: LogIndex) -> Option<Term> {
        self.committed.get(index.0 as usize).and_then(|c| c.as_ref().map(|c| c.0))
    }
}
