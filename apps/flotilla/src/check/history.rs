//! A real history, as the clients saw it, and its check: the operations are translated
//! into the simulator's register histories and handed to its Wing–Gong–Lowe checker
//! (`flotilla_sim::linearizable`), one key at a time. When a key fails, the smallest failing
//! window is searched for, so a person reads five operations instead of five thousand.
//!
//! Outcomes (INTERFACE.md "definite vs unknown"):
//! - a 200 is a definite result, with its invoke and complete times;
//! - a refusal (4xx, 307 not followed, 503) was definitely not applied: it is left out;
//! - a 504 or a broken connection is unknown: the write may take effect at any time after
//!   its invocation, or never, so it gets no completion time. An unknown read is left out.
//!
//! A failed CAS answers the value it found (`current`), so it is checked as a read of that
//! value: it changed nothing, and it saw the state at one instant.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flotilla_sim::kv::{KvOp, KvResult};
use flotilla_sim::linearizable::{self, HistOp, LinResult};
use serde::Serialize;

/// A value as a client saw it: one of ours (every value the test writes is a unique
/// number), or bytes the test never wrote.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Seen {
    Ours(u64),
    Foreign(String),
}

impl Seen {
    pub fn parse(bytes: &[u8]) -> Seen {
        let text = String::from_utf8_lossy(bytes);
        match text.parse::<u64>() {
            Ok(v) if text.bytes().all(|b| b.is_ascii_digit()) => Seen::Ours(v),
            _ => Seen::Foreign(text.chars().take(64).collect()),
        }
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Ours(v) => write!(f, "{v}"),
            Seen::Foreign(s) => write!(f, "{s:?} (never written)"),
        }
    }
}

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Req {
    Put { value: u64 },
    Get,
    Cas { expected: Option<u64>, value: u64 },
}

/// What it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "res", rename_all = "snake_case")]
pub enum Res {
    Written,
    Read {
        value: Option<Seen>,
    },
    Cas {
        succeeded: bool,
        current: Option<Seen>,
    },
    /// 504, a broken connection, a timeout: may or may not have been applied.
    Unknown {
        why: String,
    },
    /// Definitely not applied.
    Refused {
        why: String,
    },
}

/// One operation of the history. Times are microseconds since the start of the round.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub client: u32,
    /// Index of the register key in the round.
    pub key: u8,
    pub call_us: u64,
    /// When the client stopped waiting (for an unknown outcome: when it gave up).
    pub ret_us: u64,
    #[serde(flatten)]
    pub req: Req,
    #[serde(flatten)]
    pub res: Res,
    /// The node that gave the final answer.
    pub node: Option<u64>,
}

impl Op {
    pub fn is_unknown(&self) -> bool {
        matches!(self.res, Res::Unknown { .. })
    }

    pub fn is_refused(&self) -> bool {
        matches!(self.res, Res::Refused { .. })
    }

    /// One line for people: `put 17 -> ok`, `cas 3→9 -> failed, found 4`, `get -> 12`.
    pub fn describe(&self) -> String {
        let req = match self.req {
            Req::Put { value } => format!("put {value}"),
            Req::Get => "get".to_string(),
            Req::Cas { expected, value } => {
                format!("cas {}→{value}", expected.map_or("absent".into(), |e| e.to_string()))
            }
        };
        let res = match &self.res {
            Res::Written => "ok".to_string(),
            Res::Read { value: Some(v) } => v.to_string(),
            Res::Read { value: None } => "absent".to_string(),
            Res::Cas { succeeded: true, .. } => "ok".to_string(),
            Res::Cas { succeeded: false, current } => format!(
                "failed, found {}",
                current.as_ref().map_or("absent".into(), |c| c.to_string())
            ),
            Res::Unknown { why } => format!("unknown ({why})"),
            Res::Refused { why } => format!("refused ({why})"),
        };
        format!("{req} -> {res}")
    }
}

/// The checker's answer for a round's register keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations explains their results.
    Violation(Window),
    /// The search ran out of budget on this key: neither proven nor refuted.
    Inconclusive {
        key: u8,
        ops: usize,
    },
}

/// The smallest failing window found: from a quiet moment (no operation of the key in
/// flight) to the invocation after which the history can no longer be explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub key: u8,
    pub from_us: u64,
    pub to_us: u64,
    /// Indices into the round's operations, in invocation order.
    pub ops: Vec<usize>,
    /// How many states before the window were tried (none explains it).
    pub states_tried: usize,
}

