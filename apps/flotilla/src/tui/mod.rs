//! `flotilla up`: launches a local cluster as child processes and watches its elections,
//! replication and failovers live (docs/tui.md).
//!
//! Structure (ratatui demo2 / bottom): [`app::App`] is the model and [`app::update`] the
//! only place it changes, fed by one bounded crossbeam channel of [`app::AppEvent`]s (key
//! input thread, per-node watchers, the process supervisor, action workers, ticks). Each
//! panel is a module with an `impl Widget`; colors live in [`theme`]. [`driver::Driver`]
//! is everything but the terminal, so tests run the real thing headless.

pub mod actions;
pub mod app;
pub mod driver;
pub mod figures;
pub mod help;
pub mod logs;
pub mod nodes;
pub mod supervisor;
pub mod theme;
pub mod timeline;
pub mod ui;
pub mod watch;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use ratatui::crossterm::event::{self, Event};

use app::AppEvent;
use driver::{ClusterConfig, Driver};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// How many nodes: 3, 5 or 7.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    pub nodes: u64,
    /// Data dir: node-ID/ per node, logs/ for their stderr.
    #[arg(long, default_value = "./.flotilla")]
    pub dir: PathBuf,
    /// Raft ports are P+id, API ports P+1000+id.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Run a scripted demo.
    #[arg(long, value_enum)]
    pub demo: Option<DemoKind>,
    /// Delete the nodes' data dirs first (a new cluster instead of the last one).
    #[arg(long)]
    pub fresh: bool,
    /// Extra arguments for every `flotilla node` (`--enable-fault-injection` is always on).
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

impl Default for UpArgs {
    fn default() -> UpArgs {
        UpArgs {
            nodes: 3,
            dir: PathBuf::from("./.flotilla"),
            base_port: 7100,
            demo: None,
            fresh: false,
            node_args: Vec::new(),
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoKind {
    /// Kill the leader every few seconds, restart it, show the measured failover times.
    Failover,
}

fn parse_nodes(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n @ (3 | 5 | 7)) => Ok(n),
        _ => Err("must be 3, 5 or 7".into()),
    }
}

impl UpArgs {
    pub fn cluster_config(&self, exe: PathBuf) -> ClusterConfig {
        ClusterConfig {
            exe,
            nodes: self.nodes,
            dir: self.dir.clone(),
            base_port: self.base_port,
            node_args: self.node_args.clone(),
            demo: self.demo == Some(DemoKind::Failover),
            fresh: self.fresh,
        }
    }
}

/// Set by SIGINT / SIGTERM / SIGHUP; the loop then stops the cluster and restores the
/// terminal.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// The real stderr while the TUI owns the screen (-1 when not redirected).
static SAVED_STDERR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Anything written to stderr while the screen is ours (a library's warning) would tear
/// the picture: send it to `DIR/logs/tui.log` until the terminal is restored.
fn redirect_stderr(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let logs = dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let Ok(f) = std::fs::OpenOptions::new().create(true).append(true).open(logs.join("tui.log"))
    else {
        return;
    };
    // SAFETY: dup/dup2 on valid descriptors; `f` stays open until dup2 has copied it.
    unsafe {
        let saved = libc::dup(2);
        if saved >= 0 && libc::dup2(f.as_raw_fd(), 2) >= 0 {
            SAVED_STDERR.store(saved, Ordering::SeqCst);
        }
    }
}

fn restore_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor dup'ed from stderr above.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}

/// At most this many frames a second (the timers move smoothly at 12).
const FRAME: Duration = Duration::from_millis(80);

pub fn run(args: UpArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut driver = Driver::start(args.cluster_config(exe))?;
    // Our hook runs after ratatui's (installed by init, which restores the terminal first):
    // kill every child, then report the panic as usual.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        supervisor::kill_all_children_now();
        restore_stderr();
        prev(info);
    }));
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    redirect_stderr(&args.dir);
    let mut terminal = ratatui::init();
    spawn_input(driver.sender());
    let result = ui_loop(&mut terminal, &mut driver);
    driver.shutdown();
    ratatui::restore();
    restore_stderr();
    if let Some(avg) = average(&driver.app.cluster.failovers) {
        let n = driver.app.cluster.failovers.len();
        println!("failovers measured: {n}, average {avg} ms");
    }
    result
}

fn average(v: &std::collections::VecDeque<u64>) -> Option<u64> {
    (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64)
}

fn spawn_input(tx: crossbeam_channel::Sender<AppEvent>) {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                let ev = match event::read() {
                    Ok(Event::Key(k)) => AppEvent::Key(k),
                    Ok(Event::Resize(..)) => AppEvent::Resize,
                    Ok(_) => continue,
                    Err(_) => AppEvent::Signal,
                };
                // Keys wait for room: none is lost.
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })
        .expect("spawn input thread");
}

fn ui_loop<B: ratatui::backend::Backend>(
    terminal: &mut ratatui::Terminal<B>,
    driver: &mut Driver,
) -> Result<()> {
    let mut last_draw: Option<Instant> = None;
    loop {
        driver.pump(FRAME);
        if SIGNALLED.load(Ordering::SeqCst) {
            driver.handle(AppEvent::Signal);
        }
        if driver.app.quit {
            return Ok(());
        }
        if last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            let mut width = 0;
            terminal
                .draw(|f| {
                    width = f.area().width;
                    f.render_widget(&driver.app, f.area());
                })
                .map_err(|e| anyhow!("drawing: {e}"))?;
            driver.set_log_width(ui::log_blocks(width));
            last_draw = Some(Instant::now());
        }
    }
}
