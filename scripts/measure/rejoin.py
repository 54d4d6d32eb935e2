#!/usr/bin/env python3
# Usage: python3 scripts/measure/rejoin.py target/release/flotilla [RUNS]
# A follower killed with -9 and restarted 3 s later (long enough for the leader's link to
# it to reach its longest reconnect back-off, 1 s): time from the restart until it names
# the leader, and how many elections (pre-votes) it started before hearing from it.
import json, random, shutil, signal, subprocess, sys, tempfile, time, urllib.request
BIN = sys.argv[1]; RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
d = tempfile.mkdtemp(prefix="rejoin-"); port = random.randrange(20000, 40000, 100)
ids = (1, 2, 3)
spec = ",".join(f"{i}=127.0.0.1:{port+i}@127.0.0.1:{port+1000+i}" for i in ids)
cmd = {i: [BIN, "node", "--id", str(i), "--data-dir", f"{d}/n{i}", "--listen", f"127.0.0.1:{port+i}",
           "--api", f"127.0.0.1:{port+1000+i}", "--initial-cluster", spec] for i in ids}
spawn = lambda i: subprocess.Popen(cmd[i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def get(i, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port+1000+i}{path}", timeout=1) as r: return r.read()
    except Exception: return None
def status(i):
    b = get(i, "/v1/status"); return json.loads(b) if b else None
def elections(i):
    for line in (get(i, "/metrics") or b"").decode().splitlines():
        if line.startswith("flotilla_elections_started_total "): return int(float(line.split()[1]))
procs = {i: spawn(i) for i in ids}
try:
    for run in range(RUNS):
        leader = None
        while leader is None:
            leader = next((s["leader"] for s in map(status, ids) if s and s.get("leader")), None)
            time.sleep(0.05)
        time.sleep(0.5)
        f = next(i for i in ids if i != leader)
        procs[f].kill(); procs[f].wait(); time.sleep(3)
        t0 = time.time(); procs[f] = spawn(f); heard = None
        while time.time() - t0 < 5:
            s = status(f)
            if s and s.get("leader") == leader: heard = (time.time() - t0) * 1000; break
            time.sleep(0.005)
        said = f"{heard:.0f} ms" if heard is not None else "not within 5 s"
        print(f"run {run}: node {f} restarted, names leader {leader} after {said}, "
              f"elections started {elections(f)}", flush=True)
finally:
    for p in procs.values(): p.send_signal(signal.SIGTERM)
    for p in procs.values(): p.wait(timeout=20)
    shutil.rmtree(d, ignore_errors=True)
