//! flotilla-wire: not started yet.