/// Answers that contradict themselves, whatever the order (found while translating).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconsistent {
    pub op: usize,
    pub why: String,
}

/// First value of the range used for values the test never wrote: far above any counter.
const FOREIGN_BASE: u64 = 1 << 62;
/// The client id of the synthetic write that sets a window's starting state.
const SYNTHETIC_CLIENT: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Entry {
    /// Index of the `Op` this came from.
    origin: usize,
    h: HistOp,
}

#[derive(Default)]
struct Translator {
    foreign: HashMap<String, u64>,
}

impl Translator {
    fn value(&mut self, seen: &Option<Seen>) -> Option<u64> {
        match seen {
            None => None,
            Some(Seen::Ours(v)) => Some(*v),
            Some(Seen::Foreign(s)) => {
                let next = FOREIGN_BASE + self.foreign.len() as u64;
                Some(*self.foreign.entry(s.clone()).or_insert(next))
            }
        }
    }
}

/// Turns the clients' operations into the checker's, and finds answers that are wrong on
/// their own. Times shift by one microsecond so that time 0 is free for a window's
/// synthetic starting write.
fn translate(ops: &[Op]) -> (Vec<Entry>, Vec<Inconsistent>) {
    let mut tr = Translator::default();
    let mut out = Vec::with_capacity(ops.len());
    let mut bad = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let key = o.key;
        let call = o.call_us + 1;
        let done = Some(o.ret_us.max(o.call_us) + 1);
        let h = |op: KvOp, ret: Option<u64>, out: Option<KvResult>| HistOp {
            client: o.client,
            call,
            ret,
            op,
            out,
        };
        let entry = match (&o.req, &o.res) {
            (_, Res::Refused { .. }) | (Req::Get, Res::Unknown { .. }) => None,
            (Req::Put { value }, Res::Unknown { .. }) => {
                Some(h(KvOp::Put { key, value: *value }, None, None))
            }
            (Req::Cas { expected, value }, Res::Unknown { .. }) => {
                Some(h(KvOp::Cas { key, expected: *expected, new: *value }, None, None))
            }
            (Req::Put { value }, Res::Written) => {
                Some(h(KvOp::Put { key, value: *value }, done, Some(KvResult::Done)))
            }
            (Req::Get, Res::Read { value }) => {
                Some(h(KvOp::Get { key }, done, Some(KvResult::Value(tr.value(value)))))
            }
            (Req::Cas { expected, value }, Res::Cas { succeeded: true, current }) => {
                if *current != Some(Seen::Ours(*value)) {
                    bad.push(Inconsistent {
                        op: i,
                        why: format!(
                            "CAS succeeded but answered current = {}, not the new value {value}",
                            current.as_ref().map_or("absent".into(), |c| c.to_string())
                        ),
                    });
                }
                let op = KvOp::Cas { key, expected: *expected, new: *value };
                Some(h(op, done, Some(KvResult::Cas(true))))
            }
            (Req::Cas { expected, value }, Res::Cas { succeeded: false, current }) => {
                let found = tr.value(current);
                if found == *expected {
                    bad.push(Inconsistent {
                        op: i,
                        why: "CAS failed although the value it found equals the expected one"
                            .into(),
                    });
                    let op = KvOp::Cas { key, expected: *expected, new: *value };
                    Some(h(op, done, Some(KvResult::Cas(false))))
                } else {
                    // Changed nothing and saw `found` at one instant: a read.
                    Some(h(KvOp::Get { key }, done, Some(KvResult::Value(found))))
                }
            }
            (req, res) => {
                bad.push(Inconsistent {
                    op: i,
                    why: format!("answer {res:?} does not fit {req:?}"),
                });
                None
            }
        };
        if let Some(h) = entry {
            out.push(Entry { origin: i, h });
        }
    }
    (out, bad)
}

/// Operation counts per key, after translation (what the checker searched).
pub fn ops_per_key(ops: &[Op]) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for e in translate(ops).0 {
        *m.entry(e.h.op.key()).or_insert(0) += 1;
    }
    m
}

