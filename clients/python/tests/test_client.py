"""Every client method over HTTP against the real server, once with ``Client`` and once
with ``AsyncClient`` (the ``api`` fixture), checked against numpy references."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time

import numpy as np
import pytest

import streampca
from conftest import SyncFacade, angle, control_limits, reference, spiked


def test_create_get_list_delete(api, name):
    created = api.create_model(name, 6, 2, half_life=5000.0, optimizer="gradient", tolerance=1e-4)
    assert (created.name, created.dim, created.components) == (name, 6, 2)
    assert (created.half_life, created.optimizer, created.tolerance) == (5000.0, "gradient", 1e-4)
    assert (created.samples, created.sequence, created.fitted) == (0.0, 0, False)
    # The same configuration again is the same model; another one is a conflict.
    again = api.create_model(name, 6, 2, half_life=5000.0, optimizer="gradient", tolerance=1e-4)
    assert again.name == name
    with pytest.raises(streampca.ConflictError) as e:
        api.create_model(name, 6, 3)
    assert (e.value.status, e.value.code) == (409, "model_exists")
    assert name in e.value.message
    assert api.get_model(name).dim == 6
    assert name in [m.name for m in api.list_models()]
    assert api.delete_model(name) is True
    with pytest.raises(streampca.NotFoundError) as e:
        api.get_model(name)
    assert (e.value.status, e.value.code) == (404, "model_not_found")
    with pytest.raises(streampca.NotFoundError):
        api.delete_model(name)
    assert api.delete_model(name, missing_ok=True) is False
    assert name not in [m.name for m in api.list_models()]


def test_regression_settings_and_targets(api, name):
    st = api.create_model(name, 3, 1, target_dim=2)
    assert st.target_dim == 2
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 3))
    Y = X @ rng.standard_normal((3, 2)) + 0.01 * rng.standard_normal((400, 2))
    r = api.ingest(name, X, Y, batch_size=150)
    assert (r.rows, r.batches, r.samples) == (400, 3, 400.0)
    api.wait_until_fitted(name, 30)
    c = api.components(name)
    np.testing.assert_allclose(c.mean, X.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.mean_y, Y.mean(axis=0), rtol=0, atol=1e-12)
    # A vector y for a one-target model is one column.
    one = name + "-1"
    try:
        api.create_model(one, 3, 1, target_dim=1)
        api.ingest(one, X, Y[:, 0])
        api.wait_until_fitted(one, 30)
        np.testing.assert_allclose(api.components(one).mean_y, [Y[:, 0].mean()], atol=1e-12)
    finally:
        api.delete_model(one, missing_ok=True)
    with pytest.raises(streampca.InvalidInputError) as e:
        api.ingest(name, X)  # no y for a regression model: x alone is too narrow
    assert e.value.code == "dimension_mismatch"
    assert "(dim 3 x columns, then target_dim 2 y columns)" in e.value.message
    bad = Y.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"y\[5, 1\] is nan"):
        api.ingest(name, X, bad)
    assert api.get_model(name).samples == 400.0


def test_partitions_standardize_and_alpha(api, name):
    st = api.create_model(name, 4, 2, partitions=3, standardize=True, alpha=0.05, tolerance=1e-10)
    assert (st.partitions, st.standardize, st.alpha) == (3, True, 0.05)
    assert api.get_model(name).partitions == 3
    # Variables in units six orders of magnitude apart: a correlation PCA.
    units = np.array([1.0, 10.0, 1000.0, 0.01])
    X = spiked(2000, 4, seed=12) * units + np.array([0.0, -50.0, 1e4, 3.0])
    r = api.ingest(name, X, batch_size=250)  # 8 batches over 3 partitions
    assert (r.batches, r.samples) == (8, 2000.0)
    api.wait_until_fitted(name, 60)
    c = api.components(name)
    w, v = np.linalg.eigh(np.corrcoef(X, rowvar=False))
    w, v = w[::-1], v[:, ::-1].T
    for i in range(2):
        assert angle(c.components[i], v[i]) < 1e-9
    np.testing.assert_allclose(c.eigenvalues, w[:2], rtol=1e-10)
    # Queries are z-scored by the fit's means and sample standard deviations first;
    # reconstructions come back in the original units.
    Q = X[:6]
    mean, sd = X.mean(axis=0), X.std(axis=0, ddof=1)
    z = (Q - mean) / sd
    got = api.project(name, Q, reconstruct=True)
    np.testing.assert_allclose(got.scores, z @ c.components.T, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        got.reconstructions, (got.scores @ c.components) * sd + mean, rtol=1e-10, atol=0
    )
    resid = z - (z @ c.components.T) @ c.components
    np.testing.assert_allclose(got.spe, (resid**2).sum(axis=1), rtol=1e-8)
    # The model's alpha is the limits' default.
    assert api.limits(name).alpha == 0.05
    with pytest.raises(streampca.ConflictError) as e:
        api.create_model(name, 4, 2, partitions=3, standardize=False, alpha=0.05, tolerance=1e-10)
    assert e.value.code == "model_exists"


def test_unknown_setting_is_refused_by_the_server(api, name):
    with pytest.raises(streampca.InvalidInputError) as e:
        api.create_model(name, 4, 2, colour="blue")
    assert e.value.status == 400
    assert "colour" in e.value.message


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ingest_fit_and_components_match_numpy_eigh(api, name, dtype):
    d, p = 12, 3
    X = spiked(3000, d, seed=3, dtype=dtype)
    api.create_model(name, d, p)
    r = api.ingest(name, X, batch_size=500)
    assert (r.rows, r.batches, r.first_sequence, r.sequence, r.samples) == (3000, 6, 1, 6, 3000.0)
    st = api.wait_until_fitted(name, 60)
    assert st.fitted_sequence >= 6 and st.converged
    c = api.components(name)
    # The reference sees the very values sent: float32 rows widened exactly.
    w, v, mean, trace = reference(X.astype(np.float64))
    assert c.components.shape == (p, d)
    for i in range(p):
        assert angle(c.components[i], v[i]) < 1e-9
    np.testing.assert_allclose(c.eigenvalues, w[:p], rtol=1e-10)
    np.testing.assert_allclose(c.explained_variance_ratio, w[:p] / trace, rtol=1e-10)
    np.testing.assert_allclose(c.mean, mean, rtol=0, atol=1e-12)
    assert np.all(c.error_bounds <= 1e-6) and c.relative_gaps.shape == (p,)
    assert (c.samples, c.sequence, c.converged) == (3000.0, 6, True)
    assert c.mean_y is None and c.loss is not None
    first = api.components(name, k=1)
    assert first.components.shape == (1, d)
    np.testing.assert_array_equal(first.components[0], c.components[0])


def test_ingest_takes_lists_fortran_order_and_integers(api, name):
    d = 5
    X = spiked(400, d, seed=4)
    other = name + "-f"
    try:
        api.create_model(name, d, 2)
        api.create_model(other, d, 2)
        api.ingest(name, X.tolist(), batch_size=100)
        api.ingest(other, np.asfortranarray(X), batch_size=100)
        api.wait_until_fitted(name, 30)
        api.wait_until_fitted(other, 30)
        a, b = api.components(name), api.components(other)
        # Same rows in the same batches: the same accumulator, bit for bit.
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
        ints = name + "-i"
        api.create_model(ints, 3, 1)
        api.ingest(ints, np.arange(30).reshape(10, 3) % 7)
        np.testing.assert_allclose(
            api.wait_until_fitted(ints, 30) and api.components(ints).mean,
            (np.arange(30).reshape(10, 3) % 7).mean(axis=0),
        )
    finally:
        api.delete_model(other, missing_ok=True)
        api.delete_model(name + "-i", missing_ok=True)


def test_ingest_refuses_bad_input_before_sending_anything(api, name):
    api.create_model(name, 3, 1)
    X = np.ones((50, 3))
    X[37, 2] = np.nan
    with pytest.raises(ValueError, match=r"X\[37, 2\] is nan"):
        api.ingest(name, X, batch_size=10)
    assert api.get_model(name).samples == 0.0  # no batch was sent
    with pytest.raises(ValueError, match="2-D"):
        api.ingest(name, np.ones(3))
    with pytest.raises(ValueError, match="no rows"):
        api.ingest(name, np.ones((0, 3)))
    with pytest.raises(streampca.InvalidInputError) as e:
        api.ingest(name, np.ones((4, 2)))
    assert (e.value.status, e.value.code) == (422, "dimension_mismatch")
    assert "the array's shape is (4, 2): 2 columns, but (rows, 3) is expected" in e.value.message
    with pytest.raises(streampca.InvalidInputError) as e:
        api.ingest(name, np.full((2, 3), 1e31))
    assert e.value.code == "value_out_of_range"
    with pytest.raises(streampca.NotFoundError):
        api.ingest(name + "-missing", np.ones((4, 3)))
    assert api.get_model(name).samples == 0.0


def test_ingest_progress_callback(api, name):
    api.create_model(name, 2, 1)
    seen = []
    api.ingest(name, np.arange(20.0).reshape(10, 2), batch_size=4, progress=lambda a, b: seen.append((a, b)))
    assert seen == [(4, 10), (8, 10), (10, 10)]


@pytest.mark.parametrize("binary", [True, False])
def test_project_matches_the_components(api, name, binary):
    d, p = 10, 4
    X = spiked(2000, d, seed=5)
    api.create_model(name, d, p)
    api.ingest(name, X)
    st = api.wait_until_fitted(name, 60)
    c = api.components(name)
    Q = spiked(25, d, seed=6)
    for k in (None, 2):
        kk = p if k is None else k
        V = c.components[:kk]
        want = (Q - c.mean) @ V.T
        got = api.project(name, Q, k=k, reconstruct=True, binary=binary, batch_size=7)
        assert got.k == kk and got.sequence == st.fitted_sequence
        np.testing.assert_allclose(got.scores, want, rtol=0, atol=1e-10)
        recon = want @ V + c.mean
        np.testing.assert_allclose(got.reconstructions, recon, rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            got.residual_norms, np.linalg.norm(Q - recon, axis=1), rtol=1e-9, atol=1e-12
        )
        white = api.project(name, Q, k=k, whiten=True, binary=binary)
        np.testing.assert_allclose(
            white.scores, want / np.sqrt(c.eigenvalues[:kk]), rtol=0, atol=1e-10
        )
        assert white.reconstructions is None
    # float32 queries are widened exactly.
    q32 = Q.astype(np.float32)
    got = api.project(name, q32, binary=binary)
    np.testing.assert_allclose(
        got.scores, (q32.astype(np.float64) - c.mean) @ c.components.T, rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("binary", [True, False])
def test_project_monitoring_statistics(api, name, binary):
    d, p, n = 8, 3, 3000
    rows = spiked(n + 40, d, seed=13)
    X, Q = rows[:n], rows[n:].copy()  # new rows from the same distribution
    api.create_model(name, d, p, tolerance=1e-10)
    api.ingest(name, X, batch_size=1000)
    api.wait_until_fitted(name, 60)
    w, v, mean, _ = reference(X)
    Q[0] += 12 * np.sqrt(w[0]) * v[0]  # far along the first component: T²
    Q[1] += 12 * np.sqrt(w[0]) * v[-1]  # far off the first two: SPE
    # Three requests (batch_size 15): arrays are joined, the limits are one value.
    got = api.project(name, Q, k=2, alpha=0.01, contributions=True, binary=binary, batch_size=15)
    Xc = Q - mean
    scores = Xc @ v[:2].T
    t2 = (scores**2 / w[:2]).sum(axis=1)
    resid = Xc - scores @ v[:2]
    np.testing.assert_allclose(got.t2, t2, rtol=1e-9)
    np.testing.assert_allclose(got.spe, (resid**2).sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(got.spe, got.residual_norms**2, rtol=1e-12)
    lim = control_limits(w, n, 2, 0.01)
    assert got.limit_t2 == pytest.approx(lim["t2"], rel=1e-9)
    assert got.limit_spe == pytest.approx(lim["spe"], rel=1e-9)
    assert got.outlier_t2.dtype == bool and got.outlier_t2.shape == (40,)
    np.testing.assert_array_equal(got.outlier_t2, got.t2 > got.limit_t2)
    np.testing.assert_array_equal(got.outlier_spe, got.spe > got.limit_spe)
    assert got.outlier_t2[0] and got.outlier_spe[1]
    assert got.outlier_t2[2:].sum() + got.outlier_spe[2:].sum() <= 4  # ~1% false alarms
    # Contributions: T²'s complete decomposition (U Λ^-1/2 Uᵀ x̃)_j², never negative,
    # and each variable's squared residual.
    M = v[:2].T @ np.diag(1 / np.sqrt(w[:2])) @ v[:2]
    assert got.contributions_t2.shape == got.contributions_spe.shape == (40, d)
    np.testing.assert_allclose(got.contributions_t2, (Xc @ M) ** 2, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.contributions_t2.sum(axis=1), got.t2, rtol=1e-12)
    np.testing.assert_allclose(got.contributions_spe, resid**2, rtol=1e-8, atol=1e-12)
    # Without alpha or contributions: the statistics alone.
    plain = api.project(name, Q, k=2, binary=binary)
    np.testing.assert_array_equal(plain.t2, got.t2)
    assert plain.limit_t2 is None and plain.outlier_spe is None
    assert plain.contributions_t2 is None
    with pytest.raises(streampca.InvalidInputError) as e:
        api.project(name, Q, alpha=0.7, binary=binary)
    assert e.value.code == "invalid_parameter" and "alpha" in e.value.message


def test_limits_match_scipy(api, name):
    d, p, n = 6, 3, 2500
    X = spiked(n, d, seed=15)
    api.create_model(name, d, p, alpha=0.05, tolerance=1e-10)
    with pytest.raises(streampca.ConflictError) as e:
        api.limits(name)
    assert e.value.code == "not_fitted"
    api.ingest(name, X)
    api.wait_until_fitted(name, 60)
    w = reference(X)[0]
    for k, alpha in [(None, None), (1, 0.001), (2, 0.2)]:
        got = api.limits(name, k=k, alpha=alpha)
        kk, aa = k or p, alpha or 0.05
        assert (got.k, got.alpha, got.samples) == (kk, aa, float(n))
        ref = control_limits(w, n, kk, aa)
        for key in ("t2", "spe", "spe_box", "h0"):
            assert getattr(got, key) == pytest.approx(ref[key], rel=1e-9), key
        np.testing.assert_allclose(got.theta, ref["theta"], rtol=1e-9)
        assert got.spe_method == ref["spe_method"]
    with pytest.raises(streampca.InvalidInputError) as e:
        api.limits(name, k=4)
    assert e.value.code == "invalid_parameter" and "k" in e.value.message
    with pytest.raises(streampca.InvalidInputError):
        api.limits(name, alpha=0.0)


def test_project_errors(api, name):
    api.create_model(name, 6, 2)
    with pytest.raises(streampca.ConflictError) as e:
        api.project(name, np.ones((2, 6)))
    assert e.value.code == "not_fitted"
    api.ingest(name, spiked(200, 6, seed=7))
    api.wait_until_fitted(name, 30)
    with pytest.raises(streampca.InvalidInputError) as e:
        api.project(name, np.ones((2, 6)), k=3)
    assert (e.value.status, e.value.code) == (400, "invalid_parameter")
    with pytest.raises(streampca.InvalidInputError) as e:
        api.project(name, np.ones((2, 5)))
    assert e.value.code == "dimension_mismatch"
    bad = np.ones((2, 6))
    bad[1, 4] = np.inf
    with pytest.raises(streampca.InvalidInputError) as e:
        api.project(name, bad)
    assert e.value.code == "non_finite"


def test_wait_until_fitted_times_out_naming_the_counts(api, name):
    api.create_model(name, 8, 2)
    api.ingest(name, np.random.default_rng(0).standard_normal((3, 8)))
    t = time.monotonic()
    with pytest.raises(streampca.FitTimeoutError, match="3 samples for 2 components of dim 8"):
        api.wait_until_fitted(name, 0.3, poll=0.05)
    assert 0.25 < time.monotonic() - t < 5


def test_snapshot_export_and_import(api, name, tmp_path):
    d = 7
    X = spiked(500, d, seed=8)
    api.create_model(name, d, 3)
    api.ingest(name, X, batch_size=100)
    api.wait_until_fitted(name, 30)
    original = api.components(name)
    data = api.export_snapshot(name)
    assert data[:8] == b"SPCASNAP"
    path = tmp_path / "m.spcasnap"
    # (The trainer may have refined its warm start since: compare with this export.)
    again = api.export_snapshot(name, path)
    assert again[:8] == b"SPCASNAP" and path.read_bytes() == again
    copies = [name + "-b", name + "-p", name + "-f"]
    try:
        for copy, source in zip(copies, [data, path, io.BytesIO(data)]):
            st = api.import_snapshot(copy, source)
            assert (st.name, st.dim, st.samples, st.sequence) == (copy, d, 500.0, 5)
            api.wait_until_fitted(copy, 30)
            c = api.components(copy)
            np.testing.assert_array_equal(c.mean, original.mean)
            for i in range(3):
                assert angle(c.components[i], original.components[i]) < 1e-9
        with pytest.raises(streampca.InvalidInputError) as e:
            api.import_snapshot(copies[0], b"SPCASNAP but not really")
        assert e.value.code == "invalid_snapshot"
        with pytest.raises(TypeError):
            api.import_snapshot(copies[0], 42)
    finally:
        for c in copies:
            api.delete_model(c, missing_ok=True)


def test_ready(api):
    assert api.ready() is True


def test_async_client_runs_requests_concurrently(url, name):
    """Awaitable for real: four models fed concurrently on one event loop."""
    X = spiked(800, 6, seed=9)

    async def main():
        async with streampca.AsyncClient(url) as c:
            names = [f"{name}-{i}" for i in range(4)]
            await asyncio.gather(*(c.create_model(n, 6, 2) for n in names))
            receipts = await asyncio.gather(*(c.ingest(n, X, batch_size=100) for n in names))
            await asyncio.gather(*(c.wait_until_fitted(n, 30) for n in names))
            comps = await asyncio.gather(*(c.components(n) for n in names))
            await asyncio.gather(*(c.delete_model(n) for n in names))
            return receipts, comps

    receipts, comps = asyncio.run(main())
    assert [r.sequence for r in receipts] == [8] * 4
    for c in comps:
        np.testing.assert_array_equal(c.mean, comps[0].mean)


def test_url_and_key_from_the_environment(start_server, monkeypatch):
    # Keys of at least 16 bytes: the server refuses shorter ones (unless told
    # --allow-short-api-keys).
    write, read = "write-key-0123456789", "read-key-0123456789"
    s = start_server("--sync", "never", "--api-key", write, "--read-api-key", read)
    monkeypatch.setenv("STREAMPCA_URL", s.url)
    monkeypatch.delenv("STREAMPCA_API_KEY", raising=False)
    with streampca.Client() as anonymous:
        with pytest.raises(streampca.UnauthorizedError) as e:
            anonymous.list_models()
        assert (e.value.status, e.value.code) == (401, "unauthorized")
    with streampca.Client(api_key=read) as reader:
        assert reader.list_models() == []
        with pytest.raises(streampca.ForbiddenError) as e:
            reader.create_model("m", 2, 1)
        assert (e.value.status, e.value.code) == (403, "forbidden")
    monkeypatch.setenv("STREAMPCA_API_KEY", write)
    with streampca.Client() as writer:
        assert writer.create_model("m", 2, 1).name == "m"


def test_default_url(monkeypatch):
    monkeypatch.delenv("STREAMPCA_URL", raising=False)
    assert streampca.Client().url == streampca.DEFAULT_URL == "http://127.0.0.1:8080"


def test_unreachable_service_raises_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on `port` now.
    with streampca.Client(f"http://127.0.0.1:{port}", retries=2) as c:
        t = time.monotonic()
        with pytest.raises(streampca.ServiceUnavailableError, match="ConnectError"):
            c.list_models()
        assert time.monotonic() - t >= 0.05 + 0.1  # two backoffs were waited
        assert c.ready() is False


def _hold_the_only_slot(port: int, release: threading.Event) -> threading.Thread:
    """Occupies the server's single in-flight slot with an ingest whose body never
    finishes until ``release`` is set."""
    ready = threading.Event()

    def run():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/models/slow/samples HTTP/1.1\r\nhost: x\r\n"
                b"content-type: text/csv\r\ncontent-length: 1000\r\n\r\n1,"
            )
            ready.set()
            release.wait(10)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    time.sleep(0.2)  # the server has read the head and taken the slot
    return t


def test_503_is_retried_after_retry_after(start_server):
    s = start_server("--sync", "never", "--max-in-flight", "1")
    with streampca.Client(s.url) as c:
        c.create_model("slow", 2, 1)
    release = threading.Event()
    holder = _hold_the_only_slot(s.port, release)
    with streampca.Client(s.url, retries=0) as impatient:
        with pytest.raises(streampca.OverloadedError) as e:
            impatient.list_models()
        assert (e.value.status, e.value.code, e.value.retry_after) == (503, "overloaded", 1.0)
    threading.Timer(0.3, release.set).start()
    with streampca.Client(s.url, retries=3) as patient:
        t = time.monotonic()
        assert [m.name for m in patient.list_models()] == ["slow"]
        # It waited the advertised second before the retry that succeeded.
        assert 0.9 < time.monotonic() - t < 5
    holder.join(5)


def _client_ports(server_port: int) -> set:
    """Local ports of TCP connections (any state) to ``server_port`` on loopback."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    local, remote = line.split()[1:3]
                    if int(remote.rsplit(":", 1)[1], 16) == server_port:
                        ports.add(int(local.rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connections_are_kept_alive(start_server, kind):
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp to count connections")
    s = start_server("--sync", "never")
    before = _client_ports(s.port)  # the start-up probe's connection
    c = streampca.Client(s.url) if kind == "sync" else SyncFacade(s.url)
    try:
        c.create_model("k", 3, 1)
        for _ in range(20):
            c.ingest("k", np.ones((2, 3)))
            c.get_model("k")
        # 41 requests, one connection.
        assert len(_client_ports(s.port) - before) == 1
    finally:
        c.close()
