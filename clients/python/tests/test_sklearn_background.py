"""``StreamPCA`` with background sending (``max_in_flight`` > 0), over the real service.

What is checked: the fit after ``partial_fit`` (requests in flight concurrently, so the
service may apply them in any order) equals scikit-learn's PCA of all rows to the
tolerances of ``test_sklearn.py``; every row is applied exactly once (the service's own
batch and sample counts); the caller may overwrite its array after ``partial_fit``
returns; a send that fails on the service (a 404: the model deleted behind the
estimator's back) is raised by the next ``partial_fit``, ``flush``, fitted attribute,
pickling or ``close``, naming the rows, and those rows are kept and sent again by
``flush``; the sender threads stop on ``close`` and when the estimator is collected.
"""

from __future__ import annotations

import gc
import pickle
import threading
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.decomposition import PCA  # noqa: E402

import streampca  # noqa: E402
from conftest import spiked  # noqa: E402
from streampca.sklearn import StreamPCA  # noqa: E402
from test_sklearn import TIGHT, assert_matches  # noqa: E402

D, P = 20, 4


@pytest.fixture(scope="module")
def X():
    return spiked(3000, D, seed=23)


def sender_threads(model: str):
    return [t for t in threading.enumerate() if t.name.startswith(f"streampca-sender-{model}-")]


def recreate(c: streampca.Client, est: StreamPCA, rows: np.ndarray) -> None:
    """Puts the estimator's model back (same name and settings) with ``rows`` in it."""
    c.create_model(est._model, D, P, tolerance=TIGHT)
    c.ingest(est._model, rows)


@pytest.mark.parametrize(
    "buffer_rows, in_flight, requests",
    [(0, 3, 30), (250, 2, 15), (100, 4, 30)],
    ids=["call-per-request-3", "coalesced-250-2", "buffer-of-one-call-4"],
)
def test_partial_fit_in_background_equals_fit_on_all_rows(url, X, buffer_rows, in_flight, requests):
    c = streampca.Client(url)
    est = StreamPCA(
        P, url=url, tolerance=TIGHT, buffer_bytes=buffer_rows * D * 8, max_in_flight=in_flight
    )
    rows = X.copy()
    for start in range(0, 3000, 100):
        est.partial_fit(rows[start : start + 100])
        rows[start : start + 100] = -1e6  # partial_fit copied the rows it took
    assert len(sender_threads(est._model)) == in_flight
    assert est.n_samples_seen_ == 3000
    assert_matches(est, PCA(P, svd_solver="full").fit(X), X)
    st = c.get_model(est._model)
    # Every row applied once: no request lost or sent twice.
    assert (st.batches, st.samples) == (requests, 3000.0)
    assert est.n_samples_seen_ == 3000
    model = est._model
    est.close()
    assert sender_threads(model) == []
    c.close()


def test_fit_after_partial_fit_equals_fit_on_all_rows(url, X):
    est = StreamPCA(P, url=url, tolerance=TIGHT, buffer_bytes=0, max_in_flight=2)
    for start in range(0, 1000, 100):
        est.partial_fit(X[start : start + 100])
    old = est._model
    est.fit(X)  # a fresh model: the previous one's sends finished, its threads stopped
    assert est._model != old and sender_threads(old) == []
    assert_matches(est, PCA(P, svd_solver="full").fit(X), X)
    with streampca.Client(url) as c:
        assert c.get_model(est._model).samples == 3000.0
    est.close()


def test_failed_send_is_raised_by_the_next_partial_fit_and_kept_for_flush(url, X):
    c = streampca.Client(url)
    est = StreamPCA(P, url=url, tolerance=TIGHT, buffer_bytes=0, max_in_flight=2)
    est.partial_fit(X[:100])
    est.flush()
    c.delete_model(est._model)  # behind the estimator's back: its next send gets a 404
    est.partial_fit(X[100:250])  # queued: returns before the service answers
    est._sender.wait()
    with pytest.raises(streampca.SendError) as info:
        est.partial_fit(X[250:300])
    e = info.value
    assert isinstance(e.__cause__, streampca.NotFoundError)
    assert e.kept == [(100, 250)] and e.unknown == []
    assert "rows 100–249 were not applied" in str(e)
    assert "This call's rows were not taken" in str(e)
    # While rows are kept, partial_fit refuses more (memory stays bounded).
    with pytest.raises(streampca.SendError) as again:
        est.partial_fit(X[250:300])
    assert again.value.kept == [(100, 250)]
    assert est.n_samples_seen_ == 250
    # flush() sends them again: with the model back (holding rows 0–99), they land once.
    recreate(c, est, X[:100])
    est.flush()
    assert c.get_model(est._model).samples == 250.0
    est.partial_fit(X[250:300])
    assert_matches(est, PCA(P, svd_solver="full").fit(X[:300]), X[:300])
    assert est.n_samples_seen_ == 300
    est.close()
    c.close()


