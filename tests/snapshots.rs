//! Snapshots, log compaction and InstallSnapshot in clusters of real processes (Raft §7):
//! a follower that missed tens of thousands of entries catches up by snapshot, a transfer
//! cut in the middle resumes, kill -9 in the middle of a build or an install leaves a
//! node that restarts cleanly, and a snapshot the state machine refuses leaves the node
//! running.
//!
//! State is compared whole: `POST /v1/admin/snapshot` answers the CRC32C of a snapshot of
//! the node's state machine, and snapshots of equal states at the same index are equal
//! byte for byte (keys in order, no node-local data).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_tests::*;
use serde_json::{Value, json};

/// These tests start many processes and move a lot of data; on a 2-core machine they run
/// one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

/// Election timing that survives a busy 2-core machine running debug builds: fewer
/// needless elections while the tests hammer the disk.
const TIMING: [&str; 4] = ["--election-timeout-ms", "400-800", "--heartbeat-ms", "80"];

fn args<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = TIMING.to_vec();
    v.extend_from_slice(more);
    v
}

fn leader_of(c: &Cluster, among: &[u64]) -> u64 {
    c.wait_leader(among, Duration::from_secs(30)).0
}

/// `{"index","term","bytes","checksum"}` of a snapshot of node `id`'s state now.
fn snapshot_now(c: &Cluster, id: u64) -> Value {
    let (status, v, _) = request("POST", &format!("{}/v1/admin/snapshot", c.api(id)), None);
    assert_eq!(status, 200, "snapshot on node {id}: {v}");
    v
}

/// Waits until `nodes` applied the same index, then compares snapshots of their state
/// machines (index and checksum). Retries if the index moved meanwhile (an election's
/// no-op).
fn assert_same_state(c: &Cluster, nodes: &[u64]) -> Value {
    let mut last = Vec::new();
    for _ in 0..5 {
        let leader = leader_of(c, nodes);
        let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
        for id in nodes {
            wait_applied(c, *id, commit, Duration::from_secs(120));
        }
        let snaps: Vec<Value> = nodes.iter().map(|id| snapshot_now(c, *id)).collect();
        let key = |s: &Value| (s["index"].as_u64(), s["checksum"].as_u64());
        if snaps.iter().all(|s| key(s) == key(&snaps[0])) {
            return snaps[0].clone();
        }
        last = snaps;
    }
    panic!("nodes {nodes:?} never agreed on their state: {last:?}");
}

/// The snapshot files (`.snap`) and leftovers (`.tmp`) in node `id`'s snapshot dir.
fn snapshot_files(c: &Cluster, id: u64) -> (Vec<String>, Vec<String>) {
    let dir = c.nodes[&id].data_dir.join("snapshots");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let snaps = names.iter().filter(|n| n.ends_with(".snap")).cloned().collect();
    let tmps = names.iter().filter(|n| n.ends_with(".tmp")).cloned().collect();
    (snaps, tmps)
}

/// Stale reads of `keys` on node `id` with one connection; the keys that differ.
fn mismatches(c: &Cluster, id: u64, keys: &BTreeMap<String, String>) -> Vec<String> {
    let agent = http();
    let api = c.api(id);
    keys.iter()
        .filter(|(k, v)| {
            let url = format!("{api}/v1/kv/{k}?consistency=stale");
            match agent.get(&url).call() {
                Ok(mut r) => {
                    r.status().as_u16() != 200
                        || r.body_mut().read_to_string().ok().as_deref() != Some(v.as_str())
                }
                Err(_) => true,
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn metric_or_zero(c: &Cluster, id: u64, name: &str) -> f64 {
    metric(&c.api(id), name).unwrap_or(0.0)
}

/// A value of `len` bytes that names its key.
fn big_value(key: &str, len: usize) -> String {
    let mut v = format!("{key}:");
    while v.len() < len {
        v.push_str("0123456789abcdef");
    }
    v.truncate(len);
    v
}

/// Writes `n` values of `len` bytes through the cluster, one at a time.
fn write_big(
    c: &Cluster,
    nodes: &[u64],
    prefix: &str,
    n: usize,
    len: usize,
) -> BTreeMap<String, String> {
    let apis: Vec<String> = nodes.iter().map(|id| c.api(*id)).collect();
    let mut out = BTreeMap::new();
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let value = big_value(&key, len);
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(put_retry(&apis, &key, &value, deadline), WriteOutcome::Ok, "writing {key}");
        out.insert(key, value);
    }
    out
}

#[test]
fn a_follower_that_missed_fifty_thousand_writes_catches_up_by_snapshot() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "2000"]));
    let all = c.ids();
    let leader = leader_of(&c, &all);
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    let stopped_at = c.status(follower).unwrap()["last_log_index"].as_u64().unwrap();
    c.kill9(follower);
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != follower).collect();

    // Many writers: each waits for its write to commit, and the leader commits what piles
    // up meanwhile in one batch, so throughput grows with them.
    let load = WriteLoad::start(live.iter().map(|id| c.api(*id)).collect(), 96, "s");
    let mut report = Instant::now();
    eventually(Duration::from_secs(600), "50,000 acknowledged writes", || {
        if report.elapsed() >= Duration::from_secs(10) {
            report = Instant::now();
            eprintln!("[{:?}] {} writes acknowledged", t0.elapsed(), load.acked_count());
        }
        load.acked_count() >= 50_000
    });
    let acked = load.stop();
    eprintln!("[{:?}] {} writes acknowledged", t0.elapsed(), acked.len());

    // The leader compacted its log well past where the follower stopped, several times.
    let leader = leader_of(&c, &live);
    let st = c.status(leader).unwrap();
    assert!(st["first_log_index"].as_u64().unwrap() > stopped_at + 1, "log not compacted: {st}");
    for id in &live {
        let built = metric_or_zero(&c, *id, "flotilla_snapshots_built_total");
        assert!(built >= 3.0, "node {id} built {built} snapshots");
        let (snaps, _) = snapshot_files(&c, *id);
        assert_eq!(snaps.len(), 1, "node {id} keeps one snapshot file: {snaps:?}");
    }

    c.spawn(follower);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, follower, commit, Duration::from_secs(120));
    eprintln!("[{:?}] follower caught up", t0.elapsed());
    let installed = metric_or_zero(&c, follower, "flotilla_snapshots_installed_total");
    assert!(installed >= 1.0, "the follower caught up through InstallSnapshot");
    let snap = assert_same_state(&c, &all);
    assert!(snap["index"].as_u64() >= Some(commit), "{snap}");
    // And, as a client sees it: a sample of the acknowledged writes, read on the follower.
    let sample: BTreeMap<String, String> =
        acked.into_iter().enumerate().filter(|(i, _)| i % 50 == 0).map(|(_, kv)| kv).collect();
    assert_eq!(mismatches(&c, follower, &sample), Vec::<String>::new());
    eprintln!("[{:?}] done", t0.elapsed());
}

