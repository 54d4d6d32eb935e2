#!/usr/bin/env python3
"""fsync-probe.py - how long a durable append takes on this disk, alone and shared.

    python3 scripts/fsync-probe.py [--dir DIR] [--writers N] [--size BYTES] [--count K]

Each of N processes appends SIZE-byte records to its own file in DIR and calls
fdatasync after each one, K times; each prints its p50/p90/p99 latency and rate. N=3
is what a local 3-node cluster asks of the disk (docs/benchmarks.md, "What limits the
targets that were missed"). The files are removed afterwards.
"""
import argparse
import os
import time
from multiprocessing import Process


def writer(n, args):
    path = os.path.join(args.dir, f"fsync-probe-{os.getpid()}-{n}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
        record, lat, off = b"x" * args.size, [], 0
        start = time.perf_counter()
        for _ in range(args.count):
            t = time.perf_counter()
            os.pwrite(fd, record, off)
            off += args.size
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
    print(f"writer {n}: {args.size} B appends, p50 {q(0.5):.3f} p90 {q(0.9):.3f} "
          f"p99 {q(0.99):.3f} ms, {args.count / elapsed:.0f} syncs/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=".")
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--count", type=int, default=1500)
    args = ap.parse_args()
    procs = [Process(target=writer, args=(n, args)) for n in range(args.writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
