//! `update` on event sequences: kills, elections, failover times, the demo script, keys.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::fixtures::*;
use crate::tui::app::{
    Action, AppEvent, CRASH_LOOP_MAX, DEMO_RESTART_AFTER_MS, DEMO_SETTLE_MS, Demo, Proc, ProcEvent,
    REMOVED_GRACE_MS, RESTART_DELAY_MS, Shown, TimelineKind, update,
};
use crate::tui::wire::{EventKind, FaultsEvent};

#[test]
fn first_election_measures_time_from_cluster_start() {
    let mut a = app(3);
    elected(&mut a, 2, 1, T0 + 640);
    assert_eq!(a.cluster.leader, Some(2));
    assert_eq!(a.cluster.elections, 1);
    assert_eq!(a.cluster.last_gap_ms, Some(640));
    assert!(a.cluster.failovers.is_empty(), "starting up is not a failover");
    assert!(a.timeline.back().unwrap().text.contains("640 ms without one (start)"));
}

#[test]
fn kill_of_the_leader_then_a_new_leader_gives_the_failover_time() {
    let mut a = steady3();
    let t = a.now;
    assert_eq!(a.cluster.leader, Some(1));
    killed(&mut a, 1, t + 1_000);
    assert_eq!(a.cluster.leader, None);
    assert_eq!(a.nodes[&1].shown(a.now), Shown::Down);
    event(&mut a, 2, 3, t + 1_240, EventKind::ElectionStarted { pre_vote: false });
    elected(&mut a, 2, 3, t + 1_310);
    assert_eq!(a.cluster.leader, Some(2));
    assert_eq!(a.cluster.failovers.back(), Some(&310), "kill at +1000, leader at +1310");
    assert_eq!(a.cluster.elections, 2);
    let last = a.timeline.back().unwrap();
    assert_eq!(last.kind, TimelineKind::Leader);
    assert!(last.text.contains("failover 310 ms (kill -9 n1)"), "{}", last.text);
}

#[test]
fn killing_a_follower_is_not_a_failover() {
    let mut a = steady3();
    let t = a.now;
    killed(&mut a, 3, t + 100);
    assert_eq!(a.cluster.leader, Some(1));
    assert!(a.cluster.leaderless.is_none());
}

#[test]
fn an_election_without_a_kill_counts_but_is_no_failover() {
    let mut a = steady3();
    let t = a.now;
    event(&mut a, 3, 3, t + 100, EventKind::ElectionStarted { pre_vote: false });
    assert_eq!(a.cluster.leader, None, "a real election for a newer term ends the old leadership");
    elected(&mut a, 3, 3, t + 180);
    assert_eq!(a.cluster.last_gap_ms, Some(80));
    assert!(a.cluster.failovers.is_empty());
    assert_eq!(a.cluster.elections, 2);
}

#[test]
fn a_leader_seen_in_a_status_first_is_measured_at_its_event_and_counted_once() {
    let mut a = steady3();
    let t = a.now;
    killed(&mut a, 1, t + 100);
    // The poll sees n2 leading before its leader_elected line arrives.
    send_status(&mut a, status(2, "leader", 3, Some(2), 3), t + 450);
    assert_eq!(a.cluster.leader, Some(2));
    elected(&mut a, 2, 3, t + 420);
    assert_eq!(a.cluster.failovers.back(), Some(&320));
    assert_eq!(a.cluster.elections, 2);
    elected(&mut a, 2, 3, t + 420);
    assert_eq!(a.cluster.elections, 2, "the same term is one election");
}

#[test]
fn a_leader_seen_only_in_a_status_closes_the_gap_after_a_second() {
    let mut a = steady3();
    let t = a.now;
    killed(&mut a, 1, t + 100);
    send_status(&mut a, status(3, "leader", 3, Some(3), 3), t + 600);
    tick(&mut a, t + 1_000);
    assert!(a.cluster.leaderless.is_some(), "wait for the event a little");
    tick(&mut a, t + 1_700);
    assert!(a.cluster.leaderless.is_none());
    assert_eq!(a.cluster.failovers.back(), Some(&500));
}

