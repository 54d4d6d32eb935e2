//! The client-session table: per client, the last sequence number applied and its answer.
//!
//! Everything here is a pure function of the log: the clock is the largest `ts_ms` seen in
//! a command, and the recency order is the log index of a session's last use. So every
//! replica expires and evicts the same sessions at the same entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The bounds of the session table. **Every replica must use the same values**: they decide
/// which retries are recognised, so they are part of the replicated state machine's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session idle for this long (by the state machine's clock) is forgotten.
    pub idle_ttl_ms: u64,
    /// At most this many sessions; beyond it the least recently used is forgotten.
    pub max_sessions: usize,
    /// At most this many bytes of remembered answers in total (a CAS answer carries a value
    /// up to 1 MiB); beyond it the least recently used sessions are forgotten.
    pub max_response_bytes: u64,
}

/// 10 minutes idle.
pub const SESSION_IDLE_TTL_MS: u64 = 10 * 60 * 1000;
/// 100,000 sessions.
pub const MAX_SESSIONS: usize = 100_000;
/// 64 MiB of remembered answers.
pub const MAX_SESSION_RESPONSE_BYTES: u64 = 64 << 20;

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle_ttl_ms: SESSION_IDLE_TTL_MS,
            max_sessions: MAX_SESSIONS,
            max_response_bytes: MAX_SESSION_RESPONSE_BYTES,
        }
    }
}

/// One session as stored (in memory, on disk and in snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub last_seq: u64,
    /// The log index of the entry that last used this session. Unique per session (one
    /// entry touches one session), so it totally orders sessions by recency.
    pub touched_index: u64,
    /// The state machine clock at that entry. Non-decreasing in `touched_index`.
    pub touched_ms: u64,
    /// The encoded `KvResponse` returned for `last_seq`.
    pub response: Bytes,
}

/// What a request's `(client, seq)` means against the table.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Unknown client or higher seq: apply and record.
    New,
    /// The last seq again: answer this, apply nothing.
    Replay(Bytes),
    /// A lower seq: refuse.
    Stale { last_seq: u64 },
}

#[derive(Debug)]
pub(crate) struct SessionTable {
    limits: SessionLimits,
    by_client: HashMap<u64, SessionRecord>,
    /// `touched_index → client`, oldest first.
    /// Invariant: exactly one entry per session in `by_client`, keyed by its `touched_index`.
    lru: BTreeMap<u64, u64>,
    /// Invariant: the sum of `response.len()` over `by_client`.
    response_bytes: u64,
    /// Clients changed since the last `take_dirty`, to write to disk.
    dirty: BTreeSet<u64>,
}

impl SessionTable {
    pub(crate) fn new(limits: SessionLimits) -> SessionTable {
        SessionTable {
            limits,
            by_client: HashMap::new(),
            lru: BTreeMap::new(),
            response_bytes: 0,
            dirty: BTreeSet::new(),
        }
    }

    pub(crate) fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    pub(crate) fn get(&self, client: u64) -> Option<&SessionRecord> {
        self.by_client.get(&client)
    }

    /// Loads a record read back from disk or a snapshot, without marking it dirty.
    /// Refuses a duplicate client or recency index (a corrupt table).
    pub(crate) fn load(&mut self, client: u64, record: SessionRecord) -> Result<(), String> {
        if self.by_client.contains_key(&client) {
            return Err(format!("session {client} twice"));
        }
        if self.lru.contains_key(&record.touched_index) {
            return Err(format!("two sessions touched at index {}", record.touched_index));
        }
        self.lru.insert(record.touched_index, client);
        self.response_bytes += record.response.len() as u64;
        self.by_client.insert(client, record);
        Ok(())
    }

    pub(crate) fn check(&self, client: u64, seq: u64) -> SessionCheck {
        match self.by_client.get(&client) {
            None => SessionCheck::New,
            Some(r) if seq > r.last_seq => SessionCheck::New,
            Some(r) if seq == r.last_seq => SessionCheck::Replay(r.response.clone()),
            Some(r) => SessionCheck::Stale { last_seq: r.last_seq },
        }
    }

    /// Records `seq`'s answer (or refreshes a replayed session when `seq` is its last):
    /// the session becomes the most recently used. Then enforces the bounds.
    pub(crate) fn record(
        &mut self,
        client: u64,
        seq: u64,
        index: u64,
        now_ms: u64,
        response: Bytes,
    ) {
        self.remove(client);
        let record =
            SessionRecord { last_seq: seq, touched_index: index, touched_ms: now_ms, response };
        self.response_bytes += record.response.len() as u64;
        let previous = self.lru.insert(index, client);
        debug_assert!(previous.is_none(), "index {index} touched two sessions");
        self.by_client.insert(client, record);
        self.dirty.insert(client);
        self.enforce_bounds(client);
    }

