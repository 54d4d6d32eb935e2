//! What a seed's run looks like: cluster size, fault profile, core tunables, timings.
//! Everything here is drawn from the seed, so the seed alone names the run.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use flotilla_raft::Config;

use crate::rng::SimRng;

/// Sim time is in microseconds; a nominal tick is 10 ms (the core's default).
pub const TICK_US: u64 = 10_000;

/// The nemesis' repertoire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Symmetric split into a random minority and the rest.
    Split,
    /// The leader alone on one side.
    IsolateLeader,
    /// The leader with a minority on one side, the majority on the other.
    LeaderMinority,
    /// One-way loss: the leader cannot send, or cannot hear, or one random link fails.
    OneWay,
    Heal,
    Crash,
    CrashLeader,
    /// Every node at once (power loss); each restarts after its own downtime.
    CrashAll,
    /// A spell of heavy loss, duplication and long delays.
    Storm,
    Membership,
    Transfer,
    Snapshot,
    /// Re-draw one node's tick rate (within the ±10% drift bound).
    Skew,
}

pub const ACTIONS: [Action; 13] = [
    Action::Split,
    Action::IsolateLeader,
    Action::LeaderMinority,
    Action::OneWay,
    Action::Heal,
    Action::Crash,
    Action::CrashLeader,
    Action::CrashAll,
    Action::Storm,
    Action::Membership,
    Action::Transfer,
    Action::Snapshot,
    Action::Skew,
];

/// A family of fault schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// No faults at all (benchmarks, sanity).
    FaultFree,
    /// A bit of everything (the default mix).
    Mixed,
    /// Lossy, duplicating, reordering network; no crashes.
    Network,
    /// Partitions of every kind.
    Partitions,
    /// Crashes with slow disks: what is not durable is lost.
    Crashes,
    /// Membership changes, transfers and snapshots under light faults.
    Reconfig,
    /// Leader churn: leaders crash soon after election, one entry per message, lossy links
    /// (the schedule that exposes a broken Figure 8 rule).
    Churn,
}

pub const PROFILES: [Profile; 7] = [
    Profile::FaultFree,
    Profile::Mixed,
    Profile::Network,
    Profile::Partitions,
    Profile::Crashes,
    Profile::Reconfig,
    Profile::Churn,
];

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::FaultFree => "fault-free",
            Profile::Mixed => "mixed",
            Profile::Network => "network",
            Profile::Partitions => "partitions",
            Profile::Crashes => "crashes",
            Profile::Reconfig => "reconfig",
            Profile::Churn => "churn",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        PROFILES.iter().copied().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = PROFILES.iter().map(|p| p.name()).collect();
            format!("unknown profile {s:?} (one of {})", names.join(", "))
        })
    }
}

/// Message faults. Reordering comes from random delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetParams {
    pub drop_per_mille: u32,
    pub dup_per_mille: u32,
    pub delay_us: (u64, u64),
    /// A message is occasionally very late (overtaken by many others).
    pub late_per_mille: u32,
    pub late_us: (u64, u64),
}

impl NetParams {
    pub const RELIABLE: NetParams = NetParams {
        drop_per_mille: 0,
        dup_per_mille: 0,
        delay_us: (200, 2_000),
        late_per_mille: 0,
        late_us: (0, 0),
    };
}

/// Disk latency: each persist completes in order, after a random delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskParams {
    pub delay_us: (u64, u64),
    pub slow_per_mille: u32,
    pub slow_us: (u64, u64),
}

