//! Membership changes in a running cluster of real processes (Raft §6, thesis §4): nodes
//! join with `--join` (learner, catch-up, promotion), members are removed — the leader
//! included — through the admin API, all under a continuous write load.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_tests::*;
use serde_json::{Value, json};

/// These tests start many processes; on a 2-core machine they run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn voters(st: &Value) -> Vec<u64> {
    let members = st["members"].as_array().cloned().unwrap_or_default();
    members.iter().filter(|m| m["voter"] == true).filter_map(|m| m["id"].as_u64()).collect()
}

fn learners(st: &Value) -> Vec<u64> {
    let members = st["members"].as_array().cloned().unwrap_or_default();
    members.iter().filter(|m| m["voter"] == false).filter_map(|m| m["id"].as_u64()).collect()
}

/// The leader among `among`, as its own status says (no agreement needed).
fn current_leader(c: &Cluster, among: &[u64]) -> Option<u64> {
    among.iter().copied().find(|id| c.status(*id).is_some_and(|s| s["role"] == "leader"))
}

/// Every acknowledged write is readable on every node of `nodes` once it caught up.
fn assert_no_acked_write_lost(
    c: &Cluster,
    nodes: &[u64],
    acked: &std::collections::BTreeMap<String, String>,
) {
    let (leader, _) = c.wait_leader(nodes, Duration::from_secs(15));
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    for id in nodes {
        wait_applied(c, *id, commit, Duration::from_secs(30));
        for (k, v) in acked {
            let (st, body, _) = get_key(&c.api(*id), k, "stale");
            assert_eq!((st, &body), (200, v), "acknowledged write {k} missing on node {id}");
        }
    }
}

#[test]
fn grow_three_to_five_and_shrink_back_under_load() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &["--snapshot-entries", "300"]);
    let first: Vec<u64> = c.ids();
    let events = Events::follow(&first.iter().map(|id| (*id, c.api(*id))).collect::<Vec<_>>());
    let (leader, _) = c.wait_leader(&first, Duration::from_secs(15));
    let load = WriteLoad::start(first.iter().map(|id| c.api(*id)).collect(), 3, "grow");
    let t0 = Instant::now();
    // Enough entries that the leader compacted past the start of its log (snapshots every
    // 300 entries keep 300 below): a new node can only catch up by snapshot.
    eventually(Duration::from_secs(60), "writes before the change", || load.acked_count() >= 700);
    eprintln!("[{:?}] 700 writes", t0.elapsed());

    // Node 4 joins: learner first (it catches up from a compacted log, so by snapshot),
    // then voter.
    c.spawn_joining(4, &c.api(leader));
    events.add(&c.api(4));
    eventually(Duration::from_secs(60), "node 4 becomes a voter", || {
        current_leader(&c, &first)
            .and_then(|l| c.status(l))
            .is_some_and(|s| voters(&s).contains(&4))
    });
    eprintln!("[{:?}] node 4 is a voter", t0.elapsed());
    let installed = metric(&c.api(4), "flotilla_snapshots_installed_total");
    assert!(installed >= Some(1.0), "node 4 caught up by snapshot: {installed:?}");

    // Node 5 joins, but cannot hear the cluster yet: while its addition waits for it to
    // catch up, a second change is refused with a clear error.
    c.spawn_joining(5, &c.api(leader));
    eventually(Duration::from_secs(10), "node 5 serves its API", || c.status(5).is_some());
    c.set_faults(5, json!({"isolate": true}));
    eventually(Duration::from_secs(30), "node 5 is a learner", || {
        current_leader(&c, &first)
            .and_then(|l| c.status(l))
            .is_some_and(|s| learners(&s).contains(&5))
    });
    let api = c.api(current_leader(&c, &first).expect("a leader"));
    let other =
        json!({"id": 9, "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2", "voter": true});
    let (status, body) =
        admin("POST", &api, "/v1/admin/members", Some(&other), Duration::from_secs(10));
    assert_eq!((status, body["error"].as_str()), (409, Some("change_in_progress")), "{body}");
    let (status, body) =
        admin("DELETE", &api, "/v1/admin/members/2", None, Duration::from_secs(10));
    assert_eq!((status, body["error"].as_str()), (409, Some("change_in_progress")), "{body}");
    eprintln!("[{:?}] second changes refused", t0.elapsed());
    c.heal(5);
    eventually(Duration::from_secs(60), "node 5 becomes a voter", || {
        current_leader(&c, &first)
            .and_then(|l| c.status(l))
            .is_some_and(|s| voters(&s) == vec![1, 2, 3, 4, 5])
    });
    eprintln!("[{:?}] node 5 is a voter", t0.elapsed());
    let all: Vec<u64> = c.ids();
    load.set_apis(all.iter().map(|id| c.api(*id)).collect());
    let before = load.acked_count();
    eventually(Duration::from_secs(20), "writes go on with five voters", || {
        load.acked_count() >= before + 100
    });

    // Shrink back to 1, 2, 3: each removed node leaves by itself, exit code 0.
    for gone in [4, 5] {
        let api = c.api(current_leader(&c, &all).expect("a leader"));
        let (status, body) = admin(
            "DELETE",
            &api,
            &format!("/v1/admin/members/{gone}"),
            None,
            Duration::from_secs(30),
        );
        assert_eq!(status, 200, "removing {gone}: {body}");
        let ids: Vec<u64> =
            body["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert!(!ids.contains(&gone), "{body}");
        let exit = c.wait_exit(gone, Duration::from_secs(20)).and_then(|s| s.code());
        assert_eq!(exit, Some(0), "node {gone} exits 0");
        assert!(c.log_of(gone).contains("removed from the cluster"), "node {gone} says why");
        eprintln!("[{:?}] node {gone} removed", t0.elapsed());
    }
    load.set_apis(first.iter().map(|id| c.api(*id)).collect());
    let before = load.acked_count();
    eventually(Duration::from_secs(20), "writes go on with three voters", || {
        load.acked_count() >= before + 100
    });
    let acked = load.stop();
    let (leader, _) = c.wait_leader(&first, Duration::from_secs(15));
    assert_eq!(voters(&c.status(leader).unwrap()), vec![1, 2, 3]);
    eprintln!("[{:?}] checking {} acknowledged writes", t0.elapsed(), acked.len());
    assert_no_acked_write_lost(&c, &first, &acked);
    eprintln!("[{:?}] checked", t0.elapsed());
    assert_eq!(events.terms_with_two_leaders(), vec![], "two leaders in one term");
    assert!(!events.of("membership_changed", None).is_empty());
}

