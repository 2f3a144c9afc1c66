"""Fixtures: the real server binary on a free loopback port, with a temporary data
directory, started once per session (and a few more with special settings).

The binary is ``STREAMPCA_BIN`` or ``target/debug/streampca`` under the repository
root (the one ``cargo test`` builds). Without it every test is skipped, unless
``STREAMPCA_REQUIRE_PYTHON=1``, which turns its absence into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, List, Optional

import httpx
import numpy as np
import pytest

import streampca

REPO = pathlib.Path(__file__).resolve().parents[3]


def server_binary() -> Optional[pathlib.Path]:
    env = os.environ.get("STREAMPCA_BIN")
    path = pathlib.Path(env) if env else REPO / "target" / "debug" / "streampca"
    return path if path.is_file() and os.access(path, os.X_OK) else None


class Server:
    """A running ``streampca`` process; ``url`` is where it listens."""

    def __init__(self, *args: str) -> None:
        binary = server_binary()
        if binary is None:
            msg = "streampca binary not found (set STREAMPCA_BIN or run cargo test first)"
            if os.environ.get("STREAMPCA_REQUIRE_PYTHON") == "1":
                pytest.fail(msg)
            pytest.skip(msg)
        self.dir = tempfile.mkdtemp(prefix="streampca-pytest-")
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPCA_")}
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--listen", "127.0.0.1:0",
                "--data-dir", os.path.join(self.dir, "data"),
                "--log-format", "json",
                "--log", "info",
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.url = self._wait_for_address()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server at {self.url} never became ready")

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            self.log.flush()
            for line in self.output().splitlines():
                try:
                    addr = json.loads(line).get("fields", {}).get("addr")
                except ValueError:
                    continue
                if addr:
                    return f"http://{addr}"
            time.sleep(0.02)
        raise RuntimeError(f"server printed no address: {self.output()}")

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """The numpy/scikit-learn references run on one BLAS thread: the server under test
    needs a core too, and on a two-core machine OpenBLAS threads spinning against it
    made scikit-learn's 5000×784 SVD about 7× slower (15 s against 2 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn (which brings threadpoolctl) is not installed
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    # --sync never: these tests are about the API, not the disk; many models are made.
    s = Server("--sync", "never", "--max-models", "100000")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def url(server: Server) -> str:
    return server.url


@pytest.fixture
def start_server() -> Iterator:
    """Starts extra servers with the given flags; stops them after the test."""
    started: List[Server] = []

    def start(*args: str) -> Server:
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def client(url: str) -> Iterator[streampca.Client]:
    with streampca.Client(url) as c:
        yield c


class SyncFacade:
    """An :class:`streampca.AsyncClient` whose coroutines run to completion on a private
    event loop, so one test body exercises both clients."""

    def __init__(self, url: str, **kw) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = streampca.AsyncClient(url, **kw)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args, **kwargs):
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def api(request, url: str):
    """The sync client, then the async one (driven through :class:`SyncFacade`)."""
    c = streampca.Client(url) if request.param == "sync" else SyncFacade(url)
    yield c
    c.close()


_counter = iter(range(1_000_000))
_counter_lock = threading.Lock()


@pytest.fixture
def name(request) -> Iterator[str]:
    """A fresh model name (deleted after the test if it exists)."""
    with _counter_lock:
        n = next(_counter)
    nm = f"t{n}-{os.getpid()}"
    yield nm
    url = request.getfixturevalue("url")
    with streampca.Client(url) as c:
        c.delete_model(nm, missing_ok=True)


def spiked(n: int, d: int, seed: int = 0, spectrum=None, dtype=np.float64) -> np.ndarray:
    """``n`` rows in ``d`` dimensions with a clear spectrum (gaps between the leading
    variances) and an offset mean, so component order and signs are well defined."""
    rng = np.random.default_rng(seed)
    if spectrum is None:
        spectrum = np.concatenate(
            [[25.0, 16.0, 9.0, 6.0, 4.0], np.linspace(1.0, 0.3, max(d - 5, 0))]
        )[:d]
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    z = rng.standard_normal((n, d)) * np.sqrt(spectrum[:d])
    return (z @ basis.T + rng.standard_normal(d) * 3.0).astype(dtype)


def reference(X: np.ndarray):
    """numpy's symmetric eigensolver on the sample covariance (divisor N − 1): the
    eigenvalues (descending) and eigenvectors (rows), the mean and the trace."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    cov = np.cov(X, rowvar=False, ddof=1)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return w[order], v[:, order].T, mean, np.trace(cov)


def angle(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two directions, radians, sign ignored; accurate near 0."""
    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    if u @ v < 0:
        v = -v
    return float(2 * np.arcsin(min(1.0, np.linalg.norm(u - v) / 2)))


def control_limits(eigenvalues: np.ndarray, n: float, k: int, alpha: float) -> dict:
    """The T² and SPE control limits from every eigenvalue of the covariance (divisor
    N − 1, any order) and scipy's quantiles: T² = k(N−1)(N+1)/(N(N−k))·F₁₋α(k, N−k);
    SPE by Jackson–Mudholkar (Box's g·χ²₁₋α(h) when h₀ ≤ 0)."""
    from scipy import stats

    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    t1, t2, t3 = (float(np.sum(lam[k:] ** i)) for i in (1, 2, 3))
    t2_limit = k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.isf(alpha, k, n - k)
    g, h = t2 / t1, t1 * t1 / t2
    spe_box = g * stats.chi2.isf(alpha, h)
    h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2)
    if h0 > 0:
        c = stats.norm.isf(alpha)
        base = c * np.sqrt(2.0 * t2 * h0 * h0) / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1)
        spe, method = t1 * base ** (1.0 / h0), "jackson_mudholkar"
    else:
        spe, method = spe_box, "box"
    return {
        "t2": t2_limit, "spe": float(spe), "spe_box": float(spe_box), "h0": h0,
        "theta": np.array([t1, t2, t3]), "spe_method": method,
    }


def pytest_report_header(config) -> str:
    b = server_binary()
    return f"streampca binary: {b if b else 'absent'}; python {sys.version.split()[0]}"
