"""Benchmarks of the Python package, each a ratio measured in one run on one machine.

1. ``StreamPCA.partial_fit`` over the service (loopback) against scikit-learn's
   ``IncrementalPCA.partial_fit`` in this process: Fashion-MNIST (n = 784), b = 256
   rows per call, p = 16 components, float64 rows; rows/s on the same rows, in pairs
   run back to back (their order alternating), so that both halves of a pair see the
   same machine load; the ratio of each pair, then their median, smallest and largest.
   StreamPCA is timed until its fitted attributes cover every batch (the last
   ``components_`` access waits for the service's fit); each StreamPCA run is a fresh
   estimator (a fresh served model). IncrementalPCA runs on the BLAS thread count that
   is faster here (numpy's default and one thread are compared first). The service
   runs with ``--sync always`` (fsync per batch, the default) and ``--sync never``.
   ``--configs`` lists the StreamPCA settings to pair, as
   ``max_in_flight:buffer_bytes`` (default ``4:1048576``, the estimator's defaults:
   four background requests in flight; a 256-row call, 1.6 MB of float64, is larger
   than the 1 MiB buffer, so each call is one request). ``0:…`` is the synchronous
   client (each call waits for its request).
2. ``Client.project`` of 10 000 rows (k = 16): ``.npy`` body with an ``.npz`` answer
   against JSON both ways, scores only and with reconstructions; median of interleaved
   repetitions.

The load average (``os.getloadavg``) is printed before and after each part: the
machine these numbers come from is shared.

Usage: python bench/bench.py [--bin target/release/streampca] [--rows 60000] [--pairs 5]
       [--sync always,never] [--configs 4:1048576,2:1048576] [--no-project]

``--rows`` defaults to the whole Fashion-MNIST training set; fewer rows weigh the
served model's creation and the wait for its last fit (together ~0.1 s) more.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pathlib
import statistics
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import Server, server_binary  # noqa: E402

import streampca  # noqa: E402
from streampca.sklearn import StreamPCA  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def load(rows: int) -> np.ndarray:
    if not os.path.exists(DATA):
        sys.exit(f"{DATA} is missing: apt-get install dataset-fashion-mnist")
    with gzip.open(DATA) as f:
        X = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    return X[:rows].astype(np.float64) / 255.0


def angles(V: np.ndarray, W: np.ndarray) -> float:
    return max(
        float(2 * np.arcsin(min(1.0, np.linalg.norm(v - np.sign(v @ w) * w) / 2)))
        for v, w in zip(V, W)
    )


def load_average() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def ipca_rate(X: np.ndarray, b: int, p: int, threads) -> tuple:
    from sklearn.decomposition import IncrementalPCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        est = IncrementalPCA(p, batch_size=b)
        t = time.perf_counter()
        for i in range(0, len(X), b):
            est.partial_fit(X[i : i + b])
        dt = time.perf_counter() - t
    return len(X) / dt, est


def streampca_rate(
    url: str, X: np.ndarray, b: int, p: int, in_flight: int, buffer_bytes: int
) -> tuple:
    est = StreamPCA(p, url=url, buffer_bytes=buffer_bytes, max_in_flight=in_flight)
    t = time.perf_counter()
    for i in range(0, len(X), b):
        est.partial_fit(X[i : i + b])
    sent = time.perf_counter() - t
    est.components_  # waits for the fit of every batch
    dt = time.perf_counter() - t
    return len(X) / dt, len(X) / sent, est


def spread(xs) -> str:
    return f"median {statistics.median(xs):.2f}, min {min(xs):.2f}, max {max(xs):.2f}"


def bench_partial_fit(
    X: np.ndarray, b: int, p: int, pairs: int, syncs: list, configs: list
) -> None:
    from sklearn.decomposition import PCA

    print(f"partial_fit: {load_average()}")
    exact = PCA(p, svd_solver="full").fit(X).components_
    # IncrementalPCA's cost per call does not depend on the rows before it (one SVD of
    # (p + b + 1) × n): 8 calls tell which thread count is faster here.
    probe = X[: 8 * b]
    probe_rates = {t: ipca_rate(probe, b, p, t)[0] for t in (None, 1)}
    threads = max(probe_rates, key=probe_rates.get)
    print(
        f"IncrementalPCA probe (8 calls): {probe_rates[None]:,.0f} rows/s with numpy's "
        f"default BLAS threads, {probe_rates[1]:,.0f} with 1; the pairs use "
        f"{'1 thread' if threads == 1 else 'the default'}"
    )
    for sync in syncs:
        s = Server("--sync", sync)
        try:
            for in_flight, buffer_bytes in configs:
                pairs_of(s.url, X, b, p, pairs, threads, exact, sync, in_flight, buffer_bytes)
        finally:
            s.stop()


def pairs_of(url, X, b, p, pairs, threads, exact, sync, in_flight, buffer_bytes) -> None:
    """``pairs`` back-to-back runs of IncrementalPCA and StreamPCA with one setting."""
    setting = f"--sync {sync}, max_in_flight={in_flight}, buffer_bytes={buffer_bytes}"
    ratios, ours, theirs, sends = [], [], [], []
    for i in range(pairs):
        runs = {}
        for who in (("ipca", "ours") if i % 2 == 0 else ("ours", "ipca")):
            if who == "ipca":
                runs[who] = ipca_rate(X, b, p, threads)
            else:
                runs[who] = streampca_rate(url, X, b, p, in_flight, buffer_bytes)
        rate, send_rate, est = runs["ours"]
        angle = angles(est.components_, exact)
        est.close()
        ipca_r, ipca = runs["ipca"]
        ours.append(rate)
        sends.append(send_rate)
        theirs.append(ipca_r)
        ratios.append(rate / ipca_r)
        print(
            f"  {setting} pair {i + 1}: StreamPCA {rate:,.0f} rows/s until fitted "
            f"({send_rate:,.0f} for the calls alone; angle to exact PCA "
            f"{angle:.1e} rad), IncrementalPCA {ipca_r:,.0f} rows/s (angle "
            f"{angles(ipca.components_, exact):.1e} rad): {rate / ipca_r:.2f}x",
            flush=True,
        )
    print(
        f"StreamPCA.partial_fit ({setting}) / IncrementalPCA.partial_fit over "
        f"{pairs} pairs: {spread(ratios)}x; StreamPCA "
        f"{statistics.median(ours):,.0f} rows/s (calls alone "
        f"{statistics.median(sends):,.0f}), IncrementalPCA "
        f"{statistics.median(theirs):,.0f} rows/s (medians); {load_average()}",
        flush=True,
    )


def bench_project(X: np.ndarray, p: int, reps: int) -> None:
    # 10 000 rows of 784 as JSON take ~150 MB: a body limit that lets JSON send them in
    # one request, as the binary body does.
    s = Server("--sync", "never", "--body-limit", str(1 << 30))
    try:
        with streampca.Client(s.url) as c:
            c.create_model("bench", X.shape[1], p)
            c.ingest("bench", X)
            c.wait_until_fitted("bench", 300)
            Q = X[:10_000]
            for reconstruct in (False, True):
                times = {True: [], False: []}
                for _ in range(reps):
                    for binary in (True, False):
                        t = time.perf_counter()
                        r = c.project("bench", Q, k=p, reconstruct=reconstruct, binary=binary)
                        times[binary].append(time.perf_counter() - t)
                        assert r.scores.shape == (10_000, p)
                nb, nj = statistics.median(times[True]), statistics.median(times[False])
                ratios = [j / b for b, j in zip(times[True], times[False])]
                what = "scores + reconstructions" if reconstruct else "scores"
                print(
                    f"project 10000 rows ({what}): .npy/.npz {nb * 1e3:.0f} ms, JSON "
                    f"{nj * 1e3:.0f} ms (medians of {reps}); JSON/binary per pair: "
                    f"{spread(ratios)}x; {load_average()}"
                )
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="server binary (default: STREAMPCA_BIN or target/debug/streampca)")
    ap.add_argument("--rows", type=int, default=60_000, help="rows per run (both sides)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sync", default="always,never", help="server --sync settings")
    ap.add_argument(
        "--configs",
        default="4:1048576",
        help="StreamPCA settings, comma-separated max_in_flight:buffer_bytes",
    )
    ap.add_argument("--no-project", action="store_true", help="skip the project benchmark")
    args = ap.parse_args()
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    if args.bin:
        os.environ["STREAMPCA_BIN"] = str(pathlib.Path(args.bin).resolve())
    if server_binary() is None:
        sys.exit("no server binary: build it (cargo test --no-run) or pass --bin")
    print(f"server: {server_binary()}")
    X = load(args.rows)
    print(f"Fashion-MNIST: {X.shape[0]} rows of {X.shape[1]}, b = {args.batch}, p = {args.components}")
    bench_partial_fit(
        X, args.batch, args.components, args.pairs, args.sync.split(","), configs
    )
    if not args.no_project:
        bench_project(X, args.components, args.reps)


if __name__ == "__main__":
    main()
