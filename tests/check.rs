//! `flotilla check` end to end, CI-sized: a real 3-node and 5-node cluster under every
//! kind of fault must pass, and a run whose clients read stale data must fail with a
//! small failing window. The fault schedule is a function of the seed; the processes'
//! timing is not, so the interleavings (and the operation counts) differ run to run.

use std::path::Path;
use std::process::Command;

use flotilla_tests::flotilla_bin;
use serde_json::Value;

/// Runs `flotilla check ARGS --dir DIR`; (exit code, stdout, summary.json).
fn check(dir: &Path, args: &[&str]) -> (Option<i32>, String, Value) {
    let out = Command::new(flotilla_bin())
        .arg("check")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run flotilla check");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| panic!("no summary.json\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (out.status.code(), format!("{stdout}\n--- stderr ---\n{stderr}"), summary)
}

fn applied_faults(summary: &Value) -> Vec<String> {
    summary["rounds"][0]["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == true)
        .map(|f| f["desc"].as_str().unwrap_or("").to_string())
        .collect()
}

fn assert_passes(nodes: &str, seed: &str, duration: &str, min_faults: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, summary) =
        check(dir.path(), &["--nodes", nodes, "--seed", seed, "--duration", duration]);
    assert_eq!(code, Some(0), "flotilla check failed:\n{out}");
    assert_eq!(summary["verdict"], "PASS", "{out}");
    let round = &summary["rounds"][0];
    assert_eq!(round["linearizable"], "yes", "{out}");
    assert!(round["anomalies"].as_array().unwrap().is_empty(), "{out}");
    let ops = round["ops"].as_u64().unwrap();
    assert!(ops >= 200, "only {ops} operations:\n{out}");
    assert!(round["durable_acked"].as_u64().unwrap() >= 10, "{out}");
    let faults = applied_faults(&summary);
    assert!(faults.len() >= min_faults, "only {} faults applied: {faults:?}\n{out}", faults.len());
    // The timeline was written and draws the history.
    let html = std::fs::read_to_string(dir.path().join("round-001.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Whole history"), "timeline is empty");
    let lines = std::fs::read_to_string(dir.path().join("round-001.history.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, ops);
}

#[test]
fn a_three_node_cluster_passes_under_every_kind_of_fault() {
    // Seed 9's schedule: isolate the leader, snapshot, kill -9 the leader, kill -9 a node,
    // partition, pause the leader, replace a member, pause a node.
    assert_passes("3", "9", "25s", 6);
}

#[test]
fn a_five_node_cluster_passes_under_every_kind_of_fault() {
    // Seed 6's schedule: partition, membership change, restarts, pauses (of the leader
    // too), snapshot, isolation, kill -9.
    assert_passes("5", "6", "20s", 5);
}

#[test]
fn stale_reads_fail_the_check_with_a_small_window() {
    // Reads with consistency=stale from any node are not linearizable: a follower that is
    // cut off (or merely behind) answers with an old value after a newer write completed.
    // The check must say so, show the window, and exit 1.
    let dir = tempfile::tempdir().unwrap();
    let (code, out, summary) = check(
        dir.path(),
        &[
            "--seed",
            "3",
            "--duration",
            "12s",
            "--reads",
            "stale",
            "--faults",
            "isolate,isolate-leader",
            "--fault-gap-ms",
            "500",
            "--fault-ms",
            "2500",
            "--keys",
            "2",
        ],
    );
    assert_eq!(code, Some(1), "a stale-read run passed:\n{out}");
    assert_eq!(summary["verdict"], "FAIL", "{out}");
    let round = &summary["rounds"][0];
    assert_eq!(round["linearizable"], "NO", "{out}");
    let window = round["window"]["ops"].as_array().expect("a failing window");
    assert!((2..=50).contains(&window.len()), "window of {} ops:\n{out}", window.len());
    assert!(
        window.iter().any(|o| o["op"] == "get"),
        "a stale-read anomaly without a read in its window:\n{out}"
    );
    assert!(out.contains("smallest failing window"), "{out}");
    assert!(out.contains("seed 3"), "the verdict must name the seed:\n{out}");
    let html = std::fs::read_to_string(dir.path().join("round-001.html")).unwrap();
    assert!(html.contains("Smallest failing window"), "the timeline does not show the window");
}

#[test]
fn the_fault_schedule_is_a_function_of_the_seed() {
    let dry = |seed: &str, faults: &str| -> String {
        let out = Command::new(flotilla_bin())
            .args(["check", "--dry-run", "--seed", seed, "--duration", "3m", "--round", "60s"])
            .args(["--faults", faults])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let all = "kill,kill-leader,pause,pause-leader,isolate,isolate-leader,partition,one-way,restart,membership,snapshot,transfer";
    let a = dry("11", all);
    assert_eq!(a, dry("11", all), "the same seed gave two schedules");
    assert_ne!(a, dry("12", all), "two seeds gave the same schedule");
    let rounds: Vec<Value> = a.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rounds.len(), 3);
    assert_ne!(rounds[0]["faults"], rounds[1]["faults"], "rounds repeat each other");
    for line in dry("11", "pause,snapshot").lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for f in v["faults"].as_array().unwrap() {
            assert!(f["kind"] == "pause" || f["kind"] == "snapshot", "{f}");
        }
    }
    // Bad arguments exit 2.
    let out = Command::new(flotilla_bin()).args(["check", "--nodes", "4"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
