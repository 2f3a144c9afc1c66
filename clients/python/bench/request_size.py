"""The service's ingest cost per row against the size of the request: the same
Fashion-MNIST rows (n = 784, float64) sent as ``.npy`` bodies of 256 rows and of
10 240 rows, one request at a time over one keep-alive connection, alternating sizes
run after run. Bodies are encoded before the clock starts, so the client's cost is the
HTTP exchange alone. Per run: rows/s (wall) and rows per second of the server's CPU
time (user + system, from ``/proc/<pid>/stat``, which includes its trainer).

``--hold SECONDS`` keeps each run's server alive that long before the first request and
prints its pid, so that ``perf record -p PID`` can attach to it.

Usage: python bench/request_size.py [--bin target/release/streampca] [--rows 40960]
       [--sizes 256,10240] [--runs 3] [--sync never]
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import statistics
import sys
import time

import httpx
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench import load  # noqa: E402
from conftest import Server, server_binary  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def bodies(X: np.ndarray, rows: int) -> list:
    out = []
    for i in range(0, len(X), rows):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(X[i : i + rows]))
        out.append(buf.getvalue())
    return out


def run(s: Server, name: str, payloads: list, rows: int) -> tuple:
    with httpx.Client(base_url=s.url, timeout=600) as c:
        r = c.post("/v1/models", json={"name": name, "dim": 784, "components": 16})
        r.raise_for_status()
        pid = s.proc.pid
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        for body in payloads:
            r = c.post(
                f"/v1/models/{name}/samples",
                content=body,
                headers={"content-type": "application/x-npy"},
            )
            r.raise_for_status()
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
        c.delete(f"/v1/models/{name}").raise_for_status()
    return rows / wall, rows / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="server binary (default: STREAMPCA_BIN or target/debug/streampca)")
    ap.add_argument("--rows", type=int, default=40_960)
    ap.add_argument("--sizes", default="256,10240")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sync", default="never")
    ap.add_argument("--hold", type=float, default=0.0)
    args = ap.parse_args()
    if args.bin:
        os.environ["STREAMPCA_BIN"] = str(pathlib.Path(args.bin).resolve())
    if server_binary() is None:
        sys.exit("no server binary: build it (cargo test --no-run) or pass --bin")
    sizes = [int(v) for v in args.sizes.split(",")]
    X = load(args.rows)
    payloads = {b: bodies(X, b) for b in sizes}
    print(f"server {server_binary()}, {len(X)} rows of 784 per run, --sync {args.sync}")
    results = {b: [] for b in sizes}
    for i in range(args.runs):
        for b in sizes if i % 2 == 0 else sizes[::-1]:
            s = Server("--sync", args.sync)
            try:
                if args.hold:
                    print(f"  server pid {s.proc.pid}: {b}-row requests in {args.hold} s", flush=True)
                    time.sleep(args.hold)
                wall, per_cpu = run(s, f"size{b}", payloads[b], len(X))
            finally:
                s.stop()
            results[b].append((wall, per_cpu))
            loadavg = " ".join(f"{v:.1f}" for v in os.getloadavg())
            print(
                f"  run {i + 1}, {b:>6}-row requests: {wall:,.0f} rows/s, "
                f"{per_cpu:,.0f} rows per server CPU second (load {loadavg})",
                flush=True,
            )
    for b in sizes:
        walls = [w for w, _ in results[b]]
        cpus = [c for _, c in results[b]]
        print(
            f"{b:>6}-row requests: median {statistics.median(walls):,.0f} rows/s "
            f"({min(walls):,.0f}-{max(walls):,.0f}), {statistics.median(cpus):,.0f} rows "
            f"per server CPU second ({min(cpus):,.0f}-{max(cpus):,.0f})"
        )


if __name__ == "__main__":
    main()