/// Checks the history. Answers that contradict themselves come back separately: they are
/// anomalies whatever the verdict.
pub fn check(ops: &[Op], budget: u64) -> (Verdict, Vec<Inconsistent>) {
    let (entries, bad) = translate(ops);
    let hist: Vec<HistOp> = entries.iter().map(|e| e.h.clone()).collect();
    let verdict = match linearizable::check(&hist, budget) {
        LinResult::Ok => Verdict::Linearizable,
        LinResult::Inconclusive { key, ops } => Verdict::Inconclusive { key, ops },
        LinResult::Violation { key, .. } => {
            let mine: Vec<Entry> = entries.into_iter().filter(|e| e.h.op.key() == key).collect();
            Verdict::Violation(smallest_window(key, mine, budget))
        }
    };
    (verdict, bad)
}

fn fails(hist: &[HistOp], budget: u64) -> bool {
    matches!(linearizable::check(hist, budget), LinResult::Violation { .. })
}

/// The history as it stood at time `t`: operations invoked after `t` are gone, and those
/// still in flight at `t` have unknown outcomes. If the whole history is linearizable, so
/// is this one (an operation in flight may take effect later or never), so a failing cut
/// pins down where the anomaly ends, and failing is monotonic in `t`.
fn cut_at(entries: &[Entry], t: u64) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.h.call <= t)
        .map(|e| {
            let mut e = e.clone();
            if e.h.ret.is_none_or(|r| r > t) {
                e.h.ret = None;
                e.h.out = None;
            }
            e
        })
        .collect()
}

fn written_value(op: &KvOp) -> Option<u64> {
    match *op {
        KvOp::Put { value, .. } => Some(value),
        KvOp::Cas { new, .. } => Some(new),
        KvOp::Get { .. } => None,
    }
}

/// The window from `s` on, starting in state `initial`: every operation invoked from `s`
/// on, and the unknown writes invoked before `s` (they may take effect inside the window;
/// the one that produced `initial`, if unknown, is taken as already done). `s` is a quiet
/// moment: every definite operation invoked before it had returned, so all of them come
/// before every operation of the window in any linearization, and the state at `s` is one
/// of the values written before `s` (or none).
fn window_from(entries: &[Entry], s: u64, key: u8, initial: Option<u64>) -> Vec<HistOp> {
    let mut out: Vec<HistOp> = entries
        .iter()
        .filter(|e| {
            e.h.call >= s
                || (e.h.ret.is_none()
                    && written_value(&e.h.op).is_some()
                    && written_value(&e.h.op) != initial)
        })
        .map(|e| e.h.clone())
        .collect();
    if let Some(v) = initial {
        out.push(HistOp {
            client: SYNTHETIC_CLIENT,
            call: 0,
            ret: Some(0),
            op: KvOp::Put { key, value: v },
            out: Some(KvResult::Done),
        });
    }
    out
}

/// Bounds the window search; past them the window reported is the failing cut itself.
const MAX_WINDOW_CHECKS: usize = 20_000;

