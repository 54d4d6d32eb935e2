//! `ApplyActor`: applies committed entries to the app's state machine on its own thread and
//! answers the clients waiting on them directly (no hop back through the raft actor).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use flotilla_raft::{Entry, LogIndex, SnapshotMeta};

use crate::api::{SmError, SnapshotSource, StateMachine};
use crate::shared::Shared;

pub struct ApplyActor {
    pub sm: Arc<Mutex<Box<dyn StateMachine>>>,
    pub shared: Arc<Shared>,
}

impl ApplyActor {
    fn sm(&self) -> MutexGuard<'_, Box<dyn StateMachine>> {
        self.sm.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Actor for ApplyActor {
    type Context = SyncContext<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<(), SmError>")]
pub struct ApplyBatch(pub Vec<Entry>);

/// Freeze the state machine for a snapshot (copy-on-write view).
#[derive(Message)]
#[rtype(result = "Result<Box<dyn SnapshotSource>, SmError>")]
pub struct TakeView;

/// Replace the state machine with the snapshot in `path`.
#[derive(Message)]
#[rtype(result = "Result<LogIndex, SmError>")]
pub struct Restore {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
}

impl Handler<ApplyBatch> for ApplyActor {
    type Result = Result<(), SmError>;
    fn handle(&mut self, b: ApplyBatch, _: &mut SyncContext<Self>) -> Self::Result {
        let responses = match self.sm().apply(&b.0) {
            Ok(r) => r,
            // What was applied can no longer be trusted to be what is durable: stop.
            Err(e) => crate::raft_actor::fatal(&format!("applying entries failed: {e}")),
        };
        self.shared.on_applied(&b.0, responses);
        Ok(())
    }
}

impl Handler<TakeView> for ApplyActor {
    type Result = Result<Box<dyn SnapshotSource>, SmError>;
    fn handle(&mut self, _: TakeView, _: &mut SyncContext<Self>) -> Self::Result {
        self.sm().snapshot()
    }
}

impl Handler<Restore> for ApplyActor {
    type Result = Result<LogIndex, SmError>;
    fn handle(&mut self, r: Restore, _: &mut SyncContext<Self>) -> Self::Result {
        let file = File::open(&r.path).map_err(|e| SmError(format!("open {:?}: {e}", r.path)))?;
        let mut reader = BufReader::new(file);
        self.sm().restore(&r.meta, &mut reader)?;
        self.shared.set_applied(r.meta.last_index);
        Ok(r.meta.last_index)
    }
}
