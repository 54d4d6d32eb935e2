//! The replicated logs side by side, like RaftScope: one row per node, one cell per entry,
//! the term's last digit on the term's color; solid when committed on that node, only the
//! digit when not yet; `░` for the prefix compacted into a snapshot; `◆` a configuration
//! entry. Columns line up by index, and the window follows the tail of the longest log.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::Widget;

use super::app::{App, NodeView, Shown};
use super::theme;
use super::ui::frame;
use super::wire::EntryKind;

/// Row label: "n12 " at most.
const LABEL_W: u16 = 4;

pub struct LogsPanel<'a> {
    pub app: &'a App,
    pub framed: bool,
}

/// Entries shown for a panel `inner_width` wide.
pub fn blocks_for(inner_width: u16) -> u16 {
    inner_width.saturating_sub(LABEL_W).max(1)
}

/// The window of indexes shown: the last `blocks` up to the longest log.
pub fn window(app: &App, blocks: u16) -> (u64, u64) {
    let hi = app
        .visible()
        .filter_map(|n| {
            n.status.as_ref().map(|s| s.last_log_index).or(n.log.last().map(|e| e.index))
        })
        .max()
        .unwrap_or(0);
    let lo = hi.saturating_sub(u64::from(blocks) - 1).max(1);
    (lo, hi)
}

impl Widget for LogsPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = frame("logs: entries by term, solid = committed", self.framed);
        let inner = block.inner(area);
        block.render(area, buf);
        let inner = if self.framed {
            inner
        } else {
            Rect { y: area.y + 1, height: area.height.saturating_sub(1), ..area }
        };
        let blocks = blocks_for(inner.width);
        let (lo, hi) = window(self.app, blocks);
        let x0 = inner.x + LABEL_W;
        let mut y = inner.y;
        let max_y = inner.y + inner.height;
        // The ruler: first and last index shown, a tick every ten entries.
        if self.framed && y < max_y {
            if hi >= lo {
                for i in lo..=hi {
                    if i % 10 == 0 {
                        buf.set_string(x0 + (i - lo) as u16, y, "┊", theme::DIM);
                    }
                }
                buf.set_string(inner.x, y, format!("@{lo}"), theme::DIM);
                let right = format!("{hi}");
                let rx = (x0 + (hi - lo) as u16 + 1).saturating_sub(right.len() as u16);
                buf.set_string(rx.max(inner.x), y, right, theme::DIM);
            }
            y += 1;
        }
        let now = self.app.now;
        for n in self.app.visible() {
            if y >= max_y {
                break;
            }
            let shown = n.shown(now);
            buf.set_string(inner.x, y, format!("n{}", n.id), theme::role(shown));
            render_row(n, shown, lo, hi, Rect { x: x0, y, width: blocks, height: 1 }, buf);
            y += 1;
        }
    }
}

fn render_row(n: &NodeView, shown: Shown, lo: u64, hi: u64, area: Rect, buf: &mut Buffer) {
    let st = n.status.as_ref();
    let commit = st.map_or(0, |s| s.commit_index);
    let first = st.map_or(n.log.first().map_or(1, |e| e.index), |s| s.first_log_index.max(1));
    let last = st.map_or(n.log.last().map_or(0, |e| e.index), |s| s.last_log_index);
    // A node that is down or paused keeps its last known log, dimmed.
    let dim = matches!(shown, Shown::Down | Shown::Paused | Shown::Unresponsive);
    if last < lo && hi > 0 {
        // Its whole log is left of the window: say how far behind it is.
        let text = match last {
            0 => "(empty log)".to_string(),
            _ => format!("… ends at {last}, {} behind", hi - last),
        };
        buf.set_stringn(area.x, area.y, text, area.width as usize, theme::DIM);
        return;
    }
    let base = n.log.first().map_or(0, |e| e.index);
    for (col, i) in (lo..=hi).enumerate() {
        if col as u16 >= area.width {
            break;
        }
        let x = area.x + col as u16;
        let entry = n.log.get(i.wrapping_sub(base) as usize).filter(|e| e.index == i);
        let (sym, mut style) = match entry {
            _ if i < first && i > 0 => ("░".to_string(), theme::COMPACTED),
            Some(e) if i <= last || st.is_none() => {
                let sym = match e.kind {
                    EntryKind::Config => "◆".to_string(),
                    _ => (e.term % 10).to_string(),
                };
                let style =
                    if i <= commit { theme::committed(e.term) } else { theme::uncommitted(e.term) };
                (sym, style)
            }
            None if i <= last => ("·".to_string(), theme::DIM),
            _ => continue,
        };
        if dim {
            style = Style::new()
                .fg(style.bg.or(style.fg).unwrap_or_default())
                .add_modifier(Modifier::DIM);
        }
        buf.set_string(x, area.y, sym, style);
    }
}