#[test]
fn a_snapshot_transfer_cut_in_the_middle_resumes_and_completes() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "10"]));
    let all = c.ids();
    let leader = leader_of(&c, &all);
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    c.kill9(follower);
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != follower).collect();
    // About 24 MiB of state: ~96 chunks of 256 KiB.
    let written = write_big(&c, &live, "big", 48, 512 * 1024);
    let leader = leader_of(&c, &live);
    let snap = snapshot_now(&c, leader);
    let bytes = snap["bytes"].as_u64().unwrap();
    assert!(bytes > 20 << 20, "{snap}");
    let events = Events::follow(&[(leader, c.api(leader))]);

    // Slow the transfer down (every message the leader sends waits 40 ms) so that the cut
    // lands in the middle, whatever the machine's speed.
    c.set_faults(leader, json!({"delay_ms": 40}));
    c.spawn(follower);
    eventually(Duration::from_secs(60), "the transfer is under way", || {
        c.status(leader).is_some_and(|s| {
            s["snapshot"]["sending"].as_array().is_some_and(|a| {
                a.iter().any(|t| {
                    t["to"].as_u64() == Some(follower) && t["offset"].as_u64() >= Some(2 << 20)
                })
            })
        })
    });
    // Heartbeats flow alongside the chunks: the follower knows its leader throughout.
    let st = c.status(follower).unwrap();
    assert_eq!(st["leader"].as_u64(), Some(leader), "{st}");
    let term = c.status(leader).unwrap()["term"].as_u64();
    // Cut: nothing the leader sends reaches the follower, long enough for the leader to
    // resend from the last acknowledged chunk (into the void) at least once.
    c.set_faults(leader, json!({"drop_to": [follower]}));
    std::thread::sleep(Duration::from_millis(2500));
    c.heal(leader);

    let done = events.wait_for("snapshot_send_done", Some(leader), Duration::from_secs(120), |e| {
        e["to"].as_u64() == Some(follower)
    });
    let resumed = events.of("snapshot_send_resumed", Some(leader));
    eprintln!("transfer: {done}\nresumed: {resumed:?}");
    assert!(
        resumed
            .iter()
            .any(|e| e["to"].as_u64() == Some(follower) && e["offset"].as_u64() > Some(0)),
        "the transfer resumed from an acknowledged offset: {resumed:?}"
    );
    assert!(done["resumes"].as_u64() >= Some(1), "{done}");
    let sent = done["bytes_sent"].as_u64().unwrap();
    let total = done["bytes"].as_u64().unwrap();
    // Restarting from 0 would have sent the 2 MiB before the cut twice and more; resuming
    // resends at most the chunks sent into the cut (one per resend) on top of the whole.
    assert!(sent < total + (8 << 20), "resumed, not restarted: sent {sent} of {total}");

    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, follower, commit, Duration::from_secs(120));
    assert!(metric_or_zero(&c, follower, "flotilla_snapshots_installed_total") >= 1.0);
    // The cut follower could not disturb the leader (PreVote): same term throughout.
    assert_eq!(c.status(leader).unwrap()["term"].as_u64(), term);
    assert_same_state(&c, &all);
    let sample: BTreeMap<String, String> = written.into_iter().step_by(7).collect();
    assert_eq!(mismatches(&c, follower, &sample), Vec::<String>::new());
}

