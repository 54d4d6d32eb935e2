//! Tunables of the core, in ticks and counts. The runtime picks the tick length
//! (10 ms by default, so the election timeout is 150–300 ms).

use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The election timeout is drawn uniformly from `election_ticks_min..=election_ticks_max`
    /// every time a node resets its timer (Raft §5.2: randomized timeouts break split votes).
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    /// A leader sends a heartbeat to every peer this often.
    pub heartbeat_ticks: u32,
    /// PreVote (thesis §9.6): probe for a quorum before raising the term.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader that heard from no quorum for an election timeout
    /// steps down, and followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// At most this many AppendEntries in flight to one follower in Replicate state.
    pub max_inflight_msgs: usize,
    /// Entries in one AppendEntries add up to at most this many bytes (at least one entry
    /// is always sent, whatever its size).
    pub max_msg_bytes: usize,
    /// A leader refuses proposals while its uncommitted entries exceed this many bytes.
    pub max_uncommitted_bytes: usize,
    /// A learner is caught up (may be promoted to voter) when it lags the leader's last
    /// index by at most this many entries.
    pub learner_catchup_max_lag: u64,
    /// A snapshot sent to a follower that is not acknowledged within this many ticks is
    /// considered lost and will be offered again.
    pub snapshot_timeout_ticks: u32,
    /// After a snapshot, keep this many entries below its index in the log, so a follower
    /// that lags a little catches up by log instead of by snapshot.
    pub compaction_keep_entries: u64,
    /// Seed of the core's own random generator (election timeouts). The caller owns it.
    pub rng_seed: u64,
    /// Test-only switches that break the protocol on purpose (see `Broken`).
    #[cfg(feature = "broken-variants")]
    pub broken: Broken,
}

/// Deliberate protocol bugs, so tests can prove the simulator's checks catch them.
/// Compiled only with the `broken-variants` feature; never enable it outside tests.
#[cfg(feature = "broken-variants")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Broken {
    /// Commit entries of earlier terms by counting replicas (violates Raft Figure 8).
    pub figure8: bool,
    /// Grant votes without checking that the candidate's log is up to date (§5.4.1).
    pub vote_restriction: bool,
    /// Send votes and AppendEntries answers before the state they promise is durable.
    pub persist_order: bool,
}

impl Config {
    /// Defaults for a 10 ms tick: election timeout 150–300 ms, heartbeat 50 ms.
    pub fn new(id: NodeId, rng_seed: u64) -> Config {
        Config {
            id,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_msg_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            learner_catchup_max_lag: 100,
            snapshot_timeout_ticks: 300,
            compaction_keep_entries: 1000,
            rng_seed,
            #[cfg(feature = "broken-variants")]
            broken: Broken::default(),
        }
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.0 == 0 {
            return Err("node id must be positive".into());
        }
        if self.heartbeat_ticks == 0 {
            return Err("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return Err("election_ticks_min must exceed heartbeat_ticks".into());
        }
        if self.election_ticks_max < self.election_ticks_min {
            return Err("election_ticks_max must be >= election_ticks_min".into());
        }
        if self.max_inflight_msgs == 0 {
            return Err("max_inflight_msgs must be at least 1".into());
        }
        Ok(())
    }
}
