//! Golden screens: fixed model states rendered at fixed sizes and compared with
//! `src/tui/testdata/NAME.txt`. `FLOTILLA_BLESS=1 cargo test --test tui_model` rewrites
//! them; a reviewer reads the diff. Styles that carry meaning (role colors, the committed
//! log blocks) are asserted cell by cell.

use std::path::PathBuf;

use ratatui::buffer::Buffer;
use ratatui::style::Color;

use super::fixtures::*;
use crate::tui::app::{App, AppEvent, ProcEvent, update};
use crate::tui::wire::{EventKind, FaultsEvent};

fn golden(name: &str, app: &App, width: u16, height: u16) -> Buffer {
    let (buf, rows) = render(app, width, height);
    let text = rows.join("\n") + "\n";
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/tui/testdata/{name}.txt"));
    if std::env::var_os("FLOTILLA_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write golden");
        return buf;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden {path:?}; run with FLOTILLA_BLESS=1"));
    if want != text {
        panic!(
            "screen {name} ({width}x{height}) differs from {path:?}:\n--- want\n{want}--- got\n{text}"
        );
    }
    buf
}

/// The first cell at or after column 0 of `row` whose text starts `needle`.
fn find(buf: &Buffer, row: u16, needle: &str) -> (u16, u16) {
    let w = buf.area.width;
    let line: String = (0..w).map(|x| buf[(x, row)].symbol().to_string()).collect();
    let chars: Vec<char> = line.chars().collect();
    let n: Vec<char> = needle.chars().collect();
    let x = (0..chars.len())
        .find(|&i| chars[i..].starts_with(&n))
        .unwrap_or_else(|| panic!("{needle:?} not in row {row}: {line}"));
    (x as u16, row)
}

