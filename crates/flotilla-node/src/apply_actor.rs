//! `ApplyActor`: applies committed entries to the app's state machine on its own thread and
//! answers the clients waiting on them directly (no hop back through the raft actor).

use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use flotilla_raft::{Entry, LogIndex, SnapshotMeta};

use crate::api::{SmError, SnapshotSource, StateMachine};
use crate::placement::{NodeThread, OwnThread, Placement};
use crate::shared::Shared;

pub type SharedMachine = Arc<Mutex<Box<dyn StateMachine>>>;

pub struct ApplyActor<P = OwnThread> {
    pub sm: SharedMachine,
    pub shared: Arc<Shared>,
    pub placed: PhantomData<P>,
}

/// The raft actor's way to its apply actor, wherever that runs ([`Placement`]).
#[derive(Clone)]
pub struct ApplyPort {
    pub batch: Recipient<ApplyBatch>,
    pub view: Recipient<TakeView>,
    pub restore: Recipient<Restore>,
}

impl ApplyPort {
    /// Starts the apply actor over `sm` where `placement` says.
    pub fn start(sm: SharedMachine, shared: Arc<Shared>, placement: Placement) -> ApplyPort {
        match placement {
            Placement::OwnThreads => ApplyPort::of(SyncArbiter::start(1, move || ApplyActor {
                sm: sm.clone(),
                shared: shared.clone(),
                placed: PhantomData::<OwnThread>,
            })),
            Placement::NodeThread => {
                ApplyPort::of(ApplyActor { sm, shared, placed: PhantomData::<NodeThread> }.start())
            }
        }
    }

    fn of<A>(addr: Addr<A>) -> ApplyPort
    where
        A: Handler<ApplyBatch> + Handler<TakeView> + Handler<Restore>,
        A::Context: ToEnvelope<A, ApplyBatch> + ToEnvelope<A, TakeView> + ToEnvelope<A, Restore>,
    {
        ApplyPort {
            batch: addr.clone().recipient(),
            view: addr.clone().recipient(),
            restore: addr.recipient(),
        }
    }
}

impl<P> ApplyActor<P> {
    fn sm(&self) -> MutexGuard<'_, Box<dyn StateMachine>> {
        self.sm.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Actor for ApplyActor<OwnThread> {
    type Context = SyncContext<Self>;
}

impl Actor for ApplyActor<NodeThread> {
    type Context = Context<Self>;
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

impl<P> Handler<ApplyBatch> for ApplyActor<P>
where
    Self: Actor,
{
    type Result = Result<(), SmError>;
    fn handle(&mut self, b: ApplyBatch, _: &mut <Self as Actor>::Context) -> Self::Result {
        let responses = match self.sm().apply(&b.0) {
            Ok(r) => r,
            // What was applied can no longer be trusted to be what is durable: stop.
            Err(e) => crate::raft_actor::fatal(&format!("applying entries failed: {e}")),
        };
        self.shared.on_applied(&b.0, responses);
        Ok(())
    }
}

impl<P> Handler<TakeView> for ApplyActor<P>
where
    Self: Actor,
{
    type Result = Result<Box<dyn SnapshotSource>, SmError>;
    fn handle(&mut self, _: TakeView, _: &mut <Self as Actor>::Context) -> Self::Result {
        self.sm().snapshot()
    }
}

/// **Test-only fault hook.** When this environment variable is set (to anything), every
/// restore of a received snapshot fails before touching the state machine, as a state
/// machine that refuses the stream would. It exists so that `tests/snapshots.rs` can prove
/// that such a failure leaves the node running and catching up later. Never set it
/// outside tests; docs/security.md lists it.
pub const FAIL_RESTORE_ENV: &str = "FLOTILLA_TEST_FAIL_SNAPSHOT_RESTORE";

fn injected_restore_failure() -> bool {
    static ARMED: OnceLock<bool> = OnceLock::new();
    *ARMED.get_or_init(|| std::env::var_os(FAIL_RESTORE_ENV).is_some())
}

/// **Test-only fault hook.** When this environment variable holds a number of
/// milliseconds, every restore of a received snapshot first waits that long on the apply
/// thread, as the restore of a large state would take. It exists so that
/// `tests/snapshots.rs` can reach a node while it installs a snapshot. Never set it outside
/// tests; docs/security.md lists it.
pub const SLOW_RESTORE_ENV: &str = "FLOTILLA_TEST_SLOW_SNAPSHOT_RESTORE_MS";

/// **Test-only fault hook.** When this environment variable holds a number of
/// milliseconds, the apply thread waits that long after it restored a received snapshot
/// and before the install goes on to reset the log. It exists so that `tests/snapshots.rs`
/// can kill a node between the two and check the repair at its next start
/// (`supervisor::reconcile_snapshots`). Never set it outside tests; docs/security.md
/// lists it.
pub const PAUSE_AFTER_RESTORE_ENV: &str = "FLOTILLA_TEST_PAUSE_AFTER_SNAPSHOT_RESTORE_MS";

/// A hook's delay in ms, read from `name` once per process into `cell`.
fn injected_delay(name: &str, cell: &OnceLock<Option<Duration>>) -> Option<Duration> {
    *cell.get_or_init(|| {
        let ms = std::env::var(name).ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    })
}

impl<P> Handler<Restore> for ApplyActor<P>
where
    Self: Actor,
{
    type Result = Result<LogIndex, SmError>;
    fn handle(&mut self, r: Restore, _: &mut <Self as Actor>::Context) -> Self::Result {
        if injected_restore_failure() {
            return Err(SmError(format!(
                "the stream was refused (injected by {FAIL_RESTORE_ENV})"
            )));
        }
        static SLOW: OnceLock<Option<Duration>> = OnceLock::new();
        static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
        if let Some(delay) = injected_delay(SLOW_RESTORE_ENV, &SLOW) {
            std::thread::sleep(delay);
        }
        let file = File::open(&r.path).map_err(|e| SmError(format!("open {:?}: {e}", r.path)))?;
        let mut reader = BufReader::new(file);
        self.sm().restore(&r.meta, &mut reader)?;
        self.shared.set_applied(r.meta.last_index);
        if let Some(pause) = injected_delay(PAUSE_AFTER_RESTORE_ENV, &PAUSE) {
            std::thread::sleep(pause);
        }
        Ok(r.meta.last_index)
    }
}
