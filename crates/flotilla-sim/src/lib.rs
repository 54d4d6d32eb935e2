//! flotilla-sim: not started yet.
