#!/usr/bin/env python3
"""Trainer CPU share under a continuous stream, and the delay to a covering fit.

One run of the release server per case, cases alternating in each round so all see the
same machine: a fresh model (n = 784, 16 components, K = 2 partitions, `--sync always`)
gets one 256-row batch and its first fit; in the `monitored` cases a `GET /limits` then
marks it monitored (its trainer computes the control-limit moments with every fit, which
is what every fit did before the moments were deferred), in the `unmonitored` cases not.
Then two producers stream ROWS rows of Fashion-MNIST (or synthetic 784-d rows when the
Debian dataset is absent) in 256-row `.npy` batches, PASSES times. Measured:

- mean fit: wall seconds of the fits published during the stream (the sum of
  `streampca_training_step_duration_seconds`) / fits seen by a 20 ms status poller;
- trainer share: CPU seconds of the `train-m` thread / CPU seconds of the server process
  over the stream (from /proc/PID/task/*/stat);
- delay: from the last acknowledged batch to a status whose `fitted_sequence` covers it,
  either polling `GET /models/m` every 10 ms (`poll`) or with one
  `GET /models/m?fitted_sequence=S&wait=30` (`wait`).

Usage: bench/trainer_wait.py BIN [--rounds 3] [--rows 20480] [--passes 2] [--out FILE]
       [--build 'release build']
"""

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import requests

from benchlib import FASHION, fashion_mnist, start_server, stop_server

PORT = 18191
URL = f"http://127.0.0.1:{PORT}"
TICKS = os.sysconf("SC_CLK_TCK")


def rows(n):
    if os.path.exists(FASHION):
        return fashion_mnist()[:n], "Fashion-MNIST"
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((784, 40))
    x = rng.standard_normal((n, 40)) * np.linspace(30, 1, 40) @ basis.T
    return (x + rng.standard_normal((n, 784))).astype(np.float32), "synthetic 784-d"


def npy(batch):
    b = io.BytesIO()
    np.save(b, np.ascontiguousarray(batch))
    return b.getvalue()


def cpu(pid, thread=None):
    """CPU seconds of the process, or of its thread named `thread`."""
    if thread is None:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / TICKS
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name == thread:
            parts = text.rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / TICKS
    return total


def fit_seconds(session):
    """Wall seconds of every fit so far (the step-duration histogram's sum)."""
    for line in session.get(f"{URL}/metrics").text.splitlines():
        if line.startswith('streampca_training_step_duration_seconds_sum{model="m"}'):
            return float(line.split()[-1])
    return 0.0


def post(session, body):
    r = session.post(
        f"{URL}/v1/models/m/samples",
        data=body,
        headers={"content-type": "application/x-npy"},
    )
    r.raise_for_status()
    return r.json()["sequence"]


