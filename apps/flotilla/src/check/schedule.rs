//! The fault schedule of one round: a pure function of the seed and the options, so a
//! seed replays the same faults at the same offsets. Which node is "the leader" when a
//! fault fires is decided by the cluster at run time, and so is everything the processes'
//! own timing decides: the schedule is deterministic, the run is not.

use clap::ValueEnum;
use serde::Serialize;

use super::rng::Rng;

/// What a fault does. `*-leader` kinds aim at whichever node leads when the fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 a node; it stays down for the hold time, then starts again.
    Kill,
    /// kill -9 the leader.
    KillLeader,
    /// SIGSTOP a node (a long GC pause), SIGCONT after the hold time.
    Pause,
    /// SIGSTOP the leader.
    PauseLeader,
    /// Cut one node off from every peer (faults API `isolate`).
    Isolate,
    /// Cut the leader off.
    IsolateLeader,
    /// Split the cluster into a minority and a majority (the minority holds the leader half
    /// of the time).
    Partition,
    /// One node's messages to one peer are lost; the other direction still works.
    OneWay,
    /// kill -9 and start again at once (crash recovery under load).
    Restart,
    /// Replace a member: add a new node (learner, then voter), then remove an old one.
    Membership,
    /// Ask one node to take a snapshot and compact its log now.
    Snapshot,
    /// Leadership transfer to another member.
    Transfer,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Pause,
        FaultKind::PauseLeader,
        FaultKind::Isolate,
        FaultKind::IsolateLeader,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Restart,
        FaultKind::Membership,
        FaultKind::Snapshot,
        FaultKind::Transfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Pause => "pause",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Restart => "restart",
            FaultKind::Membership => "membership",
            FaultKind::Snapshot => "snapshot",
            FaultKind::Transfer => "transfer",
        }
    }

    /// Faults that last (and are undone after their hold time); the others are one action.
    pub fn has_hold(self) -> bool {
        !matches!(
            self,
            FaultKind::Restart | FaultKind::Membership | FaultKind::Snapshot | FaultKind::Transfer
        )
    }

    /// Relative weight in the schedule: the long, disruptive faults come more often than
    /// the administrative ones.
    fn weight(self) -> u64 {
        match self {
            FaultKind::Membership => 1,
            FaultKind::Snapshot | FaultKind::Transfer | FaultKind::Restart => 2,
            _ => 3,
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Offset from the start of the round.
    pub at_ms: u64,
    pub kind: FaultKind,
    /// Picks the node: index into the sorted current members (modulo their number). Kinds
    /// that aim at the leader ignore it; `Partition` uses it to pick the minority, unless
    /// `leader_side` puts the leader there.
    pub pick: u64,
    /// A second pick: the peer of a one-way drop.
    pub other: u64,
    /// For `Partition` and `OneWay`: involve the leader (as minority member / as sender).
    pub leader_side: bool,
    /// How long the fault lasts (0 for one-shot kinds).
    pub hold_ms: u64,
}

/// What shapes a round's schedule.
#[derive(Clone, Debug)]
pub struct ScheduleOpts {
    pub round_ms: u64,
    pub kinds: Vec<FaultKind>,
    /// Mean quiet time between two faults.
    pub gap_ms: u64,
    /// Mean hold time of a fault.
    pub hold_ms: u64,
    /// No fault starts in the last `tail_ms` of the round, so the round's end is quiet.
    pub tail_ms: u64,
}

/// The faults of one round, in time order and never overlapping: one ends before the next
/// begins, so at most one node (or one minority) is faulty at a time and a majority of a
/// 3- or 5-node cluster stays able to make progress between faults.
pub fn generate(seed: u64, opts: &ScheduleOpts) -> Vec<Fault> {
    let mut rng = Rng::derive(seed, 0x5C4E_D01E);
    let mut kinds: Vec<FaultKind> = opts.kinds.clone();
    kinds.sort();
    kinds.dedup();
    let total: u64 = kinds.iter().map(|k| k.weight()).sum();
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    let jitter = |rng: &mut Rng, mean: u64| rng.between(mean / 2, mean + mean / 2);
    let end = opts.round_ms.saturating_sub(opts.tail_ms);
    let mut t = jitter(&mut rng, opts.gap_ms);
    loop {
        let mut roll = rng.below(total);
        let kind = *kinds
            .iter()
            .find(|k| {
                if roll < k.weight() {
                    true
                } else {
                    roll -= k.weight();
                    false
                }
            })
            .expect("roll < total weight");
        let hold_ms = if kind.has_hold() { jitter(&mut rng, opts.hold_ms) } else { 0 };
        let (pick, other, leader_side) = (rng.next_u64(), rng.next_u64(), rng.percent(50));
        if t + hold_ms > end {
            break;
        }
        out.push(Fault { at_ms: t, kind, pick, other, leader_side, hold_ms });
        t += hold_ms + jitter(&mut rng, opts.gap_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ScheduleOpts {
        ScheduleOpts {
            round_ms: 60_000,
            kinds: FaultKind::ALL.to_vec(),
            gap_ms: 1000,
            hold_ms: 2000,
            tail_ms: 2000,
        }
    }

    #[test]
    fn a_seed_gives_one_schedule() {
        assert_eq!(generate(42, &opts()), generate(42, &opts()));
        assert_ne!(generate(42, &opts()), generate(43, &opts()));
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_tail() {
        for seed in 0..200 {
            let s = generate(seed, &opts());
            assert!(!s.is_empty(), "seed {seed}");
            for w in s.windows(2) {
                assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "seed {seed}: {w:?}");
            }
            let last = s.last().unwrap();
            assert!(last.at_ms + last.hold_ms <= 58_000, "seed {seed}");
        }
    }

    #[test]
    fn only_the_chosen_kinds_appear() {
        let o = ScheduleOpts { kinds: vec![FaultKind::Pause, FaultKind::Snapshot], ..opts() };
        for seed in 0..50 {
            for f in generate(seed, &o) {
                assert!(matches!(f.kind, FaultKind::Pause | FaultKind::Snapshot), "{f:?}");
            }
        }
        let none = ScheduleOpts { kinds: vec![], ..opts() };
        assert!(generate(1, &none).is_empty());
    }
}
