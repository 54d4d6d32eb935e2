//! The model of the TUI and its one `update` function. Everything here is pure: events come
//! in stamped with wall-clock milliseconds, actions go out as values for the driver to run,
//! so a test can replay any sequence and look at the state (or render it).

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::wire::{EventKind, LogEntry, Ms, NodeEvent, Status};

/// At most this many timeline entries are kept (TigerBeetle: bound every queue).
pub const TIMELINE_MAX: usize = 500;
/// Seconds of history for the writes/s sparkline.
pub const RATE_HISTORY: usize = 120;
/// Failover times kept for the figures panel.
pub const FAILOVERS_MAX: usize = 20;
/// A running node whose status has not answered for this long shows as unresponsive.
pub const UNRESPONSIVE_AFTER_MS: Ms = 800;
/// A node that crashed this many times within `CRASH_WINDOW_MS` is left down.
pub const CRASH_LOOP_MAX: usize = 3;
pub const CRASH_WINDOW_MS: Ms = 30_000;
/// Delay before restarting a node that crashed on its own (the launcher's duty, DESIGN.md).
pub const RESTART_DELAY_MS: Ms = 1_000;
/// How long a removed node has to exit on its own.
pub const REMOVED_GRACE_MS: Ms = 5_000;
/// Node ids go no higher (ids are never reused; add-node stops here).
pub const MAX_NODE_ID: u64 = 9;

/// Everything that can change the model, on one channel.
#[derive(Clone, Debug)]
pub enum AppEvent {
    /// Time passes (about ten times a second): timers, the demo script, rates.
    Tick(Ms),
    Key(KeyEvent),
    /// The terminal was resized: draw again.
    Resize,
    /// A `/v1/status` poll answered, or failed (`Err` carries a short reason).
    Status {
        node: u64,
        at: Ms,
        result: Result<Status, String>,
    },
    /// The tail of a node's log (entry metadata).
    Log {
        node: u64,
        entries: Vec<LogEntry>,
    },
    /// One `/v1/events` line.
    Node(NodeEvent),
    /// A node's events stream connected or dropped.
    Stream {
        node: u64,
        connected: bool,
    },
    /// What the process supervisor did or saw.
    Proc(ProcEvent),
    /// An HTTP action (faults, transfer, snapshot, membership) finished.
    ActionDone {
        at: Ms,
        action: Action,
        ok: bool,
        text: String,
    },
    /// The write load's results over a short window.
    Writes {
        at: Ms,
        ok: u32,
        failed: u32,
        latencies_us: Vec<u32>,
    },
    /// SIGINT, SIGTERM or SIGHUP: stop the cluster and leave.
    Signal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    Started {
        id: u64,
        pid: u32,
        at: Ms,
    },
    /// We killed it (kill -9).
    Killed {
        id: u64,
        pid: u32,
        at: Ms,
    },
    Paused {
        id: u64,
        at: Ms,
    },
    Resumed {
        id: u64,
        at: Ms,
    },
    /// It exited on its own. `code` is `None` when a signal ended it. `log_tail` is the last
    /// line of its stderr log, which usually says why.
    Exited {
        id: u64,
        at: Ms,
        code: Option<i32>,
        signal: Option<i32>,
        log_tail: String,
    },
    /// A supervisor command failed (e.g. the binary could not be started).
    Failed {
        id: u64,
        at: Ms,
        error: String,
    },
}

/// Effects `update` asks for; the driver runs them off the UI thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Kill(u64),
    /// SIGTERM: a graceful stop (a leader hands leadership over first).
    Stop(u64),
    Pause(u64),
    Resume(u64),
    /// Kill if running, then start again with the same data dir.
    Restart(u64),
    Isolate(u64),
    Heal(u64),
    /// Ask `via` (the leader) to hand leadership to `to`.
    Transfer {
        to: u64,
        via: u64,
    },
    Snapshot(u64),
    /// Start a new node `id` that joins through `via`'s API.
    AddNode {
        id: u64,
        via: u64,
    },
    /// Ask `via` (the leader) to remove `id`.
    RemoveNode {
        id: u64,
        via: u64,
    },
    Load(bool),
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Kill(id) => format!("kill -9 n{id}"),
            Action::Stop(id) => format!("stop n{id} (SIGTERM)"),
            Action::Pause(id) => format!("pause n{id} (SIGSTOP)"),
            Action::Resume(id) => format!("resume n{id} (SIGCONT)"),
            Action::Restart(id) => format!("restart n{id}"),
            Action::Isolate(id) => format!("isolate n{id}"),
            Action::Heal(id) => format!("heal n{id}"),
            Action::Transfer { to, .. } => format!("transfer leadership to n{to}"),
            Action::Snapshot(id) => format!("snapshot n{id}"),
            Action::AddNode { id, .. } => format!("add node n{id}"),
            Action::RemoveNode { id, .. } => format!("remove n{id}"),
            Action::Load(on) => format!("write load {}", if *on { "on" } else { "off" }),
        }
    }
}

/// The process as the supervisor knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proc {
    /// Asked to start, no pid yet.
    Starting,
    Running {
        pid: u32,
    },
    Paused {
        pid: u32,
    },
    Down {
        why: String,
    },
    /// Removed from the cluster and exited: no longer shown.
    Left,
}

