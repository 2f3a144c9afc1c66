"""``StreamPCA`` against scikit-learn's ``PCA`` and ``IncrementalPCA`` on the same data,
over the real service.

Tolerances (the issue's): components to 1e-6 rad (same signs as scikit-learn),
explained variance to 1e-9 relative, ``transform`` and ``inverse_transform`` to 1e-8
(absolute, on data of unit scale). A component off by θ radians moves a score by up to
θ·‖x − mean‖, so the 1e-8 comparisons fit with ``tolerance=1e-10``
(:func:`tight`); :func:`test_default_tolerance_bounds_the_error` checks what the
default ``tolerance=1e-6`` promises."""

from __future__ import annotations

import gc
import pickle
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy import sparse  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.decomposition import PCA, IncrementalPCA  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import streampca  # noqa: E402
from conftest import angle, spiked  # noqa: E402
from streampca.sklearn import StreamPCA  # noqa: E402

ANGLE = 1e-6
VAR = 1e-9
TRANSFORM = 1e-8
TIGHT = 1e-10


def tight(*args, **kwargs) -> StreamPCA:
    """A StreamPCA whose service fit converges to 1e-10 rad."""
    kwargs.setdefault("tolerance", TIGHT)
    return StreamPCA(*args, **kwargs)


def served_models(url):
    with streampca.Client(url) as c:
        return {m.name for m in c.list_models()}


