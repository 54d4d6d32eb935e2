//! Building model states the way the running TUI does: through `update`, from the events a
//! real cluster sends.

use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

use crate::tui::app::{Action, App, AppEvent, ProcEvent, update};
use crate::tui::wire::{EntryKind, EventKind, LogEntry, Member, Ms, NodeEvent, Status};

/// The model's clock at the start of every scenario.
pub const T0: Ms = 1_700_000_000_000;

pub fn app(n: u64) -> App {
    App::new(1..=n, T0, "./.flotilla")
}

pub fn tick(app: &mut App, at: Ms) -> Vec<Action> {
    update(app, AppEvent::Tick(at))
}

pub fn key(app: &mut App, c: char) -> Vec<Action> {
    update(app, AppEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))
}

pub fn started(app: &mut App, id: u64, at: Ms) {
    update(app, AppEvent::Proc(ProcEvent::Started { id, pid: 4000 + id as u32, at }));
}

pub fn killed(app: &mut App, id: u64, at: Ms) {
    update(app, AppEvent::Proc(ProcEvent::Killed { id, pid: 4000 + id as u32, at }));
}

/// A status as `/v1/status` would answer it, for a cluster of `members` voters.
pub fn status(id: u64, role: &str, term: u64, leader: Option<u64>, members: u64) -> Status {
    Status {
        id,
        pid: 4000 + id as u32,
        role: role.into(),
        term,
        leader,
        voted_for: leader,
        election_timeout_ms: 200 + 10 * id,
        first_log_index: 1,
        members: (1..=members)
            .map(|m| Member { id: m, voter: true, ..Member::default() })
            .collect(),
        ..Status::default()
    }
}

pub fn with_log(mut s: Status, commit: u64, last: u64, last_term: u64) -> Status {
    s.commit_index = commit;
    s.applied_index = commit;
    s.last_log_index = last;
    s.last_log_term = last_term;
    s
}

pub fn send_status(app: &mut App, st: Status, at: Ms) {
    let node = st.id;
    update(app, AppEvent::Status { node, at, result: Ok(st) });
}

pub fn status_fails(app: &mut App, node: u64, at: Ms, why: &str) {
    update(app, AppEvent::Status { node, at, result: Err(why.into()) });
}

/// Log entries `from..=to`, with the term of each given by `term_of`.
pub fn log(app: &mut App, node: u64, from: u64, to: u64, term_of: impl Fn(u64) -> u64) {
    let entries = (from..=to)
        .map(|index| LogEntry {
            index,
            term: term_of(index),
            kind: if index == 1 { EntryKind::Config } else { EntryKind::Command },
            bytes: 40,
        })
        .collect();
    update(app, AppEvent::Log { node, entries });
}

pub fn event(app: &mut App, node: u64, term: u64, ts_ms: Ms, kind: EventKind) -> Vec<Action> {
    update(app, AppEvent::Node(NodeEvent { ts_ms, node, term, kind }))
}

pub fn elected(app: &mut App, leader: u64, term: u64, at: Ms) {
    event(app, leader, term, at, EventKind::LeaderElected { leader });
}

/// Three nodes up, n1 leader of term 2, logs of 30 entries (terms 1 then 2), 28 committed
/// on the leader; n2 and n3 half-way through their election timers.
pub fn steady3() -> App {
    let mut a = app(3);
    for id in 1..=3 {
        started(&mut a, id, T0 + 10);
    }
    event(&mut a, 1, 2, T0 + 400, EventKind::ElectionStarted { pre_vote: false });
    event(&mut a, 2, 2, T0 + 402, EventKind::VoteGranted { candidate: 1, pre_vote: false });
    elected(&mut a, 1, 2, T0 + 405);
    let at = T0 + 5_000;
    tick(&mut a, at);
    let term_of = |i| if i <= 10 { 1 } else { 2 };
    send_status(&mut a, with_log(status(1, "leader", 2, Some(1), 3), 28, 30, 2), at);
    send_status(&mut a, with_log(status(2, "follower", 2, Some(1), 3), 28, 30, 2), at);
    send_status(&mut a, with_log(status(3, "follower", 2, Some(1), 3), 26, 29, 2), at);
    for id in 1..=3 {
        log(&mut a, id, 1, if id == 3 { 29 } else { 30 }, term_of);
    }
    let mut s2 = a.nodes[&2].status.clone().unwrap();
    s2.election_elapsed_ms = 60;
    send_status(&mut a, s2, at);
    let mut s3 = a.nodes[&3].status.clone().unwrap();
    s3.election_elapsed_ms = 170;
    send_status(&mut a, s3, at);
    tick(&mut a, at + 40);
    a
}

/// The screen as text, one string per row (styles are checked separately).
pub fn render(app: &App, width: u16, height: u16) -> (Buffer, Vec<String>) {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    app.render(area, &mut buf);
    let rows = (0..height)
        .map(|y| {
            let mut s = String::new();
            let mut skip = 0;
            for x in 0..width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let sym = buf[(x, y)].symbol();
                s.push_str(sym);
                skip = unicode_width(sym).saturating_sub(1);
            }
            s.trim_end().to_string()
        })
        .collect();
    (buf, rows)
}

fn unicode_width(s: &str) -> usize {
    // Every symbol the panels use is one column wide.
    usize::from(!s.is_empty())
}
