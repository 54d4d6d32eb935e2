//! flotilla-node: not started yet.
