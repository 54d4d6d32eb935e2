//! # flotilla-raft: the pure Raft core
//!
//! A deterministic Raft state machine in the style of etcd-raft and openraft's engine: it
//! performs no I/O, reads no clock, spawns no threads and draws randomness only from a seed
//! the caller provides. Inputs go in, [`Command`]s come out. Everything else in Flotilla —
//! the fjall log, the actix node, the simulator — is a shell that executes those commands.
//!
//! ## Driving it
//!
//! ```
//! use flotilla_raft::*;
//!
//! // A one-node cluster, recovered from an empty store.
//! let members = Membership::with_voters([NodeId(1)]);
//! let init = InitialState { bootstrap: members, ..Default::default() };
//! let mut core = RaftCore::new(Config::new(NodeId(1), 7), init);
//!
//! // Time enters as ticks (10 ms each by default); randomized timeouts are 15–30 ticks.
//! let mut applied = Vec::new();
//! for _ in 0..100 {
//!     core.tick();
//!     if core.role() == Role::Leader && applied.is_empty() {
//!         core.propose(bytes::Bytes::from_static(b"x=1")).unwrap();
//!     }
//!     for cmd in core.take_commands() {
//!         match cmd {
//!             // 1. Persist: make these durable (one fsync for the batch)...
//!             Command::SaveHardState(_hs) => {}
//!             Command::AppendLog { entries } => {
//!                 let last = entries.last().unwrap();
//!                 // ...then report the durable tail back.
//!                 core.log_persisted(last.index, last.term);
//!             }
//!             // 2. Send: `Send` only after every earlier persist is durable;
//!             //    `SendNow` (leader replication) at once.
//!             Command::Send(_m) | Command::SendNow(_m) => {}
//!             // 3. Apply committed entries to the state machine, in order.
//!             Command::Apply { entries } => applied.extend(entries),
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(core.role(), Role::Leader);
//! assert!(applied.iter().any(|e| e.payload == EntryPayload::Command("x=1".into())));
//! ```
//!
//! ## The caller's duties, in order (the persistence contract)
//!
//! Execute the commands of one `take_commands()` in order:
//! 1. `SaveHardState` / `AppendLog`: write durably (group commit: many entries, one fsync).
//!    After an `AppendLog` is durable call [`RaftCore::log_persisted`].
//! 2. `Send` must not leave before every persist returned before it — in this batch or an
//!    earlier one — is durable. `SendNow` (a leader's AppendEntries) may leave at once: the
//!    leader writes its own log in parallel with replicating it and counts itself toward a
//!    quorum only after `log_persisted`.
//! 3. `Apply` hands out committed, locally durable entries, in index order, without gaps.
//! 4. `SendSnapshot`, `InstallSnapshot`, `PurgeLog`: see [`Command`].
//! 5. `ReadReady { id, index }`: answer read `id` once the state machine applied `index`.
//! 6. `Release`: entries the core let go of; free them, off the event loop when many.
//!
//! ## Where things are
//!
//! `election` (timers, PreVote, votes), `replication` (AppendEntries, progress, commit),
//! `reconfig` (joint consensus, learners), `snapshot` (build, send, install), `read`
//! (ReadIndex, lease), `transfer` (leadership transfer), `validate` (invariants).

pub mod command;
pub mod config;
mod core;
mod election;
pub mod error;
mod log;
pub mod membership;
pub mod message;
pub mod progress;
mod read;
mod reconfig;
mod replication;
mod rng;
mod snapshot;
mod transfer;
pub mod types;
mod validate;

pub use command::{Command, Event, ReadFailure, ReleasedEntries, Role, StepDownReason};
#[cfg(feature = "broken-variants")]
pub use config::Broken;
pub use config::Config;
pub use core::{InitialState, RaftCore, ReadMode, Status};
pub use error::RaftError;
pub use membership::{Membership, NodeAddr, VoteResult};
pub use message::{ConflictHint, Message, MessageBody, VoteRefusal};
pub use progress::{ProgressMode, ProgressStatus};
pub use reconfig::ConfChange;
pub use types::{Entry, EntryKind, EntryPayload, HardState, LogIndex, NodeId, SnapshotMeta, Term};
