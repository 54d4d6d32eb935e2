//! Where a node's log and apply actors run ([`Placement`]), and the marker types that give
//! each placement its actix context (`LogActor<OwnThread>` is a `SyncContext` actor,
//! `LogActor<NodeThread>` a plain one).

/// Where a node's log and apply actors run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Each on a thread of its own (`SyncArbiter`): blocking disk work (fsync, fjall)
    /// never stalls the raft actor. What every real node uses.
    #[default]
    OwnThreads,
    /// On the node's thread, beside the raft actor (an actix `Context`): only for a log
    /// and a state machine that never block, as in the in-process benchmark.
    NodeThread,
}

/// Marks an actor that runs on a thread of its own (`SyncContext`).
pub struct OwnThread;
/// Marks an actor that runs on the node's thread (`Context`).
pub struct NodeThread;
