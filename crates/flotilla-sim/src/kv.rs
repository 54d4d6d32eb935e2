//! The state machine the simulated clients drive: a tiny key-value register map with
//! put / get / compare-and-set, plus a client session table (thesis §6.3) so a retried
//! request is applied at most once and its first answer is remembered.

use std::collections::BTreeMap;

use bytes::Bytes;
use flotilla_raft::{Entry, EntryPayload, LogIndex};

use crate::rng::Fnv;

pub type Key = u8;
pub type Value = u64;

/// One client operation on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put { key: Key, value: Value },
    Get { key: Key },
    Cas { key: Key, expected: Option<Value>, new: Value },
}

impl KvOp {
    pub fn key(&self) -> Key {
        match *self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvResult {
    Done,
    Value(Option<Value>),
    Cas(bool),
}

/// A request as it travels through the log: who sent it, its sequence number, the op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub client: u32,
    pub seq: u64,
    pub op: KvOp,
}

const REQUEST_BYTES: usize = 4 + 8 + 1 + 1 + 8 + 8;

impl Request {
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(REQUEST_BYTES);
        b.extend_from_slice(&self.client.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        let (tag, key, x, y) = match self.op {
            KvOp::Put { key, value } => (0u8, key, value, 0),
            KvOp::Get { key } => (1, key, 0, 0),
            KvOp::Cas { key, expected: Some(e), new } => (2, key, e, new),
            KvOp::Cas { key, expected: None, new } => (3, key, 0, new),
        };
        b.push(tag);
        b.push(key);
        b.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&y.to_le_bytes());
        Bytes::from(b)
    }

    pub fn decode(b: &[u8]) -> Option<Request> {
        if b.len() != REQUEST_BYTES {
            return None;
        }
        let client = u32::from_le_bytes(b[0..4].try_into().ok()?);
        let seq = u64::from_le_bytes(b[4..12].try_into().ok()?);
        let (tag, key) = (b[12], b[13]);
        let x = u64::from_le_bytes(b[14..22].try_into().ok()?);
        let y = u64::from_le_bytes(b[22..30].try_into().ok()?);
        let op = match tag {
            0 => KvOp::Put { key, value: x },
            1 => KvOp::Get { key },
            2 => KvOp::Cas { key, expected: Some(x), new: y },
            3 => KvOp::Cas { key, expected: None, new: y },
            _ => return None,
        };
        Some(Request { client, seq, op })
    }
}

/// A node's state machine: volatile, or kept across a crash (`Plan::keep_sm_per_mille`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// Invariant: equals the core's applied index after every step.
    pub applied: LogIndex,
    data: BTreeMap<Key, Value>,
    /// Per client: the highest sequence number applied and its result.
    sessions: BTreeMap<u32, (u64, KvResult)>,
}

impl Kv {
    /// Applies one committed entry. Returns an error for an entry out of order.
    pub fn apply(&mut self, e: &Entry) -> Result<(), String> {
        if e.index != self.applied.next() {
            return Err(format!("apply gap: state machine at {}, entry {}", self.applied, e.index));
        }
        self.applied = e.index;
        if let EntryPayload::Command(b) = &e.payload {
            let req = Request::decode(b).ok_or_else(|| format!("undecodable entry {}", e.index))?;
            let last = self.sessions.get(&req.client).map_or(0, |s| s.0);
            if req.seq > last {
                let result = self.execute(req.op);
                self.sessions.insert(req.client, (req.seq, result));
            }
        }
        Ok(())
    }

