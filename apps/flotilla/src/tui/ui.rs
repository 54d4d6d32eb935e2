//! The whole screen: title, nodes, logs, timeline and figures, footer, help on top.
//! `impl Widget for &App` draws it from the model alone, so tests render it on a
//! `TestBackend` (or straight into a `Buffer`) from fixed states.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Widget};

use super::app::App;
use super::{figures, help, logs, nodes, theme, timeline};

/// Below this many rows for timeline + figures, the node and log panels drop their frames.
const MIN_BOTTOM_ROWS: u16 = 6;
/// How long an action's outcome stays in the footer.
const MESSAGE_MS: u64 = 4_000;

/// Where the panels go on a screen of `area`, for `n` visible nodes.
pub struct Areas {
    pub title: Rect,
    pub nodes: Rect,
    pub logs: Rect,
    pub timeline: Rect,
    pub figures: Rect,
    pub footer: Rect,
    /// Node and log panels are drawn with borders.
    pub framed: bool,
}

pub fn areas(area: Rect, n: u16) -> Areas {
    let framed = area.height >= 2 + 2 * (n + 3) + MIN_BOTTOM_ROWS;
    let extra = if framed { 3 } else { 1 };
    let [title, nodes, logs, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(n + extra),
        Constraint::Length(n + extra),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let fig_w = match area.width {
        0..56 => 0,
        56..80 => 24,
        80..100 => 30,
        _ => 38,
    };
    let [timeline, figures] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(fig_w)]).areas(bottom);
    Areas { title, nodes, logs, timeline, figures, footer, framed }
}

/// The number of log entries the log panel shows on a terminal `width` wide (the watchers
/// fetch that many from each node's tail).
pub fn log_blocks(width: u16) -> u16 {
    logs::blocks_for(width.saturating_sub(2))
}

/// A panel frame: full border when framed, else a title line only.
pub fn frame(title: &str, framed: bool) -> Block<'_> {
    let b = Block::new().title(Span::styled(format!(" {title} "), theme::HEADER));
    if framed { b.borders(Borders::ALL).border_style(theme::BORDER) } else { b }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let n = self.visible().count() as u16;
        let a = areas(area, n.max(1));
        render_title(self, a.title, buf);
        nodes::NodesPanel { app: self, framed: a.framed }.render(a.nodes, buf);
        logs::LogsPanel { app: self, framed: a.framed }.render(a.logs, buf);
        timeline::TimelinePanel { app: self }.render(a.timeline, buf);
        if a.figures.width > 0 {
            figures::FiguresPanel { app: self }.render(a.figures, buf);
        }
        render_footer(self, a.footer, buf);
        if self.show_help {
            help::HelpPopup.render(area, buf);
        }
    }
}

fn render_title(app: &App, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, theme::TITLE);
    let n = app.visible().count();
    let leader = match app.cluster.leader {
        Some(l) => format!("leader n{l} · term {}", app.cluster.leader_term),
        None => "NO LEADER".to_string(),
    };
    let mut left =
        format!(" flotilla │ {n} nodes │ {leader} │ elections {}", app.cluster.elections);
    if area.width >= 100 {
        left += &format!(" │ {}", app.dir);
    }
    buf.set_stringn(area.x, area.y, &left, area.width as usize, theme::TITLE);
    let mut right = String::new();
    if app.demo.is_some() {
        right += "DEMO failover ";
    }
    if app.load_on {
        right += "LOAD on ";
    }
    let rw = right.chars().count() as u16;
    if !right.is_empty() && rw + (left.chars().count() as u16) < area.width {
        buf.set_string(area.x + area.width - rw, area.y, &right, theme::TITLE);
    }
}

/// Key hints, shortest first to drop when the line is narrow.
const HINTS: [(&str, &str); 13] = [
    ("k", "kill"),
    ("p", "pause"),
    ("r", "restart"),
    ("i", "isolate"),
    ("t", "transfer"),
    ("w", "load"),
    ("?", "help"),
    ("q", "quit"),
    ("s", "snap"),
    ("a", "add"),
    ("d", "remove"),
    ("K", "kill leader"),
    ("x", "stop"),
];

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    if let Some((at, text, ok)) = &app.message
        && app.now.saturating_sub(*at) < MESSAGE_MS
    {
        let style = if *ok { theme::OK } else { theme::BAD };
        buf.set_stringn(area.x, area.y, format!(" {text}"), area.width as usize, style);
        return;
    }
    let mut spans =
        vec![Span::styled(format!(" n{} ", app.selected), theme::SELECTED), Span::raw(" ")];
    let mut used = 5 + app.selected.to_string().len();
    for (k, what) in HINTS {
        let w = k.len() + what.len() + 2;
        if used + w > area.width as usize {
            break;
        }
        spans.push(Span::styled(k, theme::KEY));
        spans.push(Span::raw(format!(" {what} ")));
        used += w;
    }
    Line::from(spans).render(area, buf);
}
