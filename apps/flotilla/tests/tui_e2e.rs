//! End to end, headless: the TUI's driver starts a real 3-node cluster through the
//! launcher, watches it over HTTP, kills the leader through the same path as the `K` key,
//! sees another leader in the model with a measured failover time, restarts the old one,
//! and on shutdown leaves no process behind.

// The binary uses all of the launcher; a test uses only what it drives.
#[allow(dead_code)]
#[path = "../src/launcher.rs"]
mod launcher;
#[allow(dead_code)]
#[path = "../src/tui/mod.rs"]
mod tui;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui::app::{AppEvent, Shown};
use tui::driver::{ClusterConfig, Driver};

/// A base port whose raft and API ports (base+1..=base+4, base+1001..=base+1004) are free.
/// Tests in this process run in parallel: each call starts its search elsewhere.
fn free_base_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 20_000 + (std::process::id() % 2_000) as u16 * 10 + call * 4_001;
    (0..400)
        // 10000..=32004: below the kernel's ephemeral range (32768 up), so no outgoing
        // connection can take a port between this check and the node's bind.
        .map(|i| start.wrapping_add(i * 17) % 21_000 + 10_000)
        .find(|b| {
            (1..=4u16).all(|id| {
                std::net::TcpListener::bind(("127.0.0.1", b + id)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", b + 1000 + id)).is_ok()
            })
        })
        .expect("no free ports")
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flotilla-tui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs the driver until `done` holds or `timeout` passes; true if it held.
fn run_until(
    d: &mut Driver,
    timeout: Duration,
    mut done: impl FnMut(&tui::app::App) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done(&d.app) {
            return true;
        }
        d.pump(Duration::from_millis(50));
    }
    done(&d.app)
}

fn press(d: &mut Driver, c: char) {
    d.handle(AppEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)));
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn all_up(app: &tui::app::App) -> bool {
    app.visible().all(|n| n.responsive(app.now))
}

#[test]
fn killing_the_leader_by_key_shows_the_new_leader_and_the_failover_time() {
    let dir = scratch_dir("kill");
    let cfg = ClusterConfig {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_flotilla")),
        nodes: 3,
        dir: dir.clone(),
        base_port: free_base_port(),
        node_args: Vec::new(),
        demo: false,
        fresh: true,
    };
    let mut d = Driver::start(cfg).expect("driver starts");
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        a.cluster.leader.is_some() && a.cluster.leaderless.is_none() && all_up(a)
    });
    assert!(ok, "no leader with every node up; timeline: {:#?}", d.app.timeline);
    let old = d.app.cluster.leader.unwrap();
    let pids: Vec<u32> = d.app.nodes.values().filter_map(|n| n.pid()).collect();
    assert_eq!(pids.len(), 3);
    assert!(d.app.cluster.elections >= 1);

    let old_pid = d.app.nodes[&old].pid().expect("the leader runs");
    press(&mut d, 'K');
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        a.cluster.leader.is_some_and(|l| l != old) && a.cluster.leaderless.is_none()
    });
    assert!(ok, "no new leader after killing n{old}; timeline: {:#?}", d.app.timeline);
    assert_eq!(d.app.nodes[&old].shown(d.app.now), Shown::Down);
    let failover = *d.app.cluster.failovers.back().expect("a failover was measured");
    // Measured from the kill to the new leader's own event: positive (the clocks agree),
    // and well under the seconds a broken election would take (timeouts are 150–300 ms).
    assert!((1..5_000).contains(&failover), "failover {failover} ms");
    assert!(d.app.timeline.iter().any(|e| e.text.contains("killed -9")));
    assert!(!alive(old_pid), "the killed leader (pid {old_pid}) is gone and reaped");

    // `r` restarts the selected node (K selected the old leader); it rejoins as a follower.
    assert_eq!(d.app.selected, old);
    press(&mut d, 'r');
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        a.nodes[&old].shown(a.now) == Shown::Follower && all_up(a)
    });
    assert!(ok, "n{old} did not come back as a follower; timeline: {:#?}", d.app.timeline);

    for e in &d.app.timeline {
        let who = e.node.map_or(String::new(), |n| format!("n{n}"));
        eprintln!("{:>6} {who:3} {}", e.at.saturating_sub(d.app.started_at), e.text);
    }
    let pids: Vec<u32> = d.app.nodes.values().filter_map(|n| n.pid()).collect();
    d.shutdown();
    for p in pids {
        assert!(!alive(p), "pid {p} outlived the driver");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn isolating_the_leader_and_pausing_a_follower_by_key_show_in_the_model() {
    let dir = scratch_dir("faults");
    let cfg = ClusterConfig {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_flotilla")),
        nodes: 3,
        dir: dir.clone(),
        base_port: free_base_port(),
        node_args: Vec::new(),
        demo: false,
        fresh: true,
    };
    let mut d = Driver::start(cfg).expect("driver starts");
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        a.cluster.leader.is_some() && a.cluster.leaderless.is_none() && all_up(a)
    });
    assert!(ok, "no leader with every node up; timeline: {:#?}", d.app.timeline);
    let old = d.app.cluster.leader.unwrap();

    // `i` on the leader: the faults API through the HTTP worker, seen back as an event.
    press(&mut d, char::from(b'0' + old as u8));
    press(&mut d, 'i');
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        a.nodes[&old].isolated && a.cluster.leader.is_some_and(|l| l != old)
    });
    assert!(ok, "isolating n{old} elected no other leader; timeline: {:#?}", d.app.timeline);
    assert_eq!(d.app.cluster.failovers.len(), 1, "an isolated leader is a failover");
    assert!(d.app.timeline.iter().any(|e| e.text == "partition: isolated"));
    press(&mut d, 'i');
    let ok = run_until(&mut d, Duration::from_secs(30), |a| {
        !a.nodes[&old].isolated && a.nodes[&old].shown(a.now) == Shown::Follower
    });
    assert!(ok, "n{old} did not heal into a follower; timeline: {:#?}", d.app.timeline);

    // `p` on a follower: SIGSTOP, shown as paused; `p` again resumes it.
    let follower =
        d.app.nodes.keys().copied().find(|id| Some(*id) != d.app.cluster.leader).unwrap();
    press(&mut d, char::from(b'0' + follower as u8));
    press(&mut d, 'p');
    assert!(run_until(&mut d, Duration::from_secs(10), |a| a.nodes[&follower].shown(a.now)
        == Shown::Paused));
    press(&mut d, 'p');
    assert!(run_until(&mut d, Duration::from_secs(10), |a| a.nodes[&follower].responsive(a.now)
        && a.nodes[&follower].shown(a.now) == Shown::Follower));
    d.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