/// What a person should read in the role column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Starting,
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
    Unresponsive,
    Paused,
    Down,
    /// Running, but in no configuration yet (started with `--join`).
    Joining,
    Left,
}

impl Shown {
    pub fn label(self) -> &'static str {
        match self {
            Shown::Starting => "starting",
            Shown::Follower => "follower",
            Shown::PreCandidate => "precand",
            Shown::Candidate => "CANDIDATE",
            Shown::Leader => "LEADER",
            Shown::Learner => "learner",
            Shown::Unresponsive => "no answer",
            Shown::Paused => "PAUSED",
            Shown::Down => "DOWN",
            Shown::Joining => "joining",
            Shown::Left => "left",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: u64,
    pub proc: Proc,
    pub status: Option<Status>,
    /// When `status` was received.
    pub status_at: Ms,
    /// Since when polls fail (`None` while they answer).
    pub failing_since: Option<Ms>,
    pub fail_reason: String,
    /// The tail of its log (entry metadata), oldest first.
    pub log: Vec<LogEntry>,
    pub stream_connected: bool,
    /// Its transport drops everything (faults API).
    pub isolated: bool,
    /// Times it crashed on its own, for crash-loop detection.
    pub crashes: VecDeque<Ms>,
    /// A restart the model scheduled after a crash.
    pub restart_at: Option<Ms>,
    /// We asked the cluster to remove it.
    pub removing: bool,
    /// The cluster confirmed its removal at this time; it should exit on its own soon.
    pub removed_at: Option<Ms>,
    /// The timer was not reset between the last two polls: it runs freely (no leader is
    /// heard), so the bar may move on between polls. While heartbeats reset it every few
    /// tens of ms, moving it on would draw a sawtooth that is not there.
    pub timer_free: bool,
    /// When we last resumed it from a pause (SIGCONT).
    pub resumed_at: Option<Ms>,
}

impl NodeView {
    pub fn new(id: u64) -> NodeView {
        NodeView {
            id,
            proc: Proc::Starting,
            status: None,
            status_at: 0,
            failing_since: None,
            fail_reason: String::new(),
            log: Vec::new(),
            stream_connected: false,
            isolated: false,
            crashes: VecDeque::new(),
            restart_at: None,
            removing: false,
            removed_at: None,
            timer_free: false,
            resumed_at: None,
        }
    }

    /// We resumed it from a pause within the `gap_ms` before `at` (give or take a second
    /// of clock and delivery skew): a late tick it reports then is the pause itself.
    pub fn was_paused_within(&self, at: Ms, gap_ms: u64) -> bool {
        self.resumed_at.is_some_and(|r| r + 1_000 >= at.saturating_sub(gap_ms) && r <= at + 1_000)
    }

    pub fn pid(&self) -> Option<u32> {
        match self.proc {
            Proc::Running { pid } | Proc::Paused { pid } => Some(pid),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.proc, Proc::Running { .. })
    }

    /// Running and its status answered recently.
    pub fn responsive(&self, now: Ms) -> bool {
        self.is_running()
            && self.status.is_some()
            && self.failing_since.is_none_or(|s| now.saturating_sub(s) < UNRESPONSIVE_AFTER_MS)
            && now.saturating_sub(self.status_at) < UNRESPONSIVE_AFTER_MS * 2
    }

    /// In its own configuration (a node that is still joining knows no members yet).
    pub fn is_member(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.id == self.id))
    }

    pub fn shown(&self, now: Ms) -> Shown {
        match &self.proc {
            Proc::Left => return Shown::Left,
            Proc::Down { .. } => return Shown::Down,
            Proc::Paused { .. } => return Shown::Paused,
            Proc::Starting => return Shown::Starting,
            Proc::Running { .. } => {}
        }
        let Some(st) = &self.status else { return Shown::Starting };
        if !self.responsive(now) {
            return Shown::Unresponsive;
        }
        if st.removed {
            return Shown::Left;
        }
        if !self.is_member() {
            return Shown::Joining;
        }
        let learner = st.members.iter().any(|m| m.id == self.id && !m.voter);
        match st.role.as_str() {
            "leader" => Shown::Leader,
            "candidate" => Shown::Candidate,
            "precandidate" => Shown::PreCandidate,
            _ if learner => Shown::Learner,
            _ => Shown::Follower,
        }
    }

    /// The election timer as (elapsed, timeout) in ms, moved on by the local time since the
    /// last poll (a follower's timer runs between polls). `None` for a leader or a node
    /// that does not answer.
    pub fn election_timer(&self, now: Ms) -> Option<(Ms, Ms)> {
        let st = self.status.as_ref()?;
        if st.role == "leader" || !self.responsive(now) || st.election_timeout_ms == 0 {
            return None;
        }
        if !self.is_member() {
            return None;
        }
        let moved_on = if self.timer_free { now.saturating_sub(self.status_at) } else { 0 };
        let elapsed = st.election_elapsed_ms + moved_on;
        Some((elapsed.min(st.election_timeout_ms), st.election_timeout_ms))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineKind {
    Election,
    Vote,
    Refusal,
    Leader,
    StepDown,
    Fault,
    Process,
    Snapshot,
    Membership,
    Info,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: Ms,
    pub node: Option<u64>,
    pub kind: TimelineKind,
    pub text: String,
    /// The same thing happened this many more times since (an isolated node pre-voting
    /// every timeout is one line, not a screenful).
    pub repeats: u32,
}

/// Repeats of the same entry within this long fold into one line.
pub const REPEAT_FOLD_MS: Ms = 10_000;

/// Why the cluster has (or may have) no leader, since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaderless {
    pub since: Ms,
    pub cause: String,
    /// The leader was taken away on purpose (kill, pause, isolate): the election that
    /// follows is a failover and its duration is recorded as one.
    pub failover: bool,
    /// A status showed a new leader at this time, before its `leader_elected` event.
    pub leader_seen_at: Option<Ms>,
    /// An election for a newer term has started since (so a returning old leader is stale).
    pub election_seen: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// The leader of the highest term we know of.
    pub leader: Option<u64>,
    pub leader_term: u64,
    pub leaderless: Option<Leaderless>,
    /// Leaders elected (one per term).
    pub elections: u64,
    /// The term of the last election counted.
    pub counted_term: u64,
    /// The last "without a leader for" figure, any cause.
    pub last_gap_ms: Option<Ms>,
    /// Failover times (leader lost → new leader elected), oldest first.
    pub failovers: VecDeque<Ms>,
}

