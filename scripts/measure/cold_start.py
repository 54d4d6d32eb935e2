#!/usr/bin/env python3
# Usage: python3 scripts/measure/cold_start.py target/release/flotilla [RUNS]
# Cold-start election time and idle RSS of a 3-node release cluster.
import json, os, shutil, subprocess, sys, time, urllib.request
BIN = sys.argv[1]; RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
def status(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=0.5) as r:
            return json.load(r)
    except Exception:
        return None
times = []
for run in range(RUNS):
    d = f"/tmp/cold-{run}"; shutil.rmtree(d, ignore_errors=True)
    base = 27100 + run * 10
    spec = ",".join(f"{i}=127.0.0.1:{base+i}@127.0.0.1:{base+1000+i}" for i in (1, 2, 3))
    t0 = time.time()
    procs = [subprocess.Popen([BIN, "node", "--id", str(i), "--data-dir", f"{d}/n{i}", "--initial-cluster", spec],
                              stderr=subprocess.DEVNULL) for i in (1, 2, 3)]
    leader = None
    while time.time() - t0 < 10:
        sts = [status(base + 1000 + i) for i in (1, 2, 3)]
        ls = [s for s in sts if s and s["role"] == "leader"]
        if ls and all(s and s["leader"] == ls[0]["id"] for s in sts):
            leader = ls[0]["id"]; break
        time.sleep(0.005)
    el = time.time() - t0; times.append(el)
    time.sleep(3)
    rss = []
    for p in procs:
        with open(f"/proc/{p.pid}/status") as f:
            rss += [int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS")]
    print(f"run {run}: leader {leader} known to all {el*1000:.0f} ms after spawn; idle RSS MB {rss}")
    for p in procs: p.kill(); p.wait()
times.sort(); print(f"median {times[len(times)//2]*1000:.0f} ms, worst {times[-1]*1000:.0f} ms")
