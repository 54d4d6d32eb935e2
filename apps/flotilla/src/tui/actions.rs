//! Actions that talk HTTP (faults, transfer, snapshot, membership) and the built-in write
//! load. Both run on their own threads: the screen never waits for a node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};

use super::app::{Action, AppEvent};
use super::watch::Shared;
use super::wire::now_ms;

/// Node id → API base URL (`http://127.0.0.1:8101`), shared with the load threads.
pub type Endpoints = Arc<RwLock<BTreeMap<u64, String>>>;

/// HTTP actions queued beyond this are refused (the screen says so).
pub const HTTP_QUEUE: usize = 16;
const HTTP_WORKERS: usize = 2;

pub fn spawn_http_workers(endpoints: Endpoints, tx: Sender<AppEvent>) -> Sender<Action> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Action>(HTTP_QUEUE);
    for i in 0..HTTP_WORKERS {
        let (rx, eps, tx) = (jobs_rx.clone(), endpoints.clone(), tx.clone());
        thread::Builder::new()
            .name(format!("http-action-{i}"))
            .spawn(move || http_worker(&rx, &eps, &tx))
            .expect("spawn http worker");
    }
    jobs_tx
}

fn http_worker(rx: &Receiver<Action>, eps: &Endpoints, tx: &Sender<AppEvent>) {
    // Snapshots and membership changes wait for a commit: allow them time.
    let agent = super::watch::agent(Some(Duration::from_secs(30)));
    for action in rx.iter() {
        let url = |id: u64| eps.read().ok().and_then(|m| m.get(&id).cloned()).unwrap_or_default();
        let result = match &action {
            Action::Isolate(id) => call(
                &agent,
                "POST",
                &format!("{}/v1/admin/faults", url(*id)),
                Some(json!({"isolate": true})),
            ),
            Action::Heal(id) => {
                call(&agent, "DELETE", &format!("{}/v1/admin/faults", url(*id)), None)
            }
            Action::Transfer { to, via } => call(
                &agent,
                "POST",
                &format!("{}/v1/admin/transfer-leader", url(*via)),
                Some(json!({"to": to})),
            ),
            Action::Snapshot(id) => {
                call(&agent, "POST", &format!("{}/v1/admin/snapshot", url(*id)), None)
            }
            Action::RemoveNode { id, via } => {
                call(&agent, "DELETE", &format!("{}/v1/admin/members/{id}", url(*via)), None)
            }
            _ => continue,
        };
        let (ok, text) = match result {
            Ok(v) => (true, summarize(&v)),
            Err(e) => (false, e),
        };
        let _ = tx.send(AppEvent::ActionDone { at: now_ms(), action, ok, text });
    }
}

/// One JSON call, following up to three 307 redirects to the leader.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut url = url.to_string();
    for _ in 0..4 {
        let req = ureq::http::Request::builder().method(method).uri(&url);
        let resp = match &body {
            Some(b) => agent.run(
                req.header("content-type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| e.to_string())?,
            ),
            None => agent.run(req.body(()).map_err(|e| e.to_string())?),
        };
        let mut resp = resp.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        if code == 307 {
            match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                Some(loc) => {
                    url = loc.to_string();
                    continue;
                }
                None => return Err("redirect without a location".into()),
            }
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code == 200 {
            return Ok(v);
        }
        let err = v.get("error").and_then(Value::as_str).unwrap_or("error");
        let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(format!("{code} {err} {msg}").trim().to_string());
    }
    Err("too many redirects".into())
}

fn summarize(v: &Value) -> String {
    match v {
        Value::Object(m) if m.contains_key("index") => {
            let mut s = format!("ok @{}", m["index"]);
            if let Some(b) = m.get("bytes").and_then(Value::as_u64) {
                s += &format!(", {}", super::app::human_bytes(b));
            }
            s
        }
        _ => "ok".into(),
    }
}

/// Concurrent writers: each paces itself to at most `PER_WRITER_PER_SEC` PUTs a second so
/// the demo load does not eat the two cores the nodes need.
pub const WRITERS: usize = 4;
const PER_WRITER_PER_SEC: u64 = 100;
/// Writers report every this often.
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub struct Load {
    on: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    started: bool,
    endpoints: Endpoints,
    shared: Shared,
}

impl Load {
    pub fn new(endpoints: Endpoints, shared: Shared) -> Load {
        Load {
            on: Arc::new(AtomicBool::new(false)),
            quit: Arc::new(AtomicBool::new(false)),
            started: false,
            endpoints,
            shared,
        }
    }

    pub fn set(&mut self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
        if on && !self.started {
            self.started = true;
            for w in 0..WRITERS {
                let (on, eps, sh) = (self.on.clone(), self.endpoints.clone(), self.shared.clone());
                let quit = self.quit.clone();
                thread::Builder::new()
                    .name(format!("load-{w}"))
                    .spawn(move || writer(w, &on, &quit, &eps, &sh))
                    .expect("spawn load writer");
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
    }
}

fn writer(w: usize, on: &AtomicBool, quit: &AtomicBool, eps: &Endpoints, sh: &Shared) {
    let agent = super::watch::agent(Some(Duration::from_secs(5)));
    let pace = Duration::from_micros(1_000_000 / PER_WRITER_PER_SEC);
    let mut target: Option<String> = None;
    let mut n: u64 = 0;
    let (mut ok, mut failed, mut lat) = (0u32, 0u32, Vec::new());
    let mut last_report = Instant::now();
    while !quit.load(Ordering::Relaxed) {
        if !on.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        let began = Instant::now();
        let base = target.clone().unwrap_or_else(|| {
            let all: Vec<String> =
                eps.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
            all.get((n as usize + w) % all.len().max(1)).cloned().unwrap_or_default()
        });
        n += 1;
        // A bounded key space keeps the state machine small however long the load runs.
        let url = format!("{base}/v1/kv/load-{w}-{}", n % 256);
        match put_following(&agent, &url, n) {
            Ok(leader_base) => {
                ok += 1;
                lat.push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                target = Some(leader_base);
            }
            Err(_) => {
                failed += 1;
                target = None;
                thread::sleep(Duration::from_millis(50));
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            let latencies_us = std::mem::take(&mut lat);
            sh.send(AppEvent::Writes { at: now_ms(), ok, failed, latencies_us });
            (ok, failed) = (0, 0);
            last_report = Instant::now();
        }
        if let Some(rest) = pace.checked_sub(began.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// PUT, following 307s; returns the base URL that accepted the write.
fn put_following(agent: &ureq::Agent, url: &str, n: u64) -> Result<String, String> {
    let mut url = url.to_string();
    for _ in 0..3 {
        let resp =
            agent.put(&url).send(format!("value-{n}").as_bytes()).map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => return Ok(url.split("/v1/").next().unwrap_or_default().to_string()),
            307 => {
                url = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or("redirect without location")?
                    .to_string();
            }
            c => return Err(format!("HTTP {c}")),
        }
    }
    Err("too many redirects".into())
}