/// A change applied to every node's core config.
pub type CoreTweak = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Options of a run (or of many runs) that are not drawn from the seed.
#[derive(Clone)]
pub struct SimOptions {
    /// Cluster size at start (3, 5 or 7); drawn from the seed when `None`.
    pub nodes: Option<usize>,
    /// Fault profile; drawn from the seed when `None`.
    pub profile: Option<Profile>,
    /// Nominal ticks of faults before everything heals.
    pub chaos_ticks: u64,
    /// After healing, a leader must exist and every acknowledged write must be applied on
    /// every live member within this many nominal ticks.
    pub heal_ticks_max: u64,
    /// Print every traced event as it happens.
    pub trace: bool,
    /// Call the core's own `validate()` after every step (release builds; debug builds
    /// validate inside the core anyway). Roughly halves the speed.
    pub validate: bool,
    /// Events kept for a failure report.
    pub trace_tail: usize,
    /// Check the client history for linearizability at the end.
    pub linearizability: bool,
    /// Search steps per key before the linearizability check gives up (inconclusive).
    pub lin_budget: u64,
    /// Concurrent clients; drawn from the seed when `None`.
    pub clients: Option<usize>,
    /// Client think time range, in microseconds (0 for a closed loop at full speed).
    pub think_us: (u64, u64),
    /// Applied to every node's core config (tests use it to switch on broken variants).
    pub core_tweak: Option<CoreTweak>,
    /// How to name `core_tweak` on a rerun command line (`--broken figure8`).
    pub tweak_flag: Option<String>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            nodes: None,
            profile: None,
            chaos_ticks: 1_000,
            heal_ticks_max: 1_500,
            trace: false,
            validate: true,
            trace_tail: 60,
            linearizability: true,
            lin_budget: 2_000_000,
            clients: None,
            think_us: (0, 20_000),
            core_tweak: None,
            tweak_flag: None,
        }
    }
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("nodes", &self.nodes)
            .field("profile", &self.profile)
            .field("chaos_ticks", &self.chaos_ticks)
            .field("heal_ticks_max", &self.heal_ticks_max)
            .field("tweak_flag", &self.tweak_flag)
            .finish_non_exhaustive()
    }
}

/// Everything drawn from the seed before the run starts.
#[derive(Clone, Debug)]
pub struct Plan {
    pub nodes: usize,
    pub profile: Profile,
    pub clients: usize,
    pub keys: u8,
    /// Nemesis weights, one per entry of `ACTIONS`.
    pub weights: [u32; ACTIONS.len()],
    pub nemesis_every_ticks: (u64, u64),
    pub downtime_ticks: (u64, u64),
    pub net: NetParams,
    pub storm: NetParams,
    pub disk: DiskParams,
    /// Crash a leader this many ticks after it is elected (Churn), if set.
    pub kill_new_leader_ticks: Option<(u64, u64)>,
    /// Allow crashes to take down a majority of voters.
    pub crash_majority: bool,
    /// Build a snapshot when this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Proportion of received snapshots whose restore the state machine refuses (the node
    /// keeps its state and the core is told `snapshot_install_failed`). Not drawn from
    /// the seed, and only consulted when above 0, so that other profiles replay as before.
    pub refuse_install_per_mille: u32,
    /// Proportion of crashes a node's state machine survives. Then the node restarts from
    /// it, and tells the core what it applied (`InitialState::applied`), as a real node
    /// with `flotilla-kv` does; otherwise it starts again from its snapshot, as an
    /// in-memory state machine would. Drawn by `Sim::new` from a stream of its own.
    pub keep_sm_per_mille: u32,
    /// Proportion of reads served by ReadIndex/lease (the rest go through the log), and of
    /// those, lease reads.
    pub read_index_per_mille: u32,
    pub lease_per_mille: u32,
    pub cas_per_mille: u32,
    pub get_per_mille: u32,
    /// Tick period of each node at start, in microseconds (nominal ±10%).
    pub tick_us: Vec<u64>,
    pub core: CoreKnobs,
}

/// Core tunables drawn per seed (the same for every node of a run).
#[derive(Clone, Copy, Debug)]
pub struct CoreKnobs {
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_msgs: usize,
    pub max_msg_bytes: usize,
    pub max_uncommitted_bytes: usize,
    pub learner_catchup_max_lag: u64,
    pub snapshot_timeout_ticks: u32,
    pub compaction_keep_entries: u64,
}