#[test]
fn a_stale_status_of_a_killed_leader_does_not_bring_it_back() {
    let mut a = steady3();
    let t = a.now;
    killed(&mut a, 1, t + 100);
    // The answer to a poll sent before the kill arrives after it.
    send_status(&mut a, status(1, "leader", 2, Some(1), 3), t + 105);
    assert_eq!(a.cluster.leader, None);
    assert!(a.nodes[&1].status.is_none());
}

#[test]
fn a_short_pause_of_the_leader_without_an_election_is_no_failover() {
    let mut a = steady3();
    let t = a.now;
    update(&mut a, AppEvent::Proc(ProcEvent::Paused { id: 1, at: t + 100 }));
    assert_eq!(a.cluster.leader, None);
    assert_eq!(a.nodes[&1].shown(t + 100), Shown::Paused);
    update(&mut a, AppEvent::Proc(ProcEvent::Resumed { id: 1, at: t + 150 }));
    send_status(&mut a, status(1, "leader", 2, Some(1), 3), t + 200);
    assert_eq!(a.cluster.leader, Some(1));
    assert!(a.cluster.leaderless.is_none());
    assert!(a.cluster.failovers.is_empty());
}

#[test]
fn isolating_the_leader_starts_the_clock_and_its_own_status_does_not_stop_it() {
    let mut a = steady3();
    let t = a.now;
    let faults = FaultsEvent { isolate: true, ..FaultsEvent::default() };
    event(&mut a, 1, 2, t + 50, EventKind::FaultsSet { faults });
    assert!(a.nodes[&1].isolated);
    assert_eq!(a.cluster.leader, None);
    // Still answering HTTP, still thinking it leads.
    send_status(&mut a, status(1, "leader", 2, Some(1), 3), t + 100);
    assert_eq!(a.cluster.leader, None);
    elected(&mut a, 3, 3, t + 450);
    assert_eq!(a.cluster.failovers.back(), Some(&400));
    assert!(a.timeline.iter().any(|e| e.text.contains("partition: isolated")));
}

#[test]
fn a_hung_leader_is_lost_when_its_status_stops_answering() {
    let mut a = steady3();
    let t = a.now;
    status_fails(&mut a, 1, t + 100, "timeout");
    tick(&mut a, t + 500);
    assert_eq!(a.cluster.leader, Some(1), "one slow answer is not a hang");
    tick(&mut a, t + 1_000);
    assert_eq!(a.nodes[&1].shown(a.now), Shown::Unresponsive);
    assert_eq!(a.cluster.leader, None);
    elected(&mut a, 2, 3, t + 1_200);
    assert_eq!(a.cluster.failovers.back(), Some(&1_100), "measured from the first failed poll");
}

#[test]
fn a_crash_is_restarted_after_a_delay_until_it_loops() {
    let mut a = steady3();
    let mut t = a.now;
    for round in 0..CRASH_LOOP_MAX {
        let ev = ProcEvent::Exited {
            id: 2,
            at: t,
            code: Some(1),
            signal: None,
            log_tail: "fatal: disk".into(),
        };
        update(&mut a, AppEvent::Proc(ev));
        assert!(matches!(a.nodes[&2].proc, Proc::Down { .. }));
        let acts = tick(&mut a, t + RESTART_DELAY_MS);
        if round + 1 < CRASH_LOOP_MAX {
            assert_eq!(acts, vec![Action::Restart(2)], "round {round}");
            started(&mut a, 2, t + RESTART_DELAY_MS + 5);
        } else {
            assert!(acts.is_empty(), "a crash loop is left down");
        }
        t += 2_000;
    }
    assert!(a.timeline.iter().any(|e| e.text.contains("fatal: disk")));
}

#[test]
fn a_removed_node_that_exits_cleanly_leaves_the_picture() {
    let mut a = steady3();
    a.selected = 3;
    let acts = key(&mut a, 'd');
    assert_eq!(acts, vec![Action::RemoveNode { id: 3, via: 1 }]);
    let ev = ProcEvent::Exited {
        id: 3,
        at: a.now,
        code: Some(0),
        signal: None,
        log_tail: String::new(),
    };
    update(&mut a, AppEvent::Proc(ev));
    assert_eq!(a.nodes[&3].proc, Proc::Left);
    assert_eq!(a.visible().count(), 2);
    assert_ne!(a.selected, 3);
    let later = a.now + 5_000;
    assert!(tick(&mut a, later).is_empty(), "a clean exit is not restarted");
}

