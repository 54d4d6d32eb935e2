//! The clients: threads doing put / get / cas on a few keys through the HTTP API, recording
//! what they asked, when, and what they were told. Sessions are off: an unknown write is
//! never retried (a retry could apply it twice), so every unknown stays unknown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::history::{Op, Req, Res, Seen};
use super::rng::Rng;

/// A member as the clients see it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    /// `HOST:PORT` of the HTTP API.
    pub api: String,
}

/// The current members, kept up to date by the cluster controller.
pub type Members = Arc<RwLock<Vec<Member>>>;

/// A write to a key of its own (written once): must be on every node at the end if it
/// was acknowledged, and on none if it was refused.
#[derive(Clone, Debug)]
pub struct DurableWrite {
    pub key: String,
    pub value: u64,
    pub res: Res,
    pub node: Option<u64>,
    /// When the client had its answer (µs since the round began).
    pub ret_us: u64,
    /// The log index the answer gave, for an acknowledged write.
    pub index: Option<u64>,
}

#[derive(Default)]
pub struct ClientLog {
    pub ops: Vec<Op>,
    pub durable: Vec<DurableWrite>,
}

/// What one client needs.
#[derive(Clone)]
pub struct ClientCtx {
    pub id: u32,
    pub seed: u64,
    /// The round's register keys; `Op::key` indexes this.
    pub keys: Vec<String>,
    /// Prefix of this round's write-once keys.
    pub durable_prefix: String,
    /// `consistency=` for reads.
    pub reads: &'static str,
    pub t0: Instant,
    pub stop: Arc<AtomicBool>,
    pub members: Members,
    /// Source of unique values, shared by all clients of the run.
    pub values: Arc<AtomicU64>,
    /// How long one operation may keep retrying definite refusals (no leader, refused
    /// connections) before it is recorded as refused.
    pub op_timeout: Duration,
}

/// The outcome of one operation, over however many attempts it took.
#[derive(Debug)]
pub enum Outcome {
    /// 200 and its body.
    Ok(Vec<u8>),
    /// 404 `not_found` on a read.
    NotFound,
    Unknown(String),
    Refused(String),
}

/// One HTTP attempt.
enum Attempt {
    Answer {
        status: u16,
        body: Vec<u8>,
        location: Option<String>,
        retry_ms: Option<u64>,
    },
    /// The request never reached a server (connection refused, connect timeout).
    NotSent(String),
    /// Sent, but the answer was lost.
    Lost(String),
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// Whether an error happened before any byte of the request could reach the server.
fn not_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => {
            matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve)
        }
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