#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Committed entries per second, one value per second, oldest first.
    pub rate: VecDeque<u64>,
    /// The highest commit index seen, and at the start of the current second.
    pub commit_max: u64,
    commit_at_second: u64,
    second: Ms,
    /// Write-load results: (time, latency µs) over the last few seconds.
    pub latencies: VecDeque<(Ms, u32)>,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub dropped_events: u64,
}

impl Figures {
    /// Latency percentile (µs) over the window, if any writes completed.
    pub fn latency_percentile(&self, p: f64) -> Option<u32> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<u32> = self.latencies.iter().map(|(_, l)| *l).collect();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    pub fn writes_per_sec(&self) -> u64 {
        self.rate.back().copied().unwrap_or(0)
    }
}

/// The scripted failover demo: kill the leader, wait for the new one, restart the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Demo {
    /// Waiting for a stable cluster (leader known, every node up) for `DEMO_SETTLE_MS`.
    Settling { since: Ms },
    /// Killed `victim` at `at`; waiting for another leader.
    AwaitingLeader { victim: u64, at: Ms },
    /// A new leader is in; `victim` restarts at `restart_at`.
    Recovering { victim: u64, restart_at: Ms },
}
pub const DEMO_SETTLE_MS: Ms = 3_000;
pub const DEMO_RESTART_AFTER_MS: Ms = 2_000;
pub const DEMO_GIVE_UP_MS: Ms = 15_000;

pub struct App {
    pub now: Ms,
    pub started_at: Ms,
    pub nodes: BTreeMap<u64, NodeView>,
    pub selected: u64,
    pub timeline: VecDeque<TimelineEntry>,
    pub cluster: Cluster,
    pub figures: Figures,
    pub load_on: bool,
    pub demo: Option<Demo>,
    pub show_help: bool,
    pub quit: bool,
    /// The last action's outcome, shown in the footer for a few seconds.
    pub message: Option<(Ms, String, bool)>,
    /// Where the data lives (shown in the title).
    pub dir: String,
}

impl App {
    pub fn new(ids: impl IntoIterator<Item = u64>, now: Ms, dir: &str) -> App {
        let nodes: BTreeMap<u64, NodeView> =
            ids.into_iter().map(|id| (id, NodeView::new(id))).collect();
        let selected = nodes.keys().next().copied().unwrap_or(1);
        let mut app = App {
            now,
            started_at: now,
            nodes,
            selected,
            timeline: VecDeque::new(),
            cluster: Cluster::default(),
            figures: Figures::default(),
            load_on: false,
            demo: None,
            show_help: false,
            quit: false,
            message: None,
            dir: dir.to_string(),
        };
        // Until the first leader, the cluster is leaderless since it started.
        app.mark_leaderless(now, "start".into(), false);
        app
    }

    pub fn with_demo(mut self) -> App {
        self.demo = Some(Demo::Settling { since: self.now });
        self
    }

    /// Nodes still part of the picture (not removed).
    pub fn visible(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values().filter(|n| n.proc != Proc::Left)
    }

    fn note(&mut self, at: Ms, node: Option<u64>, kind: TimelineKind, text: impl Into<String>) {
        let text = text.into();
        // Fold a repeat of this node's latest entry.
        if let Some(last) =
            self.timeline.iter_mut().rev().find(|e| e.node == node && node.is_some())
            && last.text == text
            && at.saturating_sub(last.at) <= REPEAT_FOLD_MS
        {
            last.repeats += 1;
            return;
        }
        // Streams from different nodes interleave: keep the story in time order.
        let pos = self.timeline.iter().rposition(|e| e.at <= at).map_or(0, |p| p + 1);
        self.timeline.insert(pos, TimelineEntry { at, node, kind, text, repeats: 0 });
        while self.timeline.len() > TIMELINE_MAX {
            self.timeline.pop_front();
        }
    }

