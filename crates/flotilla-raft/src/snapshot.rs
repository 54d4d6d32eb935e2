//! Snapshots and log compaction (Raft §7): building, sending, installing.

use crate::command::{Command, Event, Role};
use crate::core::RaftCore;
use crate::error::RaftError;
use crate::message::MessageBody;
use crate::progress::ProgressMode;
use crate::types::{LogIndex, NodeId, SnapshotMeta};

impl RaftCore {
    /// The metadata a snapshot of the state machine at `index` must carry. `index` must be
    /// applied and its term still known.
    pub fn snapshot_meta_for(&self, index: LogIndex) -> Result<SnapshotMeta, RaftError> {
        if index > self.log.applied {
            return Err(RaftError::Unavailable(index));
        }
        let last_term = self.log.term(index).ok_or(RaftError::Unavailable(index))?;
        let membership = match self.log.membership_at(index) {
            Some((_, m)) => m,
            None if self.log.snapshot.last_index > LogIndex::ZERO
                && self.log.snapshot.last_index <= index =>
            {
                self.log.snapshot.membership.clone()
            }
            // The bootstrap configuration is in force before the first config entry, but
            // a node that joined later has an empty bootstrap: it does not know which
            // configuration was in force there, and a snapshot carrying an empty one would
            // make whoever installs it forget that it is a voter. It must wait until it
            // has applied a configuration entry (the one that added it).
            None if self.log.start.0 == LogIndex::ZERO && !self.bootstrap.is_empty() => {
                self.bootstrap.clone()
            }
            None => return Err(RaftError::Unavailable(index)),
        };
        Ok(SnapshotMeta { last_index: index, last_term, membership })
    }

    /// The runtime finished building (and durably stored) the snapshot `meta`. The core
    /// will offer it to followers that need compacted entries, and drops the log prefix it
    /// no longer needs, keeping `compaction_keep_entries` below the snapshot.
    pub fn snapshot_built(&mut self, meta: SnapshotMeta) {
        if meta.last_index <= self.log.snapshot.last_index || meta.last_index > self.log.applied {
            return;
        }
        let upto = LogIndex(meta.last_index.0.saturating_sub(self.cfg.compaction_keep_entries));
        self.log.snapshot = meta;
        if upto > self.log.start.0 {
            let released = self.log.purge(upto);
            self.emit(Command::PurgeLog { upto: self.log.start.0 });
            self.release(released);
        }
        self.debug_validate_pub();
    }

