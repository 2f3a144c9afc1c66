"""The client's operations, written once for both clients.

Each operation is a generator that yields :class:`Call` (an HTTP request) or
:class:`Sleep` steps and receives the answer of each call (an ``httpx.Response`` with
its body read); error answers are thrown into it as :class:`ApiError`. The synchronous
and the asynchronous client drive the same generators (``client.py``), so they cannot
drift apart.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Optional, Union

import numpy as np

from ._errors import FitTimeoutError, InvalidInputError, NotFoundError, OverloadedError
from ._types import Components, IngestReceipt, Limits, ModelStatus, Projection
from ._wire import NPY, NPZ, as_matrix, check_finite, npy_bytes, read_npz, split_rows


@dataclass
class Call:
    """One HTTP request. ``idempotent`` requests are retried after transport errors too
    (a non-idempotent one only after answers that say it was not applied)."""

    method: str
    path: str
    params: Optional[Dict[str, str]] = None
    json: Any = None
    content: Optional[bytes] = None
    headers: Optional[Dict[str, str]] = None
    idempotent: bool = True
    retry: bool = True

    def send_with(self, http: Any) -> Any:
        """One attempt through ``http`` (an ``httpx.Client`` or ``AsyncClient``: the
        latter returns an awaitable)."""
        return http.request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            content=self.content,
            headers=self.headers,
        )


@dataclass
class Sleep:
    """Wait this many seconds before the next step."""

    seconds: float


Op = Generator[Union[Call, Sleep], Any, Any]

#: Default bytes of values per ingest request (the server's default body limit is 64 MiB).
INGEST_BYTES = 16 << 20
#: The server's default ``max_batch_rows``.
MAX_BATCH_ROWS = 100_000
#: The server's default ``max_query_rows``.
MAX_QUERY_ROWS = 10_000


def _path(name: str, tail: str = "") -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    return f"/v1/models/{name}{tail}"


def create_model(
    name: str, dim: int, components: int, settings: Dict[str, Any]
) -> Op:
    body = {"name": name, "dim": int(dim), "components": int(components)}
    body.update({k: v for k, v in settings.items() if v is not None})
    r = yield Call("POST", "/v1/models", json=body, idempotent=True)
    return ModelStatus.from_json(r.json())


def get_model(name: str) -> Op:
    r = yield Call("GET", _path(name))
    return ModelStatus.from_json(r.json())


def list_models() -> Op:
    r = yield Call("GET", "/v1/models")
    return [ModelStatus.from_json(m) for m in r.json()["models"]]


def delete_model(name: str, missing_ok: bool) -> Op:
    try:
        yield Call("DELETE", _path(name))
    except NotFoundError:
        if not missing_ok:
            raise
        return False
    return True


def _progress_printer(name: str, total: int) -> Callable[[int, int], None]:
    start = time.monotonic()

    def show(done: int, total: int = total) -> None:
        rate = done / max(time.monotonic() - start, 1e-9)
        end = "\n" if done >= total else ""
        sys.stderr.write(
            f"\ringest {name}: {done}/{total} rows ({100 * done / max(total, 1):.0f}%, "
            f"{rate:,.0f} rows/s){end}"
        )
        sys.stderr.flush()

    return show


def ingest(
    name: str,
    X: Any,
    y: Any,
    batch_size: Optional[int],
    progress: Union[bool, Callable[[int, int], None]],
) -> Op:
    path = _path(name, "/samples")
    X = as_matrix(X, "X")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    # Every row is checked before the first batch is sent, so a bad value cannot leave
    # a half-ingested array behind.
    check_finite(X, "X")
    if y is not None:
        Y = np.asarray(y)
        if Y.ndim == 1:
            Y = Y[:, None]
        Y = as_matrix(Y, "y")
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {Y.shape[0]}")
        check_finite(Y, "y")
        dtype = np.float32 if X.dtype == Y.dtype == np.float32 else np.float64
        X = np.hstack([X.astype(dtype, copy=False), Y.astype(dtype, copy=False)])
    n, width = X.shape
    if batch_size is None:
        batch_size = max(1, min(MAX_BATCH_ROWS, INGEST_BYTES // max(1, width * X.itemsize)))
    elif int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    show: Optional[Callable[[int, int], None]]
    if progress is True:
        show = _progress_printer(name, n)
    elif callable(progress):
        show = progress
    else:
        show = None
    first = None
    r: Dict[str, Any] = {}
    ranges = split_rows(n, batch_size)
    for a, b in ranges:
        resp = yield Call(
            "POST",
            path,
            content=npy_bytes(X[a:b]),
            headers={"content-type": NPY},
            idempotent=False,
        )
        r = resp.json()
        if first is None:
            first = int(r["sequence"])
        if show is not None:
            show(b, n)
    return IngestReceipt(
        rows=n,
        batches=len(ranges),
        samples=float(r["samples"]),
        first_sequence=int(first or 0),
        sequence=int(r["sequence"]),
    )


def components(name: str, k: Optional[int]) -> Op:
    params = None if k is None else {"k": str(int(k))}
    r = yield Call("GET", _path(name, "/components"), params=params)
    return Components.from_json(r.json())


def _project_options(
    k: Optional[int],
    whiten: bool,
    reconstruct: bool,
    alpha: Optional[float],
    contributions: bool,
) -> Dict[str, Any]:
    """The options that differ from the server's defaults, as JSON values."""
    opts: Dict[str, Any] = {}
    if k is not None:
        opts["k"] = int(k)
    if whiten:
        opts["whiten"] = True
    if reconstruct:
        opts["reconstruct"] = True
    if alpha is not None:
        opts["alpha"] = float(alpha)
    if contributions:
        opts["contributions"] = True
    return opts


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    return str(v)