    fn say(&mut self, text: impl Into<String>, ok: bool) {
        self.message = Some((self.now, text.into(), ok));
    }

    /// The highest id ever used, plus one (ids are never reused).
    pub fn next_node_id(&self) -> u64 {
        self.nodes.keys().max().copied().unwrap_or(0) + 1
    }

    fn mark_leaderless(&mut self, since: Ms, cause: String, failover: bool) {
        match &mut self.cluster.leaderless {
            // Keep the earliest cause, but a deliberate one upgrades it to a failover.
            Some(l) => l.failover |= failover,
            None => {
                self.cluster.leaderless = Some(Leaderless {
                    since,
                    cause,
                    failover,
                    leader_seen_at: None,
                    election_seen: false,
                })
            }
        }
    }

    /// The leader has just been taken away by us (or seen gone): the clock starts.
    fn leader_lost_if(&mut self, id: u64, at: Ms, cause: String) {
        if self.cluster.leader == Some(id) {
            self.cluster.leader = None;
            self.mark_leaderless(at, cause, true);
        }
    }
}

/// The one place the model changes. Returns the actions to run.
pub fn update(app: &mut App, ev: AppEvent) -> Vec<Action> {
    let mut out = Vec::new();
    match ev {
        AppEvent::Tick(now) => {
            app.now = app.now.max(now);
            on_tick(app, &mut out);
        }
        AppEvent::Key(k) => on_key(app, k, &mut out),
        AppEvent::Resize => {}
        AppEvent::Status { node, at, result } => on_status(app, node, at, result),
        AppEvent::Log { node, entries } => {
            if let Some(n) = app.nodes.get_mut(&node) {
                n.log = entries;
            }
        }
        AppEvent::Node(e) => on_node_event(app, e),
        AppEvent::Stream { node, connected } => {
            if let Some(n) = app.nodes.get_mut(&node) {
                n.stream_connected = connected;
            }
        }
        AppEvent::Proc(p) => on_proc(app, p),
        AppEvent::ActionDone { at, action, ok, text } => on_action_done(app, at, action, ok, text),
        AppEvent::Writes { at, ok, failed, latencies_us } => {
            let f = &mut app.figures;
            f.writes_ok += u64::from(ok);
            f.writes_failed += u64::from(failed);
            f.latencies.extend(latencies_us.into_iter().map(|l| (at, l)));
            while f.latencies.front().is_some_and(|(t, _)| at.saturating_sub(*t) > 5_000)
                || f.latencies.len() > 20_000
            {
                f.latencies.pop_front();
            }
        }
        AppEvent::Signal => app.quit = true,
    }
    // Actions taken are part of the story.
    for a in &out {
        let (node, kind) = match a {
            Action::Kill(id)
            | Action::Stop(id)
            | Action::Pause(id)
            | Action::Restart(id)
            | Action::Resume(id) => (Some(*id), TimelineKind::Process),
            Action::Isolate(id) | Action::Heal(id) => (Some(*id), TimelineKind::Fault),
            _ => (None, TimelineKind::Info),
        };
        let now = app.now;
        app.note(now, node, kind, format!("» {}", a.describe()));
    }
    out
}

fn on_tick(app: &mut App, out: &mut Vec<Action>) {
    let now = app.now;
    // Writes/s: committed entries per whole second.
    let f = &mut app.figures;
    let second = now / 1000;
    if f.second == 0 {
        f.second = second;
        f.commit_at_second = f.commit_max;
    } else if second > f.second {
        let delta = f.commit_max.saturating_sub(f.commit_at_second);
        // Seconds without a tick (a stalled UI) count as zero, not as one big spike.
        for _ in f.second + 1..second {
            f.rate.push_back(0);
        }
        f.rate.push_back(delta);
        while f.rate.len() > RATE_HISTORY {
            f.rate.pop_front();
        }
        f.second = second;
        f.commit_at_second = f.commit_max;
    }
    while f.latencies.front().is_some_and(|(t, _)| now.saturating_sub(*t) > 5_000) {
        f.latencies.pop_front();
    }
    // A leader whose status stopped answering is lost (a hang the cluster will see too).
    if let Some(l) = app.cluster.leader
        && let Some(n) = app.nodes.get(&l)
        && n.is_running()
        && n.status.is_some()
        && !n.responsive(now)
    {
        let since = n.failing_since.unwrap_or(now);
        app.leader_lost_if(l, since, format!("n{l} stopped answering"));
    }
    // A leader seen only by its status (no event within a second): close the gap there.
    if let Some(seen) = app.cluster.leaderless.as_ref().and_then(|l| l.leader_seen_at)
        && now.saturating_sub(seen) >= 1_000
        && let Some(leader) = app.cluster.leader
    {
        let term = app.cluster.leader_term;
        let text = close_leaderless(&mut app.cluster, seen, term);
        app.note(seen, Some(leader), TimelineKind::Leader, text);
    }
    // A removed node exits on its own (INTERFACE.md); one that has not after a while (it
    // never learned of its removal) is stopped, so it does not linger as a ghost.
    let lingering: Vec<u64> = app
        .nodes
        .values()
        .filter(|n| n.pid().is_some())
        .filter(|n| n.removed_at.is_some_and(|t| now.saturating_sub(t) >= REMOVED_GRACE_MS))
        .map(|n| n.id)
        .collect();
    for id in lingering {
        if let Some(n) = app.nodes.get_mut(&id) {
            n.removed_at = Some(now);
        }
        app.note(now, Some(id), TimelineKind::Membership, "removed but still running: stopping it");
        out.push(Action::Kill(id));
    }
    // Restarts scheduled after a crash.
    let due: Vec<u64> = app
        .nodes
        .values()
        .filter(|n| n.restart_at.is_some_and(|t| t <= now))
        .map(|n| n.id)
        .collect();
    for id in due {
        if let Some(n) = app.nodes.get_mut(&id) {
            n.restart_at = None;
            if matches!(n.proc, Proc::Down { .. }) {
                out.push(Action::Restart(id));
            }
        }
    }
    demo_step(app, out);
}