    /// The runtime could not deliver the snapshot to `to`; it will be offered again.
    pub fn snapshot_send_failed(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to)
            && pr.mode == ProgressMode::Snapshot
        {
            pr.become_probe();
        }
    }

    /// Leader: the runtime delivered the whole snapshot `index` to `to`, and the follower's
    /// runtime confirmed it after stepping it into its core (so the follower is now
    /// installing it, or already holds it and has answered).
    ///
    /// A follower that is installing answers no AppendEntries. So if it answers a heartbeat
    /// of a later round without holding the snapshot, it is not installing it: it restarted
    /// (and lost the transfer), or its state machine refused the stream. Without this the
    /// leader, which otherwise ignores answers in Snapshot mode, would wait for its snapshot
    /// timeout before offering again; with it, it offers again at once (see
    /// `handle_append_response`).
    pub fn snapshot_delivered(&mut self, to: NodeId, index: LogIndex) {
        if self.role != Role::Leader {
            return;
        }
        let seq = self.hb_seq;
        if let Some(pr) = self.progress.get_mut(&to)
            && pr.mode == ProgressMode::Snapshot
            && pr.pending_snapshot == index
        {
            pr.snapshot_delivered_seq = Some(seq);
        }
    }

    /// Follower: the leader's snapshot has fully arrived (the runtime verified it).
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        self.leader_contact_elapsed = 0;
        if meta.last_index <= self.log.committed {
            // We already hold all of it.
            let last_index = self.log.committed;
            self.send(from, MessageBody::InstallSnapshotResponse { last_index });
            return;
        }
        if self.log.matches(meta.last_index, meta.last_term) {
            // Our log already holds the snapshot's last entry, so (log matching) the whole
            // prefix it covers. Keep the log: entries after it may have been acknowledged
            // to a leader that counted them towards a commit, and resetting to the
            // snapshot would silently drop them (Raft Figure 13, step 6).
            let last_index = meta.last_index;
            self.send(from, MessageBody::InstallSnapshotResponse { last_index });
            return;
        }
        if self.installing.is_some() {
            return;
        }
        self.installing = Some((from, meta.clone()));
        self.emit(Command::InstallSnapshot { meta });
    }

    /// Follower: the runtime installed the snapshot `meta` (state machine replaced, log
    /// reset, both durable).
    pub fn snapshot_installed(&mut self, meta: SnapshotMeta) {
        let Some((from, pending)) = self.installing.take() else { return };
        if pending != meta {
            return;
        }
        if meta.last_index > self.log.committed {
            let released = self.log.reset_to_snapshot(meta.clone());
            self.release(released);
            self.refresh_membership();
            self.event(Event::SnapshotInstalled { index: meta.last_index, term: meta.last_term });
        }
        let last_index = self.log.committed;
        if self.leader == Some(from) {
            self.send(from, MessageBody::InstallSnapshotResponse { last_index });
        }
        self.debug_validate_pub();
    }

    /// Follower: the runtime could not install the snapshot `meta` (its state machine
    /// refused the stream) and kept its state and log as they were. The node is no longer
    /// installing: it answers AppendEntries and may campaign again, and the leader offers a
    /// snapshot again once such an answer tells it the follower does not hold one (see
    /// [`RaftCore::snapshot_delivered`]), or else after its snapshot timeout.
    pub fn snapshot_install_failed(&mut self, meta: SnapshotMeta) {
        if self.installing.as_ref().is_some_and(|(_, pending)| *pending == meta) {
            self.installing = None;
        }
        self.debug_validate_pub();
    }

    /// Leader: a follower installed our snapshot.
    pub(crate) fn handle_install_snapshot_response(&mut self, from: NodeId, last_index: LogIndex) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.maybe_update(last_index.min(self.log.last_index()));
        if pr.mode == ProgressMode::Snapshot {
            pr.become_probe();
        }
        self.maybe_commit();
    }

    fn debug_validate_pub(&self) {
        #[cfg(any(test, debug_assertions))]
        self.validate();
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    /// Found by flotilla-sim (seed 301, profile mixed): a node added as a learner snapshotted
    /// an index before the configuration entry that added it, labelled with its own empty
    /// bootstrap configuration instead of the one in force there.
    #[test]
    fn a_joined_node_does_not_label_early_snapshots_with_an_empty_configuration() {
        let (leader, me) = (NodeId(1), NodeId(4));
        let init = InitialState { bootstrap: Membership::default(), ..Default::default() };
        let mut f = RaftCore::new(Config::new(me, 1), init);
        let mut joined = Membership::with_voters([leader, NodeId(2), NodeId(3)]);
        joined.learners.insert(me);
        joined.addrs.insert(me, NodeAddr::default());
        let payload =
            |i: u64| if i == 3 { EntryPayload::Config(joined.clone()) } else { EntryPayload::Noop };
        let entries: Vec<Entry> = (1..=3)
            .map(|i| Entry { term: Term(1), index: LogIndex(i), payload: payload(i) })
            .collect();
        let append = MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(3),
            read_seq: 0,
        };
        f.step(Message { from: leader, to: me, term: Term(1), body: append });
        f.log_persisted(LogIndex(3), Term(1));
        f.take_commands();
        assert_eq!(f.applied_index(), LogIndex(3));
        assert_eq!(f.snapshot_meta_for(LogIndex(2)), Err(RaftError::Unavailable(LogIndex(2))));
        assert_eq!(f.snapshot_meta_for(LogIndex(3)).map(|m| m.membership), Ok(joined));
    }

    /// A restarted node whose state machine kept what it applied (the KV store keeps its
    /// state in the node's database) starts at that index: the core hands over only later
    /// entries, and can describe a snapshot of the state machine at once, before any
    /// leader has told it the commit index. An `applied` past the stored log is clamped.
    #[test]
    fn a_restart_goes_on_from_what_the_state_machine_applied() {
        let (leader, me) = (NodeId(1), NodeId(2));
        let members = Membership::with_voters([leader, me, NodeId(3)]);
        let entries: Vec<Entry> = (1..=10)
            .map(|i| Entry { term: Term(1), index: LogIndex(i), payload: EntryPayload::Noop })
            .collect();
        let stored = |applied: u64| InitialState {
            hard_state: HardState { term: Term(1), voted_for: None, commit: LogIndex(4) },
            entries: entries.clone(),
            bootstrap: members.clone(),
            applied: LogIndex(applied),
            ..Default::default()
        };
        let mut f = RaftCore::new(Config::new(me, 1), stored(8));
        assert_eq!((f.applied_index(), f.commit_index()), (LogIndex(8), LogIndex(8)));
        assert_eq!(f.snapshot_meta_for(LogIndex(8)).map(|m| m.last_term), Ok(Term(1)));
        let append = MessageBody::AppendEntries {
            prev_log_index: LogIndex(10),
            prev_log_term: Term(1),
            entries: Vec::new(),
            leader_commit: LogIndex(10),
            read_seq: 0,
        };
        f.step(Message { from: leader, to: me, term: Term(1), body: append });
        let handed: Vec<u64> = f
            .take_commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Apply { entries } => Some(entries),
                _ => None,
            })
            .flatten()
            .map(|e| e.index.0)
            .collect();
        assert_eq!(handed, [9, 10]);
        let f = RaftCore::new(Config::new(me, 1), stored(25));
        assert_eq!((f.applied_index(), f.commit_index()), (LogIndex(10), LogIndex(10)));
        let f = RaftCore::new(Config::new(me, 1), stored(0));
        assert_eq!((f.applied_index(), f.commit_index()), (LogIndex(0), LogIndex(4)));
    }

    /// Compaction and installs hand the entries they let go of to the runtime
    /// (`Command::Release`) instead of freeing them inside the core: the runtime frees a
    /// large log off its event loop. Exactly the entries that left the log are released.
    #[test]
    fn compaction_and_install_release_exactly_the_entries_they_drop() {
        let (leader, me) = (NodeId(1), NodeId(2));
        let members = Membership::with_voters([leader, me, NodeId(3)]);
        let init = InitialState { bootstrap: members.clone(), ..Default::default() };
        let mut cfg = Config::new(me, 1);
        cfg.compaction_keep_entries = 5;
        let mut f = RaftCore::new(cfg, init);
        let entries: Vec<Entry> = (1..=30)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(i),
                payload: EntryPayload::Command(bytes::Bytes::from(vec![i as u8; 8])),
            })
            .collect();
        let append = MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: entries.clone(),
            leader_commit: LogIndex(30),
            read_seq: 0,
        };
        f.step(Message { from: leader, to: me, term: Term(1), body: append });
        f.log_persisted(LogIndex(30), Term(1));
        f.take_commands();
        let released = |cmds: &[Command]| -> Vec<Entry> {
            let r: Vec<&ReleasedEntries> = cmds
                .iter()
                .filter_map(|c| if let Command::Release(r) = c { Some(r) } else { None })
                .collect();
            assert!(r.len() <= 1, "one release per compaction: {cmds:?}");
            r.first().map(|r| r.0.iter().cloned().collect()).unwrap_or_default()
        };

        f.snapshot_built(f.snapshot_meta_for(LogIndex(20)).expect("applied"));
        let cmds = f.take_commands();
        assert!(cmds.contains(&Command::PurgeLog { upto: LogIndex(15) }), "{cmds:?}");
        assert_eq!(released(&cmds), entries[..15].to_vec(), "1..=15 left the log");
        assert_eq!(f.log.start.0, LogIndex(15));
        assert_eq!(f.log.slice(LogIndex(16), LogIndex(30), usize::MAX), entries[15..].to_vec());

        let later =
            SnapshotMeta { last_index: LogIndex(40), last_term: Term(1), membership: members };
        let body = MessageBody::InstallSnapshot { meta: later.clone() };
        f.step(Message { from: leader, to: me, term: Term(1), body });
        f.take_commands();
        f.snapshot_installed(later);
        let cmds = f.take_commands();
        assert_eq!(released(&cmds), entries[15..].to_vec(), "the rest left on install");
        assert_eq!(f.last_index(), LogIndex(40));

        // Nothing left to let go of: no empty release.
        f.snapshot_built(f.snapshot_meta_for(LogIndex(40)).expect("installed"));
        assert!(released(&f.take_commands()).is_empty());
    }

    /// A snapshot the runtime failed to install leaves the follower as it was and not
    /// wedged: it takes the leader's next offer (and its AppendEntries) again.
    #[test]
    fn a_failed_install_is_forgotten_and_the_next_offer_is_taken() {
        let (leader, me) = (NodeId(1), NodeId(2));
        let members = Membership::with_voters([leader, me, NodeId(3)]);
        let init = InitialState { bootstrap: members.clone(), ..Default::default() };
        let mut f = RaftCore::new(Config::new(me, 1), init);
        let meta =
            SnapshotMeta { last_index: LogIndex(10), last_term: Term(1), membership: members };
        let offer = |f: &mut RaftCore| {
            let body = MessageBody::InstallSnapshot { meta: meta.clone() };
            f.step(Message { from: leader, to: me, term: Term(1), body });
            f.take_commands().iter().any(|c| matches!(c, Command::InstallSnapshot { .. }))
        };
        assert!(offer(&mut f), "the first offer is installed");
        assert!(!offer(&mut f), "an offer while one installs is ignored");
        f.snapshot_install_failed(meta.clone());
        assert_eq!(f.last_index(), LogIndex(0), "nothing was installed");
        assert_eq!(f.commit_index(), LogIndex(0));
        assert!(offer(&mut f), "after the failure the next offer is installed again");
        f.snapshot_installed(meta);
        assert_eq!(f.commit_index(), LogIndex(10));
    }

    /// Found by flotilla-sim (seed 118, profile crashes): a follower that had acknowledged
    /// entries past a snapshot's index installed that (late) snapshot and dropped them,
    /// though the leader had counted them towards a commit.
    #[test]
    fn snapshot_covered_by_our_log_keeps_the_acknowledged_suffix() {
        let (leader, me) = (NodeId(1), NodeId(2));
        let members = Membership::with_voters([leader, me, NodeId(3)]);
        let init = InitialState { bootstrap: members.clone(), ..Default::default() };
        let mut f = RaftCore::new(Config::new(me, 1), init);
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry { term: Term(1), index: LogIndex(i), payload: EntryPayload::Noop })
            .collect();
        let append = MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
            read_seq: 0,
        };
        f.step(Message { from: leader, to: me, term: Term(1), body: append });
        f.log_persisted(LogIndex(5), Term(1));
        f.take_commands();
        assert_eq!(f.last_index(), LogIndex(5));

        let meta =
            SnapshotMeta { last_index: LogIndex(3), last_term: Term(1), membership: members };
        let body = MessageBody::InstallSnapshot { meta };
        f.step(Message { from: leader, to: me, term: Term(1), body });
        let cmds = f.take_commands();
        assert!(
            !cmds.iter().any(|c| matches!(c, Command::InstallSnapshot { .. })),
            "a snapshot our log already covers is not installed: {cmds:?}"
        );
        let answered = cmds.iter().any(|c| {
            matches!(
                c,
                Command::Send(Message {
                    body: MessageBody::InstallSnapshotResponse { last_index: LogIndex(3) },
                    ..
                })
            )
        });
        assert!(answered, "the leader learns we hold the snapshot's index: {cmds:?}");
        assert_eq!(f.last_index(), LogIndex(5), "acknowledged entries 4..=5 are kept");
    }
}
