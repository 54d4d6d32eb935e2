//! `LogActor`: the durable log on its own thread (`SyncArbiter`, one thread keeps order).
//! The raft actor hands it one write at a time; everything that piled up meanwhile goes
//! into the next one, so a burst of proposals costs one fsync (group commit).

use std::sync::{Arc, Mutex};
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

impl Handler<Write> for LogActor {
    type Result = Result<WriteDone, LogError>;
    fn handle(&mut self, w: Write, _: &mut SyncContext<Self>) -> Self::Result {
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
