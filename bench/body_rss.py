#!/usr/bin/env python3
"""Peak resident memory a server process gains from worst-case request bodies.

Starts each given streampca binary on a loopback port with a fresh data directory, makes
a 784-dimensional model, then for each case resets the process's peak RSS
(`echo 5 > /proc/PID/clear_refs`), sends the bodies, and reads VmHWM from
/proc/PID/status: the figure is VmHWM minus VmRSS just before the case, as a multiple of
one body. Run it with the binary of main and the binary of a branch to compare them in
one run:

    bench/body_rss.py OLD_BINARY NEW_BINARY [--mib 64] [--project-mib 64] \
        [--server-arg=--max-query-rows=100000]

Bodies are made one case at a time (at most one body in this script's memory).
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

from benchlib import free_port, start_server, stop_server

DIM = 784
# The regression model: dim and target_dim.
R_DIM, R_TARGETS = 16, 768


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


def json_rows(texts, size, prefix=b'{"x": [', tail=b"]}", sep=b", "):
    """A JSON object of rows cycling through `texts` (each a row's text, `[…]`), at
    most `size` bytes with `tail` after the rows."""
    out = bytearray(prefix)
    i = 0
    while True:
        row = texts[i % len(texts)]
        if len(out) + len(row) + len(sep) + len(tail) > size:
            break
        if i:
            out += sep
        out += row
        i += 1
    out += tail
    return bytes(out)


def short_rows(width, sep=b","):
    """Rows of the shortest numbers, `0` with `0.1` every seventh value: the most
    values a body can hold with a few longer ones mixed in."""
    vals = [b"0.1" if i % 7 == 3 else b"0" for i in range(7 * width)]
    return [sep.join(vals[k * width:(k + 1) * width]) for k in range(7)]


def lines_body(rows, size, prefix=b"", suffix=b"", last=b""):
    """Lines `prefix + row + suffix`, cycling through `rows`, then `last`, at most
    `size` bytes."""
    out = bytearray()
    i = 0
    while True:
        line = prefix + rows[i % len(rows)] + suffix + b"\n"
        if len(out) + len(line) + len(last) > size:
            break
        out += line
        i += 1
    out += last
    return bytes(out)


def make_body(kind, size):
    """The case `kind`'s body, at most `size` bytes."""
    if kind == "empty_rows":
        # Rows with no values at all.
        n = (size - 16) // 4
        return b'{"x": [' + b", ".join([b"[]"] * n) + b"]}"
    if kind == "zeros_then_bad":
        # Short numbers ("0, "), refused at the end (syntax).
        row = b"[" + b", ".join([b"0"] * DIM) + b"]"
        return json_rows([row], size - 16, tail=b", [nan]]}")
    if kind == "pixels_then_bad":
        # `0.0,` (8 bytes of f64 per 4 of text: just under the 2x budget, so stored to
        # the end), refused at the end (syntax).
        row = b"[" + b",".join([b"0.0"] * DIM) + b"]"
        return json_rows([row], size - 16, tail=b",[nan]]}", sep=b",")
    if kind == "mixed_then_bad":
        # "0," with "0.1" every seventh value, refused at the end (syntax).
        return json_rows([b"[" + r + b"]" for r in short_rows(DIM)], size - 16,
                         tail=b", [nan]]}", sep=b",")
    if kind == "mixed_then_big":
        # The same, refused at the end by magnitude (valid JSON, 1e31 > 1e30).
        bad = b"[" + b",".join([b"0"] * (DIM - 1) + [b"1e31"]) + b"]"
        return json_rows([b"[" + r + b"]" for r in short_rows(DIM)], size - 8 * DIM,
                         tail=b"," + bad + b"]}", sep=b",")
    if kind == "mixed_ok":
        # The same, accepted.
        return json_rows([b"[" + r + b"]" for r in short_rows(DIM)], size, sep=b",")
    if kind == "csv_then_bad":
        return lines_body(short_rows(DIM), size, last=b"0,x\n")
    if kind == "ndjson_then_bad":
        return lines_body(short_rows(DIM), size, prefix=b"[", suffix=b"]", last=b"[0,x]\n")
    if kind == "regression_y_then_bad":
        # A regression model (dim 16, target_dim 768): x rows and y rows of short
        # numbers, the last y value out of range; y holds most of the values.
        xrow = b"[" + short_rows(R_DIM)[0] + b"]"
        yrow = b"[" + short_rows(R_TARGETS)[0] + b"]"
        rows = (size - 64) // (len(xrow) + len(yrow) + 2)
        x = b",".join([xrow] * rows)
        last = b"[" + b",".join([b"0"] * (R_TARGETS - 1) + [b"1e31"]) + b"]"
        y = b",".join([yrow] * (rows - 1) + [last])
        return b'{"x": [' + x + b'], "y": [' + y + b"]}"
    if kind == "float32_rows":
        # Full-precision float32 values as json.dumps prints them.
        vals = [repr(float(f"{(i * 0.7371) % 2 - 1:.8f}")) for i in range(DIM)]
        row = ("[" + ", ".join(vals) + "]").encode()
        rows = min((size - 64) // (len(row) + 2), 10_000)
        return b'{"x": [' + b", ".join([row] * rows) + b"]}"
    raise ValueError(kind)


def measure(binary, cases, extra_args):
    port = free_port()
    data_dir = tempfile.mkdtemp()
    env = dict(os.environ, RUST_LOG="warn")
    server = None
    try:
        server, _ = start_server(
            binary, data_dir, extra_args, port=port, log=subprocess.DEVNULL, env=env
        )
        st, _ = request(
            port,
            "POST",
            "/v1/models",
            json.dumps({"name": "m", "dim": DIM, "components": 16}).encode(),
        )
        assert st in (200, 201), st
        st, _ = request(
            port,
            "POST",
            "/v1/models",
            json.dumps(
                {"name": "r", "dim": R_DIM, "target_dim": R_TARGETS, "components": 1}
            ).encode(),
        )
        assert st in (200, 201), st
        results = []
        for name, path, (kind, size, ctype), clients in cases:
            body = make_body(kind, size)
            time.sleep(0.5)
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")
            before = status_kib(server.pid, "VmRSS")
            statuses = []

            def send():
                statuses.append(request(port, "POST", path, body, ctype)[0])

            threads = [threading.Thread(target=send) for _ in range(clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            peak = status_kib(server.pid, "VmHWM")
            gained = (peak - before) * 1024
            load = os.getloadavg()[0]
            results.append(
                (name, clients, len(body), sorted(set(statuses)), gained, elapsed, load)
            )
            del body
        return results
    finally:
        if server is not None:
            stop_server(server)
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
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `serve` (repeat), e.g. --server-arg=--max-query-rows=100000",
    )
    a = ap.parse_args()
    size = a.mib * 1024 * 1024 - 1024
    psize = a.project_mib * 1024 * 1024 - 1024
    ingest = "/v1/models/m/samples"
    regress = "/v1/models/r/samples"
    project = "/v1/models/m/project"
    js, csv, nd = "application/json", "text/csv", "application/x-ndjson"
    cases = [
        ("ingest, empty rows (422)", ingest, ("empty_rows", size, js), 1),
        ("ingest, `0, ` then a bad value (400)", ingest, ("zeros_then_bad", size, js), 1),
        ("ingest, `0.0,` then a bad value (400)", ingest, ("pixels_then_bad", size, js), 1),
        ("ingest, `0,`/`0.1` then a bad value (400)", ingest, ("mixed_then_bad", size, js), 1),
        ("ingest, `0,`/`0.1` then 1e31 (422)", ingest, ("mixed_then_big", size, js), 1),
        ("ingest CSV, `0,`/`0.1` then a bad line (400)", ingest, ("csv_then_bad", size, csv), 1),
        ("ingest NDJSON, `0,`/`0.1` then a bad line (400)", ingest, ("ndjson_then_bad", size, nd), 1),
        ("regression, y `0,` then 1e31 (422)", regress, ("regression_y_then_bad", size, js), 1),
        ("ingest, `0,`/`0.1` accepted (200, includes the fold)", ingest, ("mixed_ok", size, js), 1),
        ("ingest, float32 rows (200, includes the fold)", ingest, ("float32_rows", size, js), 1),
        ("project ×8, empty rows (422)", project, ("empty_rows", psize, js), 8),
        ("project ×8, `0, ` then a bad value (400)", project, ("zeros_then_bad", psize, js), 8),
        ("project ×8, `0.0,` then a bad value (400)", project, ("pixels_then_bad", psize, js), 8),
        ("project ×8, `0,`/`0.1` then a bad value (400)", project, ("mixed_then_bad", psize, js), 8),
        ("project ×8, float32 rows (answered)", project, ("float32_rows", psize, js), 8),
    ]
    print(
        "| case | binary | body MiB | status | peak RSS gained, MiB | × bodies "
        "| wall s | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for binary in a.binaries:
        for name, clients, blen, st, gained, secs, load in measure(
            binary, cases, a.server_arg
        ):
            print(
                f"| {name} | {binary} | {blen / 2**20:.1f} | {st} | {gained / 2**20:.0f} | "
                f"{gained / (blen * clients):.2f} | {secs:.2f} | {load:.1f} |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