/// `POST /v1/admin/snapshot` answers with a snapshot that holds every write acknowledged
/// before it was asked, also when it arrives while an automatic build runs whose view was
/// taken earlier (the node then builds again for it).
#[test]
fn a_requested_snapshot_holds_every_write_acknowledged_before_the_request() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // One node: its own writes are applied when acknowledged. A snapshot every 5 entries
    // and about 8 MiB of state keep an automatic build running most of the time.
    let c = Cluster::start(1, &args(&["--snapshot-entries", "5"]));
    let id = leader_of(&c, &c.ids());
    let api = c.api(id);
    write_big(&c, &[id], "big", 16, 512 * 1024);
    let load = WriteLoad::start(vec![api.clone()], 2, "bg");
    let agent = http();
    let mut behind = Vec::new();
    for i in 0..120 {
        let mut resp = agent.put(&format!("{api}/v1/kv/probe{i}")).send("x").expect("PUT");
        assert_eq!(resp.status().as_u16(), 200);
        let put: Value = resp.body_mut().read_json().expect("PUT answer");
        let acked = put["index"].as_u64().unwrap();
        let snap = snapshot_now(&c, id);
        if snap["index"].as_u64() < Some(acked) {
            behind.push(format!("write at {acked}, snapshot {snap}"));
        }
    }
    load.stop();
    assert_eq!(behind, Vec::<String>::new(), "snapshots that miss an acknowledged write");
}

/// `POST /v1/admin/snapshot?consistency=linearizable` on a follower that is behind waits
/// until it holds every write acknowledged before the request (it asks the leader for a
/// read index and waits to apply it), where the default (`stale`, the node's own state)
/// does not. The follower is kept behind by dropping everything it receives from the
/// leader; the request must still be waiting while it is, and answer once it is healed.
#[test]
fn a_linearizable_snapshot_on_a_follower_holds_every_acknowledged_write() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, &args(&[]));
    let leader = leader_of(&c, &c.ids());
    let f = *c.ids().iter().find(|id| **id != leader).unwrap();
    let url = |id: u64, consistency: &str| {
        format!("{}/v1/admin/snapshot?consistency={consistency}", c.api(id))
    };
    let acked = |key: &str| {
        let mut resp = http().put(&format!("{}/v1/kv/{key}", c.api(leader))).send("v").unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.body_mut().read_json::<Value>().unwrap()["index"].as_u64().unwrap()
    };
    acked("before");
    c.set_faults(f, json!({"drop_from": [leader]}));
    let index = acked("while-behind");
    let (status, stale, _) = request("POST", &url(f, "stale"), None);
    assert_eq!(status, 200, "{stale}");
    assert!(stale["index"].as_u64().unwrap() < index, "the follower was not behind: {stale}");

    let pending = std::thread::spawn({
        let url = url(f, "linearizable");
        move || request("POST", &url, None)
    });
    // The follower is still behind and the request still waiting: it did not answer from
    // what the follower had.
    std::thread::sleep(Duration::from_millis(300));
    let applied = c.status(f).unwrap()["applied_index"].as_u64().unwrap();
    assert!(applied < index, "the follower caught up while dropping the leader: {applied}");
    assert!(!pending.is_finished(), "answered before the follower held write {index}");
    c.heal(f);
    let (status, snap, _) = pending.join().unwrap();
    assert_eq!(status, 200, "{snap}");
    assert!(snap["index"].as_u64().unwrap() >= index, "{snap} misses the write at {index}");
    assert!(snap["read_index"].as_u64().unwrap() >= index, "{snap}");

    // On the leader the barrier is its own ReadIndex round; a bad value is refused.
    let (status, snap, _) = request("POST", &url(leader, "linearizable"), None);
    assert_eq!(status, 200, "{snap}");
    assert!(snap["read_index"].as_u64().unwrap() >= index, "{snap}");
    let (status, v, _) = request("POST", &url(leader, "sequential"), None);
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")), "{v}");
}

/// `flotilla restore` for node `id` of cluster `c` (cluster id "restored") from `file`.
fn restore(c: &Cluster, id: u64, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(flotilla_bin())
        .arg("restore")
        .arg("--snapshot")
        .arg(file)
        .arg("--data-dir")
        .arg(&c.nodes[&id].data_dir)
        .args(["--id", &id.to_string(), "--initial-cluster", &c.spec])
        .args(["--cluster-id", "restored"])
        .output()
        .expect("running flotilla restore")
}

