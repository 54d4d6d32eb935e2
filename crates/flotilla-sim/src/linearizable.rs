//! Linearizability of a register history: Wing & Gong's search with Lowe's memoization
//! (the algorithm of Porcupine), one key at a time (linearizability is compositional, so
//! a history is linearizable iff each key's sub-history is).
//!
//! An operation whose answer the client never saw has `ret == None`: it may have taken
//! effect at any point after its call, or never. Giving it an infinite return time models
//! exactly that: it can always be linearized at the very end, where nothing observes it.
//! Its result (a CAS's success) is then whatever the state dictates.

use std::collections::{BTreeMap, HashSet};

use crate::kv::{Key, KvOp, KvResult, Value};

/// One client operation as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistOp {
    pub client: u32,
    /// Sim time the client invoked it.
    pub call: u64,
    /// Sim time the client got the answer; `None` if it never did.
    pub ret: Option<u64>,
    pub op: KvOp,
    /// The answer; `None` if unknown.
    pub out: Option<KvResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinResult {
    Ok,
    /// No linearization exists for this key's history.
    Violation {
        key: Key,
        ops: usize,
    },
    /// The search exceeded its budget; neither proven nor refuted.
    Inconclusive {
        key: Key,
        ops: usize,
    },
}

type State = Option<Value>;

/// Checks every key's history; stops at the first violation. `budget` bounds the search
/// steps per key.
pub fn check(history: &[HistOp], budget: u64) -> LinResult {
    let mut by_key: BTreeMap<Key, Vec<&HistOp>> = BTreeMap::new();
    for h in history {
        by_key.entry(h.op.key()).or_default().push(h);
    }
    let mut inconclusive = None;
    for (key, ops) in by_key {
        let ops = prune(ops);
        let n = ops.len();
        match check_key(&ops, budget) {
            Some(true) => {}
            Some(false) => return LinResult::Violation { key, ops: n },
            None => inconclusive = Some(LinResult::Inconclusive { key, ops: n }),
        }
    }
    inconclusive.unwrap_or(LinResult::Ok)
}

/// Drops operations that cannot matter, to keep the search small:
/// - reads without an answer (they change nothing);
/// - writes without an answer whose value nobody ever observed, when the key has no
///   failed CAS (a failed CAS is the only thing an unobserved write could explain; values
///   are unique, so no read or successful CAS can depend on it, and linearizing it "never"
///   is always allowed).
fn prune(ops: Vec<&HistOp>) -> Vec<&HistOp> {
    let any_failed_cas = ops.iter().any(|h| h.out == Some(KvResult::Cas(false)));
    let mut observed: HashSet<Value> = HashSet::new();
    for h in &ops {
        match (h.op, h.out) {
            (KvOp::Get { .. }, Some(KvResult::Value(Some(v)))) => {
                observed.insert(v);
            }
            (KvOp::Cas { expected: Some(e), .. }, Some(KvResult::Cas(true))) => {
                observed.insert(e);
            }
            _ => {}
        }
    }
    ops.into_iter()
        .filter(|h| match (h.op, h.out) {
            (KvOp::Get { .. }, None) => false,
            (KvOp::Put { value, .. }, None) | (KvOp::Cas { new: value, .. }, None) => {
                any_failed_cas || observed.contains(&value)
            }
            _ => true,
        })
        .collect()
}