fn attempt(agent: &ureq::Agent, method: &str, url: &str, body: Option<&[u8]>) -> Attempt {
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("PUT", Some(b)) => agent.put(url).send(b),
        ("POST", Some(b)) => agent.post(url).content_type("application/json").send(b),
        ("DELETE", _) => agent.delete(url).call(),
        _ => return Attempt::NotSent(format!("unsupported {method}")),
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
            };
            let location = header("location");
            let retry_ms = if status == 503 { Some(100) } else { None };
            match resp.body_mut().read_to_vec() {
                Ok(body) => Attempt::Answer { status, body, location, retry_ms },
                Err(e) => Attempt::Lost(format!("answer {status} cut short: {e}")),
            }
        }
        Err(e) if not_sent(&e) => Attempt::NotSent(e.to_string()),
        Err(e) => Attempt::Lost(e.to_string()),
    }
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Runs one operation to a definite answer or an unknown one: follows redirects to the
/// leader and retries what was definitely not applied (no leader, refused connection)
/// until `timeout`. Returns the outcome and the node that gave it.
pub fn execute(
    agent: &ureq::Agent,
    members: &Members,
    rng: &mut Rng,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> (Outcome, Option<u64>) {
    let deadline = Instant::now() + timeout;
    let pick = |rng: &mut Rng| -> Option<Member> {
        let m = members.read().unwrap_or_else(|p| p.into_inner());
        (!m.is_empty()).then(|| m[rng.below(m.len() as u64) as usize].clone())
    };
    let Some(mut target) = pick(rng) else {
        return (Outcome::Refused("no members".into()), None);
    };
    let mut last;
    let mut hops = 0u32;
    loop {
        let url = format!("http://{}{path}", target.api);
        match attempt(agent, method, &url, body) {
            Attempt::Answer { status, body, location, retry_ms } => match status {
                200 => return (Outcome::Ok(body), Some(target.id)),
                404 if method == "GET" && error_code(&body) == "not_found" => {
                    return (Outcome::NotFound, Some(target.id));
                }
                307 => {
                    // Nothing was proposed: follow to the leader.
                    last = "307 not_leader".into();
                    hops += 1;
                    let api = location
                        .as_deref()
                        .and_then(|l| l.strip_prefix("http://"))
                        .and_then(|l| l.split('/').next())
                        .map(str::to_string);
                    let known = api.and_then(|a| {
                        let m = members.read().unwrap_or_else(|p| p.into_inner());
                        m.iter().find(|m| m.api == a).cloned()
                    });
                    match known {
                        Some(m) if !hops.is_multiple_of(4) => target = m,
                        _ => {
                            std::thread::sleep(Duration::from_millis(20));
                            target = pick(rng).unwrap_or(target);
                        }
                    }
                }
                503 => {
                    last = format!("503 {}", error_code(&body));
                    std::thread::sleep(Duration::from_millis(retry_ms.unwrap_or(100).min(100)));
                    target = pick(rng).unwrap_or(target);
                }
                // 504 timeout / leadership_lost, or any other server failure: unknown.
                s if s >= 500 => {
                    return (
                        Outcome::Unknown(format!("{s} {}", error_code(&body))),
                        Some(target.id),
                    );
                }
                s => {
                    return (
                        Outcome::Refused(format!("{s} {}", error_code(&body))),
                        Some(target.id),
                    );
                }
            },
            Attempt::NotSent(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(20));
                target = pick(rng).unwrap_or(target);
            }
            Attempt::Lost(e) => return (Outcome::Unknown(e), Some(target.id)),
        }
        if Instant::now() >= deadline {
            return (Outcome::Refused(format!("gave up retrying: {last}")), None);
        }
    }
}

fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Reads `key` (GET with `consistency`); `Res::Read`, or unknown/refused.
pub fn read(
    agent: &ureq::Agent,
    members: &Members,
    rng: &mut Rng,
    key: &str,
    consistency: &str,
    timeout: Duration,
) -> (Res, Option<u64>) {
    let path = format!("/v1/kv/{key}?consistency={consistency}");
    let (out, node) = execute(agent, members, rng, "GET", &path, None, timeout);
    (read_res(out), node)
}

fn read_res(out: Outcome) -> Res {
    match out {
        Outcome::Ok(body) => Res::Read { value: Some(Seen::parse(&body)) },
        Outcome::NotFound => Res::Read { value: None },
        Outcome::Unknown(why) => Res::Unknown { why },
        Outcome::Refused(why) => Res::Refused { why },
    }
}

fn write_res(out: Outcome) -> Res {
    match out {
        Outcome::Ok(_) => Res::Written,
        Outcome::NotFound => Res::Refused { why: "404".into() },
        Outcome::Unknown(why) => Res::Unknown { why },
        Outcome::Refused(why) => Res::Refused { why },
    }
}

fn cas_res(out: Outcome) -> Res {
    match out {
        Outcome::Ok(body) => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v["succeeded"].is_boolean() => Res::Cas {
                succeeded: v["succeeded"].as_bool().unwrap_or(false),
                current: v["current"].as_str().map(|s| Seen::parse(s.as_bytes())),
            },
            // Applied, but the answer cannot be read: all we know is that it is unknown.
            _ => Res::Unknown { why: "unreadable CAS answer".into() },
        },
        Outcome::NotFound => Res::Refused { why: "404".into() },
        Outcome::Unknown(why) => Res::Unknown { why },
        Outcome::Refused(why) => Res::Refused { why },
    }
}