def run(binary, bodies, passes, monitored, wait):
    data = tempfile.mkdtemp(prefix=".bench-trainer.", dir=os.getcwd())
    server = None
    try:
        server, _ = start_server(binary, data, ["--sync", "always", "--log", "warn"],
                                 ready="/readyz", port=PORT, log=None)
        s = requests.Session()
        s.post(f"{URL}/v1/models",
               json={"name": "m", "dim": 784, "components": 16, "partitions": 2}
               ).raise_for_status()
        first = post(s, bodies[0])
        st = s.get(f"{URL}/v1/models/m?fitted_sequence={first}&wait=30").json()
        assert st["fitted_sequence"] >= first, st
        if monitored:
            s.get(f"{URL}/v1/models/m/limits").raise_for_status()
        seqs = []
        work = [b for _ in range(passes) for b in bodies]

        def producer(part):
            ps = requests.Session()
            mine = [post(ps, b) for b in part]
            seqs.extend(mine)

        fitted, done = set(), threading.Event()

        def watcher():  # counts the fits published during the stream
            ws = requests.Session()
            while not done.is_set():
                fitted.add(ws.get(f"{URL}/v1/models/m").json()["fitted_sequence"])
                time.sleep(0.02)

        c0, t0, f0 = cpu(server.pid), cpu(server.pid, "train-m"), fit_seconds(s)
        w0 = time.monotonic()
        threads = [threading.Thread(target=producer, args=(work[i::2],)) for i in range(2)]
        threads.append(threading.Thread(target=watcher))
        for t in threads[:2]:
            t.start()
        threads[2].start()
        for t in threads[:2]:
            t.join()
        last_ack = time.monotonic()
        c1, t1, f1 = cpu(server.pid), cpu(server.pid, "train-m"), fit_seconds(s)
        done.set()
        threads[2].join()
        last = max(seqs)
        if wait:
            st = s.get(f"{URL}/v1/models/m?fitted_sequence={last}&wait=30").json()
        else:
            while True:
                st = s.get(f"{URL}/v1/models/m").json()
                if st["fitted_sequence"] >= last or time.monotonic() - last_ack > 30:
                    break
                time.sleep(0.01)
        delay = time.monotonic() - last_ack
        assert st["fitted_sequence"] >= last, st
        rate = len(work) * 256 / (last_ack - w0)
        fits = max(len(fitted) - 1, 1)
        return (t1 - t0) / (c1 - c0), delay, rate, (f1 - f0) / fits, fits
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(data, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=20480)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--build", default="release build",
                   help="how BIN was built, for the report")
    a = p.parse_args()
    x, source = rows(a.rows)
    bodies = [npy(x[i : i + 256]) for i in range(0, len(x), 256)]
    cases = [(m, w) for m in (True, False) for w in (False, True)]
    res = {c: [] for c in cases}
    load0 = os.getloadavg()[0]
    for r in range(a.rounds):
        for c in cases:
            out = run(a.binary, bodies, a.passes, *c)
            res[c].append(out)
            print(f"round {r} monitored={c[0]} wait={c[1]}: trainer share {out[0]:.3f}, "
                  f"delay {out[1]*1000:.0f} ms, {out[2]:.0f} rows/s, "
                  f"mean fit {out[3]*1000:.0f} ms over {out[4]} fits, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    load1 = os.getloadavg()[0]
    med = lambda c, i: statistics.median(v[i] for v in res[c])
    lines = [
        "# Trainer CPU share and delay to a covering fit",
        "",
        f"Generated by `bench/trainer_wait.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{os.cpu_count()} cores, load average {load0:.2f} at the start and {load1:.2f} at the end; "
        f"{a.build}; {source}, {len(bodies)} batches of 256 rows × {a.passes} passes, "
        "2 producers, n = 784, 16 components, K = 2, `--sync always`; "
        f"{a.rounds} rounds, cases alternating; medians (each round in brackets).",
        "",
        "| case | trainer CPU / server CPU | delay last ack → covering fit (ms) | ingest rows/s | mean fit (ms) | fits seen |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        name = ("monitored" if c[0] else "unmonitored") + (", wait" if c[1] else ", poll")
        lines.append(
            f"| {name} | {med(c, 0):.3f} ({', '.join(f'{v[0]:.3f}' for v in res[c])}) "
            f"| {med(c, 1)*1000:.0f} ({', '.join(f'{v[1]*1000:.0f}' for v in res[c])}) "
            f"| {med(c, 2):.0f} | {med(c, 3)*1000:.0f} | {med(c, 4):.0f} |")
    share = lambda m: statistics.median(v[0] for w in (False, True) for v in res[(m, w)])
    delay = lambda w: statistics.median(v[1] for m in (True, False) for v in res[(m, w)])
    rate = lambda m: statistics.median(v[2] for w in (False, True) for v in res[(m, w)])
    fit = lambda m: statistics.median(v[3] for w in (False, True) for v in res[(m, w)])
    lines += [
        "",
        f"Ratios of medians over both waiting modes: trainer share unmonitored / monitored "
        f"{share(False)/share(True):.2f}; ingest rate unmonitored / monitored "
        f"{rate(False)/rate(True):.2f}; mean fit duration unmonitored / monitored "
        f"{fit(False)/fit(True):.2f}; over both monitoring modes: delay wait / poll "
        f"{delay(True)/delay(False):.2f}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