fn row_of(buf: &Buffer, needle: &str) -> u16 {
    (0..buf.area.height)
        .find(|&y| {
            let line: String =
                (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
            line.contains(needle)
        })
        .unwrap_or_else(|| panic!("{needle:?} not on screen"))
}

#[test]
fn steady_three_nodes_80x24() {
    let a = steady3();
    let buf = golden("steady3_80x24", &a, 80, 24);
    // The leader's role is green, followers are not.
    let leader = find(&buf, row_of(&buf, "LEADER"), "LEADER");
    assert_eq!(buf[leader].fg, Color::Green);
    let follower = find(&buf, row_of(&buf, "n2  "), "follower");
    assert_eq!(buf[follower].fg, Color::White);
}

#[test]
fn committed_entries_are_solid_and_uncommitted_are_not() {
    let a = steady3();
    let (buf, _) = render(&a, 80, 24);
    // n3's log: 26 committed, 27..29 not. The log rows start after the ruler; entry i sits
    // at column x0 + i - 1 (the window starts at index 1).
    let y = row_of(&buf, "@1") + 3;
    let (x0, _) = find(&buf, y, "◆");
    let t2 = crate::tui::theme::term_color(2);
    assert_eq!(buf[(x0 + 25, y)].bg, t2, "entry 26 (term 2) committed: solid");
    assert_eq!(buf[(x0 + 26, y)].bg, Color::Reset, "entry 27 not committed: digit only");
    assert_eq!(buf[(x0 + 26, y)].fg, t2);
    assert_eq!(buf[(x0 + 26, y)].symbol(), "2");
}

/// n1 (the old leader) is down; n2 is a candidate of term 3, with one vote refused
/// because n3's log is ahead; no leader for 350 ms.
pub fn election_in_progress() -> App {
    let mut a = steady3();
    let t = a.now;
    killed(&mut a, 1, t + 100);
    event(&mut a, 2, 3, t + 330, EventKind::ElectionStarted { pre_vote: true });
    event(&mut a, 3, 3, t + 331, EventKind::VoteGranted { candidate: 2, pre_vote: true });
    event(&mut a, 2, 3, t + 333, EventKind::ElectionStarted { pre_vote: false });
    let refusal =
        EventKind::VoteRefused { candidate: 2, pre_vote: false, reason: "log_behind".into() };
    event(&mut a, 3, 3, t + 335, refusal);
    let mut s2 = status(2, "candidate", 3, None, 3);
    s2.voted_for = Some(2);
    s2.election_elapsed_ms = 20;
    send_status(&mut a, with_log(s2, 28, 30, 2), t + 400);
    tick(&mut a, t + 450);
    a
}

#[test]
fn election_in_progress_80x24() {
    let a = election_in_progress();
    let buf = golden("election_80x24", &a, 80, 24);
    let down = find(&buf, row_of(&buf, "DOWN"), "DOWN");
    assert_eq!(buf[down].bg, Color::Red);
    let cand = find(&buf, row_of(&buf, "CANDIDATE"), "CANDIDATE");
    assert_eq!(buf[cand].fg, Color::Yellow);
    assert!(row_of(&buf, "NO LEADER") == 0, "the title says there is no leader");
}

/// Five nodes: n1 leads; n2 is paused; n3 is isolated and pre-votes in vain; n4 does not
/// answer its status; n5 follows.
pub fn partition5() -> App {
    let mut a = app(5);
    for id in 1..=5 {
        started(&mut a, id, T0 + 10);
    }
    elected(&mut a, 1, 4, T0 + 600);
    let at = T0 + 9_000;
    tick(&mut a, at);
    for id in 1..=5 {
        let role = if id == 1 { "leader" } else { "follower" };
        send_status(&mut a, with_log(status(id, role, 4, Some(1), 5), 40, 41, 4), at);
        log(&mut a, id, 1, 41, |i| if i < 20 { 3 } else { 4 });
    }
    update(&mut a, AppEvent::Proc(ProcEvent::Paused { id: 2, at: at + 10 }));
    let faults = FaultsEvent { isolate: true, ..FaultsEvent::default() };
    event(&mut a, 3, 4, at + 20, EventKind::FaultsSet { faults });
    event(&mut a, 3, 5, at + 400, EventKind::ElectionStarted { pre_vote: true });
    let refusal =
        EventKind::VoteRefused { candidate: 3, pre_vote: true, reason: "leader_alive".into() };
    event(&mut a, 5, 4, at + 402, refusal);
    let mut s3 = with_log(status(3, "precandidate", 4, None, 5), 40, 41, 4);
    s3.election_elapsed_ms = 100;
    send_status(&mut a, s3, at + 700);
    for id in [1, 5] {
        let role = if id == 1 { "leader" } else { "follower" };
        send_status(&mut a, with_log(status(id, role, 4, Some(1), 5), 45, 45, 4), at + 700);
    }
    status_fails(&mut a, 4, at + 100, "timeout");
    tick(&mut a, at + 1_000);
    a
}

#[test]
fn partition_five_nodes_80x24() {
    let a = partition5();
    let buf = golden("partition5_80x24", &a, 80, 24);
    let paused = find(&buf, row_of(&buf, "PAUSED"), "PAUSED");
    assert_eq!(buf[paused].bg, Color::Magenta);
    assert!(a.nodes[&3].isolated);
    // The isolated node's row carries the scissors.
    let y = row_of(&buf, "precand");
    find(&buf, y, "✂");
}

#[test]
fn partition_five_nodes_wide_140x40() {
    golden("partition5_140x40", &partition5(), 140, 40);
}

#[test]
fn seven_nodes_fit_80x24_without_frames() {
    let mut a = app(7);
    for id in 1..=7 {
        started(&mut a, id, T0 + 10);
    }
    elected(&mut a, 4, 1, T0 + 700);
    tick(&mut a, T0 + 2_000);
    for id in 1..=7 {
        let role = if id == 4 { "leader" } else { "follower" };
        send_status(&mut a, with_log(status(id, role, 1, Some(4), 7), 3, 3, 1), T0 + 2_000);
        log(&mut a, id, 1, 3, |_| 1);
    }
    let (_, rows) = render(&a, 80, 24);
    for id in 1..=7 {
        assert!(
            rows.iter().filter(|r| r.contains(&format!("n{id} "))).count() >= 2,
            "n{id} in nodes and logs"
        );
    }
    golden("seven_80x24", &a, 80, 24);
}

#[test]
fn narrow_terminals_drop_columns_but_keep_the_essentials() {
    let a = election_in_progress();
    let (_, rows) = render(&a, 60, 20);
    let text = rows.join("\n");
    assert!(text.contains("CANDIDATE") && text.contains("DOWN"));
    assert!(!text.contains("applied"), "the applied column goes first");
    golden("election_60x20", &a, 60, 20);
    // Tiny screens must not panic.
    for (w, h) in [(20, 6), (40, 10), (1, 1), (0, 0)] {
        render(&a, w, h);
    }
}

#[test]
fn help_lists_every_key() {
    let mut a = steady3();
    key(&mut a, '?');
    let (_, rows) = render(&a, 80, 24);
    let text = rows.join("\n");
    for k in [
        "kill -9",
        "pause",
        "restart",
        "isolate",
        "transfer",
        "snapshot",
        "add a node",
        "remove",
        "write load",
        "quit",
    ] {
        assert!(text.contains(k), "help lacks {k:?}");
    }
    golden("help_80x24", &a, 80, 24);
    key(&mut a, 'x');
    assert!(!a.show_help, "any key closes the help");
}
