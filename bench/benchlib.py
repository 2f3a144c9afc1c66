"""Helpers shared by the scripts in bench/ (each is used by at least two of them).

The scripts run as `python3 bench/X.py`, so this file's directory is on sys.path and
they import it as `import benchlib`. Standard library only at import time (numpy and
scikit-learn are imported by the functions that need them).
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

# Fashion-MNIST's 60 000 training images, 28×28 uint8 (Debian package dataset-fashion-mnist).
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def fashion_mnist(path=FASHION):
    """The images of an IDX image file (gzip) as a float32 array of shape (count, rows·cols),
    pixel values 0-255."""
    import gzip

    import numpy as np

    with gzip.open(path, "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[o:o + 4], "big") for o in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows * cols).astype(np.float32)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(binary, data_dir, extra_args=(), ready="/healthz", port=None, log="server.log", env=None):
    """Start `binary serve` on 127.0.0.1:`port` (a free port when None) with `data_dir`,
    and wait up to 10 s until GET `ready` answers 2xx. `log`: a file name inside
    `data_dir` for the server's stdout and stderr, subprocess.DEVNULL for neither, or None
    to leave both to this process's own. Returns (process, base URL); on failure kills
    the process and raises RuntimeError."""
    port = port or free_port()
    out = open(os.path.join(data_dir, log), "w") if isinstance(log, str) else log
    try:
        proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
                                 *extra_args], stdout=out, stderr=None if out is None else subprocess.STDOUT,
                                env=env)
    finally:
        if isinstance(log, str):
            out.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}{ready}", timeout=1).read()
            return proc, url
        except OSError:  # refused, or an HTTP error status such as 503 while recovering
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{binary} did not start")


def stop_server(proc, timeout=30):
    """SIGTERM the server and wait for it to exit (at most `timeout` seconds)."""
    proc.terminate()
    proc.wait(timeout=timeout)


def run_load(cmd, echo_stderr=False):
    """Run the load tool (`examples/load`) with argv `cmd` and return its result: the
    JSON object on the last line of its stdout. Raises CalledProcessError if it fails."""
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    if echo_stderr:
        sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values):
    """Median, minimum and maximum of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def sklearn_partial_fit(x, p, batch):
    """scikit-learn's IncrementalPCA.partial_fit over the rows of `x` in batches of `batch`
    (stopping at a last batch shorter than `p`), timed with numpy's default BLAS threads
    and then with one thread. Returns the model of the first run and both rates in
    rows/s, {"default": …, "one": …}; on a small shared machine one BLAS thread is often
    faster, and the peer is credited with its better figure."""
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
        return ipca, len(x) / (time.perf_counter() - t0)

    ipca, default_rate = run()
    with threadpool_limits(limits=1):
        _, one_rate = run()
    return ipca, {"default": default_rate, "one": one_rate}
