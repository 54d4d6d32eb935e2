//! One-line, deterministic renderings of entries, messages, commands and events.
//!
//! Entries are `index/term payload`: `4/2 noop`, `5/2 "x"`, `6/2 conf[voters=(1,2,3)]`; a
//! pre-seeded entry (empty command) is a bare `3/1`. Messages are `from->to Kind term=T ...`.

use std::collections::BTreeSet;

use flotilla_raft::{
    Command, ConflictHint, Entry, EntryPayload, Event, LogIndex, Membership, Message, MessageBody,
    NodeId, SnapshotMeta,
};

pub fn ids(set: &BTreeSet<NodeId>) -> String {
    let v: Vec<String> = set.iter().map(|i| i.to_string()).collect();
    format!("({})", v.join(","))
}

pub fn membership(m: &Membership) -> String {
    let mut s = format!("voters={}", ids(&m.voters));
    if let Some(old) = &m.outgoing {
        s.push_str(&format!(" outgoing={}", ids(old)));
    }
    if !m.learners.is_empty() {
        s.push_str(&format!(" learners={}", ids(&m.learners)));
    }
    s
}

pub fn entry(e: &Entry) -> String {
    let at = format!("{}/{}", e.index, e.term);
    match &e.payload {
        EntryPayload::Noop => format!("{at} noop"),
        EntryPayload::Command(b) if b.is_empty() => at,
        EntryPayload::Command(b) => format!("{at} {:?}", String::from_utf8_lossy(b)),
        EntryPayload::Config(m) => format!("{at} conf[{}]", membership(m)),
    }
}

pub fn entries(es: &[Entry]) -> String {
    let v: Vec<String> = es.iter().map(entry).collect();
    format!("[{}]", v.join(", "))
}

pub fn snap(meta: &SnapshotMeta) -> String {
    format!("snap=({},{}) conf[{}]", meta.last_index, meta.last_term, membership(&meta.membership))
}

fn hint(h: &ConflictHint) -> String {
    match h.conflict_term {
        Some(t) => format!("hint=(term={t},first={})", h.first_index),
        None => format!("hint=(short,first={})", h.first_index),
    }
}

fn seq(s: u64) -> String {
    if s == 0 { String::new() } else { format!(" seq={s}") }
}

pub fn message(m: &Message) -> String {
    let head = format!("{}->{} {} term={}", m.from, m.to, m.body.name(), m.term);
    let rest = match &m.body {
        MessageBody::RequestVote { last_log_index, last_log_term, transfer, .. } => {
            let t = if *transfer { " transfer" } else { "" };
            format!(" last=({last_log_index},{last_log_term}){t}")
        }
        MessageBody::RequestVoteResponse { granted: true, .. } => " granted".to_string(),
        MessageBody::RequestVoteResponse { granted: false, refusal, .. } => match refusal {
            Some(r) => format!(" rejected({})", refusal_name(*r)),
            None => " rejected".to_string(),
        },
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries: es,
            leader_commit,
            read_seq,
        } => {
            let es =
                if es.is_empty() { String::new() } else { format!(" entries={}", entries(es)) };
            format!(
                " prev=({prev_log_index},{prev_log_term}){es} commit={leader_commit}{}",
                seq(*read_seq)
            )
        }
        MessageBody::AppendEntriesResponse { success: true, match_index, read_seq, .. } => {
            format!(" ok match={match_index}{}", seq(*read_seq))
        }
        MessageBody::AppendEntriesResponse { success: false, match_index, hint: h, read_seq } => {
            let h = h.as_ref().map(|h| format!(" {}", hint(h))).unwrap_or_default();
            format!(" reject at={match_index}{h}{}", seq(*read_seq))
        }
        MessageBody::InstallSnapshot { meta } => format!(" {}", snap(meta)),
        MessageBody::InstallSnapshotResponse { last_index } => format!(" last={last_index}"),
        MessageBody::TimeoutNow => String::new(),
    };
    head + &rest
}

