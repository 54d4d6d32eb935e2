//! The TUI's model and panels without a terminal: `update` on event sequences, and the
//! screen rendered from fixed model states into golden buffers (`src/tui/testdata/*.txt`;
//! `FLOTILLA_BLESS=1` rewrites them: review the diff).
//!
//! The TUI lives in the binary crate, so this test includes its module files (`#[path]`),
//! with the launcher it drives.

// The binary uses all of the launcher; a test uses only what it drives.
#[allow(dead_code)]
#[path = "../src/launcher.rs"]
mod launcher;
#[allow(dead_code)]
#[path = "../src/tui/mod.rs"]
mod tui;

#[path = "../src/tui/tests/fixtures.rs"]
mod fixtures;
#[path = "../src/tui/tests/golden.rs"]
mod golden;
#[path = "../src/tui/tests/update.rs"]
mod update;