fn demo_step(app: &mut App, out: &mut Vec<Action>) {
    let now = app.now;
    let Some(demo) = app.demo.clone() else { return };
    let next = match demo {
        Demo::Settling { since } => {
            let stable = app.cluster.leader.is_some()
                && app.cluster.leaderless.is_none()
                && app.visible().all(|n| n.responsive(now));
            match (stable, app.cluster.leader) {
                (false, _) => Demo::Settling { since: now },
                (true, Some(l)) if now.saturating_sub(since) >= DEMO_SETTLE_MS => {
                    app.note(
                        now,
                        Some(l),
                        TimelineKind::Info,
                        format!("demo: kill the leader n{l}"),
                    );
                    out.push(Action::Kill(l));
                    Demo::AwaitingLeader { victim: l, at: now }
                }
                _ => demo,
            }
        }
        Demo::AwaitingLeader { victim, at } => {
            let replaced =
                app.cluster.leader.is_some_and(|l| l != victim) && app.cluster.leaderless.is_none();
            if replaced || now.saturating_sub(at) >= DEMO_GIVE_UP_MS {
                Demo::Recovering { victim, restart_at: now + DEMO_RESTART_AFTER_MS }
            } else {
                demo
            }
        }
        Demo::Recovering { victim, restart_at } => {
            if now >= restart_at {
                out.push(Action::Restart(victim));
                Demo::Settling { since: now }
            } else {
                demo
            }
        }
    };
    app.demo = Some(next);
}

fn on_key(app: &mut App, k: KeyEvent, out: &mut Vec<Action>) {
    if k.kind == KeyEventKind::Release {
        return;
    }
    if k.modifiers.contains(KeyModifiers::CONTROL) && matches!(k.code, KeyCode::Char('c')) {
        app.quit = true;
        return;
    }
    if app.show_help {
        // Any key closes the help (q still quits).
        app.show_help = false;
        if k.code != KeyCode::Char('q') {
            return;
        }
    }
    let sel = app.selected;
    let now = app.now;
    let leader = app.cluster.leader;
    let node = app.nodes.get(&sel).cloned();
    let running = node.as_ref().is_some_and(|n| n.is_running());
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => app.quit = true,
        KeyCode::Char('?') | KeyCode::Char('h') => app.show_help = true,
        KeyCode::Up | KeyCode::BackTab => select_step(app, -1),
        KeyCode::Down | KeyCode::Tab => select_step(app, 1),
        KeyCode::Char(c @ '1'..='9') => {
            let id = u64::from(c as u8 - b'0');
            if app.nodes.get(&id).is_some_and(|n| n.proc != Proc::Left) {
                app.selected = id;
            }
        }
        KeyCode::Char('k') => match node.as_ref().and_then(NodeView::pid) {
            Some(_) => out.push(Action::Kill(sel)),
            None => app.say(format!("n{sel} is not running"), false),
        },
        KeyCode::Char('x') => match node.as_ref().and_then(NodeView::pid) {
            Some(_) => out.push(Action::Stop(sel)),
            None => app.say(format!("n{sel} is not running"), false),
        },
        KeyCode::Char('K') => match leader {
            Some(l) => {
                app.selected = l;
                out.push(Action::Kill(l));
            }
            None => app.say("no leader to kill", false),
        },
        KeyCode::Char('p') => match node.as_ref().map(|n| &n.proc) {
            Some(Proc::Running { .. }) => out.push(Action::Pause(sel)),
            Some(Proc::Paused { .. }) => out.push(Action::Resume(sel)),
            _ => app.say(format!("n{sel} is not running"), false),
        },
        KeyCode::Char('r') => {
            if let Some(n) = app.nodes.get_mut(&sel) {
                n.crashes.clear();
                n.restart_at = None;
            }
            out.push(Action::Restart(sel));
        }
        KeyCode::Char('i') => match node.as_ref().map(|n| n.isolated) {
            _ if !running => app.say(format!("n{sel} is not running"), false),
            Some(true) => out.push(Action::Heal(sel)),
            _ => out.push(Action::Isolate(sel)),
        },
        KeyCode::Char('t') => match leader {
            Some(l) if l == sel => app.say(format!("n{sel} already leads"), false),
            Some(l) => out.push(Action::Transfer { to: sel, via: l }),
            None => app.say("no leader to transfer from", false),
        },
        KeyCode::Char('s') if running => out.push(Action::Snapshot(sel)),
        KeyCode::Char('s') => app.say(format!("n{sel} is not running"), false),
        KeyCode::Char('a') => {
            let id = app.next_node_id();
            let via = leader.or_else(|| app.visible().find(|n| n.responsive(now)).map(|n| n.id));
            match via {
                _ if id > MAX_NODE_ID => app.say(format!("at most {MAX_NODE_ID} node ids"), false),
                Some(via) => {
                    app.nodes.insert(id, NodeView::new(id));
                    out.push(Action::AddNode { id, via });
                }
                None => app.say("no node answers to join through", false),
            }
        }
        KeyCode::Char('d') | KeyCode::Delete => match leader {
            Some(l) => {
                if let Some(n) = app.nodes.get_mut(&sel) {
                    n.removing = true;
                }
                out.push(Action::RemoveNode { id: sel, via: l });
            }
            None => app.say("no leader to ask", false),
        },
        KeyCode::Char('w') => {
            app.load_on = !app.load_on;
            out.push(Action::Load(app.load_on));
        }
        KeyCode::Char('f') => {
            app.demo = match app.demo {
                Some(_) => None,
                None => Some(Demo::Settling { since: now }),
            };
            let on = if app.demo.is_some() { "on" } else { "off" };
            app.say(format!("failover demo {on}"), true);
        }
        _ => {}
    }
}