/// A new cluster from a backup: the snapshot of a one-node cluster, saved with `flotilla
/// snapshot --save`, seeds the data dirs of a new three-node cluster on other ports
/// (`flotilla restore`), which elects a leader, serves every key the snapshot holds (and
/// none written after it), takes new writes, and brings a node that joins later up to date
/// from the restored file. A restore refuses a damaged file and a data dir that is not
/// empty, and leaves nothing behind.
#[test]
fn a_new_cluster_starts_from_a_snapshot_file() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let old = Cluster::start(1, &args(&[]));
    let id = leader_of(&old, &old.ids());
    let apis = vec![old.api(id)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut keys = BTreeMap::new();
    for i in 0..300 {
        let (k, v) = (format!("k{i}"), format!("v{i}-{}", "x".repeat(i % 50)));
        assert_eq!(put_retry(&apis, &k, &v, deadline), WriteOutcome::Ok);
        keys.insert(k, v);
    }
    // The backup, as an operator takes it: `flotilla snapshot --save` (POST, then GET).
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.snap");
    let out = std::process::Command::new(flotilla_bin())
        .args(["snapshot", "--node", &old.api(id), "--save"])
        .arg(&backup)
        .output()
        .expect("running flotilla snapshot --save");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let index = saved["index"].as_u64().unwrap();
    // What was saved is the node's snapshot file, byte for byte.
    let (files, _) = snapshot_files(&old, id);
    let src = old.nodes[&id].data_dir.join("snapshots").join(&files[0]);
    assert_eq!(std::fs::read(&backup).unwrap(), std::fs::read(&src).unwrap(), "{saved}");
    assert!(index >= 301, "{saved}");
    assert_eq!(put_retry(&apis, "after", "not in the backup", deadline), WriteOutcome::Ok);
    drop(old);

    let mut new = Cluster::new(3, &args(&["--cluster-id", "restored"]), false);
    let dir1 = new.nodes[&1].data_dir.clone();
    // A damaged copy is refused, and no data dir (nor its temporary) is left.
    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = backups.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = restore(&new, 1, &damaged);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a damaged snapshot was restored: {err}");
    assert!(err.contains("checksum") || err.contains("malformed"), "{err}");
    let parent: Vec<_> = std::fs::read_dir(dir1.parent().unwrap()).unwrap().flatten().collect();
    assert!(parent.is_empty(), "left behind: {parent:?}");

    // An interrupted restore (its work dir left in the data dir) stops the node from
    // starting, without touching the dir; a new restore replaces it.
    std::fs::create_dir_all(dir1.join(".restoring/db")).unwrap();
    new.spawn(1);
    let status = new.wait_exit(1, Duration::from_secs(30)).expect("node 1 exits");
    assert!(!status.success() && new.log_of(1).contains("interrupted"), "{}", new.log_of(1));
    let entries: Vec<_> =
        std::fs::read_dir(&dir1).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(".restoring")]);
    // A fresh volume's lost+found does not count as content.
    std::fs::create_dir_all(new.nodes[&2].data_dir.join("lost+found")).unwrap();
    for id in new.ids() {
        let out = restore(&new, id, &backup);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!dir1.join(".restoring").exists());
    // A seeded (or any non-empty) data dir is never overwritten.
    let before = std::fs::read_dir(dir1.join("snapshots")).unwrap().count();
    let out = restore(&new, 1, &backup);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(dir1.join("snapshots")).unwrap().count(), before);

    for id in new.ids() {
        new.spawn(id);
    }
    let leader = leader_of(&new, &new.ids());
    let st = new.status(leader).unwrap();
    assert!(st["term"].as_u64() >= Some(2), "{st}");
    let api = new.api(leader);
    let wrong: Vec<&String> = keys
        .iter()
        .filter(|(k, v)| get_key(&api, k, "linearizable").1 != **v)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(wrong, Vec::<&String>::new(), "keys that differ after the restore");
    assert_eq!(get_key(&api, "after", "linearizable").0, 404, "a write after the snapshot");
    let mut resp = http().put(&format!("{api}/v1/kv/new")).send("value").expect("PUT");
    assert_eq!(resp.status().as_u16(), 200);
    let put: Value = resp.body_mut().read_json().unwrap();
    assert!(put["index"].as_u64() > Some(index), "{put} after a snapshot at {index}");
    // A node that joins later catches up from the restored snapshot file, which the
    // leader sends as its own (its log starts after it).
    new.spawn_joining(4, &api);
    let commit = put["index"].as_u64().unwrap();
    wait_applied(&new, 4, commit, Duration::from_secs(60));
    assert!(metric_or_zero(&new, 4, "flotilla_snapshots_installed_total") >= 1.0);
    let sample: BTreeMap<String, String> = keys.into_iter().step_by(10).collect();
    assert_eq!(mismatches(&new, 4, &sample), Vec::<String>::new());
    // Every node holds the same state, the snapshot's and the new write.
    assert_same_state(&new, &new.ids());
}

/// kill -9 of `flotilla restore` at random moments: the data dir it leaves is either
/// complete (a node starts from it and serves every key) or marked as interrupted (a node
/// refuses it, and a restore into the emptied dir completes). Never a half-made data dir a
/// node would start from.
#[test]
fn kill9_during_a_restore_never_leaves_a_half_made_data_dir() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let old = Cluster::start(1, &args(&[]));
    let id = leader_of(&old, &old.ids());
    // About 8 MiB of state, so that a restore takes long enough to be cut.
    let written = write_big(&old, &[id], "big", 16, 512 * 1024);
    snapshot_now(&old, id);
    let (files, _) = snapshot_files(&old, id);
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.snap");
    std::fs::copy(old.nodes[&id].data_dir.join("snapshots").join(&files[0]), &backup).unwrap();
    drop(old);

    let mut new = Cluster::new(1, &args(&["--cluster-id", "restored"]), false);
    let dir = new.nodes[&1].data_dir.clone();
    let started = Instant::now();
    let out = restore(&new, 1, &backup);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole_ms = started.elapsed().as_millis() as u64;
    std::fs::remove_dir_all(&dir).unwrap();

    let check_complete = |new: &mut Cluster| {
        new.spawn(1);
        leader_of(new, &[1]);
        assert_eq!(mismatches(new, 1, &written), Vec::<String>::new());
        new.kill9(1);
    };
    let mut seen = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..8 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // Up to half again as long as a whole restore: some rounds finish before the kill.
        let delay = Duration::from_millis((seed >> 33) % (whole_ms * 3 / 2 + 1));
        let mut child = std::process::Command::new(flotilla_bin())
            .arg("restore")
            .arg("--snapshot")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--id", "1", "--initial-cluster", &new.spec, "--cluster-id", "restored"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning flotilla restore");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // Killed before it made anything but the (empty) data dir: nothing to look at.
        let made = std::fs::read_dir(&dir).is_ok_and(|mut rd| rd.next().is_some());
        if dir.join(".restoring").exists() {
            seen.0 += 1;
            new.spawn(1);
            let status = new.wait_exit(1, Duration::from_secs(30)).expect("the node exits");
            assert!(!status.success(), "round {round}: a node started from an interrupted restore");
            std::fs::remove_dir_all(&dir).unwrap();
            let out = restore(&new, 1, &backup);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        } else if made {
            seen.1 += 1;
        }
        if made {
            check_complete(&mut new);
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    eprintln!(
        "whole restore {whole_ms} ms; rounds cut mid-restore {}, complete {}",
        seen.0, seen.1
    );
    assert!(seen.0 >= 1, "no kill landed inside a restore ({seen:?}, {whole_ms} ms)");
}

