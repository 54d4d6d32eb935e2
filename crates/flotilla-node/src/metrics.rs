//! Counters for `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub proposals: AtomicU64,
    pub proposals_refused: AtomicU64,
    pub applied_entries: AtomicU64,
    pub reads: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_micros: AtomicU64,
    pub persisted_entries: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_dropped_fault: AtomicU64,
    pub messages_dropped_unconnected: AtomicU64,
    pub elections_started: AtomicU64,
    pub leader_changes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub bad_frames: AtomicU64,
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshot_installs_failed: AtomicU64,
    pub snapshot_bytes_sent: AtomicU64,
    pub events_lagged: AtomicU64,
    pub requests_forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub loop_stalls: AtomicU64,
    /// A gauge: the longest gap between two ticks counted in `loop_stalls`.
    pub longest_loop_stall_ms: AtomicU64,
}

impl Metrics {
    /// Renders the counters plus the gauges given by the caller.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters: [(&str, &str, &AtomicU64); 23] = [
            (
                "flotilla_proposals_total",
                "commands proposed on this node as leader",
                &self.proposals,
            ),
            (
                "flotilla_proposals_refused_total",
                "proposals refused (not leader, busy)",
                &self.proposals_refused,
            ),
            (
                "flotilla_applied_entries_total",
                "entries applied to the state machine",
                &self.applied_entries,
            ),
            ("flotilla_reads_total", "linearizable or lease reads confirmed", &self.reads),
            ("flotilla_fsyncs_total", "durable log writes (group commits)", &self.fsyncs),
            ("flotilla_fsync_micros_total", "time spent in durable log writes", &self.fsync_micros),
            (
                "flotilla_persisted_entries_total",
                "log entries made durable",
                &self.persisted_entries,
            ),
            ("flotilla_messages_sent_total", "raft messages sent to peers", &self.messages_sent),
            (
                "flotilla_messages_received_total",
                "raft messages received from peers",
                &self.messages_received,
            ),
            (
                "flotilla_messages_dropped_fault_total",
                "messages dropped by injected faults",
                &self.messages_dropped_fault,
            ),
            (
                "flotilla_messages_dropped_unconnected_total",
                "messages dropped: peer not connected or queue full",
                &self.messages_dropped_unconnected,
            ),
            (
                "flotilla_elections_started_total",
                "elections (and pre-votes) started here",
                &self.elections_started,
            ),
            (
                "flotilla_leader_changes_total",
                "times this node saw a new leader",
                &self.leader_changes,
            ),
            (
                "flotilla_handshake_failures_total",
                "peer connections refused at the handshake",
                &self.handshake_failures,
            ),
            (
                "flotilla_bad_frames_total",
                "peer connections closed for a malformed frame",
                &self.bad_frames,
            ),
            ("flotilla_snapshots_built_total", "snapshots built here", &self.snapshots_built),
            (
                "flotilla_snapshots_installed_total",
                "snapshots installed from a leader",
                &self.snapshots_installed,
            ),
            (
                "flotilla_snapshot_installs_failed_total",
                "received snapshots the state machine refused (it kept its state)",
                &self.snapshot_installs_failed,
            ),
            (
                "flotilla_snapshot_bytes_sent_total",
                "snapshot bytes sent to followers, resends included",
                &self.snapshot_bytes_sent,
            ),
            (
                "flotilla_events_lagged_total",
                "events skipped by slow /v1/events readers",
                &self.events_lagged,
            ),
            (
                "flotilla_requests_forwarded_total",
                "leader-only requests this follower proxied to the leader (--forward)",
                &self.requests_forwarded,
            ),
            (
                "flotilla_forward_failures_total",
                "forwarded requests that got no answer from the leader (503 or 504)",
                &self.forward_failures,
            ),
            (
                "flotilla_raft_loop_stalls_total",
                "ticks that came over half the shortest election timeout late (loop busy)",
                &self.loop_stalls,
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let longest = self.longest_loop_stall_ms.load(Ordering::Relaxed) as f64;
        let own = [(
            "flotilla_raft_loop_longest_stall_ms",
            "the longest of those stalls since start, in milliseconds",
            longest,
        )];
        for (name, help, v) in own.iter().chain(gauges) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
