//! flotilla-kv: not started yet.