#[test]
fn kill9_during_a_snapshot_build_and_during_an_install_restarts_cleanly() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "10"]));
    let all = c.ids();
    let leader = leader_of(&c, &all);
    let f = *all.iter().find(|id| **id != leader).unwrap();
    let events = Events::follow(&[(f, c.api(f))]);
    let mut written = write_big(&c, &all, "a", 30, 512 * 1024);

    // 1. Kill -9 while the follower writes a snapshot file.
    let mut killed_mid_build = false;
    for attempt in 0..5 {
        let seen = events.of("snapshot_built", Some(f)).len();
        let post = || {
            let api = c.api(f);
            std::thread::spawn(move || request("POST", &format!("{api}/v1/admin/snapshot"), None))
        };
        let building = || c.status(f).is_some_and(|s| s["snapshot"]["building"] == json!(true));
        // Ask for a snapshot after one more entry, so that it is a new one (a request with
        // nothing new since the last snapshot is answered at once), until a build is seen
        // under way: ours, or an automatic one that ours joined.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut t: Option<std::thread::JoinHandle<_>> = None;
        let mut round = 0;
        while !building() {
            assert!(Instant::now() < deadline, "no snapshot build seen under way on node {f}");
            if t.as_ref().is_none_or(|t| t.is_finished()) {
                written.extend(write_big(&c, &all, &format!("b{attempt}-{round}-"), 1, 1024));
                round += 1;
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
                t = Some(post());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill9(f);
        if let Some(t) = t {
            let _ = t.join();
        }
        std::thread::sleep(Duration::from_millis(200));
        killed_mid_build = events.of("snapshot_built", Some(f)).len() == seen;
        c.spawn(f);
        wait_applied(&c, f, 1, Duration::from_secs(30));
        if killed_mid_build {
            break;
        }
    }
    assert!(killed_mid_build, "never caught a build in the middle");
    assert_same_state(&c, &all);
    let (snaps, tmps) = snapshot_files(&c, f);
    assert_eq!((snaps.len(), tmps.len()), (1, 0), "leftovers cleaned up: {snaps:?} {tmps:?}");

    // 2. Kill -9 while the follower installs a snapshot it received.
    c.kill9(f);
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != f).collect();
    written.extend(write_big(&c, &live, "c", 30, 512 * 1024));
    let installs = events.of("snapshot_install_started", Some(f)).len();
    let installed = events.of("snapshot_installed", Some(f)).len();
    c.spawn(f);
    eventually(Duration::from_secs(120), "the follower starts installing", || {
        events.of("snapshot_install_started", Some(f)).len() > installs
    });
    c.kill9(f);
    std::thread::sleep(Duration::from_millis(200));
    let killed_mid_install = events.of("snapshot_installed", Some(f)).len() == installed;
    c.spawn(f);
    let leader = leader_of(&c, &live);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, f, commit, Duration::from_secs(180));
    assert_same_state(&c, &all);
    assert_eq!(mismatches(&c, f, &written), Vec::<String>::new());
    let (snaps, tmps) = snapshot_files(&c, f);
    assert_eq!((snaps.len(), tmps.len()), (1, 0), "leftovers cleaned up: {snaps:?} {tmps:?}");
    assert!(killed_mid_install, "the kill came after the install finished");
    let log = c.log_of(f);
    assert!(!log.contains("fatal"), "the node restarted cleanly:\n{log}");
}

/// A follower killed after it held everything written so far (up to `behind`), and a
/// leader that then compacted its log past that: started again, the follower can only
/// catch up by snapshot. `live`: the other nodes; `written`: every key written.
struct CutOff {
    f: u64,
    live: Vec<u64>,
    behind: u64,
    written: BTreeMap<String, String>,
}

