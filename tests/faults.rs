//! Partitions through the faults API, and peers that must be refused.

use std::time::{Duration, Instant};

use flotilla_tests::*;
use serde_json::json;

#[test]
fn isolated_follower_rejoins_without_raising_the_leaders_term() {
    let c = Cluster::start(3, &[]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    c.set_faults(follower, json!({"isolate": true}));

    // The rest keeps committing while the follower is cut off (for well over many election
    // timeouts, so it keeps trying to campaign).
    let apis = vec![c.api(leader)];
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0..30 {
        assert_eq!(put_retry(&apis, &format!("iso{i}"), "v", deadline), WriteOutcome::Ok);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let st = c.status(follower).unwrap();
    // PreVote: the isolated node never won a pre-vote, so its term did not move.
    assert_eq!(st["term"].as_u64(), Some(term), "isolated follower raised its term: {st}");

    c.heal(follower);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "healed follower catches up", || {
        c.status(follower).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= commit)
    });
    let (leader2, term2) = c.wait_leader(&all, Duration::from_secs(5));
    assert_eq!((leader2, term2), (leader, term), "the rejoin disturbed the leader");
}

#[test]
fn isolated_leader_steps_down_and_its_minority_writes_never_succeed() {
    let c = Cluster::start(3, &[]);
    let all = c.ids();
    let (old, term) = c.wait_leader(&all, Duration::from_secs(15));
    let apis: Vec<String> = all.iter().map(|id| c.api(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(put_retry(&apis, "before", "1", deadline), WriteOutcome::Ok);

    c.set_faults(old, json!({"isolate": true}));
    // Writes sent to the isolated leader can never be acknowledged: it cannot reach a
    // majority. It steps down (CheckQuorum) and answers with an error.
    let minority: Vec<(String, WriteOutcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let api = c.api(old);
                s.spawn(move || {
                    let key = format!("minority{i}");
                    let out = put_once(&http(), &api, &key, "lost");
                    (key, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (key, out) in &minority {
        assert_ne!(*out, WriteOutcome::Ok, "the minority acknowledged {key}");
    }
    let rest: Vec<u64> = all.iter().copied().filter(|id| *id != old).collect();
    let (new, new_term) = c.wait_leader(&rest, Duration::from_secs(10));
    assert!(new_term > term);
    eventually(Duration::from_secs(5), "old leader steps down", || {
        c.status(old).is_some_and(|s| s["role"] != "leader")
    });
    // Cut off, it knows no leader: not ready for a load balancer; the majority side is.
    eventually(Duration::from_secs(5), "the isolated node reports not ready", || {
        request("GET", &format!("{}/v1/ready", c.api(old)), None).0 == 503
    });
    let (st, body, _) = request("GET", &format!("{}/v1/ready", c.api(new)), None);
    assert_eq!((st, body["leader"].as_u64()), (200, Some(new)), "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(put_retry(&[c.api(new)], "after", "2", deadline), WriteOutcome::Ok);

    c.heal(old);
    let commit = c.status(new).unwrap()["commit_index"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "old leader rejoins and catches up", || {
        c.status(old).and_then(|s| s["applied_index"].as_u64()).is_some_and(|a| a >= commit)
    });
    assert_eq!(request("GET", &format!("{}/v1/ready", c.api(old)), None).0, 200);
    // Nothing the minority side was asked to write exists anywhere.
    for id in &all {
        for (key, _) in &minority {
            let (st, body, _) = get_key(&c.api(*id), key, "stale");
            assert_eq!(st, 404, "minority write {key} became visible on node {id}: {body}");
        }
        let (st, _, _) = get_key(&c.api(*id), "after", "stale");
        assert_eq!(st, 200);
    }
}

#[test]
fn peers_with_the_wrong_secret_or_cluster_id_cannot_join_or_disturb() {
    let mut c = Cluster::start(3, &["--cluster-secret", "right-secret"]);
    let all = c.ids();
    let (leader, term) = c.wait_leader(&all, Duration::from_secs(15));

    // Node 3 restarts with the wrong secret, then with the wrong cluster id: either way
    // the others refuse its connections, so it can neither learn the log nor disturb them.
    let victim = *all.iter().find(|id| **id != leader).unwrap();
    for bad in [["--cluster-secret", "wrong-secret"], ["--cluster-id", "another-cluster"]] {
        c.kill9(victim);
        let saved = c.extra.clone();
        c.extra = if bad[0] == "--cluster-secret" {
            bad.iter().map(|s| s.to_string()).collect()
        } else {
            ["--cluster-secret", "right-secret"]
                .iter()
                .chain(bad.iter())
                .map(|s| s.to_string())
                .collect()
        };
        if bad[0] == "--cluster-id" {
            // A data dir of another cluster is refused at start; give the impostor a fresh one.
            let node = c.nodes.get_mut(&victim).unwrap();
            node.data_dir = node.data_dir.with_extension("impostor");
        }
        c.spawn(victim);
        c.extra = saved;

        let others: Vec<u64> = all.iter().copied().filter(|id| *id != victim).collect();
        let key = format!("guarded-{}", bad[0].trim_start_matches("--"));
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(put_retry(&[c.api(leader)], &key, "1", deadline), WriteOutcome::Ok);
        eventually(Duration::from_secs(5), "the leader refuses the impostor's handshakes", || {
            counter(&c.api(leader), "flotilla_handshake_failures_total") > 0
        });
        std::thread::sleep(Duration::from_millis(1000));
        let (l, t) = c.wait_leader(&others, Duration::from_secs(5));
        assert_eq!((l, t), (leader, term), "the impostor disturbed the cluster");
        // The impostor never received the entries written meanwhile.
        let (st, _, _) = get_key(&c.api(victim), &key, "stale");
        assert_ne!(st, 200, "the impostor learned {key}");
    }
}
