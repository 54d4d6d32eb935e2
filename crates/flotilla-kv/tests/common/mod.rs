//! A fake single-node `ClientApi`: proposals apply at once to a real `KvStateMachine` on a
//! temp fjall database; tests script errors in front of them.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use flotilla_kv::KvStateMachine;
use flotilla_kv::http::{self, KvHttpState};
use flotilla_node::{Applied, ClientApi, ClientError, ReadConsistency, StateMachine};
use flotilla_raft::{Entry, EntryPayload, LogIndex, NodeId, Term};

pub struct Inner {
    pub sm: KvStateMachine,
    pub term: Term,
    /// Returned (one each) by the next proposals, before anything is applied.
    pub refuse: VecDeque<ClientError>,
    /// Returned by the next proposals *after* applying them (an unknown outcome).
    pub apply_then_fail: VecDeque<ClientError>,
    /// Returned by every non-stale read barrier while set.
    pub read_error: Option<ClientError>,
    /// Returned by every proposal while set (a follower that is not the leader).
    pub always: Option<ClientError>,
    pub proposals: usize,
}

#[derive(Clone)]
pub struct FakeNode {
    pub inner: Arc<Mutex<Inner>>,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeNode {
    pub fn new() -> FakeNode {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let sm = KvStateMachine::open(db).unwrap();
        let inner = Inner {
            sm,
            term: Term(3),
            refuse: VecDeque::new(),
            apply_then_fail: VecDeque::new(),
            read_error: None,
            always: None,
            proposals: 0,
        };
        FakeNode { inner: Arc::new(Mutex::new(inner)), _dir: Arc::new(dir) }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn state(&self) -> KvHttpState<FakeNode> {
        let reader = self.lock().sm.reader();
        KvHttpState::new(self.clone(), reader)
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.lock().sm.reader().get(key.as_bytes()).unwrap()
    }

    pub fn applied(&self) -> u64 {
        self.lock().sm.applied_index().0
    }
}

impl ClientApi for FakeNode {
    async fn propose(&self, data: Bytes) -> Result<Applied, ClientError> {
        let mut inner = self.lock();
        inner.proposals += 1;
        if let Some(e) = inner.always.clone() {
            return Err(e);
        }
        if let Some(e) = inner.refuse.pop_front() {
            return Err(e);
        }
        let index = inner.sm.applied_index().next();
        let term = inner.term;
        let entry = Entry { term, index, payload: EntryPayload::Command(data) };
        let answers = inner.sm.apply(&[entry]).unwrap();
        if let Some(e) = inner.apply_then_fail.pop_front() {
            return Err(e);
        }
        let response = answers.into_iter().next().flatten().unwrap();
        Ok(Applied { index, term, response })
    }

    async fn read_barrier(&self, consistency: ReadConsistency) -> Result<LogIndex, ClientError> {
        let inner = self.lock();
        match (&inner.read_error, consistency) {
            (Some(e), ReadConsistency::Linearizable | ReadConsistency::Lease) => Err(e.clone()),
            _ => Ok(inner.sm.applied_index()),
        }
    }

    fn node_id(&self) -> NodeId {
        NodeId(1)
    }

    fn applied_index(&self) -> LogIndex {
        self.lock().sm.applied_index()
    }
}

/// The app a node would build: the KV routes plus the 404 default.
pub fn app(
    node: &FakeNode,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    > + use<>,
> {
    let state = node.state();
    actix_web::App::new()
        .configure(move |cfg| http::configure(cfg, state))
        .default_service(actix_web::web::to(http::no_route))
}