fn cut_off_a_follower(c: &mut Cluster) -> CutOff {
    let all = c.ids();
    let leader = leader_of(c, &all);
    let f = *all.iter().find(|id| **id != leader).unwrap();
    let live: Vec<u64> = all.iter().copied().filter(|id| *id != f).collect();
    let mut written = write_big(c, &all, "before", 5, 256);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(c, f, commit, Duration::from_secs(30));
    let behind = c.status(f).unwrap()["last_log_index"].as_u64().unwrap();
    c.kill9(f);
    written.extend(write_big(c, &live, "after", 40, 256));
    eventually(Duration::from_secs(60), "the leader compacts past the follower's log", || {
        let leader = leader_of(c, &live);
        c.status(leader)
            .and_then(|s| s["first_log_index"].as_u64())
            .is_some_and(|first| first > behind + 1)
    });
    CutOff { f, live, behind, written }
}

/// A snapshot asked of a follower while it installs one from the leader waits for the
/// install and answers at or past it. Before, the request was refused (400 "index … is not
/// available"): the state machine still held the state from before the snapshot, whose
/// index the log no longer had. A test hook makes the restore take 1.5 s, so the request
/// surely lands inside the install.
#[test]
fn a_snapshot_asked_for_during_an_install_waits_for_it() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "10"]));
    let CutOff { f, behind, .. } = cut_off_a_follower(&mut c);
    c.env.insert(f, vec![("FLOTILLA_TEST_SLOW_SNAPSHOT_RESTORE_MS".into(), "1500".into())]);
    c.spawn(f);
    eventually(Duration::from_secs(60), "the follower starts installing", || {
        c.status(f).is_some_and(|st| st["snapshot"]["installing"] == json!(true))
    });
    let (status, v, _) = request("POST", &format!("{}/v1/admin/snapshot", c.api(f)), None);
    let st = c.status(f).unwrap();
    assert_eq!(status, 200, "{v}");
    let installed = st["snapshot_index"].as_u64().unwrap();
    assert!(installed > behind, "the follower installed nothing: {st}");
    assert!(v["index"].as_u64().unwrap() >= installed, "{v} is below the install at {installed}");
}

/// A follower killed (-9) in the middle of installing a snapshot recovers at its next
/// start (`supervisor::reconcile_snapshots`): killed before the state machine's restore,
/// it drops the received file and is sent the snapshot again; killed after the restore but
/// before its log was reset to the snapshot, it finishes the install. Either way it ends
/// with every acknowledged write and the same state as the others. Test hooks hold the
/// install at each point long enough to kill it there.
#[test]
fn a_follower_killed_in_the_middle_of_an_install_recovers_at_its_next_start() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "10"]));
    let all = c.ids();
    let CutOff { f, live, behind, written } = cut_off_a_follower(&mut c);
    let hook = |name: &str| vec![(name.to_string(), "60000".to_string())];

    // Before the restore: the file arrived, the state machine is untouched.
    c.env.insert(f, hook("FLOTILLA_TEST_SLOW_SNAPSHOT_RESTORE_MS"));
    c.spawn(f);
    eventually(Duration::from_secs(60), "the follower starts installing", || {
        c.status(f).is_some_and(|st| st["snapshot"]["installing"] == json!(true))
    });
    c.kill9(f);

    // After the restore, before the log reset: the state machine is at the snapshot.
    c.env.insert(f, hook("FLOTILLA_TEST_PAUSE_AFTER_SNAPSHOT_RESTORE_MS"));
    c.spawn(f);
    eventually(Duration::from_secs(60), "the follower restores the snapshot", || {
        c.status(f).is_some_and(|st| {
            st["snapshot"]["installing"] == json!(true)
                && st["applied_index"].as_u64() > Some(behind)
        })
    });
    let log = c.log_of(f);
    assert!(log.contains("dropping a received snapshot that was never installed"), "{log}");
    c.kill9(f);

    c.env.remove(&f);
    c.spawn(f);
    eventually(Duration::from_secs(30), "the follower is back", || c.status(f).is_some());
    let log = c.log_of(f);
    assert!(log.contains("finishing a snapshot install a crash interrupted"), "{log}");
    let leader = leader_of(&c, &live);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, f, commit, Duration::from_secs(60));
    assert_same_state(&c, &all);
    assert_eq!(mismatches(&c, f, &written), Vec::<String>::new());
}

/// A snapshot asked of a node that just restarted describes what its state machine had
/// applied, at once, even with no leader to talk to. The state machine keeps its state
/// across a restart and the core goes on from its applied index (`InitialState::applied`).
/// Before, the core started from its snapshot and knew nothing past it until a leader
/// told it the commit index, and the request was refused (400 "index … is not
/// available"). The other two nodes are paused while the node restarts and answers.
#[test]
fn a_snapshot_asked_for_right_after_a_restart_describes_what_the_node_applied() {
    use nix::sys::signal::Signal;
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "0"]));
    let all = c.ids();
    let leader = leader_of(&c, &all);
    let f = *all.iter().find(|id| **id != leader).unwrap();
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != f).collect();
    write_big(&c, &all, "before", 20, 64);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, f, commit, Duration::from_secs(30));
    let snapped = snapshot_now(&c, f)["index"].as_u64().unwrap();
    write_big(&c, &all, "after", 10, 64);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    assert!(commit >= snapped + 10);
    wait_applied(&c, f, commit, Duration::from_secs(30));
    c.kill9(f);
    for id in &others {
        c.signal(*id, Signal::SIGSTOP);
    }
    c.spawn(f);
    eventually(Duration::from_secs(30), "the restarted node answers", || c.status(f).is_some());
    let (status, v, _) = request("POST", &format!("{}/v1/admin/snapshot", c.api(f)), None);
    let st = c.status(f).unwrap();
    for id in &others {
        c.signal(*id, Signal::SIGCONT);
    }
    assert_eq!(status, 200, "{v}");
    assert!(v["index"].as_u64().unwrap() >= commit, "{v} is below what it had applied, {commit}");
    assert!(st["applied_index"].as_u64() >= Some(commit), "{st}");
    assert_eq!(st["leader"], Value::Null, "no leader reached it: {st}");
}

