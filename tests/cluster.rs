//! Real clusters on 127.0.0.1: elections, replication, reads, kill -9 and recovery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_tests::*;

fn elect_replicate_and_read(n: u64) {
    let c = Cluster::start(n, &[]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    // Election safety as seen from outside: one leader, every node agrees on it and its term.
    let leaders: Vec<u64> = all
        .iter()
        .filter(|id| c.status(**id).is_some_and(|s| s["role"] == "leader" && s["term"] == term))
        .copied()
        .collect();
    assert_eq!(leaders, vec![leader]);

    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..20 {
        let out = put_retry(&apis, &format!("key{i}"), &format!("value{i}"), deadline);
        assert_eq!(out, WriteOutcome::Ok, "write {i}");
    }
    // A write through a follower is redirected to the leader with the same path.
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    let r = http().put(&format!("{}/v1/kv/redirected", c.api(follower))).send("x").unwrap();
    assert_eq!(r.status().as_u16(), 307);
    let loc = r.headers().get("location").unwrap().to_str().unwrap().to_string();
    assert_eq!(loc, format!("{}/v1/kv/redirected", c.api(leader)));

    // Stale reads on every node eventually see every write (each node applies the log).
    for id in &all {
        eventually(Duration::from_secs(10), "stale reads converge", || {
            (0..20).all(|i| {
                let (st, body, idx) = get_key(&c.api(*id), &format!("key{i}"), "stale");
                st == 200 && body == format!("value{i}") && idx.is_some()
            })
        });
    }
    // Linearizable reads through any node: followers redirect, the leader answers the
    // latest value.
    for id in &all {
        let (st, body, _) = get_key(&c.api(*id), "key19", "linearizable");
        if *id == leader {
            assert_eq!((st, body.as_str()), (200, "value19"));
        } else {
            assert_eq!(st, 307, "linearizable read on follower {id} must redirect");
        }
    }
    let (st, _, idx) = get_key(&c.api(leader), "missing", "linearizable");
    assert_eq!(st, 404);
    assert!(idx.is_some(), "X-Flotilla-Index is on 404 answers too");

    // The API also speaks HTTP/2 with prior knowledge (h2c), with the same answers.
    let put = h2c_request(&c.api(leader), "PUT", "/v1/kv/h2c", "over-h2").unwrap();
    assert_eq!(put.0, 200, "h2c PUT on the leader: {put:?}");
    let got = h2c_request(&c.api(leader), "GET", "/v1/kv/h2c", "").unwrap();
    assert_eq!((got.0, got.1.as_str()), (200, "over-h2"));
    let redirected = h2c_request(&c.api(follower), "GET", "/v1/kv/h2c", "").unwrap();
    assert_eq!(redirected.0, 307, "a follower redirects an h2c read too");
    assert_eq!(redirected.2, Some(format!("{}/v1/kv/h2c", c.api(leader))));
}

/// SIGTERM stops a node gracefully (exit 0). A leader first hands leadership to its most
/// caught-up voter, so the survivors have a leader at once (the one it named, in a later
/// term) instead of after an election timeout; a follower just stops.
#[test]
fn sigterm_hands_leadership_over_then_exits_0() {
    use nix::sys::signal::Signal;
    let mut c = Cluster::start(3, &[]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    assert_eq!(put_retry(&apis, "before-term", "v", deadline), WriteOutcome::Ok);

    c.signal(leader, Signal::SIGTERM);
    let status = c.wait_exit(leader, Duration::from_secs(10)).expect("the leader exits");
    let log = c.log_of(leader);
    assert_eq!(status.code(), Some(0), "a graceful stop: {status:?}\n{log}");
    let named: u64 = log
        .lines()
        .find_map(|l| l.rsplit("node ").next()?.strip_suffix(" leads now")?.parse().ok())
        .unwrap_or_else(|| panic!("the leader handed over before it stopped:\n{log}"));
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    // The leader saw the node it named lead before it exited; the survivors agree on it,
    // in a later term.
    let mut agreed = None;
    eventually(Duration::from_secs(5), "the survivors agree on a leader", || {
        agreed = agreed_leader(&live.iter().map(|id| c.status(*id)).collect::<Vec<_>>());
        agreed.is_some()
    });
    let (now, new_term) = agreed.unwrap();
    assert_eq!(now, named);
    assert!(new_term > term);
    let (st, body, _) = get_key(&c.api(now), "before-term", "linearizable");
    assert_eq!((st, body.as_str()), (200, "v"));

    let follower = *live.iter().find(|id| **id != now).unwrap();
    c.signal(follower, Signal::SIGTERM);
    let status = c.wait_exit(follower, Duration::from_secs(10)).expect("the follower exits");
    let log = c.log_of(follower);
    assert_eq!(status.code(), Some(0), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM: stopping") && !log.contains("handing leadership"), "{log}");
}

#[test]
fn three_nodes_elect_one_leader_replicate_and_serve_reads() {
    elect_replicate_and_read(3);
}

#[test]
fn five_nodes_elect_one_leader_replicate_and_serve_reads() {
    elect_replicate_and_read(5);
}

/// Writers that record what the cluster acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(apis: Vec<String>, writers: usize, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..writers)
            .map(|w| {
                let (stop, acked, apis) = (stop.clone(), acked.clone(), apis.clone());
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Each key written once: an acknowledged value can only be lost, never
                        // legitimately overwritten.
                        let key = format!("{prefix}-{w}-{i}");
                        let deadline = Instant::now() + Duration::from_secs(2);
                        if put_retry(&apis, &key, &key, deadline) == WriteOutcome::Ok {
                            acked.lock().unwrap().insert(key.clone(), key);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load { stop, acked, threads }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.acked).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}

fn assert_all_present(c: &Cluster, node: u64, acked: &BTreeMap<String, String>) {
    eventually(Duration::from_secs(20), "every acknowledged write is readable", || {
        acked.iter().all(|(k, v)| {
            let (st, body, _) = get_key(&c.api(node), k, "stale");
            st == 200 && &body == v
        })
    });
}

#[test]
fn kill9_of_the_leader_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let load = Load::start(apis, 4, "a");
    eventually(Duration::from_secs(10), "some writes acknowledged", || load.acked_count() >= 50);

    c.kill9(leader);
    let rest: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    let (new_leader, new_term) = c.wait_leader(&rest, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    let before = load.acked_count();
    eventually(Duration::from_secs(10), "writes resume under the new leader", || {
        load.acked_count() >= before + 50
    });

    // The old leader restarts from its data dir and catches up.
    c.spawn(leader);
    let acked = load.stop();
    assert!(acked.len() >= 100);
    let last = c.status(new_leader).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(20), "old leader catches up", || {
        c.status(leader).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= last)
    });
    for id in &all {
        assert_all_present(&c, *id, &acked);
    }

    // Every node killed at once in the middle of writes, then restarted: nothing
    // acknowledged is lost.
    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let load = Load::start(apis, 4, "b");
    eventually(Duration::from_secs(10), "writes before the crash", || load.acked_count() >= 50);
    for id in &all {
        c.kill9(*id);
    }
    let acked_b = load.stop();
    for id in &all {
        c.spawn(*id);
    }
    let (leader, _) = c.wait_leader(&all, Duration::from_secs(15));
    // A linearizable read on the leader first: it must see everything acknowledged.
    for (k, v) in acked_b.iter().chain(acked.iter()) {
        let (st, body, _) = get_key(&c.api(leader), k, "linearizable");
        assert_eq!((st, &body), (200, v), "acknowledged write {k} lost after a full-cluster crash");
    }
    for id in &all {
        assert_all_present(&c, *id, &acked_b);
    }
}
