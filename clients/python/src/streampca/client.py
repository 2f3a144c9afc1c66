"""``streampca.Client`` and ``streampca.AsyncClient``: the service's API as Python
methods, numpy arrays in and out, binary (``.npy``/``.npz``) on the wire.

Both clients drive the same operations (``_ops.py``); the async one awaits where the
sync one blocks. One ``httpx`` connection pool per client (keep-alive); 503 answers are
retried, honouring ``Retry-After``, up to ``retries`` times; a request that could not be
sent at all (connection refused) is retried too, one that may have reached the server
only if it is idempotent.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import ssl
import threading
import time
from typing import Any, Callable, List, Optional, Union

import httpx

from . import _ops
from ._errors import ServiceUnavailableError, StreamPCAError, error_for
from ._types import Components, IngestReceipt, Limits, ModelStatus, Projection

__all__ = ["Client", "AsyncClient", "DEFAULT_URL"]

#: Where a client connects when neither ``url`` nor ``STREAMPCA_URL`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8080"
#: A ``Retry-After`` longer than this (seconds) is not waited for: the error is raised.
MAX_RETRY_WAIT = 60.0

try:
    from importlib.metadata import version as _version

    _VERSION = _version("streampca")
except Exception:  # noqa: BLE001 - not installed (running from a checkout)
    _VERSION = "0"


_ssl_context: Optional[ssl.SSLContext] = None
_ssl_lock = threading.Lock()


def _shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certificate verification with its CA bundle),
    created once per process and shared by every client: creating one loads the CA
    bundle, ~25 ms of CPU here, which a ``StreamPCA`` paid again for each sender
    thread of each estimator."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def _retry_after(r: httpx.Response) -> Optional[float]:
    v = r.headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _backoff(attempt: int) -> float:
    return min(0.05 * 2**attempt, 2.0)


def _error(r: httpx.Response) -> StreamPCAError:
    code, message = f"http_{r.status_code}", r.text[:500]
    try:
        e = r.json()["error"]
        code, message = str(e["code"]), str(e["message"])
    except Exception:  # noqa: BLE001 - not our error shape (a proxy's page, say)
        pass
    return error_for(r.status_code, code, message, _retry_after(r))


class _Settings:
    """What both clients share: where, how, and the retry decisions."""

    def __init__(
        self,
        url: Optional[str],
        api_key: Optional[str],
        timeout: float,
        retries: int,
    ) -> None:
        self.url = (url or os.environ.get("STREAMPCA_URL") or DEFAULT_URL).rstrip("/")
        if api_key is None:
            api_key = os.environ.get("STREAMPCA_API_KEY") or None
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._headers = {"user-agent": f"streampca-python/{_VERSION}"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    def _retry_wait(
        self, call: _ops.Call, attempt: int, r: Optional[httpx.Response], exc: Any
    ) -> Optional[float]:
        """Seconds to wait before trying ``call`` again, or ``None`` to give up."""
        if not call.retry or attempt >= self.retries:
            return None
        if exc is not None:
            # Never sent (connection refused): always safe. Otherwise the request may
            # have been applied: only idempotent ones.
            if isinstance(exc, httpx.ConnectError) or call.idempotent:
                return _backoff(attempt)
            return None
        if r is not None and r.status_code == 503:
            wait = _retry_after(r)
            wait = _backoff(attempt) if wait is None else wait
            return wait if wait <= MAX_RETRY_WAIT else None
        return None

    def _hold(self) -> float:
        """Longest ``wait`` (seconds) one status request asks the service for: at most
        the API's 60 s, and a second under this client's own timeout."""
        return min(60.0, max(self.timeout - 1.0, self.timeout / 2))

    def _unreachable(self, call: _ops.Call, exc: Exception) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"{call.method} {self.url}{call.path}: {type(exc).__name__}: {exc}"
        )


class Client(_Settings):
    """A synchronous client for one streampca service.

    Args:
        url: the service (default: ``STREAMPCA_URL``, then ``http://127.0.0.1:8080``).
        api_key: sent as ``Authorization: Bearer`` (default: ``STREAMPCA_API_KEY``).
        timeout: seconds per HTTP request.
        retries: how many times a 503 (or a request that could not be sent) is retried.
        transport: an ``httpx`` transport, for tests and special set-ups.

    Use as a context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = 60.0,
        retries: int = 5,
        *,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=self.timeout,
            headers=self._headers,
            transport=transport,
            verify=_shared_ssl_context(),
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, call: _ops.Call) -> httpx.Response:
        return call.send_with(self._http)

    def _send(
        self,
        call: _ops.Call,
        request: Optional[Callable[[_ops.Call], httpx.Response]] = None,
    ) -> httpx.Response:
        """Sends ``call`` with the retry rules; ``request`` (default: this client's
        httpx pool) makes one attempt, raising ``httpx.TransportError`` when it fails."""
        attempt = 0
        while True:
            try:
                r = (request or self._request)(call)
            except httpx.TransportError as e:
                wait = self._retry_wait(call, attempt, None, e)
                if wait is None:
                    raise self._unreachable(call, e) from e
            else:
                if r.is_success:
                    return r
                wait = self._retry_wait(call, attempt, r, None)
                if wait is None:
                    raise _error(r)
            time.sleep(wait)
            attempt += 1

    def _run(self, op: _ops.Op) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, _ops.Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    r = self._send(step)
                except StreamPCAError as e:
                    step = op.throw(e)
                else:
                    step = op.send(r)
        except StopIteration as stop:
            return stop.value

    def create_model(
        self,
        name: str,
        dim: int,
        components: int,
        *,
        target_dim: Optional[int] = None,
        half_life: Optional[float] = None,
        optimizer: Optional[str] = None,
        tolerance: Optional[float] = None,
        partitions: Optional[int] = None,
        standardize: Optional[bool] = None,
        alpha: Optional[float] = None,
        **settings: Any,
    ) -> ModelStatus:
        """Creates a model: ``dim`` inputs, ``components`` ordered components, and the
        optional settings (``None`` leaves the server's default): ``target_dim`` for
        regression, ``half_life`` in samples for forgetting, ``optimizer``
        ``"subspace"``/``"gradient"``, ``tolerance`` in radians, ``partitions``
        (independent accumulators merged exactly for each fit; default: the server's
        CPUs, at most 8), ``standardize`` (PCA of the correlation matrix, for variables
        in mixed units), ``alpha`` (false-alarm rate of the model's control limits,
        default 0.01); further keyword arguments are sent as they are. Creating an
        identical model again returns it; another configuration under the same name
        raises :class:`ConflictError`."""
        settings.update(
            target_dim=target_dim,
            half_life=half_life,
            optimizer=optimizer,
            tolerance=tolerance,
            partitions=partitions,
            standardize=standardize,
            alpha=alpha,
        )
        return self._run(_ops.create_model(name, dim, components, settings))

    def get_model(self, name: str) -> ModelStatus:
        """The model's status; :class:`NotFoundError` if there is none."""
        return self._run(_ops.get_model(name))

    def list_models(self) -> List[ModelStatus]:
        """Every model, sorted by name."""
        return self._run(_ops.list_models())

    def delete_model(self, name: str, missing_ok: bool = False) -> bool:
        """Deletes a model (durably). Returns False if it did not exist and
        ``missing_ok``; otherwise a missing model raises :class:`NotFoundError`."""
        return self._run(_ops.delete_model(name, missing_ok))

    def ingest(
        self,
        name: str,
        X: Any,
        y: Any = None,
        batch_size: Optional[int] = None,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestReceipt:
        """Sends the rows of ``X`` (rows×dim; anything ``np.asarray`` takes) and, for
        regression models, ``y`` (rows×target_dim, or a vector) in batches of
        ``batch_size`` rows (default: 16 MiB of values, at most 100 000 rows) as
        binary ``.npy``; float32 stays float32, float64 stays float64, other types are
        sent as float64. Every value is checked for finiteness before the first batch
        is sent. ``progress=True`` prints progress to stderr; a callable gets
        ``(rows_sent, rows_total)``. Each batch is applied whole, in order."""
        return self._run(_ops.ingest(name, X, y, batch_size, progress))

    def components(self, name: str, k: Optional[int] = None) -> Components:
        """The latest published fit (the first ``k`` components)."""
        return self._run(_ops.components(name, k))

    def project(
        self,
        name: str,
        X: Any,
        k: Optional[int] = None,
        whiten: bool = False,
        reconstruct: bool = False,
        *,
        alpha: Optional[float] = None,
        contributions: bool = False,
        binary: bool = True,
        batch_size: Optional[int] = None,
    ) -> Projection:
        """Projects the rows of ``X`` onto the first ``k`` components (default: all):
        scores, residual norms, each row's T² and SPE and, with ``reconstruct``,
        reconstructions, as numpy arrays. With ``alpha`` (0 < α < 0.5) also the control
        limits at that false-alarm rate and each row's outlier flags; with
        ``contributions`` each variable's share of T² and SPE (see :class:`Projection`).
        Sent as ``.npy`` and answered as ``.npz`` (``binary=False``: JSON), in requests
        of ``batch_size`` rows (default 10 000, the server's default
        ``max_query_rows``); if the fit changes between those requests, all of them are
        sent again so that one fit covers every row."""
        return self._run(
            _ops.project(
                name, X, k, whiten, reconstruct, alpha, contributions, binary, batch_size
            )
        )

    def limits(
        self, name: str, k: Optional[int] = None, alpha: Optional[float] = None
    ) -> Limits:
        """The control limits of T² and SPE for the latest fit at ``k`` components
        (default: every reported one) and false-alarm rate ``alpha`` (default: the
        model's). :class:`ConflictError` (``not_fitted``) before the first fit;
        :class:`InvalidInputError` naming ``k`` when the variance beyond ``k`` components
        is only round-off (no SPE limit means anything there)."""
        return self._run(_ops.limits(name, k, alpha))

    def wait_until_fitted(
        self,
        name: str,
        timeout: float = 60.0,
        *,
        sequence: Optional[int] = None,
        poll: float = 0.1,
    ) -> ModelStatus:
        """Waits until a published fit covers every batch acknowledged when the call
        started (or batch ``sequence``). Each request asks the service to answer once
        that fit is published (``GET /v1/models/{name}?fitted_sequence=S&wait=T``, ``T``
        at most 60 s, the time left, and a second under the client's ``timeout``), and
        while it waits the service fits at once instead of pacing its trainer; a service
        without that wait (cluster mode) is polled at most every ``poll`` seconds.
        Returns the status (whose ``converged`` says whether every error bound met the
        tolerance); raises :class:`FitTimeoutError` after ``timeout`` seconds."""
        return self._run(_ops.wait_until_fitted(name, timeout, sequence, poll, self._hold()))

    def export_snapshot(
        self, name: str, path: Optional[Union[str, "os.PathLike[str]"]] = None
    ) -> bytes:
        """The model's portable snapshot (bytes); also written to ``path`` if given."""
        return self._run(_ops.export_snapshot(name, path))

    def import_snapshot(self, name: str, source: Any) -> ModelStatus:
        """Restores a model named ``name`` from a snapshot: bytes, a path, or a binary
        file object. Replaces a model of that name if there is one."""
        return self._run(_ops.import_snapshot(name, source))

    def ready(self) -> bool:
        """True when the service answers ``/readyz`` with 200."""
        return self._run(_ops.ready())


class AsyncClient(_Settings):
    """The asynchronous twin of :class:`Client`: the same methods, awaitable.

    Use ``async with AsyncClient(...) as c:``, or ``await c.aclose()``.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = 60.0,
        retries: int = 5,
        *,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=self.timeout,
            headers=self._headers,
            transport=transport,
            verify=_shared_ssl_context(),
        )

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, call: _ops.Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                r = await call.send_with(self._http)
            except httpx.TransportError as e:
                wait = self._retry_wait(call, attempt, None, e)
                if wait is None:
                    raise self._unreachable(call, e) from e
            else:
                if r.is_success:
                    return r
                wait = self._retry_wait(call, attempt, r, None)
                if wait is None:
                    raise _error(r)
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, op: _ops.Op) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, _ops.Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    r = await self._send(step)
                except StreamPCAError as e:
                    step = op.throw(e)
                else:
                    step = op.send(r)
        except StopIteration as stop:
            return stop.value

    async def create_model(
        self,
        name: str,
        dim: int,
        components: int,
        *,
        target_dim: Optional[int] = None,
        half_life: Optional[float] = None,
        optimizer: Optional[str] = None,
        tolerance: Optional[float] = None,
        partitions: Optional[int] = None,
        standardize: Optional[bool] = None,
        alpha: Optional[float] = None,
        **settings: Any,
    ) -> ModelStatus:
        """See :meth:`Client.create_model`."""
        settings.update(
            target_dim=target_dim,
            half_life=half_life,
            optimizer=optimizer,
            tolerance=tolerance,
            partitions=partitions,
            standardize=standardize,
            alpha=alpha,
        )
        return await self._run(_ops.create_model(name, dim, components, settings))

    async def get_model(self, name: str) -> ModelStatus:
        """See :meth:`Client.get_model`."""
        return await self._run(_ops.get_model(name))

    async def list_models(self) -> List[ModelStatus]:
        """See :meth:`Client.list_models`."""
        return await self._run(_ops.list_models())

    async def delete_model(self, name: str, missing_ok: bool = False) -> bool:
        """See :meth:`Client.delete_model`."""
        return await self._run(_ops.delete_model(name, missing_ok))

    async def ingest(
        self,
        name: str,
        X: Any,
        y: Any = None,
        batch_size: Optional[int] = None,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestReceipt:
        """See :meth:`Client.ingest`."""
        return await self._run(_ops.ingest(name, X, y, batch_size, progress))

    async def components(self, name: str, k: Optional[int] = None) -> Components:
        """See :meth:`Client.components`."""
        return await self._run(_ops.components(name, k))

    async def project(
        self,
        name: str,
        X: Any,
        k: Optional[int] = None,
        whiten: bool = False,
        reconstruct: bool = False,
        *,
        alpha: Optional[float] = None,
        contributions: bool = False,
        binary: bool = True,
        batch_size: Optional[int] = None,
    ) -> Projection:
        """See :meth:`Client.project`."""
        return await self._run(
            _ops.project(
                name, X, k, whiten, reconstruct, alpha, contributions, binary, batch_size
            )
        )

    async def limits(
        self, name: str, k: Optional[int] = None, alpha: Optional[float] = None
    ) -> Limits:
        """See :meth:`Client.limits`."""
        return await self._run(_ops.limits(name, k, alpha))

    async def wait_until_fitted(
        self,
        name: str,
        timeout: float = 60.0,
        *,
        sequence: Optional[int] = None,
        poll: float = 0.1,
    ) -> ModelStatus:
        """See :meth:`Client.wait_until_fitted`."""
        return await self._run(
            _ops.wait_until_fitted(name, timeout, sequence, poll, self._hold())
        )

    async def export_snapshot(
        self, name: str, path: Optional[Union[str, "os.PathLike[str]"]] = None
    ) -> bytes:
        """See :meth:`Client.export_snapshot`."""
        return await self._run(_ops.export_snapshot(name, path))

    async def import_snapshot(self, name: str, source: Any) -> ModelStatus:
        """See :meth:`Client.import_snapshot`."""
        return await self._run(_ops.import_snapshot(name, source))

    async def ready(self) -> bool:
        """See :meth:`Client.ready`."""
        return await self._run(_ops.ready())

