//! One row per node: id, pid, role, term, vote, known leader, commit / applied / last
//! index, snapshot index, and the election timer as a bar (time since the last heartbeat
//! against this node's timeout, moved on locally between polls).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::Widget;

use super::app::{App, NodeView, Proc, Shown};
use super::theme;
use super::ui::frame;

pub struct NodesPanel<'a> {
    pub app: &'a App,
    pub framed: bool,
}

/// A column: header, width, right-aligned, and the narrowest panel that still shows it.
struct Col {
    head: &'static str,
    width: u16,
    right: bool,
    min_panel: u16,
}

const COLS: [Col; 11] = [
    Col { head: "", width: 2, right: false, min_panel: 0 },
    Col { head: "id", width: 4, right: false, min_panel: 0 },
    Col { head: "pid", width: 8, right: false, min_panel: 70 },
    Col { head: "role", width: 10, right: false, min_panel: 0 },
    Col { head: "term", width: 5, right: true, min_panel: 0 },
    Col { head: "vote", width: 5, right: true, min_panel: 64 },
    Col { head: "ldr", width: 4, right: true, min_panel: 0 },
    Col { head: "commit", width: 7, right: true, min_panel: 0 },
    Col { head: "applied", width: 8, right: true, min_panel: 76 },
    Col { head: "last", width: 7, right: true, min_panel: 0 },
    Col { head: "snap", width: 6, right: true, min_panel: 72 },
];

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl Widget for NodesPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = frame("nodes", self.framed);
        let inner = block.inner(area);
        block.render(area, buf);
        // Unframed, the block's title sits on the header row: start the header after it.
        let (inner, head_y) = if self.framed {
            (Rect { y: inner.y + 1, height: inner.height.saturating_sub(1), ..inner }, inner.y)
        } else {
            (Rect { y: area.y + 1, height: area.height.saturating_sub(1), ..area }, area.y)
        };
        let cols: Vec<&Col> = COLS.iter().filter(|c| inner.width >= c.min_panel).collect();
        let fixed: u16 = cols.iter().map(|c| c.width).sum();
        // A longer bar says no more: the rest of a wide row stays empty.
        let timer_w = inner.width.saturating_sub(fixed + 1).min(40);
        // Header (unframed: after the block title).
        let mut x = inner.x;
        let skip = if self.framed { 0 } else { 7 };
        for c in &cols {
            if x >= inner.x + skip {
                put(buf, x, head_y, c.width, c.head, theme::HEADER, c.right);
            }
            x += c.width;
        }
        if timer_w >= 8 {
            let head = if timer_w >= 15 { "election timer" } else { "timer" };
            put(buf, x + 1, head_y, timer_w, head, theme::HEADER, false);
        }
        let now = self.app.now;
        for (row, n) in self.app.visible().enumerate() {
            let y = inner.y + row as u16;
            if y >= inner.y + inner.height {
                break;
            }
            let shown = n.shown(now);
            let st = n.status.as_ref();
            let mut x = inner.x;
            let selected = n.id == self.app.selected;
            for c in &cols {
                let (text, style) = match c.head {
                    "" => (if selected { "▶" } else { " " }.to_string(), theme::KEY),
                    "id" => (
                        format!("n{}", n.id),
                        if selected { theme::SELECTED } else { Style::new() },
                    ),
                    "pid" => (opt(n.pid().map(u64::from)), theme::DIM),
                    "role" => (shown.label().to_string(), theme::role(shown)),
                    "term" => (opt(st.map(|s| s.term)), Style::new()),
                    "vote" => (opt(st.and_then(|s| s.voted_for)), Style::new()),
                    "ldr" => (opt(st.and_then(|s| s.leader)), Style::new()),
                    "commit" => (opt(st.map(|s| s.commit_index)), Style::new()),
                    "applied" => (opt(st.map(|s| s.applied_index)), Style::new()),
                    "last" => (opt(st.map(|s| s.last_log_index)), Style::new()),
                    _ => (opt(st.map(|s| s.snapshot_index)), Style::new()),
                };
                // Stale numbers of a node that is not answering are dimmed.
                let style = if matches!(shown, Shown::Unresponsive | Shown::Paused)
                    && !matches!(c.head, "" | "id" | "role")
                {
                    theme::DIM
                } else {
                    style
                };
                put(buf, x, y, c.width, &text, style, c.right);
                x += c.width;
            }
            if timer_w >= 4 {
                render_timer(n, now, shown, Rect { x: x + 1, y, width: timer_w, height: 1 }, buf);
            }
        }
    }
}

/// Writes `text` into a `width`-wide cell, cut to fit, one space kept on the right side.
fn put(buf: &mut Buffer, x: u16, y: u16, width: u16, text: &str, style: Style, right: bool) {
    let w = width.saturating_sub(1) as usize;
    let len = text.chars().count().min(w);
    let x = if right { x + (w - len) as u16 } else { x };
    buf.set_stringn(x, y, text, len, style);
}

fn render_timer(n: &NodeView, now: u64, shown: Shown, area: Rect, buf: &mut Buffer) {
    let mut x = area.x;
    let mut w = area.width;
    if n.isolated {
        buf.set_string(x, area.y, "✂ ", theme::role(Shown::Paused));
        x += 2;
        w = w.saturating_sub(2);
    }
    let text = |buf: &mut Buffer, s: &str, style| buf.set_stringn(x, area.y, s, w as usize, style);
    match shown {
        Shown::Leader => {
            let s = if w >= 22 { "♥ leading: heartbeats" } else { "♥ leading" };
            text(buf, s, theme::role(Shown::Leader));
            return;
        }
        Shown::Down => {
            let why = match &n.proc {
                Proc::Down { why } => why.as_str(),
                _ => "",
            };
            let restart = if n.restart_at.is_some() { ", restart…" } else { "" };
            text(buf, &format!("{why}{restart}"), theme::DIM);
            return;
        }
        Shown::Paused => {
            text(buf, if w >= 20 { "SIGSTOP: timer frozen" } else { "frozen" }, theme::DIM);
            return;
        }
        Shown::Unresponsive => {
            text(buf, &format!("? {}", n.fail_reason), theme::DIM);
            return;
        }
        Shown::Starting | Shown::Left | Shown::Joining => return,
        _ => {}
    }
    if n.removing {
        text(buf, "leaving…", theme::DIM);
        return;
    }
    let Some((elapsed, timeout)) = n.election_timer(now) else { return };
    let label = format!(" {elapsed}/{timeout}");
    let label_w = label.chars().count() as u16;
    let (bar_w, show_label) = if w >= 16 { (w - label_w, true) } else { (w, false) };
    let frac = elapsed as f64 / timeout.max(1) as f64;
    let style = match frac {
        f if f < 0.5 => theme::TIMER_LOW,
        f if f < 0.8 => theme::TIMER_MID,
        _ => theme::TIMER_HIGH,
    };
    let eighths = (frac * f64::from(bar_w) * 8.0).round() as u16;
    let (full, part) = (eighths / 8, eighths % 8);
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let mut bar = "█".repeat(full.min(bar_w) as usize);
    if full < bar_w && part > 0 {
        bar += PARTS[part as usize];
    }
    let filled = bar.chars().count() as u16;
    buf.set_string(x, area.y, &bar, style);
    let rest = "░".repeat(bar_w.saturating_sub(filled) as usize);
    buf.set_string(x + filled, area.y, rest, theme::DIM);
    if show_label {
        buf.set_string(x + bar_w, area.y, label, theme::DIM);
    }
}
