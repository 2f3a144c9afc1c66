"""Single-row projection rate of two server builds side by side, with `wrk` on
`GET /healthz` as the ceiling of the HTTP stack on this machine, in one run.

Starts each server (`--server NAME=PATH`, e.g. an old build and the current one), fits a
model on 20 000 Fashion-MNIST rows in each (n = 784, p = 16, raw f32 bodies via the load
tool), then per repeat runs, back to back and in alternating order, the load tool's
`project` mode (one row of 784 values per request, k = 16, `--concurrency` clients) against
each server, and `wrk` on `/healthz` of the last one. Prints one JSON line per
measurement and a summary (median and range; ratios of each server to the first).

    python3 bench/project_rate.py --load target/release/examples/load \
        --server old=/tmp/old/target/release/streampca --server new=target/release/streampca
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from benchlib import run_load, spread, start_server, stop_server


def project(args, url):
    cmd = [args.load, "project", "--url", url, "--model", "load", "--concurrency", str(args.concurrency),
           "--seconds", str(args.seconds), "--k", "16"]
    return run_load(cmd)["qps"]


def wrk(args, url):
    out = subprocess.run(["wrk", "-t2", f"-c{args.concurrency}", f"-d{args.seconds}s", f"{url}/healthz"],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load", required=True)
    ap.add_argument("--server", action="append", required=True, help="NAME=PATH; the first is the baseline")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    servers = [s.split("=", 1) for s in args.server]
    work = tempfile.mkdtemp(prefix="project-rate-")
    procs = []
    try:
        urls = {}
        for name, path in servers:
            data_dir = os.path.join(work, name)
            os.mkdir(data_dir)
            proc, url = start_server(path, data_dir)
            procs.append(proc)
            urls[name] = url
            subprocess.run([args.load, "ingest", "--url", url, "--model", "load", "--data", "fashion-mnist",
                            "--rows", "20000", "--components", "16", "--fresh", "--quiet"],
                           check=True, capture_output=True)
        rates = {name: [] for name, _ in servers}
        ceiling = []
        for rep in range(args.repeats):
            order = servers if rep % 2 == 0 else servers[::-1]
            for name, _ in order:
                qps = project(args, urls[name])
                rates[name].append(qps)
                print(json.dumps({"repeat": rep, "server": name, "project_qps": qps}), flush=True)
            if shutil.which("wrk"):
                h = wrk(args, urls[servers[-1][0]])
                ceiling.append(h)
                print(json.dumps({"repeat": rep, "server": servers[-1][0], "healthz_qps": h}), flush=True)
        base = servers[0][0]
        summary = {name: {"project_qps": spread(r),
                          f"over_{base}": spread([a / b for a, b in zip(r, rates[base])])}
                   for name, r in rates.items()}
        if ceiling:
            summary["healthz_qps_wrk"] = spread(ceiling)
        print(json.dumps({"summary": summary}, indent=1))
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