/// A follower whose state machine refuses a received snapshot (the stream passed its
/// checksum; the test hook makes the restore fail) keeps its old state and keeps running
/// as a follower that is behind, instead of stopping, and catches up once it can restore.
#[test]
fn a_snapshot_the_follower_cannot_restore_leaves_it_running_until_it_can() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start(3, &args(&["--snapshot-entries", "10"]));
    let all = c.ids();
    let CutOff { f, live, behind, written } = cut_off_a_follower(&mut c);

    let leader = leader_of(&c, &live);
    let events = Events::follow(&[(leader, c.api(leader))]);
    c.env.insert(f, vec![("FLOTILLA_TEST_FAIL_SNAPSHOT_RESTORE".into(), "1".into())]);
    c.spawn(f);
    eventually(Duration::from_secs(60), "the follower refuses the snapshot", || {
        metric_or_zero(&c, f, "flotilla_snapshot_installs_failed_total") >= 1.0
    });
    assert!(c.wait_exit(f, Duration::from_millis(500)).is_none(), "{}", c.log_of(f));
    let st = c.status(f).expect("the follower still answers");
    assert_eq!(st["snapshot"]["installing"], json!(false), "{st}");
    assert!(st["applied_index"].as_u64() <= Some(behind), "it kept its old state: {st}");
    let (status, body, _) = get_key(&c.api(f), "before0", "stale");
    assert_eq!(status, 200, "its old state still serves stale reads: {body}");
    let log = c.log_of(f);
    assert!(
        log.contains("installing a received snapshot failed") && !log.contains("fatal"),
        "{log}"
    );
    assert_eq!(metric_or_zero(&c, f, "flotilla_snapshots_installed_total"), 0.0);
    // The follower answers heartbeats again without the snapshot, so the leader offers it
    // again at once (not after its 40 s snapshot timeout), and it is refused again. The
    // deadline is half that timeout: passing it means the early offer did not happen.
    eventually(Duration::from_secs(20), "the leader offers the snapshot again early", || {
        metric_or_zero(&c, f, "flotilla_snapshot_installs_failed_total") >= 2.0
    });
    let again = events.of("snapshot_offered_again", Some(leader));
    assert!(again.iter().any(|e| e["to"] == json!(f)), "the leader says why: {again:?}");

    // Restarted with a state machine that can read the stream, it installs one and
    // catches up. (Early offers are limited to one per snapshot timeout, so this time the
    // leader offers again once its snapshot timeout passes.)
    c.kill9(f);
    c.env.remove(&f);
    c.spawn(f);
    let leader = leader_of(&c, &live);
    let commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_applied(&c, f, commit, Duration::from_secs(120));
    assert!(metric_or_zero(&c, f, "flotilla_snapshots_installed_total") >= 1.0);
    assert_eq!(mismatches(&c, f, &written), Vec::<String>::new());
    assert_same_state(&c, &all);
}

