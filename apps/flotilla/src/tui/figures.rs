//! Running figures: writes/s (committed entries per second, with a sparkline), commit
//! latency of the built-in write load, elections so far, failover times.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Sparkline, Widget};

use super::app::App;
use super::theme;

pub struct FiguresPanel<'a> {
    pub app: &'a App,
}

fn ms(us: u32) -> String {
    format!("{:.1}", f64::from(us) / 1000.0)
}

impl Widget for FiguresPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::new()
            .borders(Borders::ALL)
            .border_style(theme::BORDER)
            .title(Span::styled(" figures ", theme::HEADER));
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.height == 0 {
            return;
        }
        let app = self.app;
        let f = &app.figures;
        let c = &app.cluster;
        let mut lines: Vec<Line> = Vec::new();
        let load = if app.load_on { "load on" } else { "w: load" };
        lines.push(Line::from(vec![
            Span::raw("writes/s "),
            Span::styled(format!("{:<6}", f.writes_per_sec()), theme::FIGURE),
            Span::styled(load, if app.load_on { theme::OK } else { theme::DIM }),
        ]));
        // The sparkline takes the second row (two when there is room).
        let spark_h: u16 = if inner.height >= 9 { 2 } else { 1 };
        let mut rest: Vec<Line> = Vec::new();
        match (f.latency_percentile(0.5), f.latency_percentile(0.99)) {
            (Some(p50), Some(p99)) => rest.push(Line::from(vec![
                Span::raw("commit p50 "),
                Span::styled(ms(p50), theme::FIGURE),
                Span::raw(" p99 "),
                Span::styled(ms(p99), theme::FIGURE),
                Span::raw(" ms"),
            ])),
            _ => rest.push(Line::styled("latency: load off", theme::DIM)),
        }
        rest.push(Line::from(vec![
            Span::raw("elections "),
            Span::styled(c.elections.to_string(), theme::FIGURE),
            Span::raw("  term "),
            Span::styled(c.leader_term.to_string(), theme::FIGURE),
        ]));
        match &c.leaderless {
            Some(l) => rest.push(Line::from(vec![
                Span::styled("no leader for ", theme::BAD),
                Span::styled(format!("{} ms", app.now.saturating_sub(l.since)), theme::BAD),
            ])),
            None => rest.push(Line::from(vec![
                Span::raw("last failover "),
                Span::styled(
                    c.failovers.back().map_or("-".into(), |v| format!("{v} ms")),
                    theme::FIGURE,
                ),
            ])),
        }
        if !c.failovers.is_empty() {
            let avg = c.failovers.iter().sum::<u64>() / c.failovers.len() as u64;
            let max = c.failovers.iter().max().copied().unwrap_or(0);
            rest.push(Line::from(vec![
                Span::raw(format!("failovers {} avg ", c.failovers.len())),
                Span::styled(format!("{avg}"), theme::FIGURE),
                Span::raw(" max "),
                Span::styled(format!("{max}"), theme::FIGURE),
                Span::raw(" ms"),
            ]));
            let recent: Vec<String> =
                c.failovers.iter().rev().take(6).map(|v| v.to_string()).collect();
            rest.push(Line::styled(format!("  {}", recent.join(" ")), theme::DIM));
        }
        if let Some(g) = c.last_gap_ms {
            rest.push(Line::from(vec![
                Span::raw("last gap "),
                Span::styled(format!("{g} ms"), theme::FIGURE),
            ]));
        }
        if f.dropped_events > 0 {
            rest.push(Line::styled(format!("dropped events {}", f.dropped_events), theme::BAD));
        }
        lines[0].clone().render(Rect { height: 1, ..inner }, buf);
        let spark_area =
            Rect { y: inner.y + 1, height: spark_h.min(inner.height.saturating_sub(1)), ..inner };
        let data: Vec<u64> =
            f.rate.iter().rev().take(inner.width as usize).rev().copied().collect();
        Sparkline::default().data(&data).style(theme::SPARK).render(spark_area, buf);
        let first = spark_area.y + spark_area.height;
        for (y, l) in (first..inner.y + inner.height).zip(rest) {
            l.render(Rect { y, height: 1, ..inner }, buf);
        }
    }
}
