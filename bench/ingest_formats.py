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
import json
import os
import shutil
import sys
import tempfile

from benchlib import fashion_mnist, run_load, sklearn_partial_fit, spread, start_server, stop_server


def load_tool(args, url, data_file, fmt, producers):
    cmd = [args.load, "ingest", "--url", url, "--model", f"bench-{fmt}", "--data", data_file, "--dim", "784",
           "--batch", str(args.batch), "--producers", str(producers), "--format", fmt,
           "--components", str(args.p), "--fresh", "--quiet", "--converge-timeout", "0"]
    return run_load(cmd)["rows_per_second"]


def sklearn_rate(x, p, batch):
    """rows/s of IncrementalPCA.partial_fit: the better of default BLAS threads and one."""
    return max(sklearn_partial_fit(x, p, batch)[1].values())


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
            stop_server(proc)
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
