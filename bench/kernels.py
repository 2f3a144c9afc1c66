"""numpy/OpenBLAS reference timings for the shapes `cargo bench --bench pca` measures.

Run in the same session as the criterion bench and compare the ratios:
  python3 bench/kernels.py
Single-threaded (OPENBLAS_NUM_THREADS=1 is set below), like the Rust kernels. Prints, per
shape, the median time of: the accumulator update (centre a 256-row batch and a
rank-256 dsyrk into an n×n scatter), the n×n·n×p product, and a symmetric eigensolve.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.linalg.blas import dsyrk  # noqa: E402

from benchlib import fashion_mnist  # noqa: E402


def median_time(fn, repeat=30, min_time=1.0):
    clock = time.thread_time if os.environ.get("CPU_TIME") else time.perf_counter
    fn()
    times = []
    start = clock()
    while len(times) < repeat or clock() - start < min_time:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        if len(times) > 10_000:
            break
    return float(np.median(times))


def main():
    rng = np.random.default_rng(1)
    print("kernel,shape,median_seconds,rows_per_second")
    for n in (64, 784, 2048):
        x = rng.random((256, n), dtype=np.float32)
        c = np.asfortranarray(np.zeros((n, n)))

        def update():
            xc = x.astype(np.float64)
            xc -= xc.mean(0)
            # lower triangle of xcᵀ xc (Fortran order: trans=1 gives aᵀa), in place
            dsyrk(1.0, xc, beta=1.0, c=c, trans=1, lower=1, overwrite_c=1)

        t = median_time(update)
        print(f"update_b256,n={n},{t:.6e},{256 / t:.1f}")
    n = 784
    a = rng.standard_normal((n, n))
    a = a @ a.T
    for p in (16, 64):
        v = rng.standard_normal((n, p))
        t = median_time(lambda: a @ v)
        print(f"product,n={n} p={p},{t:.6e},")
    # The same matrix as the criterion bench: the scatter of Fashion-MNIST's test images.
    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if os.path.exists(path):
        x = fashion_mnist(path).astype(np.float64)
        x -= x.mean(0)
        a = x.T @ x
    t = median_time(lambda: np.linalg.eigh(a), repeat=5)
    print(f"eigh,n={n},{t:.6e},")


if __name__ == "__main__":
    main()
