//! # flotilla-node: the node runtime
//!
//! Work in progress: the seams first (`StateMachine`, `ClientApi`).

pub mod api;

pub use api::{
    Applied, ClientApi, ClientError, EventLine, ReadConsistency, SmError, SnapshotSource,
    StateMachine,
};