    /// Forgets every session idle for at least `idle_ttl_ms` at clock `now_ms`. Because
    /// `touched_ms` grows with `touched_index`, the idle ones are a prefix of `lru`.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        while let Some((_, &client)) = self.lru.first_key_value() {
            let touched_ms = self.by_client[&client].touched_ms;
            if now_ms.saturating_sub(touched_ms) < self.limits.idle_ttl_ms {
                break;
            }
            self.remove(client);
            self.dirty.insert(client);
        }
    }

    /// Drops least recently used sessions (never `keep`, the one just recorded) until both
    /// bounds hold.
    fn enforce_bounds(&mut self, keep: u64) {
        while self.by_client.len() > self.limits.max_sessions
            || self.response_bytes > self.limits.max_response_bytes
        {
            let Some(victim) = self.lru.values().copied().find(|c| *c != keep) else {
                break;
            };
            self.remove(victim);
            self.dirty.insert(victim);
        }
    }

    fn remove(&mut self, client: u64) {
        if let Some(r) = self.by_client.remove(&client) {
            self.lru.remove(&r.touched_index);
            self.response_bytes -= r.response.len() as u64;
        }
    }

    /// The clients changed since the last call, with their record now (`None`: forgotten).
    pub(crate) fn take_dirty(&mut self) -> Vec<(u64, Option<SessionRecord>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.into_iter().map(|c| (c, self.by_client.get(&c).cloned())).collect()
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.lru.len(), self.by_client.len());
        for (idx, c) in &self.lru {
            assert_eq!(self.by_client[c].touched_index, *idx);
        }
        let bytes: u64 = self.by_client.values().map(|r| r.response.len() as u64).sum();
        assert_eq!(bytes, self.response_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_sessions: usize, max_bytes: u64) -> SessionTable {
        SessionTable::new(SessionLimits {
            idle_ttl_ms: 1000,
            max_sessions,
            max_response_bytes: max_bytes,
        })
    }

    #[test]
    fn check_distinguishes_new_replay_and_stale() {
        let mut t = table(10, 1 << 20);
        assert_eq!(t.check(1, 5), SessionCheck::New);
        t.record(1, 5, 10, 0, Bytes::from_static(b"r5"));
        assert_eq!(t.check(1, 5), SessionCheck::Replay(Bytes::from_static(b"r5")));
        assert_eq!(t.check(1, 4), SessionCheck::Stale { last_seq: 5 });
        assert_eq!(t.check(1, 7), SessionCheck::New);
        assert_eq!(t.check(2, 1), SessionCheck::New);
        t.check_invariants();
    }

    #[test]
    fn expiry_forgets_exactly_the_idle_prefix() {
        let mut t = table(10, 1 << 20);
        t.record(1, 1, 1, 0, Bytes::new());
        t.record(2, 1, 2, 500, Bytes::new());
        t.take_dirty();
        t.expire(999);
        assert_eq!(t.len(), 2);
        t.expire(1000);
        assert!(t.get(1).is_none() && t.get(2).is_some());
        assert_eq!(t.take_dirty(), vec![(1, None)]);
        t.check_invariants();
    }

    #[test]
    fn count_bound_evicts_least_recently_used() {
        let mut t = table(2, 1 << 20);
        t.record(1, 1, 1, 0, Bytes::new());
        t.record(2, 1, 2, 0, Bytes::new());
        t.record(1, 2, 3, 0, Bytes::new()); // 1 is now newer than 2
        t.record(3, 1, 4, 0, Bytes::new());
        assert!(t.get(2).is_none(), "2 was least recently used");
        assert!(t.get(1).is_some() && t.get(3).is_some());
        t.check_invariants();
    }

    #[test]
    fn byte_bound_evicts_but_keeps_the_newest() {
        let mut t = table(10, 10);
        t.record(1, 1, 1, 0, Bytes::from(vec![0; 6]));
        t.record(2, 1, 2, 0, Bytes::from(vec![0; 6]));
        assert!(t.get(1).is_none() && t.get(2).is_some());
        t.record(3, 1, 3, 0, Bytes::from(vec![0; 20]));
        assert_eq!(t.len(), 1, "only the newest is kept even if alone it is over");
        assert!(t.get(3).is_some());
        t.check_invariants();
    }

    #[test]
    fn load_refuses_duplicates() {
        let mut t = table(10, 100);
        let r = |i| SessionRecord {
            last_seq: 1,
            touched_index: i,
            touched_ms: 0,
            response: Bytes::new(),
        };
        t.load(1, r(1)).unwrap();
        assert!(t.load(1, r(2)).is_err());
        assert!(t.load(2, r(1)).is_err());
    }
}