impl CoreKnobs {
    pub fn apply(&self, cfg: &mut Config) {
        cfg.pre_vote = self.pre_vote;
        cfg.check_quorum = self.check_quorum;
        cfg.max_inflight_msgs = self.max_inflight_msgs;
        cfg.max_msg_bytes = self.max_msg_bytes;
        cfg.max_uncommitted_bytes = self.max_uncommitted_bytes;
        cfg.learner_catchup_max_lag = self.learner_catchup_max_lag;
        cfg.snapshot_timeout_ticks = self.snapshot_timeout_ticks;
        cfg.compaction_keep_entries = self.compaction_keep_entries;
    }
}

/// A tick period within ±10% of nominal.
pub fn skewed_tick(rng: &mut SimRng) -> u64 {
    rng.range(TICK_US * 9 / 10, TICK_US * 11 / 10)
}

impl Plan {
    pub fn draw(rng: &mut SimRng, opts: &SimOptions) -> Plan {
        let nodes = opts.nodes.unwrap_or_else(|| [3, 3, 3, 5, 5, 7][rng.below(6) as usize]);
        let profile = opts.profile.unwrap_or_else(|| {
            // Mostly the mixed profile; every focused profile regularly.
            let w = [1, 6, 2, 2, 2, 2, 2];
            PROFILES[rng.weighted(&w)]
        });
        let clients = opts.clients.unwrap_or_else(|| rng.range(2, 4) as usize);
        let core = CoreKnobs {
            pre_vote: rng.chance(850),
            check_quorum: rng.chance(850),
            max_inflight_msgs: rng.pick(&[1, 2, 4, 16]).unwrap_or(4),
            max_msg_bytes: rng.pick(&[1, 100, 400, 1 << 20]).unwrap_or(1 << 20),
            max_uncommitted_bytes: rng.pick(&[300, 4096, 64 << 20]).unwrap_or(64 << 20),
            learner_catchup_max_lag: rng.pick(&[0, 5, 50]).unwrap_or(5),
            snapshot_timeout_ticks: rng.range(10, 60) as u32,
            compaction_keep_entries: rng.pick(&[0, 3, 20]).unwrap_or(3),
        };
        let tick_us = (0..nodes).map(|_| skewed_tick(rng)).collect();
        let base_net = NetParams {
            drop_per_mille: 0,
            dup_per_mille: 0,
            delay_us: (200, rng.range(1_000, 5_000)),
            late_per_mille: 0,
            late_us: (10_000, 60_000),
        };
        let storm = NetParams {
            drop_per_mille: rng.range(200, 600) as u32,
            dup_per_mille: rng.range(50, 300) as u32,
            delay_us: (200, 20_000),
            late_per_mille: 100,
            late_us: (20_000, 150_000),
        };
        let disk = DiskParams {
            delay_us: (100, rng.range(1_000, 8_000)),
            slow_per_mille: 20,
            slow_us: (10_000, 40_000),
        };
        use Action as A;
        let mut plan = Plan {
            nodes,
            profile,
            clients,
            keys: rng.range(2, 4) as u8,
            weights: [0; ACTIONS.len()],
            nemesis_every_ticks: (20, 120),
            downtime_ticks: (5, 150),
            net: base_net,
            storm,
            disk,
            kill_new_leader_ticks: None,
            crash_majority: false,
            snapshot_every: rng.pick(&[8, 30, 100]).unwrap_or(30),
            refuse_install_per_mille: 0,
            keep_sm_per_mille: 0,
            read_index_per_mille: 700,
            lease_per_mille: if core.check_quorum { 400 } else { 0 },
            cas_per_mille: 300,
            get_per_mille: 350,
            tick_us,
            core,
        };
        let set = |plan: &mut Plan, pairs: &[(Action, u32)]| {
            for (a, w) in pairs {
                let i = ACTIONS.iter().position(|x| x == a).expect("listed");
                plan.weights[i] = *w;
            }
        };
        match profile {
            Profile::FaultFree => {
                plan.tick_us = vec![TICK_US; nodes];
                plan.net = NetParams::RELIABLE;
            }
            Profile::Mixed => {
                plan.net.drop_per_mille = rng.range(0, 50) as u32;
                plan.net.dup_per_mille = rng.range(0, 30) as u32;
                plan.net.late_per_mille = rng.range(0, 30) as u32;
                plan.crash_majority = rng.chance(300);
                set(
                    &mut plan,
                    &[
                        (A::Split, 3),
                        (A::IsolateLeader, 3),
                        (A::LeaderMinority, 2),
                        (A::OneWay, 2),
                        (A::Heal, 6),
                        (A::Crash, 3),
                        (A::CrashLeader, 3),
                        (A::CrashAll, 1),
                        (A::Storm, 2),
                        (A::Membership, 3),
                        (A::Transfer, 2),
                        (A::Snapshot, 2),
                        (A::Skew, 1),
                    ],
                );
            }
            Profile::Network => {
                plan.net.drop_per_mille = rng.range(20, 200) as u32;
                plan.net.dup_per_mille = rng.range(10, 150) as u32;
                plan.net.late_per_mille = rng.range(10, 100) as u32;
                set(
                    &mut plan,
                    &[
                        (A::Storm, 3),
                        (A::Heal, 2),
                        (A::Transfer, 1),
                        (A::Snapshot, 1),
                        (A::Skew, 1),
                    ],
                );
            }
            Profile::Partitions => {
                plan.net.drop_per_mille = rng.range(0, 30) as u32;
                plan.net.late_per_mille = rng.range(0, 20) as u32;
                plan.nemesis_every_ticks = (10, 80);
                set(
                    &mut plan,
                    &[
                        (A::Split, 4),
                        (A::IsolateLeader, 4),
                        (A::LeaderMinority, 3),
                        (A::OneWay, 4),
                        (A::Heal, 5),
                        (A::Transfer, 1),
                        (A::Snapshot, 1),
                    ],
                );
            }
            Profile::Crashes => {
                plan.disk = DiskParams {
                    delay_us: (500, rng.range(5_000, 30_000)),
                    slow_per_mille: 100,
                    slow_us: (20_000, 80_000),
                };
                plan.net.dup_per_mille = rng.range(0, 50) as u32;
                plan.crash_majority = rng.chance(500);
                plan.nemesis_every_ticks = (5, 60);
                plan.downtime_ticks = (1, 80);
                set(
                    &mut plan,
                    &[
                        (A::Crash, 5),
                        (A::CrashLeader, 4),
                        (A::CrashAll, 3),
                        (A::Heal, 1),
                        (A::IsolateLeader, 1),
                        (A::Snapshot, 1),
                    ],
                );
            }
            Profile::Reconfig => {
                plan.net.drop_per_mille = rng.range(0, 30) as u32;
                plan.net.dup_per_mille = rng.range(0, 30) as u32;
                plan.snapshot_every = rng.pick(&[5, 10, 20]).unwrap_or(10);
                plan.refuse_install_per_mille = 250;
                set(
                    &mut plan,
                    &[
                        (A::Membership, 8),
                        (A::Transfer, 3),
                        (A::Snapshot, 3),
                        (A::Crash, 1),
                        (A::CrashLeader, 1),
                        (A::IsolateLeader, 1),
                        (A::Heal, 3),
                    ],
                );
            }
            Profile::Churn => {
                plan.core.max_msg_bytes = 1;
                plan.net.drop_per_mille = rng.range(50, 250) as u32;
                plan.net.dup_per_mille = rng.range(0, 50) as u32;
                plan.kill_new_leader_ticks = Some((1, 25));
                plan.downtime_ticks = (1, 60);
                plan.crash_majority = true;
                plan.disk.delay_us = (100, 2_000);
                set(&mut plan, &[(A::Crash, 2), (A::CrashLeader, 3), (A::Heal, 1), (A::Split, 1)]);
            }
        }
        plan
    }

    pub fn has_faults(&self) -> bool {
        self.weights.iter().any(|w| *w > 0) || self.kill_new_leader_ticks.is_some()
    }
}