def test_failed_send_is_raised_by_flush_attributes_pickling_and_close(url, X):
    c = streampca.Client(url)
    est = StreamPCA(P, url=url, tolerance=TIGHT, buffer_bytes=40 * D * 8, max_in_flight=3)
    est.partial_fit(X[:100])
    est.flush()
    c.delete_model(est._model)
    for start in range(100, 200, 25):  # 25 rows into a 40-row buffer: each call sends
        est.partial_fit(X[start : start + 25])  # the previous one's rows
    # Reading a fitted attribute sends the buffer, waits, and raises every failure.
    with pytest.raises(streampca.SendError) as info:
        est.components_
    assert info.value.kept == [(100, 125), (125, 150), (150, 175), (175, 200)]
    assert "rows 100–124, 125–149, 150–174, 175–199 were not applied" in str(info.value)
    with pytest.raises(streampca.SendError):
        est.flush()  # the model is still gone: sent again, refused again, kept again
    with pytest.raises(streampca.SendError):
        pickle.dumps(est)
    model = est._model
    with pytest.raises(streampca.SendError) as closing:
        est.close()
    assert closing.value.kept == [] and closing.value.dropped == [
        (100, 125), (125, 150), (150, 175), (175, 200)
    ]
    assert "no row is kept" in str(closing.value)
    assert sender_threads(model) == []
    c.close()


def test_pickled_copy_after_background_sends(url, X):
    est = StreamPCA(P, url=url, tolerance=TIGHT, buffer_bytes=0, max_in_flight=2)
    for start in range(0, 1000, 100):
        est.partial_fit(X[start : start + 100])
    copy = pickle.loads(pickle.dumps(est))  # waits for the sends, then reads the fit
    assert "_sender" not in copy.__dict__
    ref = PCA(P, svd_solver="full").fit(X[:1000])
    assert_matches(copy, ref, X[:1000])
    # The copy forks the served model and goes on with its own sender.
    copy.partial_fit(X[1000:1200])
    assert_matches(copy, PCA(P, svd_solver="full").fit(X[:1200]), X[:1200])
    assert copy.n_samples_seen_ == 1200 and est.n_samples_seen_ == 1000
    est.close()
    copy.close()


def test_sender_threads_stop_when_the_estimator_is_collected(url, X):
    est = StreamPCA(P, url=url, buffer_bytes=0, max_in_flight=2)
    est.partial_fit(X[:100])
    model = est._model
    assert len(sender_threads(model)) == 2
    del est
    gc.collect()
    deadline = time.monotonic() + 10
    while sender_threads(model) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender_threads(model) == []


def test_max_in_flight_is_validated(url, X):
    for bad in (-1, 65, 1.5, True):
        with pytest.raises(ValueError, match="max_in_flight"):
            StreamPCA(P, url=url, max_in_flight=bad).partial_fit(X[:100])


def test_rows_refused_for_a_stopped_service_are_kept(start_server, X):
    s = start_server()
    est = StreamPCA(P, url=s.url, buffer_bytes=0, max_in_flight=2)
    est.partial_fit(X[:100])
    est.flush()
    model = est._model
    s.stop()  # connections refused from now on: the request never leaves
    est.partial_fit(X[100:200])
    with pytest.raises(streampca.SendError) as info:
        est.flush()
    e = info.value
    assert isinstance(e.__cause__, streampca.ServiceUnavailableError)
    assert e.kept == [(100, 200)] and e.unknown == []
    with pytest.raises(streampca.SendError):
        est.close()
    assert sender_threads(model) == []
