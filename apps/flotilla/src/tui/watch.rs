//! Watchers: per node, one thread that streams `/v1/events` (reconnecting with back-off
//! while the node is down) and one that polls `/v1/status` and the tail of `/v1/log`.
//! They only ever `try_send` into the bounded channel and count what did not fit, so a
//! slow screen never stalls them and a hung node never stalls the screen (every request
//! has a short timeout; a paused node shows as such instead).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::app::AppEvent;
use super::wire::{LogEntry, Status, now_ms, parse_event};

/// How often a node's status is asked for.
pub const STATUS_EVERY: Duration = Duration::from_millis(150);
/// A status or log answer slower than this counts as no answer.
const POLL_TIMEOUT: Duration = Duration::from_millis(400);
/// The log tail is fetched again at least this often, even when nothing seems to change.
const LOG_REFRESH_MS: u64 = 2_000;
/// Events lines longer than this are dropped (a line is a few hundred bytes).
const MAX_LINE: u64 = 64 * 1024;

/// What every watcher shares with the driver.
#[derive(Clone)]
pub struct Shared {
    pub tx: Sender<AppEvent>,
    /// Events that did not fit into the channel.
    pub dropped: Arc<AtomicU64>,
    /// How many log entries the log panel shows (set after each draw).
    pub log_width: Arc<AtomicU64>,
}

impl Shared {
    pub fn send(&self, ev: AppEvent) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(ev) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops a node's watchers (when it left the cluster, or at exit).
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
}

impl WatchHandle {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_millis(300)))
        .timeout_global(timeout)
        .build()
        .new_agent()
}

pub fn spawn(node: u64, base_url: String, shared: Shared) -> WatchHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let (s1, u1, st1) = (shared.clone(), base_url.clone(), stop.clone());
    thread::Builder::new()
        .name(format!("events-n{node}"))
        .spawn(move || events_loop(node, &u1, &s1, &st1))
        .expect("spawn events watcher");
    let st2 = stop.clone();
    thread::Builder::new()
        .name(format!("status-n{node}"))
        .spawn(move || status_loop(node, &base_url, &shared, &st2))
        .expect("spawn status watcher");
    WatchHandle { stop }
}

fn events_loop(node: u64, base: &str, sh: &Shared, stop: &AtomicBool) {
    // No overall timeout: the stream is meant to stay open. Connecting is bounded.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_millis(300)))
        .timeout_recv_response(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    let url = format!("{base}/v1/events");
    // Short at first: a starting node's first election is worth seeing.
    let mut backoff_ms = 25;
    while !stop.load(Ordering::Relaxed) {
        let resp = match agent.get(&url).call() {
            Ok(r) if r.status().as_u16() == 200 => r,
            _ => {
                thread::sleep(Duration::from_millis(backoff_ms));
                backoff_ms = (backoff_ms * 2).min(400);
                continue;
            }
        };
        backoff_ms = 25;
        sh.send(AppEvent::Stream { node, connected: true });
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let mut line = String::new();
        loop {
            line.clear();
            match (&mut reader).take(MAX_LINE).read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => {
                    // Over-long line: skip the rest of it.
                    let mut sink = Vec::new();
                    if reader.read_until(b'\n', &mut sink).unwrap_or(0) == 0 {
                        break;
                    }
                }
                Ok(_) => {
                    if let Some(e) = parse_event(&line) {
                        sh.send(AppEvent::Node(e));
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        sh.send(AppEvent::Stream { node, connected: false });
        thread::sleep(Duration::from_millis(backoff_ms));
    }
}

fn status_loop(node: u64, base: &str, sh: &Shared, stop: &AtomicBool) {
    let agent = agent(Some(POLL_TIMEOUT));
    let status_url = format!("{base}/v1/status");
    // What the last log fetch was based on: (last index, last term, commit, width).
    let mut fetched = (0, 0, 0, 0);
    let mut fetched_at = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        let result = get_json::<Status>(&agent, &status_url);
        let at = now_ms();
        let want_log = match &result {
            Ok(st) => {
                let width = sh.log_width.load(Ordering::Relaxed).clamp(1, 1000);
                let key = (st.last_log_index, st.last_log_term, st.commit_index, width);
                (key != fetched || at.saturating_sub(fetched_at) >= LOG_REFRESH_MS)
                    .then_some((key, width))
            }
            Err(_) => None,
        };
        sh.send(AppEvent::Status { node, at, result });
        if let Some((key, width)) = want_log {
            let from = key.0.saturating_sub(width - 1).max(1);
            let url = format!("{base}/v1/log?from={from}&limit={width}");
            if let Ok(entries) = get_json::<Vec<LogEntry>>(&agent, &url) {
                fetched = key;
                fetched_at = at;
                sh.send(AppEvent::Log { node, entries });
            }
        }
        if let Some(rest) = STATUS_EVERY.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// GET and parse JSON; any failure becomes a short reason for the screen.
fn get_json<T: serde::de::DeserializeOwned>(agent: &ureq::Agent, url: &str) -> Result<T, String> {
    match agent.get(url).call() {
        Ok(mut r) if r.status().as_u16() == 200 => {
            r.body_mut().read_json::<T>().map_err(|e| format!("bad answer: {e}"))
        }
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(ureq::Error::Timeout(_)) => Err("timeout".into()),
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("refused".into())
        }
        Err(e) => Err(e.to_string()),
    }
}
