//! flotilla-log: not started yet.