fn select_step(app: &mut App, dir: i64) {
    let ids: Vec<u64> = app.visible().map(|n| n.id).collect();
    if ids.is_empty() {
        return;
    }
    let pos = ids.iter().position(|id| *id == app.selected).unwrap_or(0) as i64;
    let len = ids.len() as i64;
    app.selected = ids[((pos + dir).rem_euclid(len)) as usize];
}

fn on_status(app: &mut App, node: u64, at: Ms, result: Result<Status, String>) {
    let Some(n) = app.nodes.get_mut(&node) else { return };
    let st = match result {
        Ok(st) => st,
        Err(why) => {
            if n.failing_since.is_none() {
                n.failing_since = Some(at);
            }
            n.fail_reason = why;
            return;
        }
    };
    // An answer that was on its way when the process was killed says nothing now.
    if !matches!(n.proc, Proc::Running { .. } | Proc::Starting) {
        return;
    }
    let (role, term, commit) = (st.role.clone(), st.term, st.commit_index);
    let isolated = n.isolated;
    let since_last = at.saturating_sub(n.status_at);
    n.timer_free = n.status.as_ref().is_some_and(|prev| {
        st.election_elapsed_ms >= prev.election_elapsed_ms + since_last / 2
            && st.election_elapsed_ms >= since_last
    });
    n.status = Some(st);
    n.status_at = at;
    n.failing_since = None;
    n.fail_reason.clear();
    app.figures.commit_max = app.figures.commit_max.max(commit);
    if role != "leader" || isolated {
        return;
    }
    let c = &mut app.cluster;
    if term > c.leader_term {
        // A leader we have not heard elected yet (its event may still be on its way, or
        // the stream was down): take it now; the event, or a tick later, closes the gap.
        c.leader = Some(node);
        c.leader_term = term;
        if let Some(l) = &mut c.leaderless {
            l.leader_seen_at.get_or_insert(at);
        }
    } else if term == c.leader_term && c.leader.is_none() {
        // It answers again as leader of the same term (a short pause, a healed hang):
        // it was not lost after all, and no election happened.
        if c.leaderless.as_ref().is_some_and(|l| l.since <= at && !l.election_seen) {
            c.leader = Some(node);
            c.leaderless = None;
        }
    }
}

