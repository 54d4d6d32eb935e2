//! State shared between the node's threads: the applied watermark and the clients waiting
//! on it, the event stream, the fault spec and the counters. Everything here is small and
//! bounded; locks are held for a few map operations at most.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flotilla_raft::{Entry, LogIndex, NodeId, Term};
use serde_json::{Map, Value};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::api::{Applied, ClientError};
use crate::faults::FaultSpec;
use crate::metrics::Metrics;

pub(crate) type ProposalTx = oneshot::Sender<Result<Applied, ClientError>>;
pub(crate) type ReadTx = oneshot::Sender<Result<LogIndex, ClientError>>;

/// Bound on events buffered per subscriber; a slow subscriber skips ahead (counted).
const EVENT_BUFFER: usize = 4096;

#[derive(Default)]
struct Waiters {
    /// Proposals by index: the term they were proposed in and who waits.
    proposals: BTreeMap<LogIndex, (Term, ProposalTx)>,
    /// Reads by the index that must be applied before they may be served.
    reads: BTreeMap<LogIndex, Vec<ReadTx>>,
}

pub struct Shared {
    pub id: NodeId,
    pub started: Instant,
    applied: AtomicU64,
    term: AtomicU64,
    waiters: Mutex<Waiters>,
    events: broadcast::Sender<Arc<str>>,
    pub faults: RwLock<FaultSpec>,
    pub metrics: Metrics,
    /// Per peer: woken when the peer connects to us (`peer_is_back`), so that our own link
    /// to it, sleeping out its reconnect back-off, dials at once.
    peer_back: Mutex<BTreeMap<NodeId, Arc<Notify>>>,
}

impl Shared {
    pub(crate) fn new(id: NodeId, applied: LogIndex) -> Arc<Shared> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Shared {
            id,
            started: Instant::now(),
            applied: AtomicU64::new(applied.0),
            term: AtomicU64::new(0),
            waiters: Mutex::new(Waiters::default()),
            events,
            faults: RwLock::new(FaultSpec::default()),
            metrics: Metrics::default(),
            peer_back: Mutex::new(BTreeMap::new()),
        })
    }

    /// What `peer`'s outbound link waits on between reconnect attempts.
    pub(crate) fn peer_back(&self, peer: NodeId) -> Arc<Notify> {
        let mut map = self.peer_back.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer).or_default().clone()
    }

    /// `peer` proved who it is on a connection to us: it is up, so a link to it that waits
    /// out a back-off (up to a second) dials now. A restarted node then hears from the
    /// leader in milliseconds instead of timing out into a pre-vote first.
    pub(crate) fn peer_is_back(&self, peer: NodeId) {
        self.peer_back(peer).notify_one();
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // A poisoned lock means a thread panicked holding it; with panic = "abort" that
        // cannot happen, and in tests the data is still consistent map operations.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied(&self) -> LogIndex {
        LogIndex(self.applied.load(Ordering::Acquire))
    }

    pub(crate) fn set_term(&self, term: Term) {
        self.term.store(term.0, Ordering::Relaxed);
    }

    pub(crate) fn register_proposal(&self, index: LogIndex, term: Term, tx: ProposalTx) {
        let mut w = self.waiters();
        if let Some((_, old)) = w.proposals.insert(index, (term, tx)) {
            // The index was proposed before in an older term and is being reused: the old
            // proposal's entry was overwritten.
            let _ = old.send(Err(ClientError::LeadershipLost));
        }
    }

    pub(crate) fn register_read(&self, index: LogIndex, tx: ReadTx) {
        let mut w = self.waiters();
        let applied = self.applied();
        if applied >= index {
            let _ = tx.send(Ok(applied));
        } else {
            w.reads.entry(index).or_default().push(tx);
        }
    }

    /// Called by the apply thread after `entries` are applied with these `responses`.
    pub(crate) fn on_applied(&self, entries: &[Entry], responses: Vec<Option<Bytes>>) {
        let Some(last) = entries.last() else { return };
        let mut w = self.waiters();
        for (e, resp) in entries.iter().zip(responses) {
            if let Some((term, tx)) = w.proposals.remove(&e.index) {
                let result = if term == e.term {
                    Ok(Applied { index: e.index, term: e.term, response: resp.unwrap_or_default() })
                } else {
                    Err(ClientError::LeadershipLost)
                };
                let _ = tx.send(result);
            }
        }
        self.applied.store(last.index.0, Ordering::Release);
        release_reads(&mut w, last.index);
        self.metrics.applied_entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
    }

    /// After a snapshot install the applied index jumps; waiters it reaches are answered
    /// (a follower waiting to apply a leader's read index may catch up by snapshot, and no
    /// entry need follow).
    pub(crate) fn set_applied(&self, index: LogIndex) {
        let mut w = self.waiters();
        self.applied.store(index.0, Ordering::Release);
        release_reads(&mut w, index);
    }

    /// Leadership ended: every proposal still waiting has an unknown outcome.
    pub(crate) fn fail_proposals(&self, err: ClientError) {
        let mut w = self.waiters();
        for (_, (_, tx)) in std::mem::take(&mut w.proposals) {
            let _ = tx.send(Err(err.clone()));
        }
    }

    pub(crate) fn pending_proposals(&self) -> usize {
        self.waiters().proposals.len()
    }

    /// Publishes one `/v1/events` line.
    pub fn emit(&self, kind: &str, detail: Map<String, Value>) {
        let mut obj = Map::new();
        obj.insert("ts_ms".into(), Value::from(now_ms()));
        obj.insert("node".into(), Value::from(self.id.0));
        obj.insert("term".into(), Value::from(self.term.load(Ordering::Relaxed)));
        obj.insert("kind".into(), Value::from(kind));
        for (k, v) in detail {
            obj.insert(k, v);
        }
        let line: Arc<str> = Value::Object(obj).to_string().into();
        // No subscriber is fine: events are a live stream, not a log.
        let _ = self.events.send(line);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Answers every read waiting for an index at or below `applied`.
fn release_reads(w: &mut Waiters, applied: LogIndex) {
    let ready: Vec<LogIndex> = w.reads.range(..=applied).map(|(i, _)| *i).collect();
    for i in ready {
        for tx in w.reads.remove(&i).unwrap_or_default() {
            let _ = tx.send(Ok(applied));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_install_answers_the_reads_it_reaches() {
        let shared = Shared::new(NodeId(2), LogIndex::ZERO);
        let (reached, mut reached_rx) = oneshot::channel();
        let (beyond, mut beyond_rx) = oneshot::channel();
        shared.register_read(LogIndex(10), reached);
        shared.register_read(LogIndex(13), beyond);
        shared.set_applied(LogIndex(12));
        assert_eq!(reached_rx.try_recv().ok(), Some(Ok(LogIndex(12))));
        assert!(beyond_rx.try_recv().is_err(), "13 is not applied yet");
        let (now, mut now_rx) = oneshot::channel();
        shared.register_read(LogIndex(12), now);
        assert_eq!(now_rx.try_recv().ok(), Some(Ok(LogIndex(12))));
    }
}
