#!/usr/bin/env python3
# Usage: python3 scripts/measure/failover_quick.py target/release/flotilla [RUNS]
# Failover after kill -9 of the leader: time to a new leader agreed by the survivors, and
# client-observed unavailability (kill -> first successful write), 3-node release cluster.
import json, shutil, subprocess, sys, time, urllib.request, urllib.error
BIN = sys.argv[1]; RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
base = 37100; d = "/tmp/failover"; shutil.rmtree(d, ignore_errors=True)
spec = ",".join(f"{i}=127.0.0.1:{base+i}@127.0.0.1:{base+1000+i}" for i in (1, 2, 3))
def spawn(i):
    return subprocess.Popen([BIN, "node", "--id", str(i), "--data-dir", f"{d}/n{i}", "--initial-cluster", spec], stderr=subprocess.DEVNULL)
def status(i):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{base+1000+i}/v1/status", timeout=0.3) as r: return json.load(r)
    except Exception: return None
def put(i, k):
    req = urllib.request.Request(f"http://127.0.0.1:{base+1000+i}/v1/kv/{k}", data=b"v", method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=0.5) as r: return r.status == 200
    except Exception: return False
procs = {i: spawn(i) for i in (1, 2, 3)}
def leader_of(ids):
    sts = [status(i) for i in ids]
    ls = [s for s in sts if s and s["role"] == "leader"]
    if len(ls) == 1 and all(s and s["leader"] == ls[0]["id"] for s in sts): return ls[0]["id"]
    return None
t = time.time()
while leader_of([1, 2, 3]) is None and time.time() - t < 10: time.sleep(0.01)
elect, unavail = [], []
for run in range(RUNS):
    L = leader_of([1, 2, 3]); rest = [i for i in (1, 2, 3) if i != L]
    t0 = time.time(); procs[L].kill(); procs[L].wait()
    new = None; t_elect = None; t_write = None; n = 0
    while time.time() - t0 < 10 and (t_elect is None or t_write is None):
        if t_elect is None and leader_of(rest) is not None: t_elect = time.time() - t0; new = leader_of(rest)
        if t_write is None:
            for i in rest:
                if put(i, f"r{run}-{n}"): t_write = time.time() - t0; break
            n += 1
        time.sleep(0.002)
    elect.append(t_elect); unavail.append(t_write)
    print(f"run {run}: killed {L}; new leader {new} after {t_elect*1000:.0f} ms; first write ok after {t_write*1000:.0f} ms")
    procs[L] = spawn(L)
    t = time.time()
    while time.time() - t < 10:
        s = status(L); ls = status(new)
        if s and ls and s["applied_index"] >= ls["commit_index"] and s["leader"] == new: break
        time.sleep(0.02)
    time.sleep(0.5)
for name, xs in (("new leader", elect), ("client unavailability", unavail)):
    xs = sorted(xs); print(f"{name}: min {xs[0]*1000:.0f} median {xs[len(xs)//2]*1000:.0f} max {xs[-1]*1000:.0f} ms")
for p in procs.values(): p.kill()
