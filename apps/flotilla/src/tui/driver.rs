//! The headless half of `flotilla up`: starts the cluster (through the lead's `Launcher`,
//! on the supervisor thread), the watchers, the action workers and the write load, and
//! turns events into `update` calls and actions into work. The TUI draws a `Driver`'s
//! `App`; the end-to-end test drives one without a terminal, through the same paths.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::actions::{self, Endpoints, Load};
use super::app::{Action, App, AppEvent, Proc, update};
use super::supervisor::{self, SupCmd};
use super::watch::{self, Shared, WatchHandle};
use super::wire::now_ms;
use crate::launcher::{Launcher, local_specs};

/// The one event channel is bounded (house style: everything bounded); watchers count
/// what does not fit, keys and process reports wait for room.
pub const EVENT_QUEUE: usize = 4096;
/// How often time moves in the model.
pub const TICK: Duration = Duration::from_millis(100);
/// At most this many events are applied between two draws.
const BURST_MAX: usize = 10_000;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `flotilla` binary to run as `flotilla node`.
    pub exe: PathBuf,
    pub nodes: u64,
    pub dir: PathBuf,
    pub base_port: u16,
    /// Extra `flotilla node` arguments (`--enable-fault-injection` is always added).
    pub node_args: Vec<String>,
    pub demo: bool,
    /// Delete the nodes' data dirs first.
    pub fresh: bool,
}

pub struct Driver {
    pub app: App,
    cfg: ClusterConfig,
    tx: Sender<AppEvent>,
    rx: Receiver<AppEvent>,
    ticker: Receiver<Instant>,
    shared: Shared,
    sup: Sender<SupCmd>,
    sup_thread: Option<JoinHandle<()>>,
    http: Sender<Action>,
    load: Load,
    endpoints: Endpoints,
    watchers: BTreeMap<u64, WatchHandle>,
}

/// Refuses ports that are taken (another `flotilla up` on the same base port) with a
/// message that says what to do, instead of nodes that crash-loop.
fn check_ports_free(cfg: &ClusterConfig) -> Result<()> {
    for s in local_specs(cfg.nodes, &cfg.dir, cfg.base_port) {
        for addr in [&s.listen, &s.api] {
            if std::net::TcpListener::bind(addr.as_str()).is_err() {
                bail!(
                    "{addr} is in use (is another flotilla cluster running?); choose another --base-port"
                );
            }
        }
    }
    Ok(())
}

impl Driver {
    pub fn start(cfg: ClusterConfig) -> Result<Driver> {
        if cfg.base_port as u64 + 1000 + super::app::MAX_NODE_ID > u64::from(u16::MAX) {
            bail!("--base-port {} leaves no room for the API ports", cfg.base_port);
        }
        check_ports_free(&cfg)?;
        let specs = local_specs(cfg.nodes, &cfg.dir, cfg.base_port);
        if cfg.fresh {
            for s in &specs {
                if s.data_dir.exists() {
                    std::fs::remove_dir_all(&s.data_dir)
                        .with_context(|| format!("removing {}", s.data_dir.display()))?;
                }
            }
        }
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        let log_dir = cfg.dir.join("logs");
        let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        let shared = Shared {
            tx: tx.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            log_width: Arc::new(AtomicU64::new(100)),
        };
        let endpoints: Endpoints = Arc::new(RwLock::new(
            specs.iter().map(|s| (s.id, format!("http://{}", s.api))).collect(),
        ));
        let mut watchers = BTreeMap::new();
        for s in &specs {
            watchers.insert(s.id, watch::spawn(s.id, format!("http://{}", s.api), shared.clone()));
        }
        let mut node_args = vec!["--enable-fault-injection".to_string()];
        node_args.extend(cfg.node_args.iter().cloned());
        let ids: Vec<u64> = specs.iter().map(|s| s.id).collect();
        let mut launcher = Launcher::new(cfg.exe.clone(), specs, node_args);
        launcher.log_to(log_dir.clone());
        let (sup, sup_thread) = supervisor::spawn(launcher, log_dir, tx.clone());
        let http = actions::spawn_http_workers(endpoints.clone(), tx.clone());
        let load = Load::new(endpoints.clone(), shared.clone());
        let mut app = App::new(ids, now_ms(), &cfg.dir.display().to_string());
        if cfg.demo {
            app = app.with_demo();
        }
        Ok(Driver {
            app,
            cfg,
            tx,
            rx,
            ticker: crossbeam_channel::tick(TICK),
            shared,
            sup,
            sup_thread: Some(sup_thread),
            http,
            load,
            endpoints,
            watchers,
        })
    }

