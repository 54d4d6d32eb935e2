//! `LogActor`: the durable log on its own thread (`SyncArbiter`, one thread keeps order).
//! The raft actor hands it one write at a time; everything that piled up meanwhile goes
//! into the next one, so a burst of proposals costs one fsync (group commit).
//!
//! A log that never blocks (the in-memory `MemLogStore` of the in-process benchmark) can
//! run on the node's own thread instead ([`Placement::NodeThread`]): the same actor and
//! the same messages, minus a thread hand-off per write.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use flotilla_log::{LogError, LogStore};
use flotilla_raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};

use crate::placement::{NodeThread, OwnThread, Placement};

pub type SharedStore = Arc<Mutex<Box<dyn LogStore>>>;

pub struct LogActor<P = OwnThread> {
    pub store: SharedStore,
    pub placed: PhantomData<P>,
}

impl Actor for LogActor<OwnThread> {
    type Context = SyncContext<Self>;
}

impl Actor for LogActor<NodeThread> {
    type Context = Context<Self>;
}

/// The raft actor's way to its log actor, wherever that runs.
#[derive(Clone)]
pub struct LogPort {
    pub write: Recipient<Write>,
    pub purge: Recipient<Purge>,
    pub save_meta: Recipient<SaveSnapshotMeta>,
    pub reset: Recipient<ResetToSnapshot>,
}

impl LogPort {
    /// Starts the log actor over `store` where `placement` says.
    pub fn start(store: SharedStore, placement: Placement) -> LogPort {
        match placement {
            Placement::OwnThreads => LogPort::of(SyncArbiter::start(1, move || LogActor {
                store: store.clone(),
                placed: PhantomData::<OwnThread>,
            })),
            Placement::NodeThread => {
                LogPort::of(LogActor { store, placed: PhantomData::<NodeThread> }.start())
            }
        }
    }

    fn of<A>(addr: Addr<A>) -> LogPort
    where
        A: Handler<Write> + Handler<Purge> + Handler<SaveSnapshotMeta> + Handler<ResetToSnapshot>,
        A::Context: ToEnvelope<A, Write>
            + ToEnvelope<A, Purge>
            + ToEnvelope<A, SaveSnapshotMeta>
            + ToEnvelope<A, ResetToSnapshot>,
    {
        LogPort {
            write: addr.clone().recipient(),
            purge: addr.clone().recipient(),
            save_meta: addr.clone().recipient(),
            reset: addr.recipient(),
        }
    }
}

/// One group commit: the latest hard state and the entries (truncating from the first).
#[derive(Message)]
#[rtype(result = "Result<WriteDone, LogError>")]
pub struct Write {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
}

pub struct WriteDone {
    pub last: Option<(LogIndex, Term)>,
    pub micros: u64,
}

/// Delete the stored entries up to this index (inclusive). Answers where the log starts
/// now (the index before its first entry).
#[derive(Message)]
#[rtype(result = "Result<LogIndex, LogError>")]
pub struct Purge(pub LogIndex);

#[derive(Message)]
#[rtype(result = "Result<(), LogError>")]
pub struct SaveSnapshotMeta(pub SnapshotMeta);

#[derive(Message)]
#[rtype(result = "Result<(), LogError>")]
pub struct ResetToSnapshot(pub SnapshotMeta);

impl<P> LogActor<P> {
    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn LogStore>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// **Test-only fault hook.** When this environment variable holds a number N, the
/// (N+1)-th durable write of the process fails, without writing anything, as a failed
/// fsync would (and every later one too). It exists so that the integration tests can
/// prove that a node whose disk fails stops and never acknowledges what is not durable
/// (`tests/bad_input.rs`). Never set it outside tests; docs/security.md lists it.
pub const FAIL_WRITE_AFTER_ENV: &str = "FLOTILLA_TEST_FAIL_LOG_WRITE_AFTER";

/// The injected failure for this write, if the test hook is armed and its count is spent.
fn injected_write_failure() -> Option<LogError> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let limit = (*LIMIT.get_or_init(|| {
        std::env::var(FAIL_WRITE_AFTER_ENV).ok().and_then(|v| v.trim().parse().ok())
    }))?;
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    (n >= limit).then(|| {
        LogError::Io(std::io::Error::other(format!(
            "fsync failed (injected by {FAIL_WRITE_AFTER_ENV}={limit})"
        )))
    })
}

impl<P> Handler<Write> for LogActor<P>
where
    Self: Actor,
{
    type Result = Result<WriteDone, LogError>;
    fn handle(&mut self, w: Write, _: &mut <Self as Actor>::Context) -> Self::Result {
        if let Some(e) = injected_write_failure() {
            return Err(e);
        }
        let started = Instant::now();
        let last = w.entries.last().map(|e| (e.index, e.term));
        self.store().write(w.hard_state.as_ref(), &w.entries)?;
        Ok(WriteDone { last, micros: started.elapsed().as_micros() as u64 })
    }
}

impl<P> Handler<Purge> for LogActor<P>
where
    Self: Actor,
{
    type Result = Result<LogIndex, LogError>;
    fn handle(&mut self, p: Purge, _: &mut <Self as Actor>::Context) -> Self::Result {
        let mut store = self.store();
        store.purge(p.0)?;
        Ok(store.first_index().prev())
    }
}

impl<P> Handler<SaveSnapshotMeta> for LogActor<P>
where
    Self: Actor,
{
    type Result = Result<(), LogError>;
    fn handle(&mut self, m: SaveSnapshotMeta, _: &mut <Self as Actor>::Context) -> Self::Result {
        self.store().save_snapshot_meta(&m.0)
    }
}

impl<P> Handler<ResetToSnapshot> for LogActor<P>
where
    Self: Actor,
{
    type Result = Result<(), LogError>;
    fn handle(&mut self, m: ResetToSnapshot, _: &mut <Self as Actor>::Context) -> Self::Result {
        self.store().reset_to_snapshot(&m.0)
    }
}
