#!/usr/bin/env python3
"""Peak resident memory a server process gains from worst-case request bodies.

Starts each given streampca binary on a loopback port with a fresh data directory, makes
a 784-dimensional model, then for each case resets the process's peak RSS
(`echo 5 > /proc/PID/clear_refs`), sends the bodies, and reads VmHWM from
/proc/PID/status: the figure is VmHWM minus VmRSS just before the case, as a multiple of
one body. Run it with the binary of main and the binary of a branch to compare them in
one run:

    bench/body_rss.py OLD_BINARY NEW_BINARY [--mib 64] [--project-mib 64]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

DIM = 784


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def request(port, method, path, body=None, ctype="application/json"):
    """One request on its own connection; the status and the body. A server that
    answers before the whole body is sent (and closes) is read all the same."""
    body = body or b""
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    try:
        s.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            s.sendall(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except ConnectionResetError:
        pass
    s.close()
    status = int(out[9:12]) if out.startswith(b"HTTP/1.1 ") else 0
    return status, out.split(b"\r\n\r\n", 1)[-1]


def bodies(size):
    """The cases' bodies, each at most `size` bytes."""
    out = {}
    # The case: rows with no values at all.
    n = (size - 16) // 4
    out["empty_rows"] = b'{"x": [' + b", ".join([b"[]"] * n) + b"]}"
    # Short numbers ("0, "): the most values a JSON body can hold, refused at its end.
    row = b"[" + b", ".join([b"0"] * DIM) + b"]"
    rows = (size - 64) // (len(row) + 2)
    out["zeros_then_bad"] = b'{"x": [' + b", ".join([row] * rows) + b", [nan]]}"
    # Full-precision float32 values as json.dumps prints them.
    vals = [repr(float(f"{(i * 0.7371) % 2 - 1:.8f}")) for i in range(DIM)]
    row = ("[" + ", ".join(vals) + "]").encode()
    rows = min((size - 64) // (len(row) + 2), 10_000)
    out["float32_rows"] = b'{"x": [' + b", ".join([row] * rows) + b"]}"
    return out


def measure(binary, size, cases):
    port = free_port()
    data_dir = tempfile.mkdtemp()
    env = dict(os.environ, RUST_LOG="warn")
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        for _ in range(200):
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        st, _ = request(
            port,
            "POST",
            "/v1/models",
            json.dumps({"name": "m", "dim": DIM, "components": 16}).encode(),
        )
        assert st in (200, 201), st
        results = []
        for name, path, body, clients in cases:
            time.sleep(0.5)
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")
            before = status_kib(server.pid, "VmRSS")
            statuses = []

            def send():
                statuses.append(request(port, "POST", path, body)[0])

            threads = [threading.Thread(target=send) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = status_kib(server.pid, "VmHWM")
            gained = (peak - before) * 1024
            results.append((name, clients, len(body), sorted(set(statuses)), gained))
        return results
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", data_dir], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--mib", type=int, default=64, help="size of the single bodies")
    ap.add_argument(
        "--project-mib",
        type=int,
        default=64,
        help="size of each of the eight concurrent projection bodies",
    )
    a = ap.parse_args()
    size = a.mib * 1024 * 1024 - 1024
    b = bodies(size)
    p = bodies(a.project_mib * 1024 * 1024 - 1024)
    ingest = "/v1/models/m/samples"
    project = "/v1/models/m/project"
    cases = [
        ("ingest, empty rows (422)", ingest, b["empty_rows"], 1),
        ("ingest, 0s then a bad value (400)", ingest, b["zeros_then_bad"], 1),
        ("ingest, float32 rows (200)", ingest, b["float32_rows"], 1),
        ("project ×8, empty rows (422)", project, p["empty_rows"], 8),
        ("project ×8, 0s then a bad value", project, p["zeros_then_bad"], 8),
        ("project ×8, float32 rows (answered)", project, p["float32_rows"], 8),
    ]
    print(f"| case | binary | body MiB | status | peak RSS gained, MiB | × bodies |")
    print("|---|---|---|---|---|---|")
    for binary in a.binaries:
        for name, clients, blen, st, gained in measure(binary, size, cases):
            print(
                f"| {name} | {binary} | {blen / 2**20:.1f} | {st} | {gained / 2**20:.0f} | "
                f"{gained / (blen * clients):.2f} |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
