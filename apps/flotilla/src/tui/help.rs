//! `?`: every key, in a box over the rest.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

use super::theme;

pub const KEYS: [(&str, &str); 19] = [
    ("↑ ↓ Tab 1-9", "select a node"),
    ("k", "kill -9 the selected node"),
    ("K", "kill -9 the leader"),
    ("x", "stop it (SIGTERM: a leader hands over)"),
    ("p", "pause / resume it (SIGSTOP / SIGCONT)"),
    ("r", "restart it (start it if down)"),
    ("i", "isolate / heal it (faults API)"),
    ("t", "transfer leadership to it"),
    ("s", "snapshot it now"),
    ("a", "add a node (joins as learner, then voter)"),
    ("d", "remove it from the cluster"),
    ("w", "write load on / off"),
    ("f", "failover demo on / off"),
    ("?", "this help (any key closes)"),
    ("q Esc Ctrl-C", "stop the cluster and quit"),
    ("", ""),
    ("role", "LEADER CANDIDATE precand follower"),
    ("", "DOWN PAUSED, no answer = hung"),
    ("logs", "digit = term, solid = committed"),
];

pub struct HelpPopup;

impl Widget for HelpPopup {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let h = (KEYS.len() as u16 + 2).min(area.height);
        let w = 58.min(area.width);
        let [v] = Layout::vertical([Constraint::Length(h)]).flex(Flex::Center).areas(area);
        let [popup] = Layout::horizontal([Constraint::Length(w)]).flex(Flex::Center).areas(v);
        Clear.render(popup, buf);
        let lines: Vec<Line> = KEYS
            .iter()
            .map(|(k, what)| {
                Line::from(vec![Span::styled(format!(" {k:<13}"), theme::KEY), Span::raw(*what)])
            })
            .collect();
        Paragraph::new(lines)
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .border_style(theme::KEY)
                    .title(Span::styled(" keys ", theme::HEADER)),
            )
            .render(popup, buf);
    }
}
