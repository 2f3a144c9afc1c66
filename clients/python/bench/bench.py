"""Benchmarks of the Python package, each a ratio measured in one run on one machine.

1. ``StreamPCA.partial_fit`` over the service (loopback) against scikit-learn's
   ``IncrementalPCA.partial_fit`` in this process: Fashion-MNIST (n = 784), b = 256
   rows per call, p = 16 components, float64 rows; rows/s. StreamPCA is timed until its
   fitted attributes cover every batch (the last ``components_`` access waits for the
   service's fit), IncrementalPCA with its numpy default BLAS threads and with one (the
   better counts). The service runs with ``--sync always`` (fsync per batch, the
   default) and ``--sync never``. With the default ``buffer_bytes`` (1 MiB) each
   256-row call (1.6 MB of float64) is one request.
2. ``Client.project`` of 10 000 rows (k = 16): ``.npy`` body with an ``.npz`` answer
   against JSON both ways, scores only and with reconstructions; median of interleaved
   repetitions.

Usage: python bench/bench.py [--bin target/release/streampca] [--rows 60000]
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


def streampca_rate(url: str, X: np.ndarray, b: int, p: int, buffer_bytes: int) -> tuple:
    est = StreamPCA(p, url=url, buffer_bytes=buffer_bytes)
    t = time.perf_counter()
    for i in range(0, len(X), b):
        est.partial_fit(X[i : i + b])
    sent = time.perf_counter() - t
    est.components_  # waits for the fit of every batch
    dt = time.perf_counter() - t
    return len(X) / dt, len(X) / sent, est


def bench_partial_fit(X: np.ndarray, b: int, p: int) -> None:
    from sklearn.decomposition import PCA

    exact = PCA(p, svd_solver="full").fit(X).components_
    rates = {}
    # IncrementalPCA's cost per call does not depend on the rows before it (one SVD of
    # (p + b + 1) × n), so its rate is measured on the first 40 batches; the accuracy
    # figure below is its fit of those rows.
    head = X[: 40 * b]
    for threads in (None, 1):
        rates[threads], ipca = ipca_rate(head, b, p, threads)
    exact_head = PCA(p, svd_solver="full").fit(head).components_
    best = max(rates.values())
    print(
        f"IncrementalPCA.partial_fit: {rates[None]:,.0f} rows/s (default BLAS threads), "
        f"{rates[1]:,.0f} (1 thread); largest angle to exact PCA {angles(ipca.components_, exact_head):.1e} rad"
    )
    for sync in ("always", "never"):
        s = Server("--sync", sync)
        try:
            rate, send_rate, est = streampca_rate(s.url, X, b, p, 1 << 20)
            print(
                f"StreamPCA.partial_fit (--sync {sync}): {rate:,.0f} rows/s until fitted "
                f"({send_rate:,.0f} rows/s for the calls alone) = {rate / best:.2f}x "
                f"IncrementalPCA's best; largest angle to exact PCA "
                f"{angles(est.components_, exact):.1e} rad"
            )
            est.close()
        finally:
            s.stop()


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
                what = "scores + reconstructions" if reconstruct else "scores"
                print(
                    f"project 10000 rows ({what}): .npy/.npz {nb * 1e3:.0f} ms, JSON "
                    f"{nj * 1e3:.0f} ms: binary {nj / nb:.1f}x faster (median of {reps})"
                )
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="server binary (default: STREAMPCA_BIN or target/debug/streampca)")
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if args.bin:
        os.environ["STREAMPCA_BIN"] = str(pathlib.Path(args.bin).resolve())
    if server_binary() is None:
        sys.exit("no server binary: build it (cargo test --no-run) or pass --bin")
    print(f"server: {server_binary()}")
    X = load(args.rows)
    print(f"Fashion-MNIST: {X.shape[0]} rows of {X.shape[1]}, b = {args.batch}, p = {args.components}")
    bench_partial_fit(X, args.batch, args.components)
    bench_project(X, args.components, args.reps)


if __name__ == "__main__":
    main()