#[test]
fn a_node_stopped_with_sigterm_is_down_and_not_restarted() {
    let mut a = steady3();
    a.selected = 1;
    assert_eq!(key(&mut a, 'x'), vec![Action::Stop(1)], "x stops the selected node");
    // The leader handed over before it exited: n2 leads term 3.
    let t = a.now;
    elected(&mut a, 2, 3, t + 20);
    let ev = ProcEvent::Exited {
        id: 1,
        at: t + 30,
        code: Some(0),
        signal: None,
        log_tail: "flotilla node 1: SIGTERM: stopping".into(),
    };
    update(&mut a, AppEvent::Proc(ev));
    assert!(matches!(&a.nodes[&1].proc, Proc::Down { why } if why == "stopped"));
    assert_eq!(a.visible().count(), 3, "still a member, only stopped");
    assert_eq!(a.cluster.leader, Some(2));
    assert!(a.timeline.iter().any(|e| e.text.contains("stopped gracefully")));
    let later = a.now + 5_000;
    assert!(tick(&mut a, later).is_empty(), "a requested stop is not restarted");
    assert_eq!(key(&mut a, 'r'), vec![Action::Restart(1)]);
}

#[test]
fn keys_act_on_the_selected_node_or_the_leader() {
    let mut a = steady3();
    assert_eq!(key(&mut a, '3'), vec![]);
    assert_eq!(a.selected, 3);
    assert_eq!(key(&mut a, 'k'), vec![Action::Kill(3)]);
    assert_eq!(key(&mut a, 'p'), vec![Action::Pause(3)]);
    assert_eq!(key(&mut a, 'i'), vec![Action::Isolate(3)]);
    assert_eq!(key(&mut a, 't'), vec![Action::Transfer { to: 3, via: 1 }]);
    assert_eq!(key(&mut a, 's'), vec![Action::Snapshot(3)]);
    assert_eq!(key(&mut a, 'r'), vec![Action::Restart(3)]);
    assert_eq!(key(&mut a, 'K'), vec![Action::Kill(1)]);
    assert_eq!(a.selected, 1, "K selects the leader it kills");
    assert_eq!(key(&mut a, 'a'), vec![Action::AddNode { id: 4, via: 1 }]);
    assert_eq!(a.nodes[&4].proc, Proc::Starting);
    assert_eq!(key(&mut a, 'a'), vec![Action::AddNode { id: 5, via: 1 }], "ids are never reused");
    assert_eq!(key(&mut a, 'w'), vec![Action::Load(true)]);
    assert_eq!(key(&mut a, 'w'), vec![Action::Load(false)]);
    update(&mut a, AppEvent::Key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE)));
    assert_eq!(a.selected, 2);
    let now = a.now;
    killed(&mut a, 2, now);
    assert_eq!(key(&mut a, 'k'), vec![], "a down node cannot be killed");
    assert!(a.message.as_ref().unwrap().1.contains("not running"));
    assert!(!a.quit);
    update(&mut a, AppEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(a.quit, "Ctrl-C quits");
}

#[test]
fn every_action_taken_is_in_the_timeline() {
    let mut a = steady3();
    key(&mut a, 'K');
    assert!(a.timeline.back().unwrap().text.contains("kill -9 n1"));
}