fn on_node_event(app: &mut App, e: NodeEvent) {
    let (at, id, term) = (e.ts_ms, e.node, e.term);
    use TimelineKind as K;
    match e.kind {
        EventKind::ElectionStarted { pre_vote: true } => {
            app.note(at, Some(id), K::Election, format!("timeout: pre-vote for t{term}"));
        }
        EventKind::ElectionStarted { pre_vote: false } => {
            app.note(at, Some(id), K::Election, format!("election for t{term}"));
            // A real election means the cluster is (about to be) without a leader.
            if term > app.cluster.leader_term {
                let lost = app.cluster.leader.take();
                let cause = match lost {
                    Some(l) => format!("n{id} stopped hearing n{l}"),
                    None => format!("n{id} started an election"),
                };
                app.mark_leaderless(at, cause, false);
                if let Some(l) = &mut app.cluster.leaderless {
                    l.election_seen = true;
                }
            }
        }
        EventKind::VoteGranted { candidate, pre_vote } => {
            let what = if pre_vote { "pre-vote" } else { "vote" };
            app.note(at, Some(id), K::Vote, format!("{what} for n{candidate}, t{term}"));
        }
        EventKind::VoteRefused { candidate, pre_vote, reason } => {
            let what = if pre_vote { "pre-vote" } else { "vote" };
            let reason = reason.replace('_', " ");
            app.note(at, Some(id), K::Refusal, format!("refused {what} to n{candidate}: {reason}"));
        }
        EventKind::LeaderElected { leader } => on_leader_elected(app, at, leader, term),
        EventKind::SteppedDown { reason } => {
            let r = reason.replace('_', " ");
            app.note(at, Some(id), K::StepDown, format!("stepped down ({r}), t{term}"));
            if app.cluster.leader == Some(id) {
                app.cluster.leader = None;
                let failover = reason == "quorum_lost";
                app.mark_leaderless(at, format!("n{id} stepped down: {r}"), failover);
            }
        }
        EventKind::RoleChanged { .. } | EventKind::Other => {}
        EventKind::MembershipChanged { index, members } => {
            let list = |v: &[u64]| v.iter().map(|i| format!("n{i}")).collect::<Vec<_>>().join(",");
            let mut text = format!("config @{index}: voters {}", list(&members.voters));
            if !members.outgoing.is_empty() {
                text += &format!(" (joint with {})", list(&members.outgoing));
            }
            if !members.learners.is_empty() {
                text += &format!(", learners {}", list(&members.learners));
            }
            // Every member reports it: show the leader's (or the first) only.
            let dup = app
                .timeline
                .iter()
                .rev()
                .take(20)
                .any(|t| t.kind == K::Membership && t.text == text);
            if !dup {
                app.note(at, Some(id), K::Membership, text);
            }
        }
        EventKind::SnapshotInstalled { index } => {
            app.note(at, Some(id), K::Snapshot, format!("installed snapshot @{index}"));
        }
        EventKind::SnapshotOfferedAgain { to, index } => {
            let text = format!("n{to} lost snapshot @{index}: offered again");
            app.note(at, Some(id), K::Snapshot, text);
        }
        EventKind::TransferStarted { to } => {
            app.note(at, Some(id), K::Leader, format!("hands leadership to n{to}"));
            if app.cluster.leader == Some(id) {
                app.mark_leaderless(at, format!("transfer n{id}→n{to}"), false);
            }
        }
        EventKind::TransferAborted { to } => {
            app.note(at, Some(id), K::Error, format!("transfer to n{to} aborted"));
        }
        EventKind::Commit { commit_index, .. } => {
            app.figures.commit_max = app.figures.commit_max.max(commit_index);
        }
        EventKind::SnapshotStarted => app.note(at, Some(id), K::Snapshot, "snapshot started"),
        EventKind::SnapshotBuilt { snapshot_index, bytes } => {
            let text = format!("snapshot built @{snapshot_index} ({})", human_bytes(bytes));
            app.note(at, Some(id), K::Snapshot, text);
        }
        EventKind::SnapshotSendStarted { to, snapshot_index, .. } => {
            let text = format!("sends snapshot @{snapshot_index} to n{to}");
            app.note(at, Some(id), K::Snapshot, text);
        }
        EventKind::SnapshotReceived { from, snapshot_index } => {
            let text = format!("received snapshot @{snapshot_index} from n{from}");
            app.note(at, Some(id), K::Snapshot, text);
        }
        EventKind::SnapshotRestored { snapshot_index } => {
            app.note(at, Some(id), K::Snapshot, format!("restored snapshot @{snapshot_index}"));
        }
        EventKind::SnapshotInstallFailed { snapshot_index, error } => {
            let text = format!("could not restore snapshot @{snapshot_index}: {error}");
            app.note(at, Some(id), K::Error, text);
        }
        EventKind::LoopStalled { gap_ms, role, cpu_ms } => {
            // A paused node reports its pause when it resumes: that is no news.
            if !app.nodes.get(&id).is_some_and(|n| n.was_paused_within(at, gap_ms)) {
                // On the CPU for most of the gap: the loop was busy; little: it did not run.
                let cpu = cpu_ms.map(|c| format!(" (on CPU {c} ms)")).unwrap_or_default();
                let text = format!("raft loop {gap_ms} ms late as {role}{cpu}: heartbeats too");
                app.note(at, Some(id), K::Error, text);
            }
        }
        EventKind::FaultsSet { faults } => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.isolated = faults.isolate;
            }
            app.note(at, Some(id), K::Fault, format!("partition: {}", faults.describe()));
            if faults.isolate {
                app.leader_lost_if(id, at, format!("n{id} isolated"));
            }
        }
        EventKind::FaultsHealed => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.isolated = false;
            }
            app.note(at, Some(id), K::Fault, "healed");
        }
    }
}

fn on_leader_elected(app: &mut App, at: Ms, leader: u64, term: u64) {
    if term < app.cluster.leader_term {
        return;
    }
    let c = &mut app.cluster;
    c.leader = Some(leader);
    c.leader_term = term;
    let text = close_leaderless(c, at, term);
    app.note(at, Some(leader), TimelineKind::Leader, text);
}

