"""streampca against scikit-learn's IncrementalPCA on the same data, in the same run.

Called by bench/compare.sh (which builds the release binaries, starts a server and
installs numpy, scikit-learn and matplotlib). Writes BENCHMARKS.md and PNG plots.

For each data set: scikit-learn `partial_fit` throughput (same batch size, same p),
streampca ingest throughput over HTTP (JSON and binary bodies, via the Rust load tool),
and accuracy of both against the exact answer (numpy eigh of the same covariance):
the angle of each of the first p components to the exact eigenvector and the relative
eigenvalue error.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from benchlib import fashion_mnist, run_load, sklearn_partial_fit


def synthetic(n, rows, seed=42):
    """eigenvalues 0.9^i along a random rotation, plus an offset of 3"""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    z = rng.standard_normal((rows, n)) * np.sqrt(0.9 ** np.arange(n))
    return (z @ q.T + 3.0).astype(np.float32)


def exact(x, p):
    x = x.astype(np.float64)
    xc = x - x.mean(0)
    c = xc.T @ xc / (len(x) - 1)
    w, v = np.linalg.eigh(c)
    order = np.argsort(w)[::-1]
    return w[order], v[:, order[:p]]


def angles(found, truth):
    """per component: angle between lines (rows of `found`, columns of `truth`)"""
    out = []
    for i in range(truth.shape[1]):
        a = found[i] / np.linalg.norm(found[i])
        b = truth[:, i]
        s = 1.0 if a @ b >= 0 else -1.0
        out.append(2 * np.arctan2(np.linalg.norm(a - s * b), np.linalg.norm(a + s * b)))
    return np.array(out)


def http(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if method == "DELETE" and e.code == 404:
            return None
        raise


def load_tool(args, data_file, n, model, fmt, producers, extra=()):
    cmd = [args.load_bin, "ingest", "--url", args.url, "--model", model, "--data", data_file, "--dim", str(n),
           "--batch", str(args.batch), "--producers", str(producers), "--format", fmt, "--components", str(args.p),
           "--fresh", "--quiet", *extra]
    return run_load(cmd, echo_stderr=True)


def streampca_components(args, model):
    c = http(f"{args.url}/v1/models/{model}/components")
    status = http(f"{args.url}/v1/models/{model}")
    assert c["sequence"] == status["sequence"], "components do not cover every batch yet"
    return np.array(c["components"]), np.array(c["eigenvalues"])


def evaluate(args, name, x, producers, rows_out, acc_out):
    n = x.shape[1]
    p = min(args.p, n)
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as f:
        f.write(x.astype("<f4").tobytes())
        data_file = f.name
    ipca, sk_rates = sklearn_partial_fit(x, p, args.batch)
    sk_rate = max(sk_rates.values())
    lam, vecs = exact(x, p)
    runs = {}
    for fmt in ("json", "binary"):
        model = f"cmp-{name}-{fmt}".lower().replace("_", "-")
        runs[fmt] = load_tool(args, data_file, n, model, fmt, producers)
        comps, eig = streampca_components(args, model)
        runs[fmt]["angles"] = angles(comps[:p], vecs)
        runs[fmt]["eig_err"] = np.abs(eig[:p] - lam[:p]) / lam[:p]
        http(f"{args.url}/v1/models/{model}", "DELETE")
    os.unlink(data_file)
    sk_angles = angles(ipca.components_, vecs)
    sk_eig_err = np.abs(ipca.explained_variance_[:p] - lam[:p]) / lam[:p]
    rel_gap = np.array([min(abs(lam[i] - lam[j]) for j in (i - 1, i + 1) if 0 <= j < len(lam)) / lam[i]
                        for i in range(p)])
    rows_out.append({
        "data": name, "n": n, "rows": len(x), "sklearn": sk_rate, "sklearn_rates": sk_rates,
        "json": runs["json"]["rows_per_second"], "binary": runs["binary"]["rows_per_second"],
        "json_p99": runs["json"]["latency_p99_ms"], "binary_p99": runs["binary"]["latency_p99_ms"],
        "converged_after": runs["binary"]["converged_after_seconds"],
    })
    acc_out.append({
        "data": name, "gap": rel_gap, "ours": runs["binary"]["angles"], "ours_json": runs["json"]["angles"],
        "sklearn": sk_angles, "ours_eig": runs["binary"]["eig_err"], "sklearn_eig": sk_eig_err,
    })


def trace_run(args, x, plots):
    """angle to the exact answer for the rows seen so far, while the stream is ingested"""
    n = x.shape[1]
    p = args.p
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as f:
        f.write(x.astype("<f4").tobytes())
        data_file = f.name
    trace_file = data_file + ".trace"
    load_tool(args, data_file, n, "cmp-trace", "binary", 1, ["--trace", trace_file, "--trace-every", "4"])
    points = [json.loads(line) for line in open(trace_file)]
    ours = []
    for pt in points:
        comps = pt["components"]
        seen = int(round(comps["samples"]))
        if not comps["components"] or seen < 2 * p:
            continue
        _, vecs = exact(x[:seen], p)
        ours.append((seen, angles(np.array(comps["components"])[:p], vecs[:, :len(comps["components"])]).max()))
    from sklearn.decomposition import IncrementalPCA
    ipca = IncrementalPCA(n_components=p, batch_size=args.batch)
    sk = []
    for i in range(0, len(x), args.batch):
        ipca.partial_fit(x[i:i + args.batch])
        seen = min(i + args.batch, len(x))
        if (i // args.batch) % 20 == 19:
            _, vecs = exact(x[:seen], p)
            sk.append((seen, angles(ipca.components_, vecs).max()))
    http(f"{args.url}/v1/models/cmp-trace", "DELETE")
    os.unlink(data_file)
    os.unlink(trace_file)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    if ours:
        ax.semilogy(*zip(*ours), "o-", label="streampca (component snapshot while ingesting)")
    ax.semilogy(*zip(*sk), "s-", label="scikit-learn IncrementalPCA")
    ax.set_xlabel("rows ingested")
    ax.set_ylabel(f"largest angle to exact, first {p} components (rad)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(plots, "angle_over_time.png"), dpi=110)
    return ours, sk


def kernel_table():
    """Times the pca kernels with criterion (`cargo bench --bench pca`) and the same
    shapes with numpy/OpenBLAS (`bench/kernels.py`, one BLAS thread like ours), back to
    back, and returns markdown rows: time each, and our speed as a share of numpy's."""
    subprocess.run(["cargo", "bench", "--locked", "--bench", "pca", "--", "accumulator_update|fit/(product|eigh)",
                    "--warm-up-time", "1", "--measurement-time", "4"], check=True, stdout=sys.stderr)
    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kernels.py")],
                         check=True, capture_output=True, text=True).stdout
    numpy_s = {}
    for line in out.strip().splitlines()[1:]:
        kernel, shape, seconds, _ = line.split(",")
        numpy_s[(kernel, shape)] = float(seconds)

    def ours(path):
        target = os.environ.get("CARGO_TARGET_DIR", "target")
        with open(os.path.join(target, "criterion", path, "new", "estimates.json")) as f:
            return json.load(f)["median"]["point_estimate"] * 1e-9

    cases = [("accumulator update (centre + rank-257 update)", f"b = 256, n = {n}", f"accumulator_update/{n}",
              ("update_b256", f"n={n}")) for n in (64, 784, 2048)]
    cases += [("n×n · n×p product", f"n = 784, p = {p}", f"fit/product/{p}", ("product", f"n=784 p={p}"))
              for p in (16, 64)]
    cases += [("symmetric eigendecomposition", "n = 784 (Fashion-MNIST scatter)", "fit/eigh/784", ("eigh", "n=784"))]
    rows = []
    for kernel, shape, path, key in cases:
        a, b = ours(path), numpy_s[key]
        rows.append(f"| {kernel} | {shape} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms | {100 * b / a:.0f} % |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--load-bin", required=True)
    ap.add_argument("--p", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--plots", default="bench/plots")
    ap.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel timings")
    args = ap.parse_args()
    os.makedirs(args.plots, exist_ok=True)
    rows, acc = [], []
    fm = fashion_mnist()
    if args.quick:
        fm = fm[:10_000]
    evaluate(args, "fashion-mnist", fm, args.producers, rows, acc)
    for n, count in ((64, 50_000), (2048, 8_000)):
        evaluate(args, f"synthetic-{n}", synthetic(n, count // (4 if args.quick else 1)), args.producers, rows, acc)
    ours_t, sk_t = trace_run(args, fm[:20_000], args.plots)
    kernels = [] if args.no_kernels else kernel_table()

    import matplotlib.pyplot as plt
    rows_sorted = sorted(rows, key=lambda r: r["n"])
    fig, ax = plt.subplots(figsize=(7, 4))
    dims = [r["n"] for r in rows_sorted]
    for key, label in (("sklearn", "scikit-learn partial_fit (better of default / 1 BLAS thread)"), ("json", "streampca, JSON over HTTP"),
                       ("binary", "streampca, binary over HTTP")):
        ax.loglog(dims, [r[key] for r in rows_sorted], "o-", label=label)
    ax.set_xlabel("dimension n")
    ax.set_ylabel("rows / s")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, "throughput_by_dimension.png"), dpi=110)
    fig, ax = plt.subplots(figsize=(7, 4))
    a = acc[0]
    idx = np.arange(1, len(a["ours"]) + 1)
    ax.semilogy(idx, np.maximum(a["ours"], 1e-16), "o-", label="streampca")
    ax.semilogy(idx, a["sklearn"], "s-", label="scikit-learn IncrementalPCA")
    ax.set_xlabel("component index")
    ax.set_ylabel("angle to exact eigenvector (rad)")
    ax.set_title(f"{a['data']}, p = {args.p}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.plots, "accuracy_per_component.png"), dpi=110)

    out = ["# Benchmarks", "",
           f"Generated by `bench/compare.sh` on {time.strftime('%Y-%m-%d')}, one run on this machine "
           f"({os.cpu_count()} cores, shared). Batch b = {args.batch}, p = {args.p} components, "
           f"{args.producers} concurrent producers over loopback HTTP with the default durability "
           "(write-ahead log, fsync before every acknowledgement). scikit-learn runs in-process, "
           "with no HTTP and no durability; both see the same rows in the same order.", "",
           "## Ingest throughput (rows/s)", "",
           "scikit-learn is timed twice, with numpy's default BLAS threads and with one; the ratios are "
           "against its better figure.", "",
           "| data | n | rows | scikit-learn partial_fit (default threads / 1 thread) | streampca JSON | ratio "
           "| streampca binary | ratio | p99 latency JSON / binary (ms) | converged after last batch (s) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        conv = "—" if r["converged_after"] is None else f"{r['converged_after']:.2f}"
        sk = f"{r['sklearn_rates']['default']:.0f} / {r['sklearn_rates']['one']:.0f}"
        out.append(f"| {r['data']} | {r['n']} | {r['rows']} | {sk} | {r['json']:.0f} | "
                   f"{r['json'] / r['sklearn']:.2f}× | {r['binary']:.0f} | {r['binary'] / r['sklearn']:.2f}× | "
                   f"{r['json_p99']:.1f} / {r['binary_p99']:.1f} | {conv} |")
    out += ["", "## Accuracy against numpy eigh of the same covariance", "",
            "Largest angle (rad) over the first p components, over those whose relative gap to a "
            "neighbouring eigenvalue is above 1 %, and over all; largest relative eigenvalue error.", "",
            "| data | components with gap > 1 % | streampca max angle (gap > 1 %) | scikit-learn max angle (gap > 1 %) "
            "| streampca max angle (all) | scikit-learn max angle (all) | streampca eigenvalue error | scikit-learn eigenvalue error |",
            "|---|---|---|---|---|---|---|---|"]
    for a in acc:
        sel = a["gap"] > 0.01
        m = lambda v: f"{v[sel].max():.1e}" if sel.any() else "—"  # noqa: E731
        out.append(f"| {a['data']} | {sel.sum()} / {len(sel)} | {m(a['ours'])} | {m(a['sklearn'])} | "
                   f"{a['ours'].max():.1e} | {a['sklearn'].max():.1e} | {a['ours_eig'].max():.1e} | "
                   f"{a['sklearn_eig'].max():.1e} |")
    a = acc[0]
    out += ["", f"Per component on {a['data']} (angle in rad; relative gap to the nearest eigenvalue):", "",
            "| i | relative gap | streampca | scikit-learn |", "|---|---|---|---|"]
    for i in range(len(a["ours"])):
        out.append(f"| {i + 1} | {a['gap'][i]:.3f} | {a['ours'][i]:.1e} | {a['sklearn'][i]:.1e} |")
    if kernels:
        out += ["", "## Kernels against numpy/OpenBLAS", "",
                "criterion medians (`cargo bench --bench pca`, one thread) and `bench/kernels.py` (numpy "
                "with its bundled OpenBLAS, `OPENBLAS_NUM_THREADS=1`) on the same shapes, run back to back. "
                "The last column is our speed as a share of numpy's (above 100 %: faster).", "",
                "| kernel | shape | streampca (faer) | numpy/OpenBLAS | speed vs numpy |", "|---|---|---|---|---|",
                *kernels]
    out += ["", "## Plots", "", "![throughput](bench/plots/throughput_by_dimension.png)", "",
            "![accuracy](bench/plots/accuracy_per_component.png)", "",
            "![angle over time](bench/plots/angle_over_time.png)", ""]
    if ours_t:
        out += [f"While streaming 20 000 Fashion-MNIST rows with one producer, the largest angle of "
                f"streampca's published components to the exact answer for the rows seen so far was at most "
                f"{max(v for _, v in ours_t):.1e} rad at the {len(ours_t)} sampled moments (it publishes the "
                f"latest finished fit, which may lag the newest batches); scikit-learn's ended at "
                f"{sk_t[-1][1]:.1e} rad.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