    /// A sender for the input thread (keys, resizes, signals).
    pub fn sender(&self) -> Sender<AppEvent> {
        self.tx.clone()
    }

    /// The log panel's width, so watchers fetch as many entries as it shows.
    pub fn set_log_width(&self, blocks: u16) {
        self.shared.log_width.store(u64::from(blocks.max(1)), Ordering::Relaxed);
    }

    /// Applies one event and runs the actions it asks for.
    pub fn handle(&mut self, ev: AppEvent) {
        self.app.figures.dropped_events = self.shared.dropped.load(Ordering::Relaxed);
        // The model's clock moves with ticks; a key pressed between two ticks is stamped
        // with the time it is handled, not the last tick's.
        self.app.now = self.app.now.max(now_ms());
        for a in update(&mut self.app, ev) {
            self.dispatch(a);
        }
        // Nodes that left the cluster need no watching.
        let left: Vec<u64> = self
            .app
            .nodes
            .values()
            .filter(|n| n.proc == Proc::Left && self.watchers.contains_key(&n.id))
            .map(|n| n.id)
            .collect();
        for id in left {
            self.watchers.remove(&id);
        }
    }

    /// Waits up to `timeout` for something to happen (an event or a tick), then applies
    /// everything that is waiting. Returns how many events were applied.
    pub fn pump(&mut self, timeout: Duration) -> usize {
        let first = crossbeam_channel::select! {
            recv(self.rx) -> ev => ev.ok(),
            recv(self.ticker) -> _ => Some(AppEvent::Tick(now_ms())),
            default(timeout) => None,
        };
        let Some(first) = first else { return 0 };
        self.handle(first);
        let mut n = 1;
        while n < BURST_MAX {
            match self.rx.try_recv() {
                Ok(ev) => self.handle(ev),
                Err(_) => break,
            }
            n += 1;
        }
        n
    }

    fn dispatch(&mut self, a: Action) {
        let sup = |d: &Driver, cmd| match d.sup.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err("the supervisor is busy; try again"),
            Err(TrySendError::Disconnected(_)) => Err("the supervisor has stopped"),
        };
        let sent = match &a {
            Action::Kill(id) => sup(self, SupCmd::Kill(*id)),
            Action::Stop(id) => sup(self, SupCmd::Stop(*id)),
            Action::Pause(id) => sup(self, SupCmd::Pause(*id)),
            Action::Resume(id) => sup(self, SupCmd::Resume(*id)),
            Action::Restart(id) => sup(self, SupCmd::Restart(*id)),
            Action::AddNode { id, via } => self.add_node(*id, *via),
            Action::Load(on) => {
                self.load.set(*on);
                Ok(())
            }
            Action::Isolate(_)
            | Action::Heal(_)
            | Action::Transfer { .. }
            | Action::Snapshot(_)
            | Action::RemoveNode { .. } => match self.http.try_send(a.clone()) {
                Ok(()) => Ok(()),
                Err(_) => Err("too many actions in flight; try again"),
            },
        };
        if let Err(why) = sent {
            let ev = AppEvent::ActionDone { at: now_ms(), action: a, ok: false, text: why.into() };
            // A failure report asks for no further action.
            let _ = update(&mut self.app, ev);
        }
    }

    fn add_node(&mut self, id: u64, via: u64) -> std::result::Result<(), &'static str> {
        let spec = local_specs(id, &self.cfg.dir, self.cfg.base_port).pop().ok_or("bad node id")?;
        let api = format!("http://{}", spec.api);
        let join =
            self.endpoints.read().ok().and_then(|m| m.get(&via).cloned()).ok_or("unknown node")?;
        if let Ok(mut m) = self.endpoints.write() {
            m.insert(id, api.clone());
        }
        self.watchers.insert(id, watch::spawn(id, api, self.shared.clone()));
        match self.sup.try_send(SupCmd::Add { spec, join }) {
            Ok(()) => Ok(()),
            Err(_) => Err("the supervisor is busy; try again"),
        }
    }

    /// Kills and reaps every node (waiting at most a few seconds), stops the watchers.
    pub fn shutdown(&mut self) {
        let Some(t) = self.sup_thread.take() else { return };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let stopped =
            self.sup.send_timeout(SupCmd::StopAll(done_tx), Duration::from_secs(2)).is_ok()
                && done_rx.recv_timeout(Duration::from_secs(10)).is_ok();
        if stopped {
            let _ = t.join();
        } else {
            // Never hang on the way out: the panic-hook path kills what is left.
            supervisor::kill_all_children_now();
        }
        self.watchers.clear();
        self.load.set(false);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}