/// A leader of `term` is in: count the election and measure the time without a leader.
fn close_leaderless(c: &mut Cluster, at: Ms, term: u64) -> String {
    if term > c.counted_term {
        c.counted_term = term;
        c.elections += 1;
    }
    match c.leaderless.take() {
        Some(l) => {
            let ms = at.saturating_sub(l.since);
            c.last_gap_ms = Some(ms);
            if l.failover {
                c.failovers.push_back(ms);
                while c.failovers.len() > FAILOVERS_MAX {
                    c.failovers.pop_front();
                }
                format!("LEADER t{term} · failover {ms} ms ({})", l.cause)
            } else {
                format!("LEADER t{term} · {ms} ms without one ({})", l.cause)
            }
        }
        None => format!("LEADER t{term}"),
    }
}

fn on_proc(app: &mut App, p: ProcEvent) {
    use TimelineKind as K;
    match p {
        ProcEvent::Started { id, pid, at } => {
            let n = app.nodes.entry(id).or_insert_with(|| NodeView::new(id));
            n.proc = Proc::Running { pid };
            // A fresh process: nothing it said before counts, faults are cleared.
            n.status = None;
            n.failing_since = None;
            n.isolated = false;
            app.note(at, Some(id), K::Process, format!("started, pid {pid}"));
        }
        ProcEvent::Killed { id, pid, at } => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.proc = if n.removed_at.is_some() {
                    Proc::Left
                } else {
                    Proc::Down { why: "killed -9".into() }
                };
                n.status = None;
            }
            app.note(at, Some(id), K::Process, format!("killed -9 (pid {pid})"));
            app.leader_lost_if(id, at, format!("kill -9 n{id}"));
        }
        ProcEvent::Paused { id, at } => {
            if let Some(n) = app.nodes.get_mut(&id)
                && let Proc::Running { pid } = n.proc
            {
                n.proc = Proc::Paused { pid };
            }
            app.note(at, Some(id), K::Process, "paused (SIGSTOP)");
            app.leader_lost_if(id, at, format!("pause n{id}"));
        }
        ProcEvent::Resumed { id, at } => {
            if let Some(n) = app.nodes.get_mut(&id)
                && let Proc::Paused { pid } = n.proc
            {
                n.proc = Proc::Running { pid };
                n.resumed_at = Some(at);
                // Its last status is from before the pause: wait for a fresh one.
                n.status_at = at;
            }
            app.note(at, Some(id), K::Process, "resumed (SIGCONT)");
        }
        ProcEvent::Exited { id, at, code, signal, log_tail } => {
            let how = match (code, signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "exited".into(),
            };
            let Some(n) = app.nodes.get_mut(&id) else { return };
            n.status = None;
            if code == Some(0) && log_tail.ends_with("stopping") {
                // A graceful stop (SIGTERM or SIGINT, from `x` or from outside): down by
                // request, so no automatic restart.
                n.proc = Proc::Down { why: "stopped".into() };
                n.restart_at = None;
                app.note(at, Some(id), K::Process, "stopped gracefully (exit code 0)");
                app.leader_lost_if(id, at, format!("n{id} stopped"));
                return;
            }
            if code == Some(0) {
                // A removed node exits 0 too (INTERFACE.md): it left the cluster.
                n.proc = Proc::Left;
                app.note(at, Some(id), K::Membership, "left the cluster and exited");
                if app.selected == id {
                    select_step(app, 1);
                }
                return;
            }
            n.proc = Proc::Down { why: how.clone() };
            n.crashes.push_back(at);
            while n.crashes.front().is_some_and(|t| at.saturating_sub(*t) > CRASH_WINDOW_MS) {
                n.crashes.pop_front();
            }
            let looping = n.crashes.len() >= CRASH_LOOP_MAX;
            if !looping {
                n.restart_at = Some(at + RESTART_DELAY_MS);
            }
            let tail = if log_tail.is_empty() { String::new() } else { format!(": {log_tail}") };
            app.note(at, Some(id), K::Error, format!("crashed ({how}){tail}"));
            if looping {
                let text = format!("crashed {CRASH_LOOP_MAX}× in 30 s: left down (r restarts)");
                app.note(at, Some(id), K::Error, text);
            }
            app.leader_lost_if(id, at, format!("n{id} crashed"));
        }
        ProcEvent::Failed { id, at, error } => {
            app.note(at, Some(id), K::Error, error.clone());
            app.say(error, false);
        }
    }
}

fn on_action_done(app: &mut App, at: Ms, action: Action, ok: bool, text: String) {
    if !ok {
        if let Action::RemoveNode { id, .. } = action
            && let Some(n) = app.nodes.get_mut(&id)
        {
            n.removing = false;
        }
        app.note(at, None, TimelineKind::Error, format!("{} failed: {text}", action.describe()));
    }
    match action {
        Action::RemoveNode { id, .. } if ok => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.removed_at = Some(at);
            }
        }
        Action::Isolate(id) if ok => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.isolated = true;
            }
        }
        Action::Heal(id) if ok => {
            if let Some(n) = app.nodes.get_mut(&id) {
                n.isolated = false;
            }
        }
        _ => {}
    }
    let msg = if ok { format!("{}: {text}", action.describe()) } else { text };
    app.say(msg, ok);
}

pub fn human_bytes(b: u64) -> String {
    match b {
        0..1_024 => format!("{b} B"),
        1_024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}
