//! What the TUI reads from a node: `/v1/status`, `/v1/log` entry metadata and `/v1/events`
//! lines (INTERFACE.md, extended by the node's `status_json`). Parsing is lenient: a field
//! the node does not send takes its default, so an older or newer node still shows.

use serde::Deserialize;
use serde_json::Value;

/// Wall-clock milliseconds since the Unix epoch: the one clock of the TUI. Nodes stamp
/// events with the same clock (`ts_ms`), and they run on this machine, so event times and
/// local times compare directly.
pub type Ms = u64;

pub fn now_ms() -> Ms {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    pub id: u64,
    pub pid: u32,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub voted_for: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub first_log_index: u64,
    pub snapshot_index: u64,
    pub election_elapsed_ms: u64,
    pub election_timeout_ms: u64,
    pub members: Vec<Member>,
    pub joint: bool,
    pub removed: bool,
    pub transfer_to: Option<u64>,
    pub pending_proposals: u64,
    pub snapshot_in_progress: bool,
    pub replication: Vec<Replication>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Replication {
    pub id: u64,
    pub match_index: u64,
    pub next_index: u64,
    pub inflight: u64,
    pub lag: u64,
    pub voter: bool,
    pub mode: Value,
}

/// One `/v1/log` entry: metadata only.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    #[serde(deserialize_with = "entry_kind")]
    pub kind: EntryKind,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntryKind {
    Noop,
    #[default]
    Command,
    Config,
}

fn entry_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EntryKind, D::Error> {
    let s = String::deserialize(d)?;
    Ok(match s.as_str() {
        "noop" => EntryKind::Noop,
        "config" => EntryKind::Config,
        _ => EntryKind::Command,
    })
}

/// One `/v1/events` line.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NodeEvent {
    #[serde(default)]
    pub ts_ms: Ms,
    #[serde(default)]
    pub node: u64,
    #[serde(default)]
    pub term: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Event kinds: the core's `Event` (flotilla-raft `command.rs`) plus the node's own
/// (`commit`, snapshots, faults). Unknown kinds are kept as `Other` and ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    RoleChanged {
        #[serde(default)]
        role: String,
        #[serde(default)]
        leader: Option<u64>,
    },
    ElectionStarted {
        #[serde(default)]
        pre_vote: bool,
    },
    VoteGranted {
        #[serde(default)]
        candidate: u64,
        #[serde(default)]
        pre_vote: bool,
    },
    VoteRefused {
        #[serde(default)]
        candidate: u64,
        #[serde(default)]
        pre_vote: bool,
        #[serde(default)]
        reason: String,
    },
    LeaderElected {
        #[serde(default)]
        leader: u64,
    },
    SteppedDown {
        #[serde(default)]
        reason: String,
    },
    MembershipChanged {
        #[serde(default)]
        index: u64,
        #[serde(default)]
        members: MembersEvent,
    },
    SnapshotInstalled {
        #[serde(default)]
        index: u64,
    },
    SnapshotOfferedAgain {
        #[serde(default)]
        to: u64,
        #[serde(default)]
        index: u64,
    },
    TransferStarted {
        #[serde(default)]
        to: u64,
    },
    TransferAborted {
        #[serde(default)]
        to: u64,
    },
    Commit {
        #[serde(default)]
        commit_index: u64,
        #[serde(default)]
        last_log_index: u64,
    },
    SnapshotStarted,
    SnapshotBuilt {
        #[serde(default)]
        snapshot_index: u64,
        #[serde(default)]
        bytes: u64,
    },
    SnapshotSendStarted {
        #[serde(default)]
        to: u64,
        #[serde(default)]
        snapshot_index: u64,
        #[serde(default)]
        bytes: u64,
    },
    SnapshotReceived {
        #[serde(default)]
        from: u64,
        #[serde(default)]
        snapshot_index: u64,
    },
    SnapshotRestored {
        #[serde(default)]
        snapshot_index: u64,
    },
    SnapshotInstallFailed {
        #[serde(default)]
        snapshot_index: u64,
        #[serde(default)]
        error: String,
    },
    LoopStalled {
        #[serde(default)]
        gap_ms: u64,
        #[serde(default)]
        role: String,
        /// The loop thread's CPU time in the gap (absent from older nodes).
        #[serde(default)]
        cpu_ms: Option<u64>,
    },
    FaultsSet {
        #[serde(default)]
        faults: FaultsEvent,
    },
    FaultsHealed,
    #[serde(other)]
    Other,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MembersEvent {
    pub voters: Vec<u64>,
    pub outgoing: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct FaultsEvent {
    pub isolate: bool,
    pub drop_to: Vec<u64>,
    pub drop_from: Vec<u64>,
    pub delay_ms: u64,
    pub loss: f64,
}

impl FaultsEvent {
    /// A few words: "isolated", "drops to [2]", "delay 50 ms", "loss 10%".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.isolate {
            parts.push("isolated".to_string());
        }
        if !self.drop_to.is_empty() {
            parts.push(format!("drops to {:?}", self.drop_to));
        }
        if !self.drop_from.is_empty() {
            parts.push(format!("drops from {:?}", self.drop_from));
        }
        if self.delay_ms > 0 {
            parts.push(format!("delay {} ms", self.delay_ms));
        }
        if self.loss > 0.0 {
            parts.push(format!("loss {:.0}%", self.loss * 100.0));
        }
        if parts.is_empty() { "no faults".into() } else { parts.join(", ") }
    }
}

/// Parses one events line; `None` for anything that is not an event object.
pub fn parse_event(line: &str) -> Option<NodeEvent> {
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_with_their_details() {
        let l = r#"{"ts_ms":5,"node":2,"term":7,"kind":"vote_refused","candidate":3,"pre_vote":true,"reason":"log_behind"}"#;
        let e = parse_event(l).expect("parses");
        assert_eq!((e.ts_ms, e.node, e.term), (5, 2, 7));
        assert_eq!(
            e.kind,
            EventKind::VoteRefused { candidate: 3, pre_vote: true, reason: "log_behind".into() }
        );
        let l = r#"{"ts_ms":5,"node":2,"term":7,"kind":"membership_changed","index":9,"members":{"voters":[1,2],"outgoing":[],"learners":[4]}}"#;
        let EventKind::MembershipChanged { index, members } = parse_event(l).unwrap().kind else {
            panic!("wrong kind")
        };
        assert_eq!((index, members.learners), (9, vec![4]));
        let l = r#"{"ts_ms":1,"node":1,"term":1,"kind":"something_new","x":1}"#;
        assert_eq!(parse_event(l).unwrap().kind, EventKind::Other);
        assert_eq!(parse_event("not json"), None);
    }

    #[test]
    fn status_and_log_parse_leniently() {
        let s: Status = serde_json::from_str(
            r#"{"id":1,"role":"leader","term":3,"leader":1,"voted_for":null,"replication":[{"id":2,"match_index":4,"mode":"replicate"}]}"#,
        )
        .unwrap();
        assert_eq!((s.id, s.term, s.leader, s.voted_for), (1, 3, Some(1), None));
        assert_eq!(s.replication[0].match_index, 4);
        let l: Vec<LogEntry> =
            serde_json::from_str(r#"[{"index":1,"term":1,"kind":"noop","bytes":0}]"#).unwrap();
        assert_eq!(l[0].kind, EntryKind::Noop);
    }
}