def project(
    name: str,
    X: Any,
    k: Optional[int],
    whiten: bool,
    reconstruct: bool,
    alpha: Optional[float],
    contributions: bool,
    binary: bool,
    batch_size: Optional[int],
) -> Op:
    path = _path(name, "/project")
    X = as_matrix(X, "X")
    opts = _project_options(k, whiten, reconstruct, alpha, contributions)
    n = X.shape[0]
    ranges = split_rows(n, batch_size or MAX_QUERY_ROWS) or [(0, 0)]
    parts: "list[Projection]" = []
    for attempt in range(3):
        parts = []
        for a, b in ranges:
            chunk = X[a:b]
            if binary:
                resp = yield Call(
                    "POST",
                    path,
                    params={key: _query_value(v) for key, v in opts.items()},
                    content=npy_bytes(chunk),
                    headers={"content-type": NPY, "accept": NPZ},
                )
                if resp.headers.get("content-type", "").startswith(NPZ):
                    parts.append(Projection.from_arrays(read_npz(resp.content)))
                else:  # a server without binary answers
                    parts.append(Projection.from_json(resp.json(), X.shape[1]))
            else:
                body: Dict[str, Any] = {"x": chunk.tolist(), **opts}
                resp = yield Call("POST", path, json=body)
                parts.append(Projection.from_json(resp.json(), X.shape[1]))
        if len({p.sequence for p in parts}) == 1:
            break
        # The published fit changed between two requests of this X: project it again
        # so that one fit covers every row.
    else:
        warnings.warn(
            f"the fit of model {name!r} changed while {n} rows were projected in "
            f"{len(ranges)} requests (three attempts); the rows were projected by fits "
            f"{sorted({p.sequence for p in parts})}",
            RuntimeWarning,
            stacklevel=4,
        )
    return Projection.concat(parts)


def limits(name: str, k: Optional[int], alpha: Optional[float]) -> Op:
    params: Dict[str, str] = {}
    if k is not None:
        params["k"] = str(int(k))
    if alpha is not None:
        params["alpha"] = repr(float(alpha))
    r = yield Call("GET", _path(name, "/limits"), params=params or None)
    return Limits.from_json(r.json())


def wait_until_fitted(
    name: str, timeout: float, sequence: Optional[int], poll: float, hold: float
) -> Op:
    """Until a published fit covers batch ``sequence`` (default: the last acknowledged
    one): each request asks the service to answer once it does
    (``?fitted_sequence=S&wait=T``, ``T`` at most ``hold`` and the time left), which
    also makes its trainer skip its pacing pause. A service that refuses the parameters
    (cluster mode: 400) or has too many waiters (503 ``overloaded``) is polled instead,
    every ``poll`` seconds at most; one that answers early without the fit (none yet,
    or a version that ignores the parameters) is asked again after the same backoff."""
    deadline = time.monotonic() + float(timeout)
    path = _path(name)
    st: Optional[ModelStatus] = None
    if sequence is None:
        r = yield Call("GET", path)
        st = ModelStatus.from_json(r.json())
        target = st.sequence
    else:
        target = int(sequence)
    delay = min(0.002, poll)
    service_waits = True

    def covers(st: Optional[ModelStatus]) -> bool:
        return st is not None and st.fitted and st.fitted_sequence >= target

    while not covers(st):
        left = deadline - time.monotonic()
        if st is not None and left <= 0:
            raise FitTimeoutError(
                f"model {name!r}: no fit covering batch {target} within {timeout} s "
                f"(fitted through batch {st.fitted_sequence}, {st.samples:g} samples "
                f"for {st.components} components of dim {st.dim}; the service fits once "
                "it has more samples than the components it carries)"
            )
        if service_waits and left > 0:
            t = min(float(hold), left)
            asked = time.monotonic()
            try:
                r = yield Call(
                    "GET", path, params={"fitted_sequence": str(target), "wait": repr(t)}
                )
            except (InvalidInputError, OverloadedError):
                service_waits = False
                continue
            st = ModelStatus.from_json(r.json())
            if not covers(st) and time.monotonic() - asked < 0.9 * t:
                # An early answer without the fit (none published yet, a wait cut short,
                # a service ignoring the parameters): back off before asking again.
                yield Sleep(min(delay, left))
                delay = min(delay * 1.5, poll)
            continue
        if st is not None:
            yield Sleep(min(delay, left))
            delay = min(delay * 1.5, poll)
        r = yield Call("GET", path)
        st = ModelStatus.from_json(r.json())
    return st


def export_snapshot(name: str, path: Optional[Union[str, os.PathLike]]) -> Op:
    r = yield Call("GET", _path(name, "/snapshot"))
    data = r.content
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def import_snapshot(name: str, source: Any) -> Op:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            data = f.read()
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise TypeError(
            "import_snapshot takes bytes, a path or a binary file object, "
            f"got {type(source).__name__}"
        )
    r = yield Call(
        "PUT",
        _path(name, "/snapshot"),
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    return ModelStatus.from_json(r.json())


def ready() -> Op:
    try:
        yield Call("GET", "/readyz", retry=False)
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
    return True