/// Measurements for docs/snapshots-and-membership.md (not a test: no assertions on time).
/// Run in release, on a quiet machine:
///
/// ```text
/// cargo test --release -p flotilla-tests --test snapshots -- --ignored --nocapture measure
/// ```
///
/// Loads 1,000,000 keys (100-byte values) into a 3-node cluster, then measures: write
/// latency under a steady load without a snapshot and while the leader builds one; the
/// snapshot's build time and size; the time for a new node started with `--join` to catch
/// up (by snapshot) and be promoted to voter.
#[test]
#[ignore]
fn measure_snapshot_build_write_latency_and_learner_catch_up() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let keys: u64 =
        std::env::var("MEASURE_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut c = Cluster::start(3, &["--snapshot-entries", "0"]);
    let all = c.ids();
    let leader = leader_of(&c, &all);
    let t0 = Instant::now();
    load_keys(&c.api(leader), keys, 128);
    let load_s = t0.elapsed().as_secs_f64();
    eprintln!("loaded {keys} keys in {load_s:.1}s ({:.0} writes/s)", keys as f64 / load_s);
    let leader = leader_of(&c, &all);
    let api = c.api(leader);

    // Write latency, steady load of 16 writers, no snapshot.
    let quiet = timed_writes(&api, 16, Duration::from_secs(15), None);
    eprintln!("no snapshot: {}", summary(&quiet));

    // The same load while the leader builds a snapshot of everything.
    let (snap, during, after) = {
        let api2 = api.clone();
        let snapper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let t = Instant::now();
            let (status, v, _) = request("POST", &format!("{api2}/v1/admin/snapshot"), None);
            assert_eq!(status, 200, "{v}");
            (v, t, t.elapsed())
        });
        let lat = timed_writes(&api, 16, Duration::from_secs(2), Some(&snapper));
        let (v, started, took) = snapper.join().unwrap();
        let during: Vec<Duration> = lat
            .iter()
            .filter(|(at, d)| *at + *d >= started && *at <= started + took)
            .map(|(_, d)| *d)
            .collect();
        // The log compaction (purge) runs once the snapshot is recorded.
        let after: Vec<Duration> =
            lat.iter().filter(|(at, _)| *at > started + took).map(|(_, d)| *d).collect();
        (json!({"answer": v, "build_ms": took.as_millis() as u64}), during, after)
    };
    eprintln!("snapshot: {snap}");
    eprintln!("during the snapshot: {}", summary_of(&during));
    eprintln!("in the 2 s after it (log compaction): {}", summary_of(&after));

    // A new node joins: learner, catch-up, promotion. Every member compacts first, so the
    // learner catches up by snapshot whoever leads by then.
    for id in &all {
        if *id != leader {
            let v = snapshot_now(&c, *id);
            eprintln!("snapshot on node {id}: {v}");
        }
    }
    let all_apis: Vec<(u64, String)> = all.iter().map(|id| (*id, c.api(*id))).collect();
    let events = Events::follow(&all_apis);
    let t = Instant::now();
    c.spawn_joining(4, &api);
    let mut promoted_in = None;
    let mut caught_up_in = None;
    eventually(Duration::from_secs(1800), "node 4 is a voter and has applied everything", || {
        let Some(l) =
            all.iter().copied().find(|id| c.status(*id).is_some_and(|s| s["role"] == "leader"))
        else {
            return false;
        };
        let Some(s) = c.status(l) else { return false };
        let voter = s["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"].as_u64() == Some(4) && m["voter"] == true));
        if voter && promoted_in.is_none() {
            promoted_in = Some(t.elapsed());
        }
        let commit = s["commit_index"].as_u64().unwrap_or(u64::MAX);
        let applied4 = c.status(4).and_then(|s| s["applied_index"].as_u64()).unwrap_or(0);
        if applied4 >= commit && caught_up_in.is_none() {
            caught_up_in = Some(t.elapsed());
        }
        promoted_in.is_some() && caught_up_in.is_some()
    });
    let installed = metric_or_zero(&c, 4, "flotilla_snapshots_installed_total");
    let sent = events.of("snapshot_send_done", None);
    eprintln!(
        "node 4: promoted to voter after {:.1}s, applied the leader's commit index after {:.1}s; \
         snapshots installed: {installed}; transfers: {sent:?}",
        promoted_in.unwrap_or_default().as_secs_f64(),
        caught_up_in.unwrap_or_default().as_secs_f64(),
    );
    // How late each node's raft loop ran at worst (the leader's heartbeats with it).
    for id in all.iter().copied().chain([4]) {
        eprintln!(
            "node {id}: raft loop stalls {}, longest {} ms; leader changes seen {}",
            metric_or_zero(&c, id, "flotilla_raft_loop_stalls_total"),
            metric_or_zero(&c, id, "flotilla_raft_loop_longest_stall_ms"),
            metric_or_zero(&c, id, "flotilla_leader_changes_total"),
        );
        // Each late tick, with the loop's CPU time in the gap (busy, or not running).
        for line in c.log_of(id).lines().filter(|l| l.contains("the raft loop ran")) {
            eprintln!("node {id}: {line}");
        }
    }
}

/// Writes `n` keys with 100-byte values through `api` (the leader) with `writers` threads.
fn load_keys(api: &str, n: u64, writers: u64) {
    let per = n.div_ceil(writers);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let api = api.to_string();
            std::thread::spawn(move || {
                let apis = [api];
                for i in 0..per {
                    let key = format!("m{w:03}-{i:07}");
                    let value = big_value(&key, 100);
                    // An unknown outcome is retried: writing the same value again is harmless.
                    let deadline = Instant::now() + Duration::from_secs(300);
                    while put_retry(&apis, &key, &value, deadline) != WriteOutcome::Ok {
                        assert!(Instant::now() < deadline, "could not write {key}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// `writers` threads writing for `run` (or until `until` finishes, plus `run`); every
/// write's start and latency.
fn timed_writes(
    api: &str,
    writers: usize,
    run: Duration,
    until: Option<&std::thread::JoinHandle<(Value, Instant, Duration)>>,
) -> Vec<(Instant, Duration)> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (api, stop) = (api.to_string(), stop.clone());
            std::thread::spawn(move || {
                let agent = http();
                let mut out = Vec::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("lat{w:03}-{i:07}");
                    let at = Instant::now();
                    let r = agent
                        .put(&format!("{api}/v1/kv/{key}"))
                        .send(big_value(&key, 100).as_str());
                    if r.is_ok_and(|r| r.status().as_u16() == 200) {
                        out.push((at, at.elapsed()));
                    }
                    i += 1;
                }
                out
            })
        })
        .collect();
    if let Some(h) = until {
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(run);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

fn summary(lat: &[(Instant, Duration)]) -> String {
    summary_of(&lat.iter().map(|(_, d)| *d).collect::<Vec<_>>())
}

fn summary_of(lat: &[Duration]) -> String {
    let mut v: Vec<Duration> = lat.to_vec();
    v.sort();
    if v.is_empty() {
        return "no writes".into();
    }
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    format!(
        "{} writes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        p(0.5),
        p(0.99),
        v[v.len() - 1].as_secs_f64() * 1000.0
    )
}
