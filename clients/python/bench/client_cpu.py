"""Client CPU per row of ``StreamPCA.partial_fit`` (and the server's, from /proc).

Runs ``--runs`` fresh estimators over the same Fashion-MNIST rows (b = 256, p = 16) against
one server and prints, per run, the client process's CPU seconds (``getrusage``, every
thread: validation, ``var_``'s sums, copies, HTTP) and the server process's CPU seconds
(``/proc/<pid>/stat``), per row, from the first ``partial_fit`` until the fitted
``components_`` are read. ``--profile FILE`` writes a cProfile of the last run.

Usage: python bench/client_cpu.py [--bin target/release/streampca] [--rows 20480]
       [--runs 5] [--sync never] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pathlib
import resource
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench import load, load_average  # noqa: E402
from conftest import Server  # noqa: E402

from streampca.sklearn import StreamPCA  # noqa: E402


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, X, b: int, p: int, pid: int, profile=None):
    est = StreamPCA(p, url=url)
    c0, s0, t0 = cpu_self(), cpu_of(pid), time.perf_counter()
    if profile is not None:
        profile.enable()
    for i in range(0, len(X), b):
        est.partial_fit(X[i : i + b])
    est.components_
    if profile is not None:
        profile.disable()
    c1, s1, t1 = cpu_self(), cpu_of(pid), time.perf_counter()
    est.close()
    return (c1 - c0) / len(X), (s1 - s0) / len(X), len(X) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin")
    ap.add_argument("--rows", type=int, default=20_480)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--sync", default="never")
    ap.add_argument("--profile")
    args = ap.parse_args()
    if args.bin:
        os.environ["STREAMPCA_BIN"] = str(pathlib.Path(args.bin).resolve())
    X = load(args.rows)
    s = Server("--sync", args.sync)
    try:
        run(s.url, X[: 4 * args.batch], args.batch, args.components, s.proc.pid)  # warm-up
        client, server, rate = [], [], []
        for i in range(args.runs):
            prof = cProfile.Profile() if args.profile and i == args.runs - 1 else None
            c, sv, r = run(s.url, X, args.batch, args.components, s.proc.pid, prof)
            client.append(c * 1e6)
            server.append(sv * 1e6)
            rate.append(r)
            print(
                f"run {i + 1}: client {c * 1e6:.1f} µs/row, server {sv * 1e6:.1f} µs/row, "
                f"{r:,.0f} rows/s until fitted; {load_average()}",
                flush=True,
            )
            if prof is not None:
                prof.dump_stats(args.profile)
        med = statistics.median
        print(
            f"medians of {args.runs}: client {med(client):.1f} µs/row "
            f"({min(client):.1f}–{max(client):.1f}), server {med(server):.1f} µs/row "
            f"({min(server):.1f}–{max(server):.1f}), {med(rate):,.0f} rows/s; {load_average()}"
        )
    finally:
        s.stop()


if __name__ == "__main__":
    main()
