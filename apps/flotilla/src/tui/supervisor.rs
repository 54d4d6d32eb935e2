//! The process supervisor: one long-lived thread owns the lead's `Launcher` and with it
//! every child process. Children are spawned from this thread because `PR_SET_PDEATHSIG`
//! fires when the *spawning thread* exits; it lives as long as the TUI. It also reaps
//! children that exit on their own and reports what happened as `AppEvent::Proc`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::app::{AppEvent, ProcEvent};
use super::wire::now_ms;
use crate::launcher::{Launcher, NodeSpec};

/// Pids of every child alive, for the panic hook (which cannot reach the supervisor).
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn track(pid: u32, alive: bool) {
    if let Ok(mut c) = CHILDREN.lock() {
        if alive {
            c.insert(pid);
        } else {
            c.remove(&pid);
        }
    }
}

/// SIGKILLs every child still alive. For the panic hook: never blocks (a poisoned or held
/// lock means PDEATHSIG has to do it).
pub fn kill_all_children_now() {
    if let Ok(c) = CHILDREN.try_lock() {
        for pid in c.iter() {
            // SAFETY: plain kill(2) on pids we started.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGCONT);
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

pub enum SupCmd {
    Kill(u64),
    /// SIGTERM; the exit is reaped like any other.
    Stop(u64),
    Pause(u64),
    Resume(u64),
    Restart(u64),
    /// Start a new node that joins the running cluster through `join` (an API URL).
    Add {
        spec: NodeSpec,
        join: String,
    },
    /// Kill every node, reap them all, answer, and end the thread.
    StopAll(Sender<()>),
}

/// Starts the supervisor thread; it starts every node at once.
pub fn spawn(
    mut launcher: Launcher,
    log_dir: PathBuf,
    tx: Sender<AppEvent>,
) -> (Sender<SupCmd>, thread::JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(64);
    let handle = thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            let ids: Vec<u64> = launcher.specs.keys().copied().collect();
            for id in ids {
                start(&mut launcher, id, None, &tx);
            }
            run(&mut launcher, &log_dir, &cmd_rx, &tx);
        })
        .expect("spawn supervisor");
    (cmd_tx, handle)
}

fn start(l: &mut Launcher, id: u64, join: Option<&str>, tx: &Sender<AppEvent>) {
    let ev = match l.start(id, join) {
        Ok(pid) => {
            track(pid, true);
            ProcEvent::Started { id, pid, at: now_ms() }
        }
        Err(e) => ProcEvent::Failed { id, at: now_ms(), error: format!("n{id}: {e:#}") },
    };
    let _ = tx.send(AppEvent::Proc(ev));
}

fn kill(l: &mut Launcher, id: u64, tx: &Sender<AppEvent>) {
    let Some(pid) = l.pid(id) else { return };
    // The moment the trigger is pulled (reaping the child afterwards takes a while on a
    // busy machine and must not count towards the failover).
    let at = now_ms();
    let ev = match l.kill9(id) {
        Ok(()) => {
            track(pid, false);
            ProcEvent::Killed { id, pid, at }
        }
        Err(e) => ProcEvent::Failed { id, at: now_ms(), error: format!("kill n{id}: {e:#}") },
    };
    let _ = tx.send(AppEvent::Proc(ev));
}

fn run(l: &mut Launcher, log_dir: &Path, rx: &Receiver<SupCmd>, tx: &Sender<AppEvent>) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(SupCmd::Kill(id)) => kill(l, id, tx),
            Ok(SupCmd::Stop(id)) => {
                if let Err(e) = l.stop(id) {
                    let error = format!("stop n{id}: {e:#}");
                    let _ = tx.send(AppEvent::Proc(ProcEvent::Failed { id, at: now_ms(), error }));
                }
            }
            Ok(SupCmd::Pause(id)) => {
                let ev = match l.pause(id) {
                    Ok(()) => ProcEvent::Paused { id, at: now_ms() },
                    Err(e) => ProcEvent::Failed { id, at: now_ms(), error: format!("{e:#}") },
                };
                let _ = tx.send(AppEvent::Proc(ev));
            }
            Ok(SupCmd::Resume(id)) => {
                let ev = match l.resume(id) {
                    Ok(()) => ProcEvent::Resumed { id, at: now_ms() },
                    Err(e) => ProcEvent::Failed { id, at: now_ms(), error: format!("{e:#}") },
                };
                let _ = tx.send(AppEvent::Proc(ev));
            }
            Ok(SupCmd::Restart(id)) => {
                kill(l, id, tx);
                start(l, id, None, tx);
            }
            Ok(SupCmd::Add { spec, join }) => {
                let id = spec.id;
                l.add_spec(spec);
                start(l, id, Some(&join), tx);
            }
            Ok(SupCmd::StopAll(done)) => {
                stop_all(l);
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The driver is gone: take the children down with us.
            Err(RecvTimeoutError::Disconnected) => {
                stop_all(l);
                return;
            }
        }
        let pids: std::collections::BTreeMap<u64, u32> =
            l.specs.keys().filter_map(|id| l.pid(*id).map(|p| (*id, p))).collect();
        for (id, status) in l.reap() {
            use std::os::unix::process::ExitStatusExt;
            if let Some(pid) = pids.get(&id) {
                track(*pid, false);
            }
            let log_tail = last_line(&log_dir.join(format!("node-{id}.log")));
            let ev = ProcEvent::Exited {
                id,
                at: now_ms(),
                code: status.code(),
                signal: status.signal(),
                log_tail,
            };
            let _ = tx.send(AppEvent::Proc(ev));
        }
    }
}

fn stop_all(l: &mut Launcher) {
    let pids: Vec<u32> = l.specs.keys().filter_map(|id| l.pid(*id)).collect();
    l.stop_all();
    for p in pids {
        track(p, false);
    }
}

/// The last non-empty line of a node's log (why it exited, usually), at most 120 chars.
fn last_line(path: &Path) -> String {
    let Ok(text) = std::fs::read(path) else { return String::new() };
    let tail = &text[text.len().saturating_sub(4096)..];
    let s = String::from_utf8_lossy(tail);
    let line = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.chars().take(120).collect()
}