/// Applies `op` with observed `out` to `s`: the next state, or None if `out` is impossible.
fn step(s: State, op: KvOp, out: Option<KvResult>) -> Option<State> {
    match op {
        KvOp::Put { value, .. } => Some(Some(value)),
        KvOp::Get { .. } => match out {
            Some(KvResult::Value(v)) if v == s => Some(s),
            None => Some(s),
            _ => None,
        },
        KvOp::Cas { expected, new, .. } => {
            let ok = s == expected;
            match out {
                Some(KvResult::Cas(o)) if o != ok => None,
                Some(KvResult::Cas(_)) | None => Some(if ok { Some(new) } else { s }),
                Some(_) => None,
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Node {
    /// Operation index; `is_call` tells the call entry from the return entry.
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
    /// For a call entry: the index of its return entry.
    partner: usize,
}

/// Some(true) linearizable, Some(false) not, None out of budget.
fn check_key(ops: &[&HistOp], budget: u64) -> Option<bool> {
    let n = ops.len();
    if n == 0 {
        return Some(true);
    }
    // Events sorted by time; at equal times calls come first, so operations that touch in
    // time are treated as concurrent (the conservative reading).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, h) in ops.iter().enumerate() {
        events.push((h.call, 0, i));
        events.push((h.ret.unwrap_or(u64::MAX), 1, i));
    }
    events.sort_unstable();
    // Doubly linked list with a head sentinel at index 0.
    let mut list: Vec<Node> = Vec::with_capacity(2 * n + 1);
    list.push(Node { op: usize::MAX, is_call: false, prev: 0, next: 1, partner: 0 });
    let mut ret_pos = vec![0usize; n];
    for (k, &(_, kind, op)) in events.iter().enumerate() {
        let pos = k + 1;
        list.push(Node { op, is_call: kind == 0, prev: pos - 1, next: pos + 1, partner: 0 });
        if kind == 1 {
            ret_pos[op] = pos;
        }
    }
    let end = list.len();
    for node in list.iter_mut().skip(1) {
        if node.is_call {
            node.partner = ret_pos[node.op];
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = list[0].next;
    let mut steps = 0u64;

    let lift = |list: &mut Vec<Node>, e: usize| {
        let (p, nx) = (list[e].prev, list[e].next);
        list[p].next = nx;
        if nx < end {
            list[nx].prev = p;
        }
        let r = list[e].partner;
        let (p, nx) = (list[r].prev, list[r].next);
        list[p].next = nx;
        if nx < end {
            list[nx].prev = p;
        }
    };
    let unlift = |list: &mut Vec<Node>, e: usize| {
        let r = list[e].partner;
        let (p, nx) = (list[r].prev, list[r].next);
        list[p].next = r;
        if nx < end {
            list[nx].prev = r;
        }
        let (p, nx) = (list[e].prev, list[e].next);
        list[p].next = e;
        if nx < end {
            list[nx].prev = e;
        }
    };

    while list[0].next < end {
        steps += 1;
        if steps > budget {
            return None;
        }
        let node = list[entry];
        if node.is_call {
            let h = ops[node.op];
            if let Some(next_state) = step(state, h.op, h.out) {
                let (w, b) = (node.op / 64, 1u64 << (node.op % 64));
                linearized[w] |= b;
                if cache.insert((linearized.clone(), next_state)) {
                    calls.push((entry, state));
                    state = next_state;
                    lift(&mut list, entry);
                    entry = list[0].next;
                    continue;
                }
                linearized[w] &= !b;
            }
            entry = node.next;
        } else {
            // A return whose call is not yet linearized: backtrack.
            let Some((e, s)) = calls.pop() else { return Some(false) };
            state = s;
            let op = list[e].op;
            linearized[op / 64] &= !(1u64 << (op % 64));
            unlift(&mut list, e);
            entry = list[e].next;
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, call: u64, ret: Option<u64>, op: KvOp, out: Option<KvResult>) -> HistOp {
        HistOp { client, call, ret, op, out }
    }
    fn put(c: u32, a: u64, b: u64, v: u64) -> HistOp {
        op(c, a, Some(b), KvOp::Put { key: 0, value: v }, Some(KvResult::Done))
    }
    fn get(c: u32, a: u64, b: u64, v: Option<u64>) -> HistOp {
        op(c, a, Some(b), KvOp::Get { key: 0 }, Some(KvResult::Value(v)))
    }
    fn cas(c: u32, a: u64, b: u64, e: Option<u64>, n: u64, ok: bool) -> HistOp {
        op(c, a, Some(b), KvOp::Cas { key: 0, expected: e, new: n }, Some(KvResult::Cas(ok)))
    }
    const B: u64 = 1_000_000;

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            put(1, 0, 1, 5),
            get(2, 2, 3, Some(5)),
            cas(1, 4, 5, Some(5), 6, true),
            get(2, 6, 7, Some(6)),
        ];
        assert_eq!(check(&h, B), LinResult::Ok);
    }

    #[test]
    fn stale_read_after_write_completed_is_not_linearizable() {
        // put(5) finished before the get started, yet the get saw the initial state.
        let h = vec![put(1, 0, 1, 5), get(2, 2, 3, None)];
        assert!(matches!(check(&h, B), LinResult::Violation { .. }));
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = vec![put(1, 0, 10, 5), get(2, 1, 2, None), get(3, 3, 4, Some(5))];
        assert_eq!(check(&h, B), LinResult::Ok);
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Both puts concurrent with both reads, but the reads disagree on the order.
        let h = vec![
            put(1, 0, 100, 1),
            put(2, 0, 100, 2),
            get(3, 10, 20, Some(1)),
            get(3, 30, 40, Some(2)),
            get(4, 50, 60, Some(1)),
        ];
        assert!(matches!(check(&h, B), LinResult::Violation { .. }));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_is_not_linearizable() {
        let h =
            vec![put(1, 0, 1, 5), cas(2, 2, 10, Some(5), 6, true), cas(3, 2, 10, Some(5), 7, true)];
        assert!(matches!(check(&h, B), LinResult::Violation { .. }));
    }

    #[test]
    fn unknown_write_may_or_may_not_have_happened() {
        let lost = op(1, 0, None, KvOp::Put { key: 0, value: 9 }, None);
        // Observed later: fine (it happened).
        assert_eq!(check(&[lost.clone(), get(2, 5, 6, Some(9))], B), LinResult::Ok);
        // Never observed: fine (it did not happen, or was overwritten).
        assert_eq!(check(&[lost.clone(), get(2, 5, 6, None)], B), LinResult::Ok);
        // Observed before it was invoked: impossible.
        let h = vec![get(2, 0, 1, Some(9)), op(1, 5, None, KvOp::Put { key: 0, value: 9 }, None)];
        assert!(matches!(check(&h, B), LinResult::Violation { .. }));
    }

    #[test]
    fn unknown_write_can_explain_a_failed_cas() {
        let h = vec![
            put(1, 0, 1, 5),
            op(2, 2, None, KvOp::Put { key: 0, value: 8 }, None),
            cas(3, 10, 11, Some(5), 6, false),
        ];
        assert_eq!(check(&h, B), LinResult::Ok);
        // Without the unknown write the failed CAS is impossible.
        let h = vec![put(1, 0, 1, 5), cas(3, 10, 11, Some(5), 6, false)];
        assert!(matches!(check(&h, B), LinResult::Violation { .. }));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![put(1, 0, 1, 5)];
        h.push(op(2, 2, Some(3), KvOp::Get { key: 1 }, Some(KvResult::Value(None))));
        assert_eq!(check(&h, B), LinResult::Ok);
        h.push(op(2, 4, Some(5), KvOp::Get { key: 1 }, Some(KvResult::Value(Some(5)))));
        assert!(matches!(check(&h, B), LinResult::Violation { key: 1, .. }));
    }

    #[test]
    fn budget_exhaustion_is_inconclusive_not_ok() {
        let h: Vec<HistOp> = (0..12)
            .map(|i| put(i, 0, 100, u64::from(i)))
            .chain([get(99, 200, 201, Some(77))])
            .collect();
        assert!(matches!(check(&h, 3), LinResult::Inconclusive { .. }));
    }
}