#[test]
fn the_failover_demo_kills_the_leader_waits_for_another_then_restarts_it() {
    let mut a = steady3().with_demo();
    let t = a.now;
    let refresh = |a: &mut crate::tui::app::App, at| {
        for id in 1..=3 {
            if a.nodes[&id].is_running() {
                let mut s = a.nodes[&id]
                    .status
                    .clone()
                    .unwrap_or_else(|| status(id, "follower", 3, Some(2), 3));
                s.election_elapsed_ms = 0;
                send_status(a, s, at);
            }
        }
    };
    refresh(&mut a, t + 100);
    assert!(tick(&mut a, t + 100).is_empty());
    refresh(&mut a, t + DEMO_SETTLE_MS + 150);
    assert_eq!(tick(&mut a, t + DEMO_SETTLE_MS + 200), vec![Action::Kill(1)]);
    killed(&mut a, 1, t + DEMO_SETTLE_MS + 210);
    assert!(matches!(a.demo, Some(Demo::AwaitingLeader { victim: 1, .. })));
    elected(&mut a, 2, 3, t + DEMO_SETTLE_MS + 500);
    assert!(tick(&mut a, t + DEMO_SETTLE_MS + 600).is_empty());
    assert!(matches!(a.demo, Some(Demo::Recovering { victim: 1, .. })));
    assert_eq!(a.cluster.failovers.back(), Some(&290));
    let acts = tick(&mut a, t + DEMO_SETTLE_MS + 600 + DEMO_RESTART_AFTER_MS);
    assert_eq!(acts, vec![Action::Restart(1)]);
    assert!(matches!(a.demo, Some(Demo::Settling { .. })));
}

#[test]
fn writes_per_second_come_from_the_commit_index() {
    let mut a = steady3();
    let t = (a.now / 1000 + 1) * 1000;
    tick(&mut a, t);
    send_status(&mut a, with_log(status(1, "leader", 2, Some(1), 3), 528, 530, 2), t + 500);
    tick(&mut a, t + 1_000);
    assert_eq!(a.figures.writes_per_sec(), 500);
    tick(&mut a, t + 2_000);
    assert_eq!(a.figures.writes_per_sec(), 0);
}

#[test]
fn commit_latency_percentiles_cover_the_last_five_seconds() {
    let mut a = steady3();
    let t = a.now;
    update(
        &mut a,
        AppEvent::Writes { at: t, ok: 3, failed: 0, latencies_us: vec![9_000, 9_000, 9_000] },
    );
    update(
        &mut a,
        AppEvent::Writes {
            at: t + 4_000,
            ok: 4,
            failed: 0,
            latencies_us: vec![1_000, 2_000, 3_000, 50_000],
        },
    );
    assert_eq!(a.figures.latency_percentile(0.5), Some(9_000));
    tick(&mut a, t + 6_000);
    assert_eq!(a.figures.latency_percentile(0.5), Some(3_000));
    assert_eq!(a.figures.latency_percentile(0.99), Some(50_000));
    assert_eq!(a.figures.writes_ok, 7);
}

#[test]
fn the_timeline_stays_in_time_order_across_nodes() {
    let mut a = steady3();
    let t = a.now;
    event(&mut a, 2, 3, t + 20, EventKind::ElectionStarted { pre_vote: false });
    event(&mut a, 3, 3, t + 10, EventKind::ElectionStarted { pre_vote: true });
    let n = a.timeline.len();
    assert!(a.timeline[n - 2].at <= a.timeline[n - 1].at);
    assert_eq!(a.timeline[n - 1].node, Some(2));
}

#[test]
fn a_timer_reset_by_heartbeats_is_not_moved_on_between_polls() {
    let mut a = steady3();
    let t = a.now;
    for (i, elapsed) in [(1, 20), (2, 35), (3, 10)] {
        let mut s = a.nodes[&2].status.clone().unwrap();
        s.election_elapsed_ms = elapsed;
        send_status(&mut a, s, t + 150 * i);
    }
    let n2 = &a.nodes[&2];
    assert_eq!(n2.election_timer(n2.status_at + 100), Some((10, 220)), "no sawtooth");
    // No heartbeat since: the timer runs freely, and the bar follows it between polls.
    let mut s = a.nodes[&2].status.clone().unwrap();
    s.election_elapsed_ms = 160;
    send_status(&mut a, s, t + 600);
    let n2 = &a.nodes[&2];
    assert_eq!(n2.election_timer(n2.status_at + 40), Some((200, 220)));
}

#[test]
fn repeats_fold_into_one_timeline_line() {
    let mut a = steady3();
    let t = a.now;
    for i in 0..5 {
        event(&mut a, 3, 3, t + 250 * i, EventKind::ElectionStarted { pre_vote: true });
    }
    let last = a.timeline.back().unwrap();
    assert_eq!((last.text.as_str(), last.repeats), ("timeout: pre-vote for t3", 4));
}