/// The client loop: until `stop`, one operation after another.
pub fn run(ctx: ClientCtx) -> ClientLog {
    let agent = agent(Duration::from_secs(4));
    let mut rng = Rng::derive(ctx.seed, 0xC11E_0000 + u64::from(ctx.id));
    let mut log = ClientLog::default();
    let mut last_seen: Vec<Option<u64>> = vec![None; ctx.keys.len()];
    let mut durable_n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let call_us = micros_since(ctx.t0);
        if rng.percent(8) {
            durable_n += 1;
            let key = format!("{}{}-{durable_n}", ctx.durable_prefix, ctx.id);
            let value = ctx.values.fetch_add(1, Ordering::Relaxed);
            let path = format!("/v1/kv/{key}");
            let body = value.to_string();
            let (out, node) = execute(
                &agent,
                &ctx.members,
                &mut rng,
                "PUT",
                &path,
                Some(body.as_bytes()),
                ctx.op_timeout,
            );
            let ret_us = micros_since(ctx.t0);
            let index = match &out {
                Outcome::Ok(body) => {
                    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["index"].as_u64())
                }
                _ => None,
            };
            let res = write_res(out);
            log.durable.push(DurableWrite { key, value, res, node, ret_us, index });
            continue;
        }
        let k = rng.below(ctx.keys.len() as u64) as usize;
        let key = &ctx.keys[k];
        let roll = rng.below(100);
        let (req, res, node) = if roll < 40 {
            let (res, node) = read(&agent, &ctx.members, &mut rng, key, ctx.reads, ctx.op_timeout);
            (Req::Get, res, node)
        } else if roll < 70 {
            let value = ctx.values.fetch_add(1, Ordering::Relaxed);
            let body = value.to_string();
            let (out, node) = execute(
                &agent,
                &ctx.members,
                &mut rng,
                "PUT",
                &format!("/v1/kv/{key}"),
                Some(body.as_bytes()),
                ctx.op_timeout,
            );
            (Req::Put { value }, write_res(out), node)
        } else {
            let value = ctx.values.fetch_add(1, Ordering::Relaxed);
            let expected = if rng.percent(85) { last_seen[k] } else { None };
            let body = json!({
                "expected": expected.map(|e| e.to_string()),
                "value": value.to_string(),
            })
            .to_string();
            let (out, node) = execute(
                &agent,
                &ctx.members,
                &mut rng,
                "POST",
                &format!("/v1/kv/{key}/cas"),
                Some(body.as_bytes()),
                ctx.op_timeout,
            );
            (Req::Cas { expected, value }, cas_res(out), node)
        };
        match (&req, &res) {
            (_, Res::Read { value }) | (_, Res::Cas { current: value, .. }) => {
                last_seen[k] = match value {
                    Some(Seen::Ours(v)) => Some(*v),
                    _ => None,
                };
            }
            (Req::Put { value }, Res::Written) => last_seen[k] = Some(*value),
            _ => {}
        }
        let ret_us = micros_since(ctx.t0);
        log.ops.push(Op { client: ctx.id, key: k as u8, call_us, ret_us, req, res, node });
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_onto_outcomes() {
        assert_eq!(read_res(Outcome::NotFound), Res::Read { value: None });
        assert_eq!(
            read_res(Outcome::Ok(b"12".to_vec())),
            Res::Read { value: Some(Seen::Ours(12)) }
        );
        assert_eq!(write_res(Outcome::Ok(vec![])), Res::Written);
        let cas = cas_res(Outcome::Ok(br#"{"succeeded":false,"current":"5","index":3}"#.to_vec()));
        assert_eq!(cas, Res::Cas { succeeded: false, current: Some(Seen::Ours(5)) });
        let cas = cas_res(Outcome::Ok(br#"{"succeeded":true,"current":null,"index":3}"#.to_vec()));
        assert_eq!(cas, Res::Cas { succeeded: true, current: None });
        assert!(matches!(cas_res(Outcome::Ok(b"garbage".to_vec())), Res::Unknown { .. }));
    }
}
