//! `LogActor`: the durable log on its own thread (`SyncArbiter`, one thread keeps order).
//! The raft actor hands it one write at a time; everything that piled up meanwhile goes
//! into the next one, so a burst of proposals costs one fsync (group commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use flotilla_log::{LogError, LogStore};
use flotilla_raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};

pub type SharedStore = Arc<Mutex<Box<dyn LogStore>>>;

pub struct LogActor {
    pub store: SharedStore,
}

impl Actor for LogActor {
    type Context = SyncContext<Self>;
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

#[derive(Message)]
#[rtype(result = "Result<(), LogError>")]
pub struct Purge(pub LogIndex);

#[derive(Message)]
#[rtype(result = "Result<(), LogError>")]
pub struct SaveSnapshotMeta(pub SnapshotMeta);

#[derive(Message)]
#[rtype(result = "Result<(), LogError>")]
pub struct ResetToSnapshot(pub SnapshotMeta);

impl LogActor {
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

impl Handler<Write> for LogActor {
    type Result = Result<WriteDone, LogError>;
    fn handle(&mut self, w: Write, _: &mut SyncContext<Self>) -> Self::Result {
        if let Some(e) = injected_write_failure() {
            return Err(e);
        }
        let started = Instant::now();
        let last = w.entries.last().map(|e| (e.index, e.term));
        self.store().write(w.hard_state.as_ref(), &w.entries)?;
        Ok(WriteDone { last, micros: started.elapsed().as_micros() as u64 })
    }
}

impl Handler<Purge> for LogActor {
    type Result = Result<(), LogError>;
    fn handle(&mut self, p: Purge, _: &mut SyncContext<Self>) -> Self::Result {
        self.store().purge(p.0)
    }
}

impl Handler<SaveSnapshotMeta> for LogActor {
    type Result = Result<(), LogError>;
    fn handle(&mut self, m: SaveSnapshotMeta, _: &mut SyncContext<Self>) -> Self::Result {
        self.store().save_snapshot_meta(&m.0)
    }
}

impl Handler<ResetToSnapshot> for LogActor {
    type Result = Result<(), LogError>;
    fn handle(&mut self, m: ResetToSnapshot, _: &mut SyncContext<Self>) -> Self::Result {
        self.store().reset_to_snapshot(&m.0)
    }
}