#[test]
fn a_removed_node_that_does_not_exit_is_stopped_after_a_grace_period() {
    let mut a = steady3();
    a.selected = 3;
    key(&mut a, 'd');
    let t = a.now;
    let done = AppEvent::ActionDone {
        at: t,
        action: Action::RemoveNode { id: 3, via: 1 },
        ok: true,
        text: "ok".into(),
    };
    update(&mut a, done);
    assert!(tick(&mut a, t + 1_000).is_empty());
    assert_eq!(tick(&mut a, t + REMOVED_GRACE_MS), vec![Action::Kill(3)]);
    killed(&mut a, 3, t + REMOVED_GRACE_MS + 10);
    assert_eq!(a.nodes[&3].proc, Proc::Left);
}

#[test]
fn a_joining_node_shows_as_such_without_a_timer() {
    let mut a = steady3();
    let mut s = status(4, "follower", 0, None, 0);
    s.election_elapsed_ms = 9_000;
    a.nodes.insert(4, crate::tui::app::NodeView::new(4));
    let now = a.now;
    started(&mut a, 4, now);
    send_status(&mut a, s, now);
    assert_eq!(a.nodes[&4].shown(a.now), Shown::Joining);
    assert_eq!(a.nodes[&4].election_timer(a.now), None);
}

#[test]
fn the_election_timer_moves_on_between_polls_and_stops_at_the_timeout() {
    let a = steady3();
    let n3 = &a.nodes[&3];
    let (elapsed, timeout) = n3.election_timer(n3.status_at).unwrap();
    assert_eq!((elapsed, timeout), (170, 230));
    assert_eq!(n3.election_timer(n3.status_at + 30).unwrap().0, 200);
    assert_eq!(n3.election_timer(n3.status_at + 300), Some((230, 230)), "full, not beyond");
    assert_eq!(n3.election_timer(n3.status_at + 2_000), None, "no answer for long: unresponsive");
    assert_eq!(a.nodes[&1].election_timer(a.now), None, "a leader has no election timer");
}

#[test]
fn a_refused_snapshot_shows_as_an_error_with_its_reason() {
    let mut a = steady3();
    let t = a.now;
    let kind: EventKind = serde_json::from_value(serde_json::json!({
        "kind": "snapshot_install_failed", "snapshot_index": 40, "error": "bad stream", "ms": 3
    }))
    .unwrap();
    event(&mut a, 3, 2, t + 10, kind);
    let last = a.timeline.back().unwrap();
    assert_eq!(last.text, "could not restore snapshot @40: bad stream");
    assert_eq!(last.kind, TimelineKind::Error);
}

#[test]
fn a_late_raft_loop_shows_as_an_error_unless_we_paused_the_node() {
    let mut a = steady3();
    let t = a.now;
    let stalled = |gap: u64| -> EventKind {
        serde_json::from_value(serde_json::json!({
            "kind": "loop_stalled", "gap_ms": gap, "role": "leader"
        }))
        .unwrap()
    };
    event(&mut a, 1, 2, t + 10, stalled(243));
    let last = a.timeline.back().unwrap();
    assert_eq!(last.text, "raft loop 243 ms late as leader: heartbeats too");
    assert_eq!(last.kind, TimelineKind::Error);
    // A node that reports its CPU time in the gap: the line says how busy the loop was.
    let busy = serde_json::from_value(serde_json::json!({
        "kind": "loop_stalled", "gap_ms": 180, "role": "follower", "cpu_ms": 171
    }))
    .unwrap();
    event(&mut a, 3, 2, t + 20, busy);
    let last = a.timeline.back().unwrap();
    assert_eq!(last.text, "raft loop 180 ms late as follower (on CPU 171 ms): heartbeats too");

    // Paused for 5 s and resumed: its first tick is 5 s late, which is the pause.
    a.nodes.get_mut(&2).unwrap().resumed_at = Some(t + 6_000);
    let before = a.timeline.len();
    event(&mut a, 2, 2, t + 6_005, stalled(5_000));
    assert_eq!(a.timeline.len(), before, "no line for the pause");
    // Much later, a real stall on the same node shows again.
    event(&mut a, 2, 2, t + 60_000, stalled(120));
    assert_eq!(a.timeline.len(), before + 1);
}