def assert_matches(est, ref, X):
    """Every attribute and method of ``est`` against the scikit-learn estimator ``ref``
    fitted on the same rows."""
    assert est.n_components_ == ref.n_components_
    assert est.components_.shape == ref.components_.shape
    for i in range(est.n_components_):
        assert angle(est.components_[i], ref.components_[i]) < ANGLE, i
        # The same sign convention: no flips needed.
        assert est.components_[i] @ ref.components_[i] > 0, i
    np.testing.assert_allclose(est.explained_variance_, ref.explained_variance_, rtol=VAR)
    np.testing.assert_allclose(
        est.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=VAR
    )
    np.testing.assert_allclose(est.singular_values_, ref.singular_values_, rtol=VAR)
    np.testing.assert_allclose(est.mean_, ref.mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.noise_variance_, ref.noise_variance_, rtol=VAR, atol=1e-15)
    T = est.transform(X)
    np.testing.assert_allclose(T, ref.transform(X), rtol=0, atol=TRANSFORM)
    np.testing.assert_allclose(est.inverse_transform(T), ref.inverse_transform(T), rtol=0, atol=TRANSFORM)
    np.testing.assert_allclose(est.get_covariance(), ref.get_covariance(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(est.get_precision(), ref.get_precision(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(est.score_samples(X), ref.score_samples(X), rtol=1e-9)
    assert est.score(X) == pytest.approx(ref.score(X), rel=1e-9)


@pytest.fixture(scope="module")
def X():
    return spiked(3000, 20, seed=11)


def test_fit_matches_pca(url, X):
    est = tight(5, url=url).fit(X)
    ref = PCA(5, svd_solver="full").fit(X)
    assert_matches(est, ref, X)
    np.testing.assert_allclose(est.var_, X.var(axis=0), rtol=1e-12)
    assert est.n_samples_seen_ == 3000 and est.n_features_in_ == 20
    assert est.batch_size_ == 100  # 5 · n_features
    est.close()


def test_whitening_matches_pca(url, X):
    est = tight(4, whiten=True, url=url).fit(X)
    ref = PCA(4, whiten=True, svd_solver="full").fit(X)
    assert_matches(est, ref, X)
    T = est.transform(X)
    np.testing.assert_allclose(T.std(axis=0, ddof=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(est.inverse_transform(T), ref.inverse_transform(T), atol=TRANSFORM)
    est.close()


@pytest.mark.parametrize("whiten", [False, True])
def test_monitor_is_an_addition_and_score_samples_stays_ppca(url, X, whiten):
    est = tight(4, whiten=whiten, url=url).fit(X)
    Q = X[:60].copy()
    Q[0] += 40 * est.components_[0]  # an outlier along the first component
    m = est.monitor(Q, alpha=0.01, contributions=True)
    Z = est.transform(Q)
    # T² is Σ score²/explained_variance_, whatever the whitening; SPE the squared
    # distance to the (unwhitened) reconstruction.
    t2 = (Z**2).sum(axis=1) if whiten else (Z**2 / est.explained_variance_).sum(axis=1)
    np.testing.assert_allclose(m.t2, t2, rtol=1e-9)
    R = Q - est.inverse_transform(Z)
    np.testing.assert_allclose(m.spe, (R**2).sum(axis=1), rtol=1e-8)
    assert m.k == 4 and m.outlier_t2[0] and m.limit_t2 > 0 and m.limit_spe > 0
    np.testing.assert_allclose(m.contributions_t2.sum(axis=1), m.t2, rtol=1e-12)
    # scikit-learn's methods keep their meaning.
    ref = PCA(4, whiten=whiten, svd_solver="full").fit(X)
    np.testing.assert_allclose(est.score_samples(Q), ref.score_samples(Q), rtol=1e-9)
    est.close()
    with pytest.raises(NotFittedError, match="monitor"):
        est.monitor(Q)


def test_a_named_standardized_model_is_not_pca(url, X, name):
    with streampca.Client(url) as c:
        c.create_model(name, 20, 3, standardize=True)
    with pytest.raises(ValueError, match="standardize true"):
        StreamPCA(3, url=url, model=name).partial_fit(X[:100])


def test_n_components_none_keeps_every_component(url, X):
    est = tight(url=url).fit(X)
    ref = PCA(svd_solver="full").fit(X)
    ipca = IncrementalPCA().fit(X)
    assert est.n_components_ == ipca.n_components_ == 20
    assert_matches(est, ref, X)
    assert est.noise_variance_ == 0.0
    est.close()


def test_n_components_none_follows_the_first_batch_as_incrementalpca(url, X):
    # First batch of 12 rows over 20 features: min(12, 20) components.
    est = tight(batch_size=12, url=url).fit(X[:600])
    ipca = IncrementalPCA(batch_size=12).fit(X[:600])
    assert est.n_components_ == ipca.n_components_ == 12
    assert est.batch_size_ == ipca.batch_size_ == 12
    # Unlike IncrementalPCA's, the served fit is the exact PCA of every row.
    assert_matches(est, PCA(12, svd_solver="full").fit(X[:600]), X[:600])
    est.close()


def test_partial_fit_over_batches_equals_fit_on_all_rows(url, X):
    whole = tight(6, url=url).fit(X)
    parts = tight(6, url=url)
    for start in range(0, 3000, 256):
        parts.partial_fit(X[start : start + 256])
        assert parts.n_samples_seen_ == min(start + 256, 3000)
    assert_matches(parts, PCA(6, svd_solver="full").fit(X), X)
    for i in range(6):
        assert angle(parts.components_[i], whole.components_[i]) < ANGLE
    np.testing.assert_allclose(parts.explained_variance_, whole.explained_variance_, rtol=VAR)
    np.testing.assert_allclose(parts.var_, whole.var_, rtol=1e-12)
    np.testing.assert_allclose(parts.transform(X), whole.transform(X), atol=TRANSFORM)
    # Attributes follow later batches.
    before = parts.mean_.copy()
    parts.partial_fit(X[:50] + 100.0)
    assert parts.n_samples_seen_ == 3050
    assert not np.allclose(parts.mean_, before)
    np.testing.assert_allclose(
        parts.mean_, np.vstack([X, X[:50] + 100.0]).mean(axis=0), rtol=0, atol=1e-10
    )
    whole.close()
    parts.close()


def test_fashion_mnist_when_present(url):
    import gzip
    import os

    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        if os.environ.get("STREAMPCA_REQUIRE_DATASETS") == "1":
            pytest.fail(f"{path} is missing (apt-get install dataset-fashion-mnist)")
        pytest.skip("dataset-fashion-mnist is not installed")
    with gzip.open(path) as f:
        X = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:5000] / 255.0
    est = tight(16, url=url)
    for start in range(0, len(X), 256):
        est.partial_fit(X[start : start + 256])
    ref = PCA(16, svd_solver="full").fit(X)
    assert_matches(est, ref, X)
    est.close()


def test_float32_in_float32_out_like_pca(url, X):
    X32 = X.astype(np.float32)
    est = tight(3, url=url).fit(X32)
    pca = PCA(3).fit(X32)
    # IncrementalPCA's dtypes are mixed (float64 variances; float32 components only
    # after a single batch); PCA keeps float32 throughout, and so does StreamPCA.
    for attr in ("components_", "explained_variance_", "mean_", "singular_values_"):
        assert getattr(est, attr).dtype == getattr(pca, attr).dtype == np.float32, attr
    assert est.var_.dtype == np.float32
    assert est.transform(X32).dtype == pca.transform(X32).dtype == np.float32
    assert est.transform(X).dtype == np.float64
    # The service sums the float32 values in float64: the exact PCA of those values.
    ref = PCA(3, svd_solver="full").fit(X32.astype(np.float64))
    for i in range(3):
        assert angle(est.components_[i].astype(np.float64), ref.components_[i]) < 1e-6
    np.testing.assert_allclose(est.explained_variance_, ref.explained_variance_, rtol=1e-6)
    assert est.get_feature_names_out().tolist() == ["streampca0", "streampca1", "streampca2"]
    est.close()


def test_fit_on_lists_and_sparse(url, X):
    est = tight(3, url=url).fit(X[:400].tolist())
    ref = PCA(3, svd_solver="full").fit(X[:400])
    assert_matches(est, ref, X[:400])
    S = sparse.random(500, 12, density=0.3, format="csr", random_state=0)
    sp = tight(4, url=url).fit(S)
    dense = PCA(4, svd_solver="full").fit(S.toarray())
    np.testing.assert_allclose(sp.transform(S), dense.transform(S.toarray()), atol=TRANSFORM)
    with pytest.raises(TypeError, match="does not support sparse input"):
        sp.partial_fit(S)
    est.close()
    sp.close()


def test_pipeline_clone_and_set_output(url, X):
    pipe = make_pipeline(StandardScaler(), tight(3, url=url))
    ref = make_pipeline(StandardScaler(), PCA(3, svd_solver="full"))
    np.testing.assert_allclose(pipe.fit_transform(X), ref.fit_transform(X), atol=TRANSFORM)
    np.testing.assert_allclose(pipe.transform(X[:10]), ref.transform(X[:10]), atol=TRANSFORM)
    est = pipe[-1]
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "components_") and not hasattr(twin, "n_components_")
    with pytest.raises(NotFittedError):
        twin.transform(X)
    pd = pytest.importorskip("pandas")
    out = make_pipeline(StandardScaler(), tight(2, url=url)).set_output(transform="pandas")
    frame = out.fit_transform(pd.DataFrame(X[:500], columns=[f"f{i}" for i in range(20)]))
    assert list(frame.columns) == ["streampca0", "streampca1"]
    est.close()


def test_validation_errors_as_scikit_learn(url, X):
    from sklearn.utils._param_validation import InvalidParameterError

    for bad in (
        dict(n_components=0),
        dict(n_components=2.5),
        dict(whiten="yes"),
        dict(batch_size=0),
        dict(tolerance=2.0),
        dict(half_life=-1.0),
        dict(model="Not A Name"),
    ):
        with pytest.raises(InvalidParameterError, match="parameter of StreamPCA must be"):
            tight(url=url, **bad).fit(X[:100])
    with pytest.raises(ValueError, match="n_components=30 invalid for n_features=20"):
        tight(30, url=url).fit(X)
    with pytest.raises(ValueError, match="must be less or equal to the batch number of samples 5"):
        tight(8, url=url).partial_fit(X[:5])
    est = tight(3, url=url).fit(X[:300])
    with pytest.raises(ValueError, match="X has 19 features, but StreamPCA is expecting 20"):
        est.partial_fit(X[:10, :19])
    with pytest.raises(ValueError, match="X has 19 features, but StreamPCA is expecting 20"):
        est.transform(X[:10, :19])
    # Changing n_components between partial_fit calls, as IncrementalPCA refuses it.
    est.set_params(n_components=2)
    with pytest.raises(ValueError, match="changed from 3 to 2 between calls to partial_fit"):
        est.partial_fit(X[:10])
    est.set_params(n_components=21)
    with pytest.raises(ValueError, match="n_components=21 invalid for n_features=20"):
        est.partial_fit(X[:10])
    est.set_params(n_components=3)
    est.partial_fit(X[300:310])
    assert est.n_samples_seen_ == 310
    with pytest.raises(NotFittedError):
        tight(url=url).transform(X)
    nan = X[:100].copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tight(3, url=url).fit(nan)
    with pytest.raises(ValueError, match="n_samples=1"):
        tight(url=url).fit(X[:1])
    # Fewer samples than the service needs for 3 components of 20 features (8).
    with pytest.raises(ValueError, match="needs at least 8 samples"):
        tight(3, url=url).fit(X[:7])
    few = tight(3, url=url).partial_fit(X[:7])
    with pytest.raises(NotFittedError, match="at least 8"):
        few.components_
    few.partial_fit(X[7:9])
    assert few.components_.shape == (3, 20)
    est.close()
    few.close()


def test_rank_deficient_data_is_completed_like_an_svd(url):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 2)) @ rng.standard_normal((2, 6)) + 1.0  # rank 2
    est = tight(4, url=url).fit(X)
    V = est.components_
    np.testing.assert_allclose(V @ V.T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(est.explained_variance_[2:], 0.0, atol=1e-12)
    ref = PCA(4, svd_solver="full").fit(X)
    for i in range(2):
        assert angle(V[i], ref.components_[i]) < ANGLE
    np.testing.assert_allclose(est.inverse_transform(est.transform(X)), X, atol=1e-9)
    est.close()


def test_lifecycle_owned_models_are_deleted(url, X):
    before = served_models(url)
    est = tight(3, url=url).fit(X[:300])
    first = served_models(url) - before
    assert len(first) == 1 and next(iter(first)).startswith("sklearn-")
    est.fit(X[:300])  # a fresh model; the old one is gone
    second = served_models(url) - before
    assert len(second) == 1 and second != first
    del est
    gc.collect()
    deadline = time.monotonic() + 10
    while served_models(url) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served_models(url) - before == set()
    # A hundred fits in a loop leave nothing behind.
    for i in range(100):
        e = tight(2, url=url).fit(X[:50])
        assert e.n_samples_seen_ == 50
    del e
    gc.collect()
    deadline = time.monotonic() + 20
    while served_models(url) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served_models(url) - before == set()
    with tight(2, url=url) as e:
        e.fit(X[:50])
        assert len(served_models(url) - before) == 1
    assert served_models(url) - before == set()
    T = e.transform(X[:5])  # the fitted attributes outlive the served model
    assert T.shape == (5, 2)
    with pytest.raises(NotFittedError, match="closed"):
        e.partial_fit(X[:5])


def test_lifecycle_named_models_are_kept_and_continued(url, X, name):
    a = tight(4, url=url, model=name).fit(X[:1000])
    del a
    gc.collect()
    assert name in served_models(url)
    # Another estimator (another process, say) continues the same model.
    b = tight(4, url=url, model=name)
    b.partial_fit(X[1000:2000])
    assert b.n_samples_seen_ == 2000
    assert_matches(b, PCA(4, svd_solver="full").fit(X[:2000]), X[:2000])
    # fit() replaces it with a fresh model.
    b.fit(X[:500])
    assert b.n_samples_seen_ == 500
    with streampca.Client(url) as c:
        assert c.get_model(name).samples == 500.0
    with pytest.raises(ValueError, match="components 4 \\(n_components=3\\)"):
        tight(3, url=url, model=name).partial_fit(X[:10])
    with pytest.raises(ValueError, match="dim 20 \\(X has 19 features\\)"):
        tight(4, url=url, model=name).partial_fit(X[:10, :19])
    b.close()  # a named model is kept
    assert name in served_models(url)


def test_pickled_copy_works_offline_and_forks_on_partial_fit(url, X):
    est = tight(3, url=url)
    est.partial_fit(X[:1000])
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.transform(X[:20]), est.transform(X[:20]))
    before = served_models(url)
    copy.partial_fit(X[1000:1500])
    assert copy.n_samples_seen_ == 1500 and est.n_samples_seen_ == 1000
    assert len(served_models(url) - before) == 1  # the copy's own model
    assert_matches(copy, PCA(3, svd_solver="full").fit(X[:1500]), X[:1500])
    assert_matches(est, PCA(3, svd_solver="full").fit(X[:1000]), X[:1000])
    est.close()
    copy.close()


def test_estimator_reads_the_environment(url, X, monkeypatch):
    monkeypatch.setenv("STREAMPCA_URL", url)
    est = tight(2).fit(X[:200])
    assert est.components_.shape == (2, 20)
    est.close()


def test_default_tolerance_bounds_the_error(url, X):
    est = StreamPCA(5, url=url).fit(X)
    assert est.tolerance == 1e-6
    ref = PCA(5, svd_solver="full").fit(X)
    for i in range(5):
        assert angle(est.components_[i], ref.components_[i]) < ANGLE
    np.testing.assert_allclose(est.explained_variance_, ref.explained_variance_, rtol=VAR)
    # Each score moves by at most (angle ≤ tolerance) · ‖x − mean‖.
    err = np.abs(est.transform(X) - ref.transform(X)).max(axis=1)
    assert np.all(err <= 1e-6 * np.linalg.norm(X - ref.mean_, axis=1))
    est.close()


def test_partial_fit_coalesces_rows_for_owned_models(url, X, name):
    c = streampca.Client(url)
    # Synchronous sending (max_in_flight=0): every request is done when partial_fit
    # returns (test_sklearn_background.py covers background sending).
    buffered = tight(4, url=url, max_in_flight=0)
    direct = tight(4, url=url, buffer_bytes=0, max_in_flight=0)
    rows = X.copy()
    for start in range(0, 3000, 100):
        buffered.partial_fit(rows[start : start + 100])
        direct.partial_fit(X[start : start + 100])
    rows[:] = 0.0  # partial_fit copied what it buffered
    assert buffered.n_samples_seen_ == direct.n_samples_seen_ == 3000
    assert c.get_model(direct._model).batches == 30  # one request per call
    assert c.get_model(buffered._model).batches == 0  # 480 KB, all still buffered
    buffered.flush()
    st = c.get_model(buffered._model)
    assert (st.batches, st.samples) == (1, 3000.0)
    # The same exact fit either way.
    assert_matches(buffered, PCA(4, svd_solver="full").fit(X), X)
    for i in range(4):
        assert angle(buffered.components_[i], direct.components_[i]) < ANGLE
    # A small buffer sends whenever it fills: 100 rows of 20 float64 per request.
    small = tight(4, url=url, buffer_bytes=100 * 20 * 8, max_in_flight=0)
    for start in range(0, 1000, 30):
        small.partial_fit(X[start : min(start + 30, 1000)])
    # Sent when the next 30 rows would not fit: 10 requests of 90 rows, 100 buffered.
    assert c.get_model(small._model).batches == 10
    assert c.get_model(small._model).samples == 900.0
    assert small.n_samples_seen_ == 1000
    small.flush()
    assert c.get_model(small._model).samples == 1000.0
    # A named model gets every call at once.
    named = tight(4, url=url, model=name)
    named.partial_fit(X[:50])
    assert c.get_model(name).samples == 50.0
    # An error for buffered rows surfaces when they are sent, and they stay buffered.
    lost = tight(4, url=url, max_in_flight=0)
    lost.partial_fit(X[:200])
    c.delete_model(lost._model)
    with pytest.raises(streampca.NotFoundError):
        lost.components_
    assert lost._buf_rows == 200
    for e in (buffered, direct, small, named, lost):
        e.close()
    c.close()


def test_later_partial_fit_calls_check_rows_as_scikit_learn_does(url, X):
    # After the first call, partial_fit checks plain float arrays itself (finiteness from
    # the column sums var_ needs); bad rows still get scikit-learn's errors and change
    # nothing.
    est = tight(3, url=url, buffer_bytes=0).partial_fit(X[:100])
    cases = ((np.nan, "Input X contains NaN"), (np.inf, "infinity"), (-np.inf, "infinity"))
    for bad, message in cases:
        rows = X[100:150].copy()
        rows[7, 2] = bad
        with pytest.raises(ValueError, match=message):
            est.partial_fit(rows)
        with pytest.raises(ValueError, match=message):
            est.partial_fit(rows.astype(np.float32))
    with pytest.raises(ValueError, match="X has 19 features, but StreamPCA is expecting 20"):
        est.partial_fit(X[100:150, :19])
    with pytest.raises(ValueError, match="minimum of 1 is required"):
        est.partial_fit(X[100:100])
    assert est.n_samples_seen_ == 100
    # Lists, integers and float32 take scikit-learn's path or the direct one alike.
    est.partial_fit(X[100:150].tolist())
    est.partial_fit(np.rint(X[150:200] * 10).astype(np.int64))
    est.partial_fit(X[200:250].astype(np.float32))
    rows = np.vstack(
        [X[:150], np.rint(X[150:200] * 10), X[200:250].astype(np.float32).astype(np.float64)]
    )
    assert est.n_samples_seen_ == 250
    np.testing.assert_allclose(est.var_, rows.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(est.mean_, rows.mean(axis=0), rtol=1e-10, atol=1e-12)
    est.close()


def test_var_over_calls_larger_than_the_stats_block_matches_numpy(url, monkeypatch):
    # var_'s deviations are summed in blocks of _STATS_BLOCK values: a call spanning
    # several blocks (and a last, partial one) gives numpy's variance of all rows.
    import streampca._ingest as ingest

    monkeypatch.setattr(ingest, "_STATS_BLOCK", 7 * 20)  # 7 rows of 20 features per block
    rng = np.random.default_rng(11)
    X = rng.normal(loc=1e3, scale=0.5, size=(403, 20)) * rng.uniform(0.1, 10, size=20)
    est = tight(3, url=url)
    for a, b in ((0, 50), (50, 51), (51, 403)):
        est.partial_fit(X[a:b])
    np.testing.assert_allclose(est.var_, X.var(axis=0), rtol=1e-11)
    est.close()