    fn execute(&mut self, op: KvOp) -> KvResult {
        match op {
            KvOp::Put { key, value } => {
                self.data.insert(key, value);
                KvResult::Done
            }
            KvOp::Get { key } => KvResult::Value(self.data.get(&key).copied()),
            KvOp::Cas { key, expected, new } => {
                let ok = self.data.get(&key).copied() == expected;
                if ok {
                    self.data.insert(key, new);
                }
                KvResult::Cas(ok)
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<Value> {
        self.data.get(&key).copied()
    }

    /// The answer to request `seq` of `client` if it was applied (None: it was not).
    pub fn session_result(&self, client: u32, seq: u64) -> Option<KvResult> {
        match self.sessions.get(&client) {
            Some((s, r)) if *s == seq => Some(*r),
            _ => None,
        }
    }

    /// The highest sequence number of `client` applied so far.
    pub fn session_seq(&self, client: u32) -> u64 {
        self.sessions.get(&client).map_or(0, |s| s.0)
    }

    /// Serializes the whole state (a snapshot's bytes), with a trailing checksum.
    pub fn snapshot(&self) -> Bytes {
        let mut b = Vec::new();
        b.extend_from_slice(&self.applied.0.to_le_bytes());
        b.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        for (k, v) in &self.data {
            b.push(*k);
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (c, (s, r)) in &self.sessions {
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&s.to_le_bytes());
            let (tag, v) = match r {
                KvResult::Done => (0u8, 0u64),
                KvResult::Value(None) => (1, 0),
                KvResult::Value(Some(v)) => (2, *v),
                KvResult::Cas(false) => (3, 0),
                KvResult::Cas(true) => (4, 0),
            };
            b.push(tag);
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut h = Fnv::default();
        h.bytes(&b);
        b.extend_from_slice(&h.finish().to_le_bytes());
        Bytes::from(b)
    }

    /// Rebuilds a state machine from snapshot bytes, verifying the checksum.
    pub fn restore(bytes: &[u8]) -> Result<Kv, String> {
        if bytes.len() < 8 {
            return Err("snapshot too short".into());
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut h = Fnv::default();
        h.bytes(body);
        if h.finish().to_le_bytes() != sum {
            return Err("snapshot checksum mismatch".into());
        }
        let mut r = Reader { b: body, at: 0 };
        let applied = LogIndex(r.u64()?);
        let mut data = BTreeMap::new();
        for _ in 0..r.u32()? {
            let k = r.u8()?;
            data.insert(k, r.u64()?);
        }
        let mut sessions = BTreeMap::new();
        for _ in 0..r.u32()? {
            let c = r.u32()?;
            let s = r.u64()?;
            let tag = r.u8()?;
            let v = r.u64()?;
            let res = match tag {
                0 => KvResult::Done,
                1 => KvResult::Value(None),
                2 => KvResult::Value(Some(v)),
                3 => KvResult::Cas(false),
                4 => KvResult::Cas(true),
                _ => return Err("bad result tag".into()),
            };
            sessions.insert(c, (s, res));
        }
        Ok(Kv { applied, data, sessions })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let s = self.b.get(self.at..self.at + n).ok_or("snapshot truncated")?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "u64")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::Term;

    fn entry(i: u64, r: Request) -> Entry {
        Entry { term: Term(1), index: LogIndex(i), payload: EntryPayload::Command(r.encode()) }
    }

    #[test]
    fn sessions_dedup_and_snapshot_roundtrip() {
        let mut kv = Kv::default();
        let put = Request { client: 1, seq: 1, op: KvOp::Put { key: 0, value: 10 } };
        let cas =
            Request { client: 2, seq: 1, op: KvOp::Cas { key: 0, expected: Some(10), new: 11 } };
        kv.apply(&entry(1, put)).unwrap();
        kv.apply(&entry(2, cas)).unwrap();
        // A retried put (same seq) does not overwrite the CAS's value.
        kv.apply(&entry(3, put)).unwrap();
        assert_eq!(kv.get(0), Some(11));
        assert_eq!(kv.session_result(2, 1), Some(KvResult::Cas(true)));
        let snap = kv.snapshot();
        assert_eq!(Kv::restore(&snap).unwrap(), kv);
        let mut bad = snap.to_vec();
        bad[9] ^= 1;
        assert!(Kv::restore(&bad).is_err());
        assert!(kv.apply(&entry(5, put)).is_err(), "a gap is refused");
        assert_eq!(Request::decode(&cas.encode()), Some(cas));
    }
}
