#!/usr/bin/env python3
"""bench_report.py RAW.jsonl DOC.md - render scripts/compare-etcd.sh's raw JSON lines as
the Flotilla-vs-etcd section of DOC.md (between the compare-etcd markers; the rest of the
file is kept). Cells are medians over the repetitions; the spread is shown beside them."""
import json
import statistics
import sys
from collections import defaultdict

BEGIN, END = "<!-- compare-etcd:begin -->", "<!-- compare-etcd:end -->"


def load(path):
    rows = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def med(v):
    return statistics.median(v) if v else None


def f(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def ratio(a, b):
    return None if not a or not b else a / b


def render(rows):
    machine = [r for r in rows if r.get("kind") == "machine"]
    start = next((m for m in machine if m["phase"] == "start"), {})
    end = next((m for m in machine if m["phase"] == "end"), {})
    loads = defaultdict(list)
    for r in rows:
        if "workload" in r and "ops_per_s" in r:
            loads[(r["workload"], r["clients"], r["target"])].append(r)
    reps = max((len(v) for v in loads.values()), default=0)
    out = [BEGIN, "", "## Flotilla vs etcd on the same machine", ""]
    out.append(
        f"Measured {start.get('date_utc', '?')} with `scripts/compare-etcd.sh` on "
        f"{start.get('cpus', '?')} × {start.get('cpu', '?')}, {start.get('mem_mib', '?')} MiB, "
        f"Linux {start.get('kernel', '?')}; {start.get('etcd', 'etcd ?')} from Debian. "
        f"3 nodes on 127.0.0.1 each, fsync on, default timeouts, fresh cluster per repetition, "
        f"the two systems alternating; {reps} repetitions, medians shown (min–max beside the "
        f"throughput). Load average (1/5/15 min) at start {' '.join(start.get('loadavg', []))}, "
        f"at end {' '.join(end.get('loadavg', []))}: other tenants share this box."
    )
    out.append("")
    out.append("Clients: Flotilla through its HTTP API (one keep-alive HTTP/1.1 connection per "
               "client, to the leader); etcd through its native gRPC API (HTTP/2, tonic, the clients multiplexed on a few connections). Keys "
               "16 B drawn from 10,000, values 128 B; `get` is linearizable (etcd: "
               "`serializable=false`); `mixed` is 90 % such reads.")
    out.append("")
    out.append("| workload | clients | Flotilla ops/s | etcd ops/s | ratio | Flotilla p50 / p99 / p999 ms "
               "| etcd p50 / p99 / p999 ms | errors F / e | target |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    targets = {("put", 1): ("≥ 3×", 3, False), ("put", 64): ("≥ 10×, p99 < etcd p50", 10, True),
               ("get", 64): ("≥ 5×", 5, False)}
    order = sorted({(w, c) for (w, c, _) in loads}, key=lambda k: (["put", "get", "mixed"].index(k[0])
                                                                 if k[0] in ("put", "get", "mixed") else 9, k[1]))
    for w, c in order:
        fl, et = loads.get((w, c, "flotilla"), []), loads.get((w, c, "etcd"), [])

        def cell(rs):
            if not rs:
                return None, "—", "—", 0
            ops = [r["ops_per_s"] for r in rs]
            lat = "{} / {} / {}".format(*(f(med([r[k] for r in rs]), 2) for k in ("p50_ms", "p99_ms", "p999_ms")))
            return med(ops), f"{f(med(ops))} ({f(min(ops))}–{f(max(ops))})", lat, sum(r["errors"] for r in rs)

        fo, fs, fl_lat, fe = cell(fl)
        eo, es, et_lat, ee = cell(et)
        rt = ratio(fo, eo)
        verdict = ""
        if (w, c) in targets:
            text, want, p99rule = targets[(w, c)]
            ok = rt is not None and rt >= want
            if p99rule and fl and et:
                ok = ok and med([r["p99_ms"] for r in fl]) < med([r["p50_ms"] for r in et])
            verdict = f"{text}: {'met' if ok else 'missed'}"
        out.append(f"| {w} | {c} | {fs} | {es} | {f(rt, 2) + '×' if rt else '—'} | {fl_lat} | {et_lat} "
                   f"| {fe} / {ee} | {verdict} |")
    out.append("")

    # Memory.
    idle = defaultdict(list)
    for r in rows:
        if r.get("kind") == "idle_rss":
            idle[r["target"]].append(max(r["rss_kib"].values() or [0]))
    under = defaultdict(list)
    for (w, c, t), rs in loads.items():
        if w == "put" and c == 64:
            under[t] += [max(r["rss_peak_kib"].values() or [0]) for r in rs]
    peak_any = defaultdict(list)
    for (w, c, t), rs in loads.items():
        peak_any[t] += [max(r["rss_peak_kib"].values() or [0]) for r in rs]
    # Targets are in MB (10^6 bytes); VmRSS is in KiB.
    mb = lambda v: "—" if v is None else f"{v * 1024 / 1e6:.1f} MB"
    within = lambda v, limit_mb: v is not None and v * 1024 <= limit_mb * 1e6
    out += ["RSS per node (VmRSS; the largest of the 3 nodes, median over repetitions):", "",
            "| | Flotilla | etcd | target |", "|---|---:|---:|---|",
            f"| idle, fresh cluster | {mb(med(idle['flotilla']))} | {mb(med(idle['etcd']))} | ≤ 25 MB: "
            f"{'met' if within(med(idle['flotilla']), 25) else 'missed'} |",
            f"| peak under put, 64 clients | {mb(med(under['flotilla']))} | {mb(med(under['etcd']))} | ≤ 100 MB: "
            f"{'met' if within(med(under['flotilla']), 100) else 'missed'} |",
            f"| peak over every workload | {mb(max(peak_any['flotilla'], default=None))} | "
            f"{mb(max(peak_any['etcd'], default=None))} | |", ""]

    # Failover.
    fo = [r for r in rows if r.get("kind") == "failover" and r.get("summary")]
    if fo:
        out += ["Failover after `kill -9` of the leader under a write load (`flotilla bench failover`; "
                "new leader = a survivor names a leader of a newer term; unavailability = kill → first "
                "write acknowledged in the newer term, probes every 5 ms), in ms:", "",
                "| system | runs | new leader median / max | unavailability min / median / p90 / max |",
                "|---|---:|---:|---:|"]
        names = {"flotilla": "Flotilla (election 150–300 ms, heartbeat 50 ms)",
                 "etcd-default": "etcd, default (heartbeat 100, election 1000)",
                 "etcd-tuned": "etcd, tuned (heartbeat 30, election 150)"}
        for r in fo:
            nl, un = r.get("new_leader_ms") or {}, r.get("unavailable_ms") or {}
            out.append(f"| {names.get(r['config'], r['config'])} | {r['recovered']}/{r['runs']} | "
                       f"{f(nl.get('median'))} / {f(nl.get('max'))} | {f(un.get('min'))} / {f(un.get('median'))} / "
                       f"{f(un.get('p90'))} / {f(un.get('max'))} |")
        flo = next((r for r in fo if r["config"] == "flotilla"), None)
        if flo and flo.get("unavailable_ms"):
            u = flo["unavailable_ms"]
            out += ["", f"Target: median ≤ 350 ms ({'met' if u['median'] <= 350 else 'missed'}, "
                        f"{f(u['median'])}), worst of {flo['runs']} ≤ 600 ms "
                        f"({'met' if u['max'] <= 600 and flo['recovered'] == flo['runs'] else 'missed'}, {f(u['max'])})."]
        out.append("")

    inproc = [r for r in rows if r.get("bench") == "inproc"]
    if inproc:
        layouts = [
            ((True, False), "a thread per node, log and apply on threads of their own (as in a real node)"),
            ((True, True), "a thread per node, log and apply on the node's thread (`--node-thread-io`)"),
            ((False, True), "all three nodes and the proposers on one thread (`--one-thread --node-thread-io`)"),
            ((False, False), "all on one thread, log and apply on threads of their own (`--one-thread`)"),
        ]
        out += [f"In-process ceiling (`cargo bench -p flotilla-node --bench inproc`: 3 nodes in one process, "
                f"in-memory log, no network, {inproc[0]['clients']} concurrent proposers on the leader):", "",
                "| layout | writes/s, median (range) | p50 / p99 ms |", "|---|---|---|"]
        best = None
        for key, name in layouts:
            rs = [r for r in inproc
                  if (r.get("thread_per_node", True), r.get("io_on_node_thread", False)) == key]
            if not rs:
                continue
            w = [r["writes_per_s"] for r in rs]
            out.append(f"| {name} | {f(med(w))} ({f(min(w))}–{f(max(w))}) | "
                       f"{f(med([r['p50_ms'] for r in rs]), 2)} / {f(med([r['p99_ms'] for r in rs]), 2)} |")
            if best is None or med(w) > best[0]:
                best = (med(w), name)
        out += ["", f"Target ≥ 500,000: {'met' if best[0] >= 500000 else 'missed'} "
                    f"(best layout: {best[1]}, {f(best[0])}).", ""]
    out.append(END)
    return "\n".join(out)


def main():
    raw, doc = sys.argv[1], sys.argv[2]
    section = render(load(raw))
    try:
        text = open(doc).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    if BEGIN in text and END in text:
        a, rest = text.split(BEGIN, 1)
        _, b = rest.split(END, 1)
        text = a + section + b
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(doc, "w").write(text)


if __name__ == "__main__":
    main()