fn refusal_name(r: flotilla_raft::VoteRefusal) -> &'static str {
    use flotilla_raft::VoteRefusal as R;
    match r {
        R::StaleTerm => "stale_term",
        R::AlreadyVoted => "already_voted",
        R::LogBehind => "log_behind",
        R::LeaderAlive => "leader_alive",
        R::NotVoter => "not_voter",
    }
}

fn step_down_name(r: flotilla_raft::StepDownReason) -> &'static str {
    use flotilla_raft::StepDownReason as R;
    match r {
        R::HigherTerm => "higher_term",
        R::QuorumLost => "quorum_lost",
        R::Removed => "removed",
        R::Transferred => "transferred",
    }
}

/// An event as a sentence about node `id`. `None` for events that repeat the line before.
pub fn event(id: NodeId, e: &Event) -> Option<String> {
    Some(match e {
        Event::RoleChanged { role, term, leader } => {
            let l = match leader {
                Some(l) if *l != id => format!(" (leader {l})"),
                _ => String::new(),
            };
            format!("{id} became {} at term {term}{l}", role.as_str())
        }
        Event::ElectionStarted { term, pre_vote: true } => {
            format!("{id} starts a pre-election for term {term}")
        }
        Event::ElectionStarted { term, pre_vote: false } => {
            format!("{id} starts an election for term {term}")
        }
        Event::VoteGranted { candidate, term, pre_vote: true } => {
            format!("{id} grants its pre-vote to {candidate} for term {term}")
        }
        Event::VoteGranted { candidate, term, pre_vote: false } => {
            format!("{id} votes for {candidate} in term {term}")
        }
        Event::VoteRefused { candidate, term, pre_vote, reason } => {
            let what = if *pre_vote { "pre-vote" } else { "vote" };
            format!(
                "{id} refuses its {what} to {candidate} for term {term}: {}",
                refusal_name(*reason)
            )
        }
        // Always right after `RoleChanged { role: Leader }`, which says the same.
        Event::LeaderElected { .. } => return None,
        Event::SteppedDown { term, reason } => {
            format!("{id} steps down at term {term}: {}", step_down_name(*reason))
        }
        Event::MembershipChanged { index, membership: m } => {
            format!("{id} switches to the conf at index {index}: {}", membership(m))
        }
        Event::SnapshotInstalled { index, term } => {
            format!("{id} installed the snapshot ({index},{term})")
        }
        Event::SnapshotOfferedAgain { to, index } => {
            format!("{id} offers the snapshot again: {to} answered without snapshot {index}")
        }
        Event::TransferStarted { to, term } => {
            format!("{id} starts transferring leadership to {to} at term {term}")
        }
        Event::TransferAborted { to, term } => {
            format!("{id} aborts the leadership transfer to {to} at term {term}")
        }
    })
}

/// A command as the runtime sees it. Events become sentences (see [`event`]).
pub fn command(id: NodeId, c: &Command) -> Option<String> {
    Some(match c {
        Command::SaveHardState(hs) => {
            let vote = hs.voted_for.map_or("none".to_string(), |v| v.to_string());
            format!("SaveHardState term={} vote={vote} commit={}", hs.term, hs.commit)
        }
        Command::AppendLog { entries: es } => format!("AppendLog {}", entries(es)),
        Command::Send(m) => format!("Send {}", message(m)),
        Command::SendNow(m) => format!("SendNow {}", message(m)),
        Command::Apply { entries: es } => format!("Apply {}", entries(es)),
        Command::SendSnapshot { to, meta } => format!("SendSnapshot to={to} {}", snap(meta)),
        Command::InstallSnapshot { meta } => format!("InstallSnapshot {}", snap(meta)),
        Command::PurgeLog { upto } => format!("PurgeLog upto={upto}"),
        Command::Release(r) => match r.range() {
            Some((a, b)) => format!("Release entries {a}..={b}"),
            None => "Release nothing".to_string(),
        },
        Command::ReadReady { id: rid, index } => format!("ReadReady id={rid} index={index}"),
        Command::ReadFailed { id: rid, error } => format!("ReadFailed id={rid} {error:?}"),
        Command::Event(e) => return event(id, e),
    })
}

pub fn at(index: LogIndex, term: flotilla_raft::Term) -> String {
    format!("({index},{term})")
}
