//! The in-process cluster (three nodes in one process, in-memory logs, raft messages
//! straight into the peers' mailboxes) that `benches/inproc.rs` measures: it must elect,
//! commit and apply every proposal exactly once on every node, with the log and apply
//! actors on threads of their own (as in a real node) and on the node's own thread.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_node::inproc::start_local_cluster;
use flotilla_node::{ClientApi, Placement};

const WRITERS: u64 = 16;
const EACH: u64 = 50;

async fn every_proposal_applies_once_on_every_node(placement: Placement) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_local_cluster(3, dir.path(), true, placement).await;
    let leader = cluster.leader(Duration::from_secs(10)).await.expect("a leader within 10 s");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let leader = leader.clone();
        writers.push(actix_rt::spawn(async move {
            for i in 0..EACH {
                let answer = leader.propose(Bytes::from(format!("{w}-{i}"))).await;
                assert!(answer.is_ok(), "proposal {w}-{i}: {answer:?}");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Acknowledged on the leader; the followers apply once they learn the commit index.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = || cluster.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
    while counts().iter().any(|&c| c < WRITERS * EACH) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counts(), vec![WRITERS * EACH; 3], "commands applied per node");
    let commit = leader.status().await["commit_index"].as_u64().unwrap();
    assert!(commit > WRITERS * EACH, "the no-op and every command are committed: {commit}");
    for node in &cluster.nodes {
        let applied = node.status().await["applied_index"].as_u64().unwrap();
        assert_eq!(applied, commit, "every node applied up to the commit index");
    }
}

#[actix_rt::test]
async fn log_and_apply_on_threads_of_their_own() {
    every_proposal_applies_once_on_every_node(Placement::OwnThreads).await;
}

#[actix_rt::test]
async fn log_and_apply_on_the_node_thread() {
    every_proposal_applies_once_on_every_node(Placement::NodeThread).await;
}