#[test]
fn removing_the_leader_hands_over_and_the_cluster_keeps_committing() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &[]);
    let all = c.ids();
    let events = Events::follow(&all.iter().map(|id| (*id, c.api(*id))).collect::<Vec<_>>());
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    let load = WriteLoad::start(all.iter().map(|id| c.api(*id)).collect(), 3, "rl");
    eventually(Duration::from_secs(20), "writes before the removal", || load.acked_count() >= 100);

    // Leadership transfer first: to a caught-up follower, at once.
    let target = *all.iter().find(|id| **id != leader).unwrap();
    let (status, body) = admin(
        "POST",
        &c.api(leader),
        "/v1/admin/transfer-leader",
        Some(&json!({"to": target})),
        Duration::from_secs(10),
    );
    assert_eq!((status, body["leader"].as_u64()), (200, Some(target)), "{body}");
    let (leader, term2) = c.wait_leader(&all, Duration::from_secs(10));
    assert_eq!(leader, target);
    assert!(term2 > term);

    let before = load.acked_count();
    let (status, body) = admin(
        "DELETE",
        &c.api(leader),
        &format!("/v1/admin/members/{leader}"),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(status, 200, "{body}");
    let rest: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    let (new_leader, new_term) = c.wait_leader(&rest, Duration::from_secs(10));
    assert!(new_term > term2);
    let stepped = events.wait_for("stepped_down", Some(leader), Duration::from_secs(5), |e| {
        e["reason"] == "removed"
    });
    assert_eq!(stepped["term"].as_u64(), Some(term2));
    let code = c.wait_exit(leader, Duration::from_secs(20)).and_then(|s| s.code());
    assert_eq!(
        code,
        Some(0),
        "the old leader exits 0: {:?} {}",
        c.status(leader),
        c.log_of(leader)
    );

    load.set_apis(rest.iter().map(|id| c.api(*id)).collect());
    eventually(Duration::from_secs(20), "the cluster keeps committing", || {
        load.acked_count() >= before + 200
    });
    let acked = load.stop();
    assert_eq!(voters(&c.status(new_leader).unwrap()), rest);
    assert_no_acked_write_lost(&c, &rest, &acked);
    assert_eq!(events.terms_with_two_leaders(), vec![], "two leaders in one term");
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(put_retry(&[c.api(new_leader)], "after", "x", deadline), WriteOutcome::Ok);
}
