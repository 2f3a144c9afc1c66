"""The server's ``application/x-npy`` bodies and ``application/x-npz`` answers, over raw
HTTP: what numpy writes is read, everything else is refused with a 4xx that names the
problem and changes nothing."""

from __future__ import annotations

import io
import struct

import httpx
import numpy as np
import pytest

import streampca
from conftest import spiked

NPY = {"content-type": "application/x-npy"}


def npy(a: np.ndarray, version=None) -> bytes:
    """What numpy itself writes (``np.lib.format.write_array``)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version)
    return buf.getvalue()


def handmade(header: str, data: bytes, major: int = 1) -> bytes:
    h = header.encode("latin1")
    size = struct.pack("<H", len(h)) if major == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([major, 0]) + size + h + data


@pytest.fixture
def model(client, name):
    client.create_model(name, 3, 1)
    return name


def post(url: str, name: str, body: bytes, route: str = "samples", headers=None, **kw) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/{name}/{route}", content=body, headers=headers or NPY, **kw
    )


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_numpy_files_of_every_version_order_and_width_are_read(url, client, model, version, order, dtype):
    X = np.asarray(spiked(20, 3, seed=1), dtype=dtype, order=order)
    r = post(url, model, npy(X, version))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 20, "samples": 20.0, "sequence": 1}
    client.wait_until_fitted(model, 30)
    # The accumulator saw the values as sent (float32 widened exactly), in row order.
    np.testing.assert_allclose(
        client.components(model).mean, X.astype(np.float64).mean(axis=0), rtol=0, atol=1e-12
    )


def test_regression_rows_carry_x_then_y(url, client, name):
    client.create_model(name, 2, 1, target_dim=1)
    rows = np.array([[1.0, 2.0, 10.0], [3.0, 5.0, 20.0], [0.0, 1.0, 5.0]] * 4)
    assert post(url, name, npy(rows)).status_code == 200
    assert client.wait_until_fitted(name, 30).samples == 12.0
    c = client.components(name)
    np.testing.assert_allclose(c.mean, rows[:, :2].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(c.mean_y, rows[:, 2:].mean(axis=0), atol=1e-12)
    r = post(url, name, npy(rows[:, :2]))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "dimension_mismatch"
    assert (
        "shape is (12, 2): 2 columns, but (rows, 3) (dim 2 x columns, then target_dim 1 y "
        "columns) is expected"
    ) in r.text


GOOD = np.arange(6.0).reshape(2, 3)
GOOD_BYTES = GOOD.tobytes()
HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n"

BAD = [
    # (body, status, code, words the message must contain)
    (b"", 400, "malformed_body", "the body is empty"),
    (b"PK\x03\x04 not numpy at all", 400, "malformed_body", "magic"),
    (handmade(HEADER, GOOD_BYTES, major=9), 400, "malformed_body", "version 9"),
    (npy(GOOD)[:60], 400, "malformed_body", "ends inside the header: 60 bytes, but the prefix says the header takes 128 bytes"),
    (npy(GOOD)[:-8], 400, "malformed_body", "truncated"),
    (npy(GOOD) + b"\x00" * 8, 400, "malformed_body", "bytes after the header, but shape (2, 3) of 8-byte values is 48 bytes"),
    (npy(GOOD.astype(">f8")), 400, "malformed_body", "element type '>f8' (only little-endian"),
    (npy(GOOD.astype(np.int64)), 400, "malformed_body", "'<i8'"),
    (npy(GOOD.astype(np.float16)), 400, "malformed_body", "'<f2'"),
    (npy(np.zeros((2, 3, 1))), 400, "malformed_body", "shape (2, 3, 1) has 3 dimensions"),
    (npy(np.zeros(3)), 400, "malformed_body", "2-D"),
    (npy(np.zeros((0, 3))), 422, "empty_batch", "at least one row"),
    (npy(np.zeros((2, 4))), 422, "dimension_mismatch", "shape is (2, 4): 4 columns, but (rows, 3) is expected"),
    # The server counts rows and columns from 1.
    (npy(np.array([[1.0, np.nan, 2.0]])), 422, "non_finite", "row 1, column 2 is NaN"),
    (npy(np.array([[1.0, 2.0, -np.inf]], dtype=np.float32)), 422, "non_finite", "row 1, column 3 is -inf"),
    (npy(np.array([[1.0, 2e31, 2.0]])), 422, "value_out_of_range", "row 1, column 2 is 2e31"),
    (handmade("{'descr': '<f8', 'shape': (2, 3)}", GOOD_BYTES), 400, "malformed_body", "fortran_order"),
    # Exactly numpy's three keys (numpy's reader refuses others too), of their types.
    (handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", GOOD_BYTES), 400, "malformed_body", "unknown key 'x'"),
    (handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'shape': (9, 3)}", GOOD_BYTES), 400, "malformed_body", "'shape' twice"),
    (handmade("{'descr': '<f8', 'fortran_order': 0, 'shape': (2, 3)}", GOOD_BYTES), 400, "malformed_body", "expected a string, True, False or a tuple in the header, found `0`"),
    (handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3)}", GOOD_BYTES), 400, "malformed_body", "non-negative"),
    # A header that promises more rows than the request may have: refused from the
    # header alone (413, the row limit), before any data is read.
    (handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000000, 3)}", GOOD_BYTES), 413, "too_many_rows", "max_batch_rows"),
    (handmade("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999, 3)}", GOOD_BYTES), 400, "malformed_body", "99999999999999999999 does not fit in 64 bits"),
]


@pytest.mark.parametrize("body,status,code,words", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_npy_bodies_are_refused_naming_the_problem(url, client, model, body, status, code, words):
    r = post(url, model, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert words in err["message"], err["message"]
    st = client.get_model(model)
    assert (st.samples, st.sequence) == (0.0, 0)  # nothing changed
    # The projection route reads the same way.
    if code not in ("empty_batch",):
        p = post(url, model, body, route="project")
        assert p.status_code in (400, 409, 413, 422)


@pytest.fixture
def fitted(client, name):
    X = spiked(500, 6, seed=2)
    client.create_model(name, 6, 3)
    client.ingest(name, X)
    client.wait_until_fitted(name, 30)
    return name, client.components(name)


def test_project_answers_npz_with_every_array(url, fitted):
    name, c = fitted
    Q = spiked(9, 6, seed=3)
    r = post(
        url, name, npy(Q), route="project",
        params={"k": "2", "reconstruct": "true"},
        headers={**NPY, "accept": "application/x-npz"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(r.content)) as z:
        assert sorted(z.files) == [
            "k", "reconstructions", "residual_norms", "scores", "sequence", "spe", "t2"
        ]
        scores, recon = z["scores"], z["reconstructions"]
        t2, spe = z["t2"], z["spe"]
        assert scores.dtype == np.float64 and scores.shape == (9, 2)
        assert recon.shape == (9, 6) and z["residual_norms"].shape == (9,)
        assert z["k"].shape == () and int(z["k"]) == 2 and z["k"].dtype == np.int64
        assert int(z["sequence"]) == c.sequence
    np.testing.assert_allclose(scores, (Q - c.mean) @ c.components[:2].T, atol=1e-10)
    np.testing.assert_allclose(recon, scores @ c.components[:2] + c.mean, atol=1e-10)
    # The statistics, from the published components and eigenvalues.
    ref_scores = (Q - c.mean) @ c.components[:2].T
    np.testing.assert_allclose(t2, (ref_scores**2 / c.eigenvalues[:2]).sum(axis=1), rtol=1e-10)
    residual = (Q - c.mean) - ref_scores @ c.components[:2]
    np.testing.assert_allclose(spe, (residual**2).sum(axis=1), rtol=1e-9)


def test_project_answer_negotiation(url, fitted):
    name, c = fitted
    Q = spiked(3, 6, seed=4)
    # JSON unless application/x-npz is acceptable; q=0 refuses it.
    for accept, npz in [
        (None, False),
        ("application/json", False),
        ("application/x-npz;q=0", False),
        ("application/json;q=0.5, application/x-npz", True),
        ("*/*", False),
    ]:
        headers = dict(NPY)
        if accept:
            headers["accept"] = accept
        r = post(url, name, npy(Q), route="project", headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-npz" if npz else "application/json"), accept
        assert r.headers["vary"].lower() == "accept"
    # A JSON body may ask for a binary answer too.
    r = httpx.post(
        f"{url}/v1/models/{name}/project",
        json={"x": Q.tolist(), "whiten": True},
        headers={"accept": "application/x-npz"},
    )
    with np.load(io.BytesIO(r.content)) as z:
        np.testing.assert_allclose(
            z["scores"], (Q - c.mean) @ c.components.T / np.sqrt(c.eigenvalues), atol=1e-10
        )


def test_project_options_in_the_query_only_for_npy_bodies(url, fitted):
    name, _ = fitted
    r = httpx.post(f"{url}/v1/models/{name}/project", params={"k": "1"}, json={"x": [[0.0] * 6]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_parameter"
    assert "query-string options are for application/x-npy bodies" in r.text
    r = post(url, name, npy(np.zeros((1, 6))), route="project", params={"colour": "red"})
    assert r.status_code == 400 and "colour" in r.text
    r = post(url, name, npy(np.zeros((1, 6))), route="project", params={"k": "9"})
    assert r.status_code == 400 and "between 1 and 3" in r.text
    r = post(url, name, npy(np.zeros((1, 6))), route="project", params={"whiten": "perhaps"})
    assert r.status_code == 400


def test_unsupported_media_types_name_npy(url, model):
    r = httpx.post(f"{url}/v1/models/{model}/samples", content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == 415 and "application/x-npy" in r.text
    r = httpx.post(f"{url}/v1/models/{model}/project", content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == 415 and "application/x-npy" in r.text


def test_too_many_query_rows_are_refused_before_reading_values(start_server):
    s = start_server("--sync", "never", "--max-query-rows", "5")
    with streampca.Client(s.url) as c:
        c.create_model("m", 2, 1)
        c.ingest("m", spiked(50, 6, seed=5)[:, :2])
        c.wait_until_fitted("m", 30)
        r = httpx.post(f"{s.url}/v1/models/m/project", content=npy(np.zeros((6, 2))), headers=NPY)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_rows"
        # The client splits large projections into requests the server accepts.
        got = c.project("m", np.zeros((12, 2)), batch_size=5)
        assert got.scores.shape == (12, 1)
