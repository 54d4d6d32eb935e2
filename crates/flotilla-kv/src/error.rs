//! The crate's one error enum.

use thiserror::Error;

/// Why a state-machine, snapshot or codec operation failed.
#[derive(Debug, Error)]
pub enum KvError {
    /// fjall refused a read or write. After a failed write fjall is poisoned: the node must
    /// stop and restart rather than continue.
    #[error("storage: {0}")]
    Storage(#[from] fjall::Error),
    /// An I/O error while streaming a snapshot.
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that do not decode as what they claim to be (command, response, record,
    /// snapshot stream).
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// Durable state written by an incompatible version, or that breaks an invariant.
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// A previous write failed; the in-memory state can no longer be trusted.
    #[error("the state machine is poisoned by an earlier storage failure")]
    Poisoned,
}

impl KvError {
    pub(crate) fn malformed(what: &'static str, detail: impl ToString) -> KvError {
        KvError::Malformed { what, detail: detail.to_string() }
    }
}

impl From<KvError> for flotilla_node::SmError {
    fn from(e: KvError) -> Self {
        flotilla_node::SmError(e.to_string())
    }
}
