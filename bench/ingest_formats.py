"""JSON ingest against raw f32 ingest and scikit-learn's IncrementalPCA.partial_fit, on
the same Fashion-MNIST rows, in one run.

Starts a release server (`--server`), then for each repeat and each producer count runs
the load tool (`examples/load`) with JSON and with raw f32 bodies back to back (the
order alternating between repeats, since the machine is shared) and times scikit-learn's
`partial_fit` over the same rows in the same batches (numpy's default BLAS threads and
one thread; the better rate counts). Prints one JSON line per measurement and a summary
of the ratios (median and range over the repeats).

    cargo build --release --bin streampca --example load
    python3 bench/ingest_formats.py --server target/release/streampca \
        --load target/release/examples/load --repeats 5
"""
import argparse
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def fashion_mnist():
    with gzip.open(FASHION, "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[o:o + 4], "big") for o in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows * cols).astype(np.float32)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(binary, data_dir):
    port = free_port()
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{binary} did not start")


def load_tool(args, url, data_file, fmt, producers):
    cmd = [args.load, "ingest", "--url", url, "--model", f"bench-{fmt}", "--data", data_file, "--dim", "784",
           "--batch", str(args.batch), "--producers", str(producers), "--format", fmt,
           "--components", str(args.p), "--fresh", "--quiet", "--converge-timeout", "0"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rows_per_second"]


def sklearn_rate(x, p, batch):
    from sklearn.decomposition import IncrementalPCA
    from threadpoolctl import threadpool_limits

    def run():
        ipca = IncrementalPCA(n_components=p, batch_size=batch)
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            if len(chunk) < p:
                break
            ipca.partial_fit(chunk)
        return len(x) / (time.perf_counter() - t0)

    default = run()
    with threadpool_limits(limits=1):
        one = run()
    return max(default, one)


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--producers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--p", type=int, default=16)
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--no-sklearn", action="store_true",
                    help="only the JSON/raw f32 pairs (scikit-learn takes minutes per run on a busy machine)")
    args = ap.parse_args()

    x = fashion_mnist()[:args.rows]
    work = tempfile.mkdtemp(prefix="ingest-formats-")
    try:
        data_file = os.path.join(work, "rows.f32")
        x.astype("<f4").tofile(data_file)
        data_dir = os.path.join(work, "data")
        os.mkdir(data_dir)
        proc, url = start_server(args.server, data_dir)
        try:
            results = {pr: {"json": [], "binary": [], "sklearn": []} for pr in args.producers}
            for rep in range(args.repeats):
                for pr in args.producers:
                    order = ("json", "binary") if rep % 2 == 0 else ("binary", "json")
                    for fmt in order:
                        rate = load_tool(args, url, data_file, fmt, pr)
                        results[pr][fmt].append(rate)
                        print(json.dumps({"repeat": rep, "producers": pr, "format": fmt, "rows_per_second": rate}),
                              flush=True)
                    if args.no_sklearn:
                        continue
                    sk = sklearn_rate(x, args.p, args.batch)
                    results[pr]["sklearn"].append(sk)
                    print(json.dumps({"repeat": rep, "producers": pr, "format": "sklearn_partial_fit",
                                      "rows_per_second": sk}), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        summary = {}
        for pr, r in results.items():
            summary[pr] = {
                "json_rows_per_second": spread(r["json"]),
                "binary_rows_per_second": spread(r["binary"]),
                "json_over_binary": spread([j / b for j, b in zip(r["json"], r["binary"])]),
            }
            if r["sklearn"]:
                summary[pr]["sklearn_rows_per_second"] = spread(r["sklearn"])
                summary[pr]["json_over_sklearn"] = spread([j / s for j, s in zip(r["json"], r["sklearn"])])
        print(json.dumps({"summary": summary}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