/// Finds a small failing window of one key's history `entries` (which fails as a whole).
fn smallest_window(key: u8, mut entries: Vec<Entry>, budget: u64) -> Window {
    entries.sort_by_key(|e| (e.h.call, e.origin));
    // 1. The earliest cut that fails (binary search: failing is monotonic in the cut).
    let mut calls: Vec<u64> = entries.iter().map(|e| e.h.call).collect();
    calls.dedup();
    let hist_of = |es: &[Entry]| es.iter().map(|e| e.h.clone()).collect::<Vec<_>>();
    let (mut lo, mut hi) = (0usize, calls.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&hist_of(&cut_at(&entries, calls[mid])), budget) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cut = match calls.get(lo) {
        Some(&t) => cut_at(&entries, t),
        None => entries.clone(),
    };
    // 2. The latest quiet moment from which the rest fails whatever the state before it.
    let mut checks = 0usize;
    let mut start: Option<(u64, usize)> = None;
    let mut quiet: Vec<u64> = Vec::new();
    for (i, e) in cut.iter().enumerate() {
        let s = e.h.call;
        let busy = cut[..i].iter().any(|p| p.h.ret.is_some_and(|r| r >= s));
        if !busy && quiet.last() != Some(&s) {
            quiet.push(s);
        }
    }
    'cuts: for &s in quiet.iter().rev() {
        let mut states: BTreeSet<Option<u64>> = BTreeSet::new();
        states.insert(None);
        for e in cut.iter().filter(|e| e.h.call < s) {
            if let Some(v) = written_value(&e.h.op) {
                states.insert(Some(v));
            }
        }
        for &initial in &states {
            checks += 1;
            if checks > MAX_WINDOW_CHECKS {
                break 'cuts;
            }
            if !fails(&window_from(&cut, s, key, initial), budget) {
                continue 'cuts;
            }
        }
        start = Some((s, states.len()));
        break;
    }
    let (from, states_tried) = start.unwrap_or((0, 1));
    // Show the operations of the window, and the unknown writes from before it whose value
    // the window observes (the others cannot matter to it).
    let in_window: Vec<&Entry> = cut.iter().filter(|e| e.h.call >= from).collect();
    let observed: BTreeSet<u64> = in_window
        .iter()
        .filter_map(|e| match (e.h.op, e.h.out) {
            (KvOp::Get { .. }, Some(KvResult::Value(Some(v)))) => Some(v),
            (KvOp::Cas { expected: Some(x), .. }, Some(KvResult::Cas(true))) => Some(x),
            _ => None,
        })
        .collect();
    let shown: Vec<&Entry> = cut
        .iter()
        .filter(|e| {
            e.h.call >= from
                || (e.h.ret.is_none()
                    && written_value(&e.h.op).is_some_and(|v| observed.contains(&v)))
        })
        .collect();
    // The window ends when its last definite operation returned (or its last call).
    let to = shown.iter().map(|e| e.h.ret.unwrap_or(e.h.call)).max().unwrap_or(from);
    let mut ops: Vec<usize> = shown.iter().map(|e| e.origin).collect();
    ops.sort_unstable();
    ops.dedup();
    Window { key, from_us: from.saturating_sub(1), to_us: to.saturating_sub(1), ops, states_tried }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 5_000_000;

    fn op(client: u32, call: u64, ret: u64, req: Req, res: Res) -> Op {
        Op { client, key: 0, call_us: call, ret_us: ret, req, res, node: Some(1) }
    }
    fn put(c: u32, a: u64, b: u64, v: u64) -> Op {
        op(c, a, b, Req::Put { value: v }, Res::Written)
    }
    fn get(c: u32, a: u64, b: u64, v: Option<u64>) -> Op {
        op(c, a, b, Req::Get, Res::Read { value: v.map(Seen::Ours) })
    }
    fn cas(c: u32, a: u64, b: u64, e: Option<u64>, v: u64, ok: bool, cur: Option<u64>) -> Op {
        let res = Res::Cas { succeeded: ok, current: cur.map(Seen::Ours) };
        op(c, a, b, Req::Cas { expected: e, value: v }, res)
    }
    fn unknown_put(c: u32, a: u64, v: u64) -> Op {
        op(c, a, a + 5_000, Req::Put { value: v }, Res::Unknown { why: "504".into() })
    }
    fn refused_put(c: u32, a: u64, b: u64, v: u64) -> Op {
        op(c, a, b, Req::Put { value: v }, Res::Refused { why: "503".into() })
    }
    fn verdict(ops: &[Op]) -> Verdict {
        let (v, bad) = check(ops, B);
        assert!(bad.is_empty(), "{bad:?}");
        v
    }
    fn violation(ops: &[Op]) -> Window {
        match verdict(ops) {
            Verdict::Violation(w) => w,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            put(1, 0, 10, 1),
            get(2, 20, 30, Some(1)),
            cas(1, 40, 50, Some(1), 2, true, Some(2)),
            cas(2, 60, 70, Some(1), 3, false, Some(2)),
            get(1, 80, 90, Some(2)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_caught() {
        // The put of 2 finished before the read began, yet the read saw 1.
        let h = [put(1, 0, 10, 1), put(1, 20, 30, 2), get(2, 40, 50, Some(1))];
        let w = violation(&h);
        assert_eq!(w.ops, vec![1, 2], "the window is the newer put and the stale read");
    }

    #[test]
    fn lost_write_is_caught() {
        // An acknowledged write that a later read does not see: the key reads as absent.
        let h = [put(1, 0, 10, 7), get(2, 20, 30, None)];
        violation(&h);
        // ... or a later failed CAS finds the key absent.
        let h = [put(1, 0, 10, 7), cas(2, 20, 30, Some(7), 8, false, None)];
        violation(&h);
    }

    #[test]
    fn read_of_an_aborted_write_is_caught() {
        // 503: definitely not applied. Reading its value later is impossible.
        let h = [refused_put(1, 0, 10, 9), get(2, 20, 30, Some(9))];
        violation(&h);
        // A value nobody wrote at all.
        let h = [
            put(1, 0, 10, 1),
            op(2, 20, 30, Req::Get, Res::Read { value: Some(Seen::Foreign("zz".into())) }),
        ];
        violation(&h);
    }

    #[test]
    fn concurrent_overlap_is_allowed() {
        // A put overlaps two reads: the first may still see the old state, the second the new.
        let h = [put(1, 0, 100, 1), get(2, 10, 20, None), get(3, 30, 40, Some(1))];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // Two overlapping puts may land in either order, as long as every read agrees.
        let h = [
            put(1, 0, 100, 1),
            put(2, 0, 100, 2),
            get(3, 110, 120, Some(1)),
            get(4, 130, 140, Some(1)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // ... but reads cannot see them in both orders.
        let h = [
            put(1, 0, 100, 1),
            put(2, 0, 100, 2),
            get(3, 10, 20, Some(1)),
            get(3, 30, 40, Some(2)),
            get(4, 50, 60, Some(1)),
        ];
        violation(&h);
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        // Seen later: it happened.
        assert_eq!(
            verdict(&[unknown_put(1, 0, 4), get(2, 10_000, 10_010, Some(4))]),
            Verdict::Linearizable
        );
        // Never seen: it did not happen (or was overwritten).
        assert_eq!(
            verdict(&[unknown_put(1, 0, 4), get(2, 10_000, 10_010, None)]),
            Verdict::Linearizable
        );
        // Seen before it was invoked: impossible.
        violation(&[get(2, 0, 10, Some(4)), unknown_put(1, 20, 4)]);
    }

    #[test]
    fn two_cas_from_the_same_value_cannot_both_succeed() {
        let h = [
            put(1, 0, 10, 1),
            cas(2, 20, 100, Some(1), 2, true, Some(2)),
            cas(3, 20, 100, Some(1), 3, true, Some(3)),
        ];
        violation(&h);
    }

    #[test]
    fn answers_that_contradict_themselves_are_reported() {
        let h = [cas(1, 0, 10, Some(1), 2, true, Some(1))];
        assert_eq!(check(&h, B).1.len(), 1);
        let h = [put(1, 0, 10, 1), cas(1, 20, 30, Some(1), 2, false, Some(1))];
        let (v, bad) = check(&h, B);
        assert_eq!(bad.len(), 1);
        assert!(matches!(v, Verdict::Violation(_)));
    }

    #[test]
    fn the_window_is_small_in_a_long_history() {
        // 300 correct sequential operations by three clients, then one stale read.
        let mut h = Vec::new();
        let mut t = 0;
        for i in 1..=100u64 {
            h.push(put((i % 3) as u32, t, t + 5, i));
            h.push(get(((i + 1) % 3) as u32, t + 10, t + 15, Some(i)));
            h.push(cas(
                ((i + 2) % 3) as u32,
                t + 20,
                t + 25,
                Some(i + 1000),
                5000 + i,
                false,
                Some(i),
            ));
            t += 30;
        }
        h.push(get(7, t, t + 5, Some(99)));
        let w = violation(&h);
        assert!(w.ops.contains(&(h.len() - 1)), "the stale read is in the window: {w:?}");
        assert!(w.ops.len() <= 4, "window of {} ops: {w:?}", w.ops.len());
        assert!(w.from_us >= 2900, "{w:?}");
    }

    #[test]
    fn the_window_keeps_the_overlapping_operations_it_needs() {
        // Concurrent writes early, then a read order no linearization explains.
        let h = [
            put(1, 0, 10, 1),
            put(2, 20, 200, 2),
            put(3, 20, 200, 3),
            get(4, 30, 40, Some(2)),
            get(4, 50, 60, Some(3)),
            get(5, 70, 80, Some(2)),
        ];
        let w = violation(&h);
        for i in [1, 2, 3, 4, 5] {
            assert!(w.ops.contains(&i), "op {i} missing from {w:?}");
        }
    }

    #[test]
    fn seen_parses_our_values_and_marks_others() {
        assert_eq!(Seen::parse(b"42"), Seen::Ours(42));
        assert_eq!(Seen::parse(b"+42"), Seen::Foreign("+42".into()));
        assert_eq!(Seen::parse(b"\xff"), Seen::Foreign("\u{fffd}".into()));
    }
}
