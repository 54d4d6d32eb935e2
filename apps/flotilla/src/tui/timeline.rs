//! The story so far, newest at the bottom: elections, votes and refusals with the reason,
//! leaders and how long the cluster was without one, partitions, kills, restarts,
//! snapshots and membership changes. Times are seconds since `flotilla up` started.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Widget};

use super::app::App;
use super::theme;

pub struct TimelinePanel<'a> {
    pub app: &'a App,
}

impl Widget for TimelinePanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::new()
            .borders(Borders::ALL)
            .border_style(theme::BORDER)
            .title(Span::styled(" timeline ", theme::HEADER));
        let inner = block.inner(area);
        block.render(area, buf);
        let rows = inner.height as usize;
        let skip = self.app.timeline.len().saturating_sub(rows);
        for (row, e) in self.app.timeline.iter().skip(skip).enumerate() {
            let secs = e.at.saturating_sub(self.app.started_at) as f64 / 1000.0;
            let who = e.node.map_or("   ".to_string(), |n| format!("n{n:<2}"));
            let line = Line::from(vec![
                Span::styled(format!("{secs:>7.3} "), theme::DIM),
                Span::styled(format!("{who} "), theme::FIGURE),
                Span::styled(e.text.as_str(), theme::timeline(e.kind)),
                Span::styled(
                    if e.repeats > 0 { format!(" ×{}", e.repeats + 1) } else { String::new() },
                    theme::FIGURE,
                ),
            ]);
            line.render(Rect { y: inner.y + row as u16, height: 1, ..inner }, buf);
        }
    }
}
