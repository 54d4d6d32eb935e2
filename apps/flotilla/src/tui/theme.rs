//! Colors and styles in one place, so panels agree (a leader is green everywhere).

use ratatui::style::{Color, Modifier, Style};

use super::app::{Shown, TimelineKind};

pub const TITLE: Style = Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD);
pub const BORDER: Style = Style::new().fg(Color::DarkGray);
pub const HEADER: Style = Style::new().fg(Color::DarkGray).add_modifier(Modifier::BOLD);
pub const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
pub const DIM: Style = Style::new().fg(Color::DarkGray);
pub const KEY: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
pub const OK: Style = Style::new().fg(Color::Green);
pub const BAD: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
pub const FIGURE: Style = Style::new().fg(Color::White).add_modifier(Modifier::BOLD);
pub const SPARK: Style = Style::new().fg(Color::Green);
pub const TIMER_LOW: Style = Style::new().fg(Color::Green);
pub const TIMER_MID: Style = Style::new().fg(Color::Yellow);
pub const TIMER_HIGH: Style = Style::new().fg(Color::Red);
pub const COMPACTED: Style = Style::new().fg(Color::DarkGray);

pub fn role(s: Shown) -> Style {
    let base = Style::new();
    match s {
        Shown::Leader => base.fg(Color::Green).add_modifier(Modifier::BOLD),
        Shown::Candidate => base.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        Shown::PreCandidate => base.fg(Color::Yellow),
        Shown::Follower => base.fg(Color::White),
        Shown::Learner => base.fg(Color::Cyan),
        Shown::Unresponsive => base.fg(Color::LightRed),
        Shown::Paused => base.fg(Color::Black).bg(Color::Magenta),
        Shown::Down => base.fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD),
        Shown::Starting | Shown::Joining | Shown::Left => base.fg(Color::DarkGray),
    }
}

/// Terms cycle through these, so neighbouring terms differ (RaftScope colors by term too).
const TERM_COLORS: [Color; 6] =
    [Color::Blue, Color::Magenta, Color::Cyan, Color::Yellow, Color::Green, Color::Red];

pub fn term_color(term: u64) -> Color {
    TERM_COLORS[(term % TERM_COLORS.len() as u64) as usize]
}

/// A committed entry: solid block in its term's color.
pub fn committed(term: u64) -> Style {
    Style::new().fg(Color::Black).bg(term_color(term))
}

/// Not committed yet: only the digit, in its term's color.
pub fn uncommitted(term: u64) -> Style {
    Style::new().fg(term_color(term)).add_modifier(Modifier::BOLD)
}

pub fn timeline(k: TimelineKind) -> Style {
    let base = Style::new();
    match k {
        TimelineKind::Election => base.fg(Color::Yellow),
        TimelineKind::Vote => base.fg(Color::Gray),
        TimelineKind::Refusal => base.fg(Color::LightRed),
        TimelineKind::Leader => base.fg(Color::Green).add_modifier(Modifier::BOLD),
        TimelineKind::StepDown => base.fg(Color::LightYellow),
        TimelineKind::Fault => base.fg(Color::Magenta),
        TimelineKind::Process => base.fg(Color::LightBlue),
        TimelineKind::Snapshot => base.fg(Color::Cyan),
        TimelineKind::Membership => base.fg(Color::LightCyan),
        TimelineKind::Info => base.fg(Color::White),
        TimelineKind::Error => base.fg(Color::Red),
    }
}
