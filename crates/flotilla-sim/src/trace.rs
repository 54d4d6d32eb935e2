//! What happened in a run, compactly: a ring of the last events (printed when a seed
//! fails), an optional full printout, and a hash of every event (two runs of one seed must
//! produce the same hash).

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::rng::Fnv;

/// One traced event. Small and `Copy`-like so recording costs little; formatted only when
/// printed. `Restart::kept_sm` is the applied index of a state machine that survived the
/// crash (`None`: rebuilt from the snapshot).
#[derive(Clone, Debug, Hash)]
pub enum Rec {
    Deliver { from: u64, to: u64, what: &'static str, term: u64, a: u64, b: u64, c: u64 },
    Drop { from: u64, to: u64, what: &'static str, why: &'static str },
    Role { node: u64, role: &'static str, term: u64 },
    Crash { node: u64 },
    Restart { node: u64, term: u64, commit: u64, last: u64, kept_sm: Option<u64> },
    Stop { node: u64 },
    Disk { node: u64, what: &'static str, a: u64 },
    Apply { node: u64, lo: u64, hi: u64 },
    Client { client: u32, what: &'static str, node: u64, a: u64 },
    Nemesis { what: &'static str, a: u64, b: u64 },
    Phase { what: &'static str },
}

impl fmt::Display for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rec::Deliver { from, to, what, term, a, b, c } => match *what {
                "AppendEntries" => write!(
                    f,
                    "deliver {from}->{to} {what} t{term} prev ({a}, t{b}) entries {} commit {}",
                    c / 1_000_000,
                    c % 1_000_000
                ),
                "AppendEntriesResp" => {
                    write!(f, "deliver {from}->{to} {what} t{term} match {a} ok {b}")
                }
                "RequestVote" | "PreVote" => {
                    write!(f, "deliver {from}->{to} {what} t{term} last ({a}, t{b})")
                }
                "RequestVoteResp" | "PreVoteResp" => {
                    write!(f, "deliver {from}->{to} {what} t{term} granted {a}")
                }
                _ => write!(f, "deliver {from}->{to} {what} t{term} [{a} {b}]"),
            },
            Rec::Drop { from, to, what, why } => write!(f, "drop {from}->{to} {what} ({why})"),
            Rec::Role { node, role, term } => write!(f, "n{node} becomes {role} in t{term}"),
            Rec::Crash { node } => write!(f, "CRASH n{node}"),
            Rec::Restart { node, term, commit, last, kept_sm } => {
                write!(f, "RESTART n{node} (t{term} commit {commit} last {last}")?;
                match kept_sm {
                    Some(a) => write!(f, ", state machine kept at {a})"),
                    None => write!(f, ")"),
                }
            }
            Rec::Stop { node } => write!(f, "STOP n{node} (removed from the cluster)"),
            Rec::Disk { node, what, a } => write!(f, "n{node} disk {what} {a}"),
            Rec::Apply { node, lo, hi } => write!(f, "n{node} apply {lo}..={hi}"),
            Rec::Client { client, what, node, a } => {
                write!(f, "client {client} {what} @n{node} {a}")
            }
            Rec::Nemesis { what, a, b } => write!(f, "NEMESIS {what} {a} {b}"),
            Rec::Phase { what } => write!(f, "=== {what} ==="),
        }
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        Fnv::finish(self)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.bytes(bytes);
    }
}

pub struct Trace {
    ring: VecDeque<(u64, Rec)>,
    cap: usize,
    hash: Fnv,
    print: bool,
    pub count: u64,
}

impl Trace {
    pub fn new(cap: usize, print: bool) -> Trace {
        Trace { ring: VecDeque::with_capacity(cap + 1), cap, hash: Fnv::default(), print, count: 0 }
    }

    pub fn rec(&mut self, now_us: u64, r: Rec) {
        self.count += 1;
        now_us.hash(&mut self.hash);
        r.hash(&mut self.hash);
        if self.print {
            println!("{}", line(now_us, &r));
        }
        if self.cap > 0 {
            if self.ring.len() == self.cap {
                self.ring.pop_front();
            }
            self.ring.push_back((now_us, r));
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn tail(&self) -> Vec<String> {
        self.ring.iter().map(|(t, r)| line(*t, r)).collect()
    }
}

fn line(now_us: u64, r: &Rec) -> String {
    format!("{:>6}.{:03}ms  {r}", now_us / 1000, now_us % 1000)
}
